SELECT E'it\'s; here', 'a''b;', "we;ird";
/* outer /* nested; */ still; */ SELECT 2;
