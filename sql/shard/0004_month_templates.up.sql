-- Templates for the symbol/month tables. `shardctl ensure-tables` creates
-- `orders_{SYMBOL}_{YYYYMM}` / `trades_{SYMBOL}_{YYYYMM}` with CREATE TABLE ... LIKE
-- these, ahead of time, for whitelisted symbols only. Never lazily in an order
-- transaction.

CREATE TABLE `orders_template` (
  `order_id` BIGINT UNSIGNED NOT NULL COMMENT 'snowflake; its timestamp names this table''s month',
  `client_order_id` VARCHAR(36) DEFAULT NULL,
  `user_id` BIGINT UNSIGNED NOT NULL,
  `symbol` VARCHAR(20) NOT NULL,
  `side` ENUM('buy', 'sell') NOT NULL,
  `type` ENUM('limit', 'market', 'stop_loss', 'stop_loss_limit', 'take_profit', 'take_profit_limit', 'limit_maker') NOT NULL,
  `time_in_force` ENUM('gtc', 'ioc', 'fok') NOT NULL DEFAULT 'gtc',
  `price` DECIMAL(36, 18) DEFAULT NULL,
  `quantity` DECIMAL(36, 18) DEFAULT NULL COMMENT 'base quantity (NULL for market-by-quote)',
  `quote_quantity` DECIMAL(36, 18) DEFAULT NULL COMMENT 'quoteOrderQty for market-by-quote',
  `stop_price` DECIMAL(36, 18) DEFAULT NULL,
  `frozen_currency` VARCHAR(20) NOT NULL,
  `frozen_amount` DECIMAL(36, 18) NOT NULL COMMENT 'frozen at placement; released by fills/cancel',
  `filled_quantity` DECIMAL(36, 18) NOT NULL DEFAULT 0,
  `filled_amount` DECIMAL(36, 18) NOT NULL DEFAULT 0 COMMENT 'quote amount filled',
  `avg_price` DECIMAL(36, 18) DEFAULT NULL,
  `fee` DECIMAL(36, 18) NOT NULL DEFAULT 0,
  `fee_currency` VARCHAR(20) DEFAULT NULL,
  `status` ENUM('new', 'partially_filled', 'filled', 'canceled', 'pending_cancel', 'rejected', 'expired') NOT NULL DEFAULT 'new',
  `created_at` DATETIME(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
  `updated_at` DATETIME(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3) ON UPDATE CURRENT_TIMESTAMP(3),
  `filled_at` DATETIME(3) DEFAULT NULL,
  PRIMARY KEY (`order_id`),
  KEY `idx_user_status` (`user_id`, `status`, `created_at`),
  KEY `idx_user_created` (`user_id`, `created_at`, `order_id`),
  KEY `idx_user_client` (`user_id`, `client_order_id`),
  KEY `idx_status_created` (`status`, `created_at`),
  KEY `idx_created_at` (`created_at`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci COMMENT='template of orders_{SYMBOL}_{YYYYMM}';

-- One row per side of a trade that lives on this shard: a trade between users on two
-- shards is two rows on two shards. (trade_id, side) unique = settlement idempotency.
CREATE TABLE `trades_template` (
  `trade_id` BIGINT UNSIGNED NOT NULL COMMENT 'per-symbol matcher sequence',
  `side` ENUM('buy', 'sell') NOT NULL COMMENT 'the side of this row''s user',
  `symbol` VARCHAR(20) NOT NULL,
  `order_id` BIGINT UNSIGNED NOT NULL,
  `user_id` BIGINT UNSIGNED NOT NULL,
  `counter_order_id` BIGINT UNSIGNED NOT NULL,
  `counter_user_id` BIGINT UNSIGNED NOT NULL,
  `price` DECIMAL(36, 18) NOT NULL,
  `quantity` DECIMAL(36, 18) NOT NULL,
  `amount` DECIMAL(36, 18) NOT NULL COMMENT 'price * quantity (quote)',
  `is_maker` BOOLEAN NOT NULL,
  `fee` DECIMAL(36, 18) NOT NULL,
  `fee_currency` VARCHAR(20) NOT NULL,
  `seq` BIGINT UNSIGNED NOT NULL COMMENT 'matcher event sequence of the symbol',
  `created_at` DATETIME(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
  PRIMARY KEY (`trade_id`, `side`),
  KEY `idx_user_created` (`user_id`, `created_at`),
  KEY `idx_order` (`order_id`),
  KEY `idx_created_at` (`created_at`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci COMMENT='template of trades_{SYMBOL}_{YYYYMM}';
