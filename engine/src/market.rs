//! Market data in Redis, from the matcher's `market` topic (trades and book deltas).
//!
//! Keys, all under the configured prefix (`ex:` by default), for symbol `SYM`:
//! * `md:SYM:seq` — last matcher event applied (redeliveries at or below it are skipped);
//! * `md:SYM:bids`, `md:SYM:asks` — depth: sorted sets, member = price (decimal text),
//!   score = price in ticks; `md:SYM:bids:qty`, `md:SYM:asks:qty` — hashes price → qty;
//! * `md:SYM:trades` — the last 100 trades, newest first, JSON
//!   `{"id","price","qty","quoteQty","time","isBuyerMaker"}`;
//! * `md:SYM:last` — last trade price;
//! * `md:SYM:kline:1m` — hash, minute start (ms) → `open,high,low,close,volume`;
//! * channel `md:SYM` — a JSON message per applied batch, for WebSocket streams.
//!
//! One writer per symbol (the market-data role): a batch's reads and its `MULTI`/`EXEC`
//! cannot interleave with another writer's. Times are this service's clock (the matcher
//! has none).

use std::collections::BTreeMap;
use std::sync::Arc;

use deadpool_redis::redis::{self, AsyncCommands};
use domain::{Side, Symbol};
use serde_json::json;

use crate::matcher::{Event, SymbolSpec};

/// Trades kept in the recent-trades list.
pub const RECENT_TRADES: isize = 100;

/// Market data errors.
#[derive(Debug, thiserror::Error)]
pub enum MarketError {
    /// Redis.
    #[error("redis: {0}")]
    Redis(String),
    /// An event that cannot be rendered (unknown symbol, out-of-range value).
    #[error("bad event: {0}")]
    Bad(String),
}

impl From<redis::RedisError> for MarketError {
    fn from(e: redis::RedisError) -> Self {
        Self::Redis(e.to_string())
    }
}

impl From<deadpool_redis::PoolError> for MarketError {
    fn from(e: deadpool_redis::PoolError) -> Self {
        Self::Redis(e.to_string())
    }
}

/// Writes market data for the configured symbols.
#[derive(Clone)]
pub struct MarketData {
    redis: deadpool_redis::Pool,
    prefix: String,
    specs: Arc<BTreeMap<Symbol, SymbolSpec>>,
}

impl std::fmt::Debug for MarketData {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MarketData")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl MarketData {
    /// Market data in `redis` under `prefix`.
    pub fn new(
        redis: deadpool_redis::Pool,
        prefix: impl Into<String>,
        specs: BTreeMap<Symbol, SymbolSpec>,
    ) -> Self {
        Self {
            redis,
            prefix: prefix.into(),
            specs: Arc::new(specs),
        }
    }

    /// The key of `what` for `symbol`.
    pub fn key(&self, symbol: &Symbol, what: &str) -> String {
        if what.is_empty() {
            format!("{}md:{symbol}", self.prefix)
        } else {
            format!("{}md:{symbol}:{what}", self.prefix)
        }
    }

