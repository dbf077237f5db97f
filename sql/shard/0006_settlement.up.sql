-- Settlement: the per-symbol high-water mark of matcher events applied on this shard,
-- written in the same transaction as the money they move (an event at or below it is a
-- redelivery and is skipped). Seqs are only comparable within one matcher stream: a
-- batch from another stream for the same symbol is refused, never skipped. Fees go to
-- the shard's fee account (user_id 0).

CREATE TABLE `applied_seq` (
  `symbol` VARCHAR(20) NOT NULL,
  `stream` VARCHAR(128) NOT NULL COMMENT 'the matcher stream (orders topic) the seqs come from',
  `seq` BIGINT UNSIGNED NOT NULL DEFAULT 0,
  `updated_at` DATETIME(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3) ON UPDATE CURRENT_TIMESTAMP(3),
  PRIMARY KEY (`symbol`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci COMMENT='settler checkpoint per symbol';
