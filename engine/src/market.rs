//! Market data in Redis, from the matcher's `market` topic (trades and book deltas).
//!
//! Keys, all under the configured prefix (`ex:` by default), for symbol `SYM` — the one
//! place they are documented; their names come from `router::keys::Keys`, the layout the
//! readers share:
//! * `md:SYM:seq` — last matcher event applied (redeliveries at or below it are skipped);
//! * `md:SYM:bids`, `md:SYM:asks` — depth: sorted sets, member = price (decimal text),
//!   score = price in ticks; `md:SYM:bids:qty`, `md:SYM:asks:qty` — hashes price → qty;
//! * `md:SYM:trades` — the last 100 trades, newest first, JSON
//!   `{"id","price","qty","quoteQty","time","isBuyerMaker"}`;
//! * `md:SYM:last` — last trade price;
//! * `md:SYM:kline:{1m,5m,15m,1h,4h,1d}` — hashes, bucket start (ms, UTC) →
//!   `open,high,low,close,volume,quoteVolume,trades` (exact, trailing zeros dropped);
//! * `md:SYM:ticker` — the 24 h rolling ticker, a hash with Binance's field names
//!   (`openPrice`, `highPrice`, `lowPrice`, `lastPrice`, `priceChange`,
//!   `priceChangePercent`, `weightedAvgPrice`, `volume`, `quoteVolume`, `count`,
//!   `openTime`, `closeTime`), over the 1 440 one-minute buckets up to now: refreshed
//!   with every batch and once a second by [`MarketData::refresh_tickers`], so old
//!   trades leave the window even when nothing trades;
//! * channel `md:SYM` — a JSON message per applied batch
//!   `{"symbol","U","u","E","events":[...],"ticker":{...},"klines":{"1m":{...},...}}`,
//!   for the WebSocket streams: `U`..`u` the sequence range the batch moves the book
//!   through (the next message's `U` is this `u` + 1; `md:SYM:seq` = REST depth's
//!   `lastUpdateId` = the last applied `u`), `E` the time applied, `events` the trades
//!   (as in `md:SYM:trades`) and depth changes `{"depth":"bids"|"asks","price","qty"}`
//!   (`qty` "0" = level gone), `klines` only when the batch traded.
//!
//! Private events of users (order updates, balances) are published by the settlers on
//! channel `user:{user_id}` ([`crate::settle::UserStream`]).
//!
//! One writer per symbol (the market-data role): a batch's reads and its `MULTI`/`EXEC`
//! cannot interleave with another writer's. Times are this service's clock (the matcher
//! has none). `priceChangePercent` (3 places) and `weightedAvgPrice` (8 places) are
//! rounded half away from zero for display; every other figure is exact.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use deadpool_redis::redis::{self, AsyncCommands};
use domain::{Decimal, Side, Symbol};
use router::keys::{Book, Keys};
use router::marketdata::{Candle as Kline, RecentTrade};
use rust_decimal::RoundingStrategy;
use serde_json::json;

use matcher::{Event, SymbolSpec};

/// Trades kept in the recent-trades list.
pub const RECENT_TRADES: isize = 100;

pub use router::marketdata::INTERVALS;

const MINUTE_MS: u64 = 60_000;
const DAY_MS: u64 = 86_400_000;

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

/// A symbol's last 24 h of one-minute candles, for the rolling ticker.
#[derive(Debug, Clone, Default)]
struct Window {
    /// (minute start, candle), ascending.
    minutes: VecDeque<(u64, Kline)>,
    last: Option<Decimal>,
}

impl Window {
    /// Drops minutes that left the window ending at `now_ms`.
    fn prune(&mut self, now_ms: u64) {
        let first = window_start(now_ms);
        while self.minutes.front().is_some_and(|(m, _)| *m < first) {
            self.minutes.pop_front();
        }
    }

    fn put(&mut self, minute: u64, k: Kline) {
        match self.minutes.back_mut() {
            Some((m, slot)) if *m == minute => *slot = k,
            _ => self.minutes.push_back((minute, k)),
        }
    }

    /// The ticker over the window ending at `now_ms` (call [`Window::prune`] first).
    fn ticker(&self, symbol: &Symbol, now_ms: u64) -> Option<Vec<(&'static str, String)>> {
        let mut agg: Option<Kline> = None;
        for (_, k) in &self.minutes {
            agg = Some(match agg {
                None => *k,
                Some(a) => a.merge(k)?,
            });
        }
        let last = self.last.unwrap_or(Decimal::ZERO);
        let a = agg.unwrap_or(Kline {
            open: last,
            high: last,
            low: last,
            close: last,
            volume: Decimal::ZERO,
            quote_volume: Decimal::ZERO,
            trades: 0,
        });
        let change = a.close.checked_sub(a.open)?;
        let percent = if a.open.is_zero() {
            Decimal::ZERO
        } else {
            change
                .checked_mul(Decimal::ONE_HUNDRED)?
                .checked_div(a.open)?
                .round_dp_with_strategy(3, RoundingStrategy::MidpointAwayFromZero)
        };
        let weighted = if a.volume.is_zero() {
            Decimal::ZERO
        } else {
            a.quote_volume
                .checked_div(a.volume)?
                .round_dp_with_strategy(8, RoundingStrategy::MidpointAwayFromZero)
        };
        let d = |v: Decimal| v.normalize().to_string();
        Some(vec![
            ("symbol", symbol.to_string()),
            ("priceChange", d(change)),
            ("priceChangePercent", format!("{percent:.3}")),
            ("weightedAvgPrice", d(weighted)),
            ("openPrice", d(a.open)),
            ("highPrice", d(a.high)),
            ("lowPrice", d(a.low)),
            ("lastPrice", d(a.close)),
            ("volume", d(a.volume)),
            ("quoteVolume", d(a.quote_volume)),
            ("openTime", window_start(now_ms).to_string()),
            ("closeTime", now_ms.to_string()),
            ("count", a.trades.to_string()),
        ])
    }
}

