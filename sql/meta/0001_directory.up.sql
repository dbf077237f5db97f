-- Meta schema: the user directory (dense ids), API keys, the symbol/asset mirror and
-- TCC global transactions. Lives in its own database (`exchange_meta`, on shard 0's
-- server by default).

CREATE TABLE `user_directory` (
  `id` BIGINT UNSIGNED NOT NULL AUTO_INCREMENT COMMENT 'dense user id; the user lives on shard id % shard_count',
  `email` VARCHAR(255) COLLATE utf8mb4_bin NOT NULL COMMENT 'lower-cased by the code; binary so jose@ and josé@ stay two users',
  `status` ENUM('active', 'suspended', 'closed') NOT NULL DEFAULT 'active',
  `created_at` DATETIME(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
  PRIMARY KEY (`id`),
  UNIQUE KEY `uk_email` (`email`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci COMMENT='email -> user_id';

CREATE TABLE `api_keys` (
  `api_key` CHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL COMMENT 'case-sensitive, like its cache key',
  `user_id` BIGINT UNSIGNED NOT NULL,
  `secret` VARCHAR(128) CHARACTER SET ascii COLLATE ascii_bin NOT NULL COMMENT 'HMAC secret (encrypt at rest in production)',
  `label` VARCHAR(64) NOT NULL DEFAULT '',
  `can_trade` BOOLEAN NOT NULL DEFAULT TRUE,
  `can_withdraw` BOOLEAN NOT NULL DEFAULT FALSE,
  `created_at` DATETIME(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
  `revoked_at` DATETIME(3) DEFAULT NULL,
  PRIMARY KEY (`api_key`),
  KEY `idx_user` (`user_id`, `created_at`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci COMMENT='api key -> user_id';

CREATE TABLE `assets` (
  `asset` VARCHAR(20) NOT NULL,
  `precision` TINYINT UNSIGNED NOT NULL COMMENT 'fraction digits shown and accepted',
  `withdraw_fee` DECIMAL(36, 18) NOT NULL DEFAULT 0,
  `min_withdraw` DECIMAL(36, 18) NOT NULL DEFAULT 0,
  `status` ENUM('enabled', 'disabled') NOT NULL DEFAULT 'enabled',
  `updated_at` DATETIME(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3) ON UPDATE CURRENT_TIMESTAMP(3),
  PRIMARY KEY (`asset`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci COMMENT='asset mirror';

CREATE TABLE `symbols` (
  `symbol` VARCHAR(20) NOT NULL,
  `base_asset` VARCHAR(20) NOT NULL,
  `quote_asset` VARCHAR(20) NOT NULL,
  `tick_size` DECIMAL(36, 18) NOT NULL,
  `step_size` DECIMAL(36, 18) NOT NULL,
  `min_qty` DECIMAL(36, 18) NOT NULL,
  `max_qty` DECIMAL(36, 18) NOT NULL,
  `min_notional` DECIMAL(36, 18) NOT NULL,
  `status` ENUM('trading', 'halt', 'break') NOT NULL DEFAULT 'trading',
  `updated_at` DATETIME(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3) ON UPDATE CURRENT_TIMESTAMP(3),
  PRIMARY KEY (`symbol`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci COMMENT='symbol mirror (filters)';

CREATE TABLE `tcc_global` (
  `gid` BIGINT UNSIGNED NOT NULL COMMENT 'snowflake transfer id',
  `kind` VARCHAR(32) NOT NULL,
  `status` ENUM('trying', 'confirming', 'confirmed', 'cancelling', 'cancelled') NOT NULL DEFAULT 'trying',
  `payload` JSON NOT NULL,
  `retries` INT UNSIGNED NOT NULL DEFAULT 0,
  `next_retry_at` DATETIME(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
  `created_at` DATETIME(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
  `updated_at` DATETIME(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3) ON UPDATE CURRENT_TIMESTAMP(3),
  PRIMARY KEY (`gid`),
  KEY `idx_status_retry` (`status`, `next_retry_at`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci COMMENT='TCC global transactions';
