//! Market data as stored in Redis, read and written through one typed layout: the key
//! names are [`crate::keys::Keys`]; the values are the formats below; [`MarketReader`]
//! reads what the engine's market-data role writes (depth, recent trades, klines,
//! ticker, last price), for the gateway's REST endpoints and streams.

use std::collections::BTreeMap;

use deadpool_redis::redis::AsyncCommands;
use domain::{Decimal, Price, Qty, Symbol};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::keys::{Book, Keys};
use crate::RouterError;

/// Kline intervals the market-data role keeps: name and length in ms (UTC-aligned
/// buckets). The writer (engine) and the readers (gateway) share this list.
pub const INTERVALS: [(&str, u64); 6] = [
    ("1m", 60_000),
    ("5m", 300_000),
    ("15m", 900_000),
    ("1h", 3_600_000),
    ("4h", 14_400_000),
    ("1d", 86_400_000),
];

/// A candle: open, high, low, close, base volume, quote volume, trade count (exact).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Candle {
    /// open.
    pub open: Decimal,
    /// high.
    pub high: Decimal,
    /// low.
    pub low: Decimal,
    /// close.
    pub close: Decimal,
    /// volume.
    pub volume: Decimal,
    /// quote_volume.
    pub quote_volume: Decimal,
    /// Trade count.
    pub trades: u64,
}

impl Candle {
    /// The candle of one trade.
    pub fn trade(price: Decimal, qty: Decimal, quote: Decimal) -> Self {
        Self {
            open: price,
            high: price,
            low: price,
            close: price,
            volume: qty,
            quote_volume: quote,
            trades: 1,
        }
    }

    /// `self` followed by `later`.
    pub fn merge(self, later: &Self) -> Option<Self> {
        Some(Self {
            open: self.open,
            high: self.high.max(later.high),
            low: self.low.min(later.low),
            close: later.close,
            volume: self.volume.checked_add(later.volume)?,
            quote_volume: self.quote_volume.checked_add(later.quote_volume)?,
            trades: self.trades.checked_add(later.trades)?,
        })
    }

    /// The stored text: `open,high,low,close,volume,quoteVolume,trades`, exact, trailing
    /// zeros dropped.
    pub fn render(&self) -> String {
        format!(
            "{},{},{},{},{},{},{}",
            self.open.normalize(),
            self.high.normalize(),
            self.low.normalize(),
            self.close.normalize(),
            self.volume.normalize(),
            self.quote_volume.normalize(),
            self.trades
        )
    }

    /// Binance's kline stream fields.
    pub fn json(&self, start: u64, ms: u64) -> serde_json::Value {
        json!({
            "t": start, "T": start + ms - 1,
            "o": self.open.normalize().to_string(), "h": self.high.normalize().to_string(),
            "l": self.low.normalize().to_string(), "c": self.close.normalize().to_string(),
            "v": self.volume.normalize().to_string(), "q": self.quote_volume.normalize().to_string(),
            "n": self.trades,
        })
    }

    /// Parses [`Candle::render`]'s text; `None` if it is not one.
    pub fn parse(s: &str) -> Option<Self> {
        let v: Vec<&str> = s.split(',').collect();
        let d = |i: usize| v.get(i).and_then(|x| Decimal::from_str_exact(x).ok());
        if v.len() != 7 {
            return None;
        }
        Some(Self {
            open: d(0)?,
            high: d(1)?,
            low: d(2)?,
            close: d(3)?,
            volume: d(4)?,
            quote_volume: d(5)?,
            trades: v[6].parse().ok()?,
        })
    }
}

/// One recent trade as stored (JSON in the `trades` list, newest first) and sent on
/// the market channel; Binance's field names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RecentTrade {
    /// The trade id.
    pub id: u64,
    /// Price (decimal text).
    pub price: String,
    /// Base quantity (decimal text).
    pub qty: String,
    /// Quote amount (decimal text).
    pub quote_qty: String,
    /// When the market-data role applied it, ms since the Unix epoch.
    pub time: u64,
    /// Whether the buyer was the resting order.
    pub is_buyer_maker: bool,
}

/// Reads market data written by the market-data role.
#[derive(Clone)]
pub struct MarketReader {
    redis: deadpool_redis::Pool,
    keys: Keys,
}

impl std::fmt::Debug for MarketReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MarketReader")
            .field("prefix", &self.keys.prefix())
            .finish_non_exhaustive()
    }
}

/// Price text → quantity text, as the quantity hashes hold them.
type Quantities = BTreeMap<String, String>;

/// A side of the book: (price, quantity), best first.
pub type Levels = Vec<(Price, Qty)>;

impl MarketReader {
    /// A reader of `redis` under `prefix` (the writer's prefix).
    pub fn new(redis: deadpool_redis::Pool, prefix: impl Into<String>) -> Self {
        Self {
            redis,
            keys: Keys::new(prefix),
        }
    }

    /// Redis answers `PING` (readiness).
    ///
    /// # Errors
    /// [`RouterError::Redis`] when it is unreachable or refuses.
    pub async fn ping(&self) -> Result<(), RouterError> {
        let mut conn = self.redis.get().await?;
        let _: String = deadpool_redis::redis::cmd("PING")
            .query_async(&mut *conn)
            .await?;
        Ok(())
    }

