DROP TABLE IF EXISTS `tcc_branches`;
DROP TABLE IF EXISTS `outbox`;
