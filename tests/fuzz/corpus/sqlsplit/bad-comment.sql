SELECT 1; /* open comment