    /// The layout it reads.
    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    fn bad(what: &str, symbol: &Symbol) -> RouterError {
        RouterError::Redis(format!("market data of {symbol}: bad {what}"))
    }

    /// The best `limit` levels of each side and the matcher sequence they reflect
    /// (`lastUpdateId`), read in one `MULTI`/`EXEC` so they agree with each other.
    ///
    /// # Errors
    /// [`RouterError::Redis`] when Redis fails or a stored value does not parse.
    pub async fn depth(
        &self,
        symbol: &Symbol,
        limit: usize,
    ) -> Result<(u64, Levels, Levels), RouterError> {
        let mut conn = self.redis.get().await?;
        let stop = isize::try_from(limit.max(1)).unwrap_or(isize::MAX) - 1;
        type Read = (
            Option<u64>,
            Vec<String>,
            Vec<String>,
            Quantities,
            Quantities,
        );
        let (seq, bids, asks, bid_qty, ask_qty): Read = deadpool_redis::redis::pipe()
            .atomic()
            .get(self.keys.seq(symbol))
            .zrevrange(self.keys.book(symbol, Book::Bids), 0, stop)
            .zrange(self.keys.book(symbol, Book::Asks), 0, stop)
            .hgetall(self.keys.book_qty(symbol, Book::Bids))
            .hgetall(self.keys.book_qty(symbol, Book::Asks))
            .query_async(&mut *conn)
            .await?;
        let side =
            |prices: Vec<String>, qty: &BTreeMap<String, String>| -> Result<Levels, RouterError> {
                prices
                    .into_iter()
                    .map(|p| {
                        let q = qty
                            .get(&p)
                            .ok_or_else(|| Self::bad("depth quantity", symbol))?;
                        Ok((
                            p.parse().map_err(|_| Self::bad("depth price", symbol))?,
                            q.parse().map_err(|_| Self::bad("depth quantity", symbol))?,
                        ))
                    })
                    .collect()
            };
        Ok((
            seq.unwrap_or(0),
            side(bids, &bid_qty)?,
            side(asks, &ask_qty)?,
        ))
    }

    /// The newest `limit` trades (at most what is kept), newest first.
    ///
    /// # Errors
    /// [`RouterError::Redis`] when Redis fails or a stored trade does not parse.
    pub async fn recent_trades(
        &self,
        symbol: &Symbol,
        limit: usize,
    ) -> Result<Vec<RecentTrade>, RouterError> {
        let mut conn = self.redis.get().await?;
        let stop = isize::try_from(limit.max(1)).unwrap_or(isize::MAX) - 1;
        let raw: Vec<String> = conn.lrange(self.keys.trades(symbol), 0, stop).await?;
        raw.iter()
            .map(|t| serde_json::from_str(t).map_err(|_| Self::bad("trade", symbol)))
            .collect()
    }

    /// The candles of `interval` (`1m` … `1d`) with bucket start in `[from_ms, to_ms]`,
    /// oldest first.
    ///
    /// # Errors
    /// [`RouterError::Redis`] when Redis fails or a stored candle does not parse.
    pub async fn klines(
        &self,
        symbol: &Symbol,
        interval: &str,
        from_ms: u64,
        to_ms: u64,
    ) -> Result<Vec<(u64, Candle)>, RouterError> {
        let mut conn = self.redis.get().await?;
        let all: BTreeMap<u64, String> = conn.hgetall(self.keys.kline(symbol, interval)).await?;
        all.range(from_ms..=to_ms)
            .map(|(start, text)| {
                Candle::parse(text)
                    .map(|c| (*start, c))
                    .ok_or_else(|| Self::bad("kline", symbol))
            })
            .collect()
    }

    /// The 24 h rolling ticker (Binance's field names → decimal text), empty if the
    /// symbol never traded.
    ///
    /// # Errors
    /// [`RouterError::Redis`] when Redis fails.
    pub async fn ticker(&self, symbol: &Symbol) -> Result<BTreeMap<String, String>, RouterError> {
        let mut conn = self.redis.get().await?;
        Ok(conn.hgetall(self.keys.ticker(symbol)).await?)
    }

    /// The last trade price, if the symbol ever traded.
    ///
    /// # Errors
    /// [`RouterError::Redis`] when Redis fails or the price does not parse.
    pub async fn last_price(&self, symbol: &Symbol) -> Result<Option<Price>, RouterError> {
        let mut conn = self.redis.get().await?;
        let p: Option<String> = conn.get(self.keys.last_price(symbol)).await?;
        p.map(|p| p.parse().map_err(|_| Self::bad("last price", symbol)))
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_candle_round_trips_through_its_text_exactly() {
        let d = |s: &str| Decimal::from_str_exact(s).unwrap();
        let c = Candle::trade(d("50000.10"), d("0.0020"), d("100.0002"))
            .merge(&Candle::trade(d("49999"), d("1"), d("49999")))
            .unwrap();
        assert_eq!(c.render(), "50000.1,50000.1,49999,49999,1.002,50099.0002,2");
        assert_eq!(Candle::parse(&c.render()), Some(c));
        assert_eq!(Candle::parse("1,2,3"), None);
    }
}
