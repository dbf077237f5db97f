-- Fewer secondary indexes on the hot month tables: every order insert and status
-- change, and every trade half, maintains each of them.
-- * orders `idx_user_client`: client order ids are looked up in `client_orders`;
-- * orders/trades `idx_created_at`: a month table *is* the time range (the archiver
--   moves whole months); user history goes through `idx_user_created`.
-- Month tables created before this migration keep the old indexes (correct, slower).
ALTER TABLE `orders_template` DROP INDEX `idx_user_client`, DROP INDEX `idx_created_at`;
ALTER TABLE `trades_template` DROP INDEX `idx_created_at`;
