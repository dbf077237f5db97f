DROP TABLE IF EXISTS `matcher_snapshots`;
