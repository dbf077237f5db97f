ALTER TABLE `outbox`
  DROP PRIMARY KEY,
  MODIFY `seq` BIGINT UNSIGNED DEFAULT NULL COMMENT 'relay sequence, stamped before publish',
  ADD COLUMN `id` BIGINT UNSIGNED NOT NULL AUTO_INCREMENT FIRST,
  ADD PRIMARY KEY (`id`),
  ADD UNIQUE KEY `uk_seq` (`seq`),
  ADD COLUMN `sent_at` DATETIME(3) DEFAULT NULL AFTER `created_at`,
  ADD KEY `idx_unsent` (`sent_at`, `id`);
UPDATE `outbox` o JOIN `outbox_relay` r ON r.`id` = 1
  SET o.`sent_at` = CURRENT_TIMESTAMP(3) WHERE o.`seq` <= r.`published_seq`;
DROP TABLE IF EXISTS `outbox_relay`;
DROP TABLE IF EXISTS `outbox_seq`;
