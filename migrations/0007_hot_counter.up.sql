-- 0007_hot_counter: the group's event counter is a hot row. Every commit that changes anything
-- updates core_groups.event_seq (cg_outbox_append), hundreds of times a second under load, and
-- each update leaves a dead version in the row's page. PostgreSQL prunes a page only once its
-- free space falls below the fill factor's reserve, so with the default (100) the row's HOT
-- chain grows to a full page (about 140 versions) before it is pruned, and every lookup of the
-- row (the counter's UPDATE, the foreign-key checks of every outbox insert) walks that chain
-- while the counter is held. A fill factor of 10 has the page pruned after a few versions
-- (tests/bench/NOTES.md: +11% on the Swatch mix in paired runs). The table holds one row per
-- group, so the space it reserves is nothing.
ALTER TABLE core_groups SET (fillfactor = 10);
