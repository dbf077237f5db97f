DROP TABLE IF EXISTS `deposit_txids`;
ALTER TABLE `assets` DROP COLUMN `daily_withdraw_limit`, DROP COLUMN `required_confirmations`;
