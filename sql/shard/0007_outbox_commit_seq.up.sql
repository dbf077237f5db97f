-- The outbox sequence is taken inside the writing transaction instead of being stamped
-- by the relay afterwards: `outbox_seq` holds the last seq handed out, and a writer
-- bumps it (`UPDATE ... SET last_seq = LAST_INSERT_ID(last_seq + n)`) in the same
-- transaction as its outbox rows. The row lock is held until commit, so seqs are
-- handed out in commit order with no gaps (a rolled-back writer releases the lock
-- without moving the counter), and the relay can read `seq > published` in order.
-- The relay's progress is one row (`outbox_relay`) instead of a `sent_at` per row:
-- per order, one outbox write (the insert) instead of three (insert, stamp, mark).

-- rows not stamped yet get seqs after every stamped one, in id order
SET @outbox_seq = (SELECT COALESCE(MAX(`seq`), 0) FROM `outbox`);
UPDATE `outbox` SET `seq` = (@outbox_seq := @outbox_seq + 1) WHERE `seq` IS NULL ORDER BY `id`;

CREATE TABLE `outbox_seq` (
  `id` TINYINT UNSIGNED NOT NULL,
  `last_seq` BIGINT UNSIGNED NOT NULL COMMENT 'last seq handed out',
  PRIMARY KEY (`id`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci COMMENT='outbox sequence (one row)';
INSERT INTO `outbox_seq` (`id`, `last_seq`) SELECT 1, COALESCE(MAX(`seq`), 0) FROM `outbox`;

CREATE TABLE `outbox_relay` (
  `id` TINYINT UNSIGNED NOT NULL,
  `published_seq` BIGINT UNSIGNED NOT NULL COMMENT 'every row up to this seq is acked by the broker',
  `updated_at` DATETIME(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3) ON UPDATE CURRENT_TIMESTAMP(3),
  PRIMARY KEY (`id`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci COMMENT='relay progress (one row)';
-- stamped rows are published in seq order: the sent ones are a prefix
INSERT INTO `outbox_relay` (`id`, `published_seq`)
  SELECT 1, COALESCE(MAX(`seq`), 0) FROM `outbox` WHERE `sent_at` IS NOT NULL;

ALTER TABLE `outbox` MODIFY `id` BIGINT UNSIGNED NOT NULL, DROP PRIMARY KEY;
ALTER TABLE `outbox` DROP INDEX `idx_unsent`, DROP INDEX `uk_seq`;
ALTER TABLE `outbox` DROP COLUMN `id`, DROP COLUMN `sent_at`;
ALTER TABLE `outbox`
  MODIFY `seq` BIGINT UNSIGNED NOT NULL COMMENT 'per-shard sequence, in commit order, gap-free',
  ADD PRIMARY KEY (`seq`);
