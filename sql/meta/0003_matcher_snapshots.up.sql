-- Matching-service snapshots: the books of every symbol plus the input offsets they
-- reflect. On start the service restores the latest one of its stream and replays
-- only what follows.
CREATE TABLE `matcher_snapshots` (
  `id` BIGINT UNSIGNED NOT NULL AUTO_INCREMENT,
  `stream` VARCHAR(128) NOT NULL COMMENT 'the orders topic the state was built from',
  `state` LONGBLOB NOT NULL COMMENT 'postcard: input offsets + one snapshot per book',
  `inputs` BIGINT UNSIGNED NOT NULL COMMENT 'inputs applied since the process started',
  `created_at` DATETIME(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
  PRIMARY KEY (`id`),
  KEY `idx_stream` (`stream`, `id`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci COMMENT='matcher snapshots';
