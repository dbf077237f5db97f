-- Deposit txids compare byte for byte, like meta `deposit_txids`: with the default
-- case-insensitive collation `0xAB…` and `0xab…` were one key on a shard but two in
-- meta, so one chain transfer could be recorded for two users. (Chain scanners report
-- hex txids in one case; base58 txids are case-sensitive by nature.)
ALTER TABLE `deposits` MODIFY `txid` VARCHAR(255) COLLATE utf8mb4_bin NOT NULL;
-- one-time TOTP codes: the last 30 s step accepted, so a code cannot be replayed
ALTER TABLE `users` ADD COLUMN `totp_last_step` BIGINT UNSIGNED NOT NULL DEFAULT 0 AFTER `is_2fa_enabled`;