    /// Applies a symbol's events (in seq order) at `now_ms`; returns how many were new.
    ///
    /// # Errors
    /// Redis errors (nothing of the batch was written) or an unrenderable event.
    pub async fn apply(
        &self,
        symbol: &Symbol,
        events: &[Event],
        now_ms: u64,
    ) -> Result<usize, MarketError> {
        let spec = self
            .specs
            .get(symbol)
            .ok_or_else(|| MarketError::Bad(format!("unknown symbol {symbol}")))?;
        let mut conn = self.redis.get().await?;
        let mark: Option<u64> = conn.get(self.key(symbol, "seq")).await?;
        let fresh: Vec<&Event> = events
            .iter()
            .filter(|e| e.seq() > mark.unwrap_or(0))
            .collect();
        let Some(last) = fresh.last() else {
            return Ok(0);
        };
        let minute = now_ms - now_ms % 60_000;
        let kline_key = self.key(symbol, "kline:1m");
        let current: Option<String> = conn.hget(&kline_key, minute).await?;
        let mut kline = current.and_then(|s| Kline::parse(&s));
        let bad = |w: &str| MarketError::Bad(format!("{symbol}: {w}"));

        let mut pipe = redis::pipe();
        pipe.atomic();
        let mut published = Vec::new();
        for e in &fresh {
            match e {
                Event::BookDelta {
                    side, price, qty, ..
                } => {
                    let book = if *side == Side::Buy { "bids" } else { "asks" };
                    let p = spec.price(*price).ok_or_else(|| bad("price"))?.to_string();
                    if *qty == 0 {
                        pipe.zrem(self.key(symbol, book), &p).ignore();
                        pipe.hdel(self.key(symbol, &format!("{book}:qty")), &p)
                            .ignore();
                    } else {
                        let q = spec.qty(*qty).ok_or_else(|| bad("qty"))?.to_string();
                        // ticks fit a double exactly below 2^53
                        #[allow(clippy::cast_precision_loss)]
                        let score = *price as f64;
                        pipe.zadd(self.key(symbol, book), &p, score).ignore();
                        pipe.hset(self.key(symbol, &format!("{book}:qty")), &p, q)
                            .ignore();
                    }
                    published.push(json!({"depth": book, "price": p}));
                }
                Event::Trade { trade, .. } => {
                    let price = spec.price(trade.price).ok_or_else(|| bad("price"))?;
                    let qty = spec.qty(trade.qty).ok_or_else(|| bad("qty"))?;
                    let quote = spec
                        .quote_amount(trade.quote_atoms)
                        .ok_or_else(|| bad("notional"))?;
                    let t = json!({
                        "id": trade.trade_id,
                        "price": price.to_string(),
                        "qty": qty.to_string(),
                        "quoteQty": quote.to_string(),
                        "time": now_ms,
                        "isBuyerMaker": trade.taker_side == Side::Sell,
                    });
                    pipe.lpush(self.key(symbol, "trades"), t.to_string())
                        .ignore();
                    pipe.set(self.key(symbol, "last"), price.to_string())
                        .ignore();
                    kline = Some(match kline {
                        None => Kline::open(price.get(), qty.get()),
                        Some(k) => k
                            .with(price.get(), qty.get())
                            .ok_or_else(|| bad("kline volume overflow"))?,
                    });
                    published.push(t);
                }
                _ => {}
            }
        }
        pipe.ltrim(self.key(symbol, "trades"), 0, RECENT_TRADES - 1)
            .ignore();
        if let Some(k) = &kline {
            pipe.hset(&kline_key, minute, k.render()).ignore();
        }
        pipe.set(self.key(symbol, "seq"), last.seq()).ignore();
        let () = pipe.query_async(&mut *conn).await?;
        let _: i64 = conn
            .publish(
                self.key(symbol, ""),
                json!({"symbol": symbol.as_str(), "events": published}).to_string(),
            )
            .await?;
        Ok(fresh.len())
    }
}

/// A candle: open, high, low, close, volume (exact decimals).
#[derive(Debug, Clone, Copy, PartialEq)]
struct Kline {
    open: domain::Decimal,
    high: domain::Decimal,
    low: domain::Decimal,
    close: domain::Decimal,
    volume: domain::Decimal,
}

impl Kline {
    fn open(price: domain::Decimal, qty: domain::Decimal) -> Self {
        Self {
            open: price,
            high: price,
            low: price,
            close: price,
            volume: qty,
        }
    }

    fn with(self, price: domain::Decimal, qty: domain::Decimal) -> Option<Self> {
        Some(Self {
            high: self.high.max(price),
            low: self.low.min(price),
            close: price,
            volume: self.volume.checked_add(qty)?,
            ..self
        })
    }

    fn render(&self) -> String {
        format!(
            "{},{},{},{},{}",
            self.open, self.high, self.low, self.close, self.volume
        )
    }

    fn parse(s: &str) -> Option<Self> {
        let mut it = s
            .split(',')
            .map(|v| domain::Decimal::from_str_exact(v).ok());
        Some(Self {
            open: it.next()??,
            high: it.next()??,
            low: it.next()??,
            close: it.next()??,
            volume: it.next()??,
        })
    }
}
