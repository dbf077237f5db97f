DELETE FROM `symbols` WHERE `symbol` IN ('BTCUSDT', 'ETHUSDT', 'ETHBTC');
DELETE FROM `assets` WHERE `asset` IN ('BTC', 'ETH', 'USDT');
ALTER TABLE `symbols` DROP COLUMN `market_band_bps`, DROP COLUMN `taker_fee_ppm`, DROP COLUMN `maker_fee_ppm`;