/// The first minute of the 24 h window ending at `now_ms`.
fn window_start(now_ms: u64) -> u64 {
    (now_ms - now_ms % MINUTE_MS).saturating_sub(DAY_MS - MINUTE_MS)
}

/// Writes market data for the configured symbols.
#[derive(Clone)]
pub struct MarketData {
    redis: deadpool_redis::Pool,
    keys: Keys,
    specs: Arc<BTreeMap<Symbol, SymbolSpec>>,
    windows: Arc<Mutex<HashMap<Symbol, Window>>>,
}

impl std::fmt::Debug for MarketData {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MarketData")
            .field("prefix", &self.keys.prefix())
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
            keys: Keys::new(prefix),
            specs: Arc::new(specs),
            windows: Arc::default(),
        }
    }

    /// The key layout this writer uses (shared with the readers).
    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    fn window(&self, symbol: &Symbol) -> Option<Window> {
        self.windows
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(symbol)
            .cloned()
    }

    fn store_window(&self, symbol: Symbol, w: Window) {
        self.windows
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(symbol, w);
    }

    /// The symbol's 24 h window: from memory, or (first use by this process) from the
    /// 1m klines in Redis.
    async fn load_window(
        &self,
        conn: &mut deadpool_redis::Connection,
        symbol: &Symbol,
        now_ms: u64,
    ) -> Result<Window, MarketError> {
        if let Some(w) = self.window(symbol) {
            return Ok(w);
        }
        let first = window_start(now_ms);
        let minutes: Vec<u64> = (0..DAY_MS / MINUTE_MS)
            .map(|i| first + i * MINUTE_MS)
            .collect();
        let mut cmd = redis::cmd("HMGET");
        cmd.arg(self.keys.kline(symbol, "1m")).arg(&minutes);
        let found: Vec<Option<String>> = cmd.query_async(&mut **conn).await?;
        let last: Option<String> = conn.get(self.keys.last_price(symbol)).await?;
        let mut w = Window {
            minutes: VecDeque::new(),
            last: last.and_then(|s| Decimal::from_str_exact(&s).ok()),
        };
        for (m, k) in minutes.iter().zip(found) {
            if let Some(k) = k.as_deref().and_then(Kline::parse) {
                w.minutes.push_back((*m, k));
            }
        }
        Ok(w)
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
            .ok_or_else(|| MarketError::Bad(format!("unknown symbol {symbol}")))?
            .clone();
        self.apply_with(&spec, events, now_ms).await
    }

    /// [`MarketData::apply`] with the rules the events were matched under (what the
    /// matcher sends with them): ticks and lots are rendered on the matcher's grid
    /// even when meta's rules changed since this writer started.
    ///
    /// # Errors
    /// As [`MarketData::apply`].
    pub async fn apply_with(
        &self,
        spec: &SymbolSpec,
        events: &[Event],
        now_ms: u64,
    ) -> Result<usize, MarketError> {
        let symbol = &spec.symbol;
        let mut conn = self.redis.get().await?;
        let mark: Option<u64> = conn.get(self.keys.seq(symbol)).await?;
        let fresh: Vec<&Event> = events
            .iter()
            .filter(|e| e.seq() > mark.unwrap_or(0))
            .collect();
        let Some(last) = fresh.last() else {
            return Ok(0);
        };
        let mut window = self.load_window(&mut conn, symbol, now_ms).await?;
        // the current bucket of every interval
        let mut read = redis::pipe();
        for (name, ms) in INTERVALS {
            read.hget(self.keys.kline(symbol, name), now_ms - now_ms % ms);
        }
        let current: Vec<Option<String>> = read.query_async(&mut *conn).await?;
        let mut klines: Vec<Option<Kline>> = current
            .iter()
            .map(|c| c.as_deref().and_then(Kline::parse))
            .collect();
        let bad = |w: &str| MarketError::Bad(format!("{symbol}: {w}"));

        let mut pipe = redis::pipe();
        pipe.atomic();
        let mut published = Vec::new();
        let mut traded = false;
        for e in &fresh {
            match e {
                Event::BookDelta {
                    side, price, qty, ..
                } => {
                    let book = if *side == Side::Buy { "bids" } else { "asks" };
                    let p = spec.price(*price).ok_or_else(|| bad("price"))?.to_string();
                    let mut level_qty = "0".to_owned();
                    if qty.is_zero() {
                        pipe.zrem(self.keys.book(symbol, Book::of(*side)), &p)
                            .ignore();
                        pipe.hdel(self.keys.book_qty(symbol, Book::of(*side)), &p)
                            .ignore();
                    } else {
                        let q = spec.qty(*qty).ok_or_else(|| bad("qty"))?.to_string();
                        // ticks fit a double exactly below 2^53
                        #[allow(clippy::cast_precision_loss)]
                        let score = price.get() as f64;
                        pipe.zadd(self.keys.book(symbol, Book::of(*side)), &p, score)
                            .ignore();
                        pipe.hset(self.keys.book_qty(symbol, Book::of(*side)), &p, &q)
                            .ignore();
                        level_qty = q;
                    }
                    published.push(json!({"depth": book, "price": p, "qty": level_qty}));
                }
                Event::Trade { trade, .. } => {
                    let price = spec.price(trade.price).ok_or_else(|| bad("price"))?;
                    let qty = spec.qty(trade.qty).ok_or_else(|| bad("qty"))?;
                    let quote = spec
                        .quote_amount(trade.quote_atoms)
                        .ok_or_else(|| bad("notional"))?;
                    let t = serde_json::to_value(RecentTrade {
                        id: trade.trade_id,
                        price: price.to_string(),
                        qty: qty.to_string(),
                        quote_qty: quote.to_string(),
                        time: now_ms,
                        is_buyer_maker: trade.taker_side == Side::Sell,
                    })
                    .map_err(|e| bad(&e.to_string()))?;
                    pipe.lpush(self.keys.trades(symbol), t.to_string()).ignore();
                    pipe.set(self.keys.last_price(symbol), price.to_string())
                        .ignore();
                    let one = Kline::trade(price.get(), qty.get(), quote.get());
                    for k in &mut klines {
                        *k = Some(match k.take() {
                            None => one,
                            Some(k) => k.merge(&one).ok_or_else(|| bad("kline overflow"))?,
                        });
                    }
                    window.last = Some(price.get());
                    traded = true;
                    published.push(t);
                }
                _ => {}
            }
        }
        pipe.ltrim(self.keys.trades(symbol), 0, RECENT_TRADES - 1)
            .ignore();
        let mut kline_msg = serde_json::Map::new();
        if traded {
            for ((name, ms), k) in INTERVALS.iter().zip(&klines) {
                if let Some(k) = k {
                    let start = now_ms - now_ms % ms;
                    pipe.hset(self.keys.kline(symbol, name), start, k.render())
                        .ignore();
                    kline_msg.insert((*name).to_owned(), k.json(start, *ms));
                }
            }
            if let Some(k) = klines[0] {
                window.put(now_ms - now_ms % MINUTE_MS, k);
            }
        }
        window.prune(now_ms);
        let ticker = window
            .ticker(symbol, now_ms)
            .ok_or_else(|| bad("ticker overflow"))?;
        pipe.hset_multiple(self.keys.ticker(symbol), &ticker)
            .ignore();
        pipe.set(self.keys.seq(symbol), last.seq()).ignore();
        let () = pipe.query_async(&mut *conn).await?;
        self.store_window(*symbol, window);
        // `U`..`u`: the sequence range this message moves the book through; the next
        // message's `U` is this one's `u` + 1, and REST depth's `lastUpdateId` is the
        // `u` of the last message its book reflects (Binance's diff-stream contract)
        let mut msg = json!({
            "symbol": symbol.as_str(),
            "U": mark.unwrap_or(0) + 1,
            "u": last.seq(),
            "E": now_ms,
            "events": published,
            "ticker": ticker
                .iter()
                .map(|(k, v)| ((*k).to_owned(), serde_json::Value::String(v.clone())))
                .collect::<serde_json::Map<_, _>>(),
        });
        if traded {
            msg["klines"] = serde_json::Value::Object(kline_msg);
        }
        let _: i64 = conn
            .publish(self.keys.market_channel(symbol), msg.to_string())
            .await?;
        Ok(fresh.len())
    }

    /// Rewrites the ticker of every symbol this process has seen, so trades older than
    /// 24 h leave it even when nothing trades. Call it about once a second.
    ///
    /// # Errors
    /// Redis errors (the next call tries again).
    pub async fn refresh_tickers(&self, now_ms: u64) -> Result<(), MarketError> {
        let symbols: Vec<Symbol> = self
            .windows
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .keys()
            .copied()
            .collect();
        if symbols.is_empty() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        for symbol in symbols {
            let Some(mut w) = self.window(&symbol) else {
                continue;
            };
            w.prune(now_ms);
            if let Some(t) = w.ticker(&symbol, now_ms) {
                pipe.hset_multiple(self.keys.ticker(&symbol), &t).ignore();
            }
            self.store_window(symbol, w);
        }
        let mut conn = self.redis.get().await?;
        let () = pipe.query_async(&mut *conn).await?;
        Ok(())
    }
}
