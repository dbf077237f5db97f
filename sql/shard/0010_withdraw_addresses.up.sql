-- Withdrawal address allowlist: a withdrawal may only go to an address the user
-- registered for that asset and chain.
CREATE TABLE `withdraw_addresses` (
  `user_id` BIGINT UNSIGNED NOT NULL,
  `currency` VARCHAR(20) NOT NULL,
  `chain` VARCHAR(20) NOT NULL,
  `address` VARCHAR(255) COLLATE utf8mb4_bin NOT NULL,
  `label` VARCHAR(100) DEFAULT NULL,
  `created_at` DATETIME(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
  PRIMARY KEY (`user_id`, `currency`, `chain`, `address`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci COMMENT='withdrawal address allowlist';
