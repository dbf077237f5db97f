DROP TABLE IF EXISTS `applied_seq`;
