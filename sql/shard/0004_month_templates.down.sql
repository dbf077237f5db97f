-- Dropping the templates also drops the month tables made from them (their data goes
-- with them: archive first with the archiver if it matters).
SET SESSION group_concat_max_len = 1048576;
SET @month_tables = (
  SELECT GROUP_CONCAT(CONCAT('`', table_name, '`'))
  FROM information_schema.tables
  WHERE table_schema = DATABASE()
    AND table_name REGEXP BINARY '^(orders|trades)_[A-Z0-9]{2,20}_[0-9]{6}$'
);
SET @drop_sql = IF(@month_tables IS NULL, 'DO 0', CONCAT('DROP TABLE ', @month_tables));
PREPARE drop_month_tables FROM @drop_sql;
EXECUTE drop_month_tables;
DEALLOCATE PREPARE drop_month_tables;
DROP TABLE IF EXISTS `trades_template`;
DROP TABLE IF EXISTS `orders_template`;
