DROP TABLE IF EXISTS `account_transactions`;
DROP TABLE IF EXISTS `account_balances`;
DROP TABLE IF EXISTS `users`;
