-- 0003_fence_check, the way back.
DROP FUNCTION cg_fence_check(text, text, bigint);
