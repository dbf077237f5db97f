DROP TABLE IF EXISTS `parked_fills`;
