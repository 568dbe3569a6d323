-- User keys indexed by shard alone, with room left in each page: a KEK
-- rotation rewrites every row's kek_version and wrapped key, and with
-- neither in any index PostgreSQL can write the new row version on the
-- same page as a heap-only tuple (HOT), touching no index. Rows the
-- rotation looks for by (shard, kek_version) are found through the shard.
-- The fillfactor applies to pages written from now on.
DROP INDEX user_keys_by_kek;
CREATE INDEX user_keys_by_shard ON user_keys (shard);
ALTER TABLE user_keys SET (fillfactor = 80);
