-- The transactional outbox (written in the same local transaction as the business
-- change, relayed to Kafka, marked sent after the broker acks) and the TCC barrier
-- (one row per (gid, branch, op), written with the branch's business change).

CREATE TABLE `outbox` (
  `id` BIGINT UNSIGNED NOT NULL AUTO_INCREMENT,
  `topic` VARCHAR(64) NOT NULL,
  `msg_key` VARBINARY(128) NOT NULL,
  `payload` MEDIUMBLOB NOT NULL,
  `created_at` DATETIME(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
  `sent_at` DATETIME(3) DEFAULT NULL,
  PRIMARY KEY (`id`),
  KEY `idx_unsent` (`sent_at`, `id`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci COMMENT='transactional outbox';

CREATE TABLE `tcc_branches` (
  `gid` BIGINT UNSIGNED NOT NULL COMMENT 'global transaction id (meta tcc_global.gid)',
  `branch_id` VARCHAR(32) NOT NULL,
  `op` ENUM('try', 'confirm', 'cancel') NOT NULL,
  `reason` ENUM('normal', 'rollback') NOT NULL DEFAULT 'normal' COMMENT 'rollback = empty-rollback marker (cancel without try)',
  `created_at` DATETIME(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
  PRIMARY KEY (`gid`, `branch_id`, `op`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci COMMENT='TCC barrier';
