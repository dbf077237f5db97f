DROP TABLE IF EXISTS `transfers`;
