-- Fill batches a settler could not apply (issue 13, defect 6). A batch that fails
-- `park_after` times in a row is parked here instead of stopping the shard's
-- settlement, and every later batch of the same symbol for this shard is parked
-- behind it (`queued`): applying one would move the symbol's `applied_seq` mark past
-- the parked events, which would then be skipped as redeliveries. Other symbols keep
-- settling. `shardctl fills retry` asks the settler to apply a shard's parked batches
-- again, oldest first per symbol, removing each once applied; the rows are the
-- durable record (the `fills` offset is only a hint), so a redelivered batch is
-- recognised by (symbol, stream, last_seq) and never parked twice.
CREATE TABLE `parked_fills` (
  `id` BIGINT UNSIGNED NOT NULL AUTO_INCREMENT COMMENT 'arrival order: the order a retry applies them in',
  `symbol` VARCHAR(20) NOT NULL,
  `stream` VARCHAR(128) NOT NULL COMMENT 'the matcher stream (orders topic) the seqs come from',
  `first_seq` BIGINT UNSIGNED NOT NULL,
  `last_seq` BIGINT UNSIGNED NOT NULL,
  `events` INT UNSIGNED NOT NULL,
  `batch` LONGBLOB NOT NULL COMMENT 'the batch as it came from the fills topic',
  `fills_offset` BIGINT NULL COMMENT 'its offset in the shard''s fills partition (for reference)',
  `state` ENUM('failed', 'queued') NOT NULL COMMENT 'failed: applying it failed; queued: held behind an earlier parked batch of the symbol',
  `attempts` INT UNSIGNED NOT NULL DEFAULT 0,
  `last_error` TEXT NOT NULL,
  `retry_requested` TINYINT(1) NOT NULL DEFAULT 0 COMMENT 'set by shardctl fills retry, cleared by the settler',
  `parked_at` DATETIME(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
  `last_attempt_at` DATETIME(3) NULL,
  PRIMARY KEY (`id`),
  KEY `idx_symbol` (`symbol`, `id`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci COMMENT='fill batches held back from settlement';
