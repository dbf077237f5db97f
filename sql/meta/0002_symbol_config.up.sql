-- Trading parameters the matcher needs, and the default market configuration
-- (assets and symbols; operators change rows, not code). tick x step must be a whole
-- number of quote atoms (ETHBTC: 0.00001 x 0.001 = 1e-8 BTC), so every fill is exact.

ALTER TABLE `symbols`
  ADD COLUMN `maker_fee_ppm` INT UNSIGNED NOT NULL DEFAULT 1000 COMMENT 'millionths: 1000 = 0.1 %' AFTER `min_notional`,
  ADD COLUMN `taker_fee_ppm` INT UNSIGNED NOT NULL DEFAULT 1000 AFTER `maker_fee_ppm`,
  ADD COLUMN `market_band_bps` INT UNSIGNED NOT NULL DEFAULT 500 COMMENT 'market orders never trade further than this from the last price' AFTER `taker_fee_ppm`;

INSERT IGNORE INTO `assets` (`asset`, `precision`, `withdraw_fee`, `min_withdraw`) VALUES
  ('BTC', 8, 0.0002, 0.001),
  ('ETH', 8, 0.002, 0.01),
  ('USDT', 8, 1, 10);

INSERT IGNORE INTO `symbols`
  (`symbol`, `base_asset`, `quote_asset`, `tick_size`, `step_size`, `min_qty`, `max_qty`, `min_notional`) VALUES
  ('BTCUSDT', 'BTC', 'USDT', 0.01, 0.00001, 0.00001, 9000, 5),
  ('ETHUSDT', 'ETH', 'USDT', 0.01, 0.0001, 0.0001, 9000, 5),
  ('ETHBTC', 'ETH', 'BTC', 0.00001, 0.001, 0.001, 100000, 0.0001);
