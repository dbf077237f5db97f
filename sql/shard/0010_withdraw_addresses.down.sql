DROP TABLE IF EXISTS `withdraw_addresses`;
