ALTER TABLE `users` DROP COLUMN `totp_last_step`;
ALTER TABLE `deposits` MODIFY `txid` VARCHAR(255) COLLATE utf8mb4_unicode_ci NOT NULL;
