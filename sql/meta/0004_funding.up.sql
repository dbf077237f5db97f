-- Funding parameters per asset, and the global index of reported deposits: a deposit
-- is unique by (txid, asset) across all shards, whichever user it is reported for.
ALTER TABLE `assets`
  ADD COLUMN `required_confirmations` INT UNSIGNED NOT NULL DEFAULT 6 COMMENT 'before a deposit is credited' AFTER `min_withdraw`,
  ADD COLUMN `daily_withdraw_limit` DECIMAL(36, 18) NOT NULL DEFAULT 0 COMMENT 'per user and rolling 24 h; 0 = none' AFTER `required_confirmations`;
UPDATE `assets` SET `required_confirmations` = 2, `daily_withdraw_limit` = 10 WHERE `asset` = 'BTC';
UPDATE `assets` SET `required_confirmations` = 12, `daily_withdraw_limit` = 200 WHERE `asset` = 'ETH';
UPDATE `assets` SET `required_confirmations` = 12, `daily_withdraw_limit` = 1000000 WHERE `asset` = 'USDT';

CREATE TABLE `deposit_txids` (
  `txid` VARCHAR(255) NOT NULL,
  `currency` VARCHAR(20) NOT NULL,
  `user_id` BIGINT UNSIGNED NOT NULL,
  `created_at` DATETIME(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
  PRIMARY KEY (`txid`, `currency`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin COMMENT='every reported deposit: (txid, asset) -> user';
