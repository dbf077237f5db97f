-- Internal transfers between users. A transfer across shards is a TCC global
-- (meta `tcc_global`) with two branches, each a row here on its user's shard, written
-- in the same local transaction as the branch's balance change and its barrier row
-- (`tcc_branches`):
-- * source: Try freezes the amount (status `tried`), Confirm spends the frozen amount
--   (`confirmed`), Cancel unfreezes it (`cancelled`);
-- * target: Try records the pending credit (`tried`), Confirm credits it, Cancel drops it.
-- A transfer between two users of one shard is one local transaction: one `local` row.
CREATE TABLE `transfers` (
  `gid` BIGINT UNSIGNED NOT NULL COMMENT 'transfer id (snowflake) = tcc_global.gid',
  `branch` ENUM('source', 'target', 'local') NOT NULL,
  `user_id` BIGINT UNSIGNED NOT NULL COMMENT 'the user of this row (source: payer, target: payee)',
  `counter_user_id` BIGINT UNSIGNED NOT NULL,
  `currency` VARCHAR(20) NOT NULL,
  `amount` DECIMAL(36, 18) NOT NULL,
  `status` ENUM('tried', 'confirmed', 'cancelled') NOT NULL,
  `created_at` DATETIME(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
  `updated_at` DATETIME(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3) ON UPDATE CURRENT_TIMESTAMP(3),
  PRIMARY KEY (`gid`, `branch`),
  KEY `idx_user_created` (`user_id`, `created_at`),
  KEY `idx_status_created` (`status`, `created_at`),
  CONSTRAINT `chk_transfer_positive` CHECK (`amount` > 0)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci COMMENT='internal transfers (TCC branches)';
