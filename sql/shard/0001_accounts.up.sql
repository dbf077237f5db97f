-- Per-shard accounts: the users that live on this shard, balances guarded by an
-- optimistic-lock `version`, and the ledger partitioned by month.
-- Same DDL on every shard.

CREATE TABLE `users` (
  `id` BIGINT UNSIGNED NOT NULL COMMENT 'user id from the meta directory (not auto-increment here)',
  `email` VARCHAR(255) COLLATE utf8mb4_bin NOT NULL COMMENT 'same value as the meta directory',
  `phone` VARCHAR(20) DEFAULT NULL,
  `password_hash` VARCHAR(255) NOT NULL COMMENT '! = no password login',
  `kyc_level` TINYINT NOT NULL DEFAULT 0 COMMENT '0 none, 1 L1, 2 L2, 3 L3',
  `real_name` VARCHAR(100) DEFAULT NULL,
  `id_number` VARCHAR(50) DEFAULT NULL,
  `country` VARCHAR(10) DEFAULT NULL,
  `totp_secret` VARCHAR(255) DEFAULT NULL,
  `is_2fa_enabled` BOOLEAN NOT NULL DEFAULT FALSE,
  `login_password_updated_at` DATETIME DEFAULT NULL,
  `trade_password_hash` VARCHAR(255) DEFAULT NULL,
  `status` ENUM('active', 'suspended', 'closed') NOT NULL DEFAULT 'active',
  `created_at` DATETIME(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
  `updated_at` DATETIME(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3) ON UPDATE CURRENT_TIMESTAMP(3),
  PRIMARY KEY (`id`),
  UNIQUE KEY `uk_email` (`email`),
  UNIQUE KEY `uk_phone` (`phone`),
  KEY `idx_created_at` (`created_at`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci COMMENT='users of this shard';

CREATE TABLE `account_balances` (
  `id` BIGINT UNSIGNED NOT NULL AUTO_INCREMENT,
  `user_id` BIGINT UNSIGNED NOT NULL,
  `currency` VARCHAR(20) NOT NULL,
  `account_type` ENUM('spot', 'margin', 'futures') NOT NULL DEFAULT 'spot',
  `available` DECIMAL(36, 18) NOT NULL DEFAULT 0,
  `frozen` DECIMAL(36, 18) NOT NULL DEFAULT 0,
  `version` BIGINT UNSIGNED NOT NULL DEFAULT 0 COMMENT 'optimistic lock: +1 on every change',
  `created_at` DATETIME(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
  `updated_at` DATETIME(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3) ON UPDATE CURRENT_TIMESTAMP(3),
  PRIMARY KEY (`id`),
  UNIQUE KEY `uk_user_currency_type` (`user_id`, `currency`, `account_type`),
  KEY `idx_user_id` (`user_id`),
  CONSTRAINT `chk_balance_non_negative` CHECK (`available` >= 0 AND `frozen` >= 0)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci COMMENT='balances (optimistic lock)';

-- The ledger. RANGE partitions by month on created_at; the partition key must be part
-- of every unique key, hence PRIMARY KEY (id, created_at). `shardctl ensure-tables`
-- splits `pmax` into monthly partitions ahead of time.
CREATE TABLE `account_transactions` (
  `id` BIGINT UNSIGNED NOT NULL AUTO_INCREMENT,
  `user_id` BIGINT UNSIGNED NOT NULL,
  `currency` VARCHAR(20) NOT NULL,
  `account_type` ENUM('spot', 'margin', 'futures') NOT NULL DEFAULT 'spot',
  `type` ENUM('deposit', 'withdraw', 'trade', 'fee', 'funding', 'transfer', 'airdrop', 'freeze', 'unfreeze') NOT NULL,
  `amount` DECIMAL(36, 18) NOT NULL COMMENT 'signed: + in, - out',
  `balance_after` DECIMAL(36, 18) NOT NULL,
  `ref_type` VARCHAR(50) DEFAULT NULL COMMENT 'order, trade, deposit, withdraw, transfer',
  `ref_id` BIGINT UNSIGNED DEFAULT NULL,
  `comment` VARCHAR(255) DEFAULT NULL,
  `created_at` DATETIME(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
  PRIMARY KEY (`id`, `created_at`),
  KEY `idx_user_currency` (`user_id`, `currency`, `created_at`),
  KEY `idx_ref` (`ref_type`, `ref_id`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci COMMENT='ledger'
PARTITION BY RANGE (TO_DAYS(`created_at`)) (
  PARTITION `p_before` VALUES LESS THAN (TO_DAYS('2022-01-01')),
  PARTITION `pmax` VALUES LESS THAN MAXVALUE
);
