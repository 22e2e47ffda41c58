-- 0007_hot_counter, the way back: the default fill factor.
ALTER TABLE core_groups RESET (fillfactor);
