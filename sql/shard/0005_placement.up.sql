-- Order placement: client order ids (idempotent retries) and the relay sequence on the
-- outbox.

-- newClientOrderId is unique per user across symbols and months; a retried request
-- finds its original order here instead of placing a second one.
CREATE TABLE `client_orders` (
  `user_id` BIGINT UNSIGNED NOT NULL,
  `client_order_id` VARCHAR(36) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
  `symbol` VARCHAR(20) NOT NULL,
  `order_id` BIGINT UNSIGNED NOT NULL,
  `created_at` DATETIME(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
  PRIMARY KEY (`user_id`, `client_order_id`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci COMMENT='client order id -> order';

-- The relay stamps `seq` (per shard, gap-free, in the order rows become visible)
-- before publishing; consumers drop a (shard, seq) at or below what they applied.
-- Auto-increment ids are not enough: they are assigned at insert, not at commit.
ALTER TABLE `outbox`
  ADD COLUMN `seq` BIGINT UNSIGNED DEFAULT NULL COMMENT 'relay sequence, stamped before publish' AFTER `id`,
  ADD UNIQUE KEY `uk_seq` (`seq`);
