ALTER TABLE `outbox` DROP INDEX `uk_seq`, DROP COLUMN `seq`;
DROP TABLE IF EXISTS `client_orders`;
