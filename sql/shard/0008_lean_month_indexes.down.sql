ALTER TABLE `orders_template`
  ADD KEY `idx_user_client` (`user_id`, `client_order_id`),
  ADD KEY `idx_created_at` (`created_at`);
ALTER TABLE `trades_template` ADD KEY `idx_created_at` (`created_at`);
