-- Wrong 2FA codes are counted; five in a row lock 2FA-protected actions for 15 minutes
-- (a 6-digit code would otherwise fall to guessing).
ALTER TABLE `users`
  ADD COLUMN `totp_failures` INT UNSIGNED NOT NULL DEFAULT 0 AFTER `totp_last_step`,
  ADD COLUMN `totp_locked_until` DATETIME(3) DEFAULT NULL AFTER `totp_failures`;
