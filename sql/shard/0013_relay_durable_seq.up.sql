-- The relay's durability barrier: before it publishes rows up to seq S it commits
-- `durable_seq = S`. With innodb_flush_log_at_trx_commit = 1 that commit's redo flush
-- also covers every transaction committed before it, so no row is published before
-- its own commit is on disk (InnoDB makes a commit visible before its redo is flushed).
ALTER TABLE `outbox_relay`
  ADD COLUMN `durable_seq` BIGINT UNSIGNED NOT NULL DEFAULT 0
    COMMENT 'every outbox row up to this seq is durable (the relay committed after reading it)'
    AFTER `published_seq`;
UPDATE `outbox_relay` SET `durable_seq` = `published_seq`;
