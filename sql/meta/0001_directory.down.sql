DROP TABLE IF EXISTS `tcc_global`;
DROP TABLE IF EXISTS `symbols`;
DROP TABLE IF EXISTS `assets`;
DROP TABLE IF EXISTS `api_keys`;
DROP TABLE IF EXISTS `user_directory`;
