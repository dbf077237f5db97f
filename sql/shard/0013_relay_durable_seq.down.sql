ALTER TABLE `outbox_relay` DROP COLUMN `durable_seq`;
