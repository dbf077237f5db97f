//! The matcher: a pure, synchronous state machine for one symbol. No I/O, no clock,
//! no randomness: the same command sequence always yields byte-identical events,
//! ids included.
//!
//! # Matching rules
//! * **Price-time priority, FIFO at the same price.** An incoming order (the taker)
//!   trades against the best opposite price first; within a price level, the order
//!   that arrived first trades first. Every fill is at the resting (maker) order's price,
//!   so a taker with a better limit gets the price improvement.
//! * Prices and quantities are integers, each its own type: [`Ticks`] of `tick_size`
//!   and [`Lots`] of `step_size` (newtypes over `u64`, so one cannot stand in for the
//!   other); decimals are converted exactly at the boundary or rejected, never rounded.
//! * **LIMIT** trades while the opposite best price is at or better than its limit; the
//!   rest depends on time in force: **GTC** rests, **IOC** expires, **FOK** is checked
//!   against the book *before* anything trades and either fills completely or expires
//!   with no trade.
//! * **LIMIT_MAKER** (post-only) is rejected if it would trade at once.
//! * **MARKET** by base quantity, or by quote amount (`quoteOrderQty`: as many whole lots
//!   as the amount buys/sells at each level). It never trades beyond the **price band**
//!   `market_band_bps` from the reference price (the last trade price, or the best
//!   opposite price if the symbol never traded); what is left expires (`PRICE_BAND`,
//!   `NO_LIQUIDITY`, or `QUOTE_EXHAUSTED` when the rest cannot buy one lot).
//! * **Stops** (STOP_LOSS, STOP_LOSS_LIMIT, TAKE_PROFIT, TAKE_PROFIT_LIMIT) wait until
//!   the last trade price reaches the stop price: STOP_LOSS buys trigger at `last >= stop`,
//!   sells at `last <= stop`; TAKE_PROFIT the other way round. A stop whose condition
//!   already holds when placed is rejected (`WOULD_TRIGGER_IMMEDIATELY`). After each
//!   command, every triggered stop fires in order of arrival (its order sequence), then
//!   triggers are checked again, until none fires.
//! * **Self-trade prevention** uses the taker's mode when the resting order at the front
//!   belongs to the same user: `EXPIRE_TAKER` expires the taker's rest, `EXPIRE_MAKER`
//!   cancels the resting order and goes on, `EXPIRE_BOTH` does both, `NONE` trades.
//! * **Cancel** removes an open order (resting or waiting stop) of the same user;
//!   **amend** lowers the remaining quantity and keeps the order's place in the queue;
//!   anything else is a clean `UNKNOWN_ORDER` / `AMEND_NOT_LOWER` reject.
//! * **Fees** are charged per fill in the asset each side receives (buyer: base,
//!   seller: quote) at the maker or taker rate, rounded **up** to a whole atom of that
//!   asset (in the exchange's favour); the event carries the exact atoms, so
//!   `received - fee` is what the user's ledger gets, to the unit.
//! * **Ids and sequences**: every event carries the next per-symbol `seq` (from 1,
//!   without gaps); trade ids are a per-symbol sequence. Redelivered inputs are dropped
//!   silently by their source sequence ([`Matcher::apply_sourced`]); an order id that is
//!   resting, or was seen within a bounded window, is rejected as `DUPLICATE_ORDER_ID`,
//!   which the settlers treat as a no-op.
//! * **Snapshot**: [`Matcher::snapshot`] serializes the whole state; restoring it and
//!   replaying the rest of the input yields exactly the events of an uninterrupted run.

mod book;
mod spec;
mod types;
mod units;
pub mod wire;

use std::collections::BTreeMap;

use domain::{OrderId, OrderType, Side, TimeInForce, UserId};
use rustc_hash::{FxHashMap, FxHashSet};
use serde::{Deserialize, Serialize};

use book::{Book, Resting};
pub use spec::{SpecError, SpecParams, SymbolSpec};
pub use types::{
    CancelReason, Command, Event, ExpireReason, NewOrder, RejectReason, StpMode, Trade,
};
pub use units::{Lots, Ticks};

/// Default size of the duplicate-order-id window: at least the last 4,096 order ids (up
/// to twice that), small enough to stay in cache. Redelivered inputs are dropped exactly
/// by their source sequence ([`Matcher::apply_sourced`]); this window is the backstop
/// that turns a repeated order id into a `DUPLICATE_ORDER_ID` reject.
pub const DEFAULT_DEDUP_WINDOW: usize = 1 << 12;

/// The recently seen order ids, in two generations of `window` ids each: when the
/// current one is full the older one is dropped whole. No per-id eviction, no
/// tombstones, no rehash on the hot path (both sets are allocated up front).
#[derive(Debug, Clone)]
struct Dedup {
    cur: FxHashSet<OrderId>,
    prev: FxHashSet<OrderId>,
    window: usize,
}

impl Dedup {
    fn new(window: usize) -> Self {
        let window = window.max(1);
        Self {
            cur: FxHashSet::with_capacity_and_hasher(window, Default::default()),
            prev: FxHashSet::with_capacity_and_hasher(window, Default::default()),
            window,
        }
    }

    /// Records `id`; `false` if it was seen within the window.
    #[inline]
    fn insert(&mut self, id: OrderId) -> bool {
        if self.cur.contains(&id) || self.prev.contains(&id) {
            return false;
        }
        if self.cur.len() >= self.window {
            std::mem::swap(&mut self.cur, &mut self.prev);
            self.cur.clear();
        }
        self.cur.insert(id)
    }

    /// (older generation, current generation), each sorted: deterministic bytes.
    fn to_lists(&self) -> (Vec<OrderId>, Vec<OrderId>) {
        let sorted = |s: &FxHashSet<OrderId>| {
            let mut v: Vec<OrderId> = s.iter().copied().collect();
            v.sort_unstable();
            v
        };
        (sorted(&self.prev), sorted(&self.cur))
    }
}

/// How a validated order executes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
enum Exec {
    Limit {
        price: Ticks,
        qty: Lots,
        tif: TimeInForce,
        post_only: bool,
    },
    Market {
        qty: Lots,
    },
    MarketQuote {
        quote: u128,
    },
    /// A market buy of `qty` lots spending at most `quote` atoms (the hold placement
    /// froze for it), or a market sell for `quote` atoms selling at most `qty` lots
    /// (its hold): it stops at whichever runs out first.
    MarketCapped {
        qty: Lots,
        quote: u128,
    },
}

/// A validated order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct Order {
    order_id: OrderId,
    user_id: UserId,
    side: Side,
    stp: StpMode,
    exec: Exec,
}

/// A stop order waiting for its trigger.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct Stop {
    order: Order,
    stop: Ticks,
    /// Fires when `last >= stop` (else when `last <= stop`).
    rising: bool,
    seq: u64,
}

/// What is left of a taker.
#[derive(Debug, Clone, Copy)]
enum Left {
    Lots(Lots),
    Quote(u128),
    /// Lots still wanted, quote atoms still allowed.
    Capped(Lots, u128),
}

impl Left {
    fn is_done(self) -> bool {
        matches!(
            self,
            Left::Lots(Lots::ZERO) | Left::Quote(0) | Left::Capped(Lots::ZERO, _)
        )
    }
}

/// Why a taker stopped matching.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    Filled,
    NoCross,
    NoLiquidity,
    Band,
    QuoteExhausted,
    Stp,
}

/// Why a snapshot cannot be restored.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// Not a snapshot, or a corrupt one.
    #[error("snapshot decode: {0}")]
    Decode(String),
    /// A snapshot of a version this build does not read.
    #[error("snapshot version {0} is not supported")]
    Version(u32),
}

/// Why new rules cannot be put in force on a book ([`Matcher::respec`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RespecError {
    /// The spec is for another symbol.
    #[error("the rules are for another symbol")]
    OtherSymbol,
    /// A grid change while orders rest or stops wait on the old grid.
    #[error("the grid changes while {open} orders are open on the old one")]
    BookNotEmpty {
        /// Resting orders and waiting stops.
        open: usize,
    },
}

#[derive(Debug, Serialize, Deserialize)]
struct SnapshotV1 {
    version: u32,
    spec: SymbolSpec,
    bids: Vec<Resting>,
    asks: Vec<Resting>,
    stops: Vec<Stop>,
    last_price: Option<Ticks>,
    seq: u64,
    trade_seq: u64,
    order_seq: u64,
    seen_prev: Vec<OrderId>,
    seen_cur: Vec<OrderId>,
    dedup_window: usize,
    sources: BTreeMap<u32, u64>,
}

/// One symbol's matcher. Owned by exactly one thread; feed it commands in input order.
#[derive(Debug, Clone)]
pub struct Matcher {
    spec: SymbolSpec,
    book: Book,
    stops: BTreeMap<(Ticks, u64), Stop>,
    stops_falling: BTreeMap<(Ticks, u64), Stop>,
    stop_index: FxHashMap<OrderId, (bool, Ticks, u64)>,
    last_price: Option<Ticks>,
    seq: u64,
    trade_seq: u64,
    order_seq: u64,
    seen: Dedup,
    /// Highest input sequence applied per source (e.g. per shard's outbox relay).
    sources: BTreeMap<u32, u64>,
}

impl Matcher {
    /// An empty book for `spec`.
    pub fn new(spec: SymbolSpec) -> Self {
        Self::with_dedup_window(spec, DEFAULT_DEDUP_WINDOW)
    }

    /// An empty book remembering the last `window` order ids for duplicate detection.
    pub fn with_dedup_window(spec: SymbolSpec, window: usize) -> Self {
        Self {
            spec,
            book: Book::default(),
            stops: BTreeMap::new(),
            stops_falling: BTreeMap::new(),
            stop_index: FxHashMap::default(),
            last_price: None,
            seq: 0,
            trade_seq: 0,
            order_seq: 0,
            seen: Dedup::new(window),
            sources: BTreeMap::new(),
        }
    }

    /// The symbol's rules.
    pub fn spec(&self) -> &SymbolSpec {
        &self.spec
    }

    /// Best bid (price, total lots).
    pub fn best_bid(&self) -> Option<(Ticks, Lots)> {
        self.book.best(Side::Buy)
    }

    /// Best ask (price, total lots).
    pub fn best_ask(&self) -> Option<(Ticks, Lots)> {
        self.book.best(Side::Sell)
    }

    /// Last trade price.
    pub fn last_price(&self) -> Option<Ticks> {
        self.last_price
    }

    /// Levels of a side, best first: (price, total lots).
    pub fn depth(&self, side: Side) -> Vec<(Ticks, Lots)> {
        self.book.levels(side)
    }

    /// Remaining lots of a resting order.
    pub fn resting(&self, order_id: OrderId) -> Option<Lots> {
        self.book.get(order_id).map(|o| o.remaining)
    }

    /// Resting orders of a side in priority order: (order id, user, price, remaining).
    pub fn orders(&self, side: Side) -> Vec<(OrderId, UserId, Ticks, Lots)> {
        self.book
            .orders(side)
            .into_iter()
            .map(|o| (o.order_id, o.user_id, o.price, o.remaining))
            .collect()
    }

    /// Puts `spec` in force from the next command on. A spec on the same grid
    /// ([`SymbolSpec::same_grid`]: a fee or market band change) applies at once, as a
    /// fee is computed per trade; a grid change (tick, step, precisions) only on an
    /// empty book — no resting order and no waiting stop counts lots or ticks on the
    /// old grid then. The last price is carried over when it lies on the new tick
    /// grid, and forgotten otherwise (it is a reference, not money).
    ///
    /// # Errors
    /// [`RespecError`]; the matcher is unchanged then.
    pub fn respec(&mut self, spec: SymbolSpec) -> Result<(), RespecError> {
        if spec.symbol != self.spec.symbol {
            return Err(RespecError::OtherSymbol);
        }
        if spec.same_grid(&self.spec) {
            self.spec = spec;
            return Ok(());
        }
        let open = self.open_orders();
        if open > 0 {
            return Err(RespecError::BookNotEmpty { open });
        }
        self.last_price = self
            .last_price
            .and_then(|t| self.spec.price(t))
            .and_then(|p| spec.ticks(p).ok());
        self.spec = spec;
        Ok(())
    }

    /// Every open order — resting, then waiting stops — as (order, owner, side,
    /// remaining base quantity; `None` for a stop that buys by quote amount), by order
    /// id: what the matcher-vs-database audit compares with the order tables.
    pub fn open_order_list(&self) -> Vec<(OrderId, UserId, Side, Option<domain::Qty>)> {
        let mut v: Vec<_> = [Side::Buy, Side::Sell]
            .into_iter()
            .flat_map(|side| self.book.orders(side))
            .map(|o| (o.order_id, o.user_id, o.side, self.spec.qty(o.remaining)))
            .collect();
        v.extend(
            self.stops
                .values()
                .chain(self.stops_falling.values())
                .map(|s| {
                    let qty = match s.order.exec {
                        Exec::Limit { qty, .. } | Exec::Market { qty } => self.spec.qty(qty),
                        Exec::MarketCapped { qty, .. } => self.spec.qty(qty),
                        Exec::MarketQuote { .. } => None,
                    };
                    (s.order.order_id, s.order.user_id, s.order.side, qty)
                }),
        );
        v.sort_unstable_by_key(|o| o.0);
        v
    }

    /// Highest input sequence applied per source (a shard's outbox seq).
    pub fn source_marks(&self) -> &BTreeMap<u32, u64> {
        &self.sources
    }

    /// Number of resting orders and waiting stops.
    pub fn open_orders(&self) -> usize {
        self.book.len() + self.stop_index.len()
    }

    /// Sequence of the last event emitted.
    pub fn last_seq(&self) -> u64 {
        self.seq
    }

    /// Applies a command that `source` numbered `seq` (strictly increasing per source,
    /// as a shard's outbox relay publishes its rows in id order). A command at or below
    /// the source's high-water mark is a redelivery: it is dropped without any event
    /// and `false` is returned. The marks are part of the snapshot, so a replay from a
    /// snapshot drops exactly what the original run dropped.
    pub fn apply_sourced(
        &mut self,
        source: u32,
        seq: u64,
        cmd: &Command,
        out: &mut Vec<Event>,
    ) -> bool {
        let mark = self.sources.entry(source).or_insert(0);
        if seq <= *mark {
            return false;
        }
        *mark = seq;
        self.apply(cmd, out);
        true
    }

    /// Highest sequence applied from `source` (0 if none).
    pub fn source_mark(&self, source: u32) -> u64 {
        self.sources.get(&source).copied().unwrap_or(0)
    }

    /// Applies one command, appending its events to `out`.
    pub fn apply(&mut self, cmd: &Command, out: &mut Vec<Event>) {
        match cmd {
            Command::Place(n) => self.place(n, out),
            Command::Cancel { order_id, user_id } => {
                if !self.cancel(*order_id, *user_id, CancelReason::User, out) {
                    self.reject(*order_id, *user_id, RejectReason::UnknownOrder, out);
                }
            }
            Command::Amend {
                order_id,
                user_id,
                new_qty,
            } => self.amend(*order_id, *user_id, *new_qty, out),
            Command::CancelReplace {
                cancel_order_id,
                new,
            } => {
                if self.cancel(*cancel_order_id, new.user_id, CancelReason::Replaced, out) {
                    self.place(new, out);
                } else {
                    self.reject(
                        *cancel_order_id,
                        new.user_id,
                        RejectReason::UnknownOrder,
                        out,
                    );
                    if self.remember(new.order_id) {
                        self.reject(new.order_id, new.user_id, RejectReason::UnknownOrder, out);
                    } else {
                        self.reject(
                            new.order_id,
                            new.user_id,
                            RejectReason::DuplicateOrderId,
                            out,
                        );
                    }
                }
            }
            Command::TriggerCheck => self.run_triggers(out),
        }
    }

    #[inline]
    fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    /// Appends the event built from the next sequence number.
    #[inline]
    fn emit(&mut self, out: &mut Vec<Event>, event: impl FnOnce(u64) -> Event) {
        let seq = self.next_seq();
        out.push(event(seq));
    }

    fn reject(
        &mut self,
        order_id: OrderId,
        user_id: UserId,
        reason: RejectReason,
        out: &mut Vec<Event>,
    ) {
        self.emit(out, |seq| Event::Rejected {
            seq,
            order_id,
            user_id,
            reason,
        });
    }

    fn delta(&mut self, side: Side, price: Ticks, qty: Lots, out: &mut Vec<Event>) {
        self.emit(out, |seq| Event::BookDelta {
            seq,
            side,
            price,
            qty,
        });
    }

    /// Records `id` in the dedup window; `false` if it was already there.
    #[inline]
    fn remember(&mut self, id: OrderId) -> bool {
        self.seen.insert(id)
    }

    fn place(&mut self, n: &NewOrder, out: &mut Vec<Event>) {
        let open = self.book.get(n.order_id).is_some() || self.stop_index.contains_key(&n.order_id);
        if open || !self.remember(n.order_id) {
            self.reject(n.order_id, n.user_id, RejectReason::DuplicateOrderId, out);
            return;
        }
        let (order, stop) = match self.validate(n) {
            Ok(v) => v,
            Err(reason) => {
                self.reject(n.order_id, n.user_id, reason, out);
                return;
            }
        };
        if let Some((stop, rising)) = stop {
            let fires =
                self.last_price
                    .is_some_and(|last| if rising { last >= stop } else { last <= stop });
            if fires {
                self.reject(
                    n.order_id,
                    n.user_id,
                    RejectReason::WouldTriggerImmediately,
                    out,
                );
                return;
            }
            self.order_seq += 1;
            let s = Stop {
                order,
                stop,
                rising,
                seq: self.order_seq,
            };
            self.stop_index
                .insert(order.order_id, (rising, stop, s.seq));
            self.stops_map(rising).insert((stop, s.seq), s);
            self.emit(out, |seq| Event::Accepted {
                seq,
                order_id: n.order_id,
                user_id: n.user_id,
            });
            return;
        }
        if let Exec::Limit {
            price,
            post_only: true,
            ..
        } = order.exec
        {
            if self.crosses(order.side, price) {
                self.reject(n.order_id, n.user_id, RejectReason::WouldCross, out);
                return;
            }
        }
        self.order_seq += 1;
        self.emit(out, |seq| Event::Accepted {
            seq,
            order_id: n.order_id,
            user_id: n.user_id,
        });
        self.execute(&order, out);
        self.run_triggers(out);
    }

    fn stops_map(&mut self, rising: bool) -> &mut BTreeMap<(Ticks, u64), Stop> {
        if rising {
            &mut self.stops
        } else {
            &mut self.stops_falling
        }
    }

    /// Checks the request and converts it to integers.
    fn validate(&self, n: &NewOrder) -> Result<(Order, Option<(Ticks, bool)>), RejectReason> {
        let spec = &self.spec;
        let lots = |q: Option<domain::Qty>| -> Result<Lots, RejectReason> {
            let l = spec.lots(q.ok_or(RejectReason::InvalidQuantity)?)?;
            if l.is_zero() {
                return Err(RejectReason::InvalidQuantity);
            }
            Ok(l)
        };
        let price = || -> Result<Ticks, RejectReason> {
            let t = spec.ticks(n.price.ok_or(RejectReason::MissingPrice)?)?;
            if t == Ticks(0) {
                return Err(RejectReason::MissingPrice);
            }
            Ok(t)
        };
        let market = || -> Result<Exec, RejectReason> {
            match (n.qty, n.quote_qty, n.side) {
                (Some(_), None, _) => Ok(Exec::Market { qty: lots(n.qty)? }),
                (None, Some(q), _) => Ok(Exec::MarketQuote {
                    quote: spec.quote_atoms(q)?,
                }),
                // a buy by base quantity within the quote amount its placement froze, or
                // a sell by quote amount within the base quantity its placement froze:
                // either stops at whichever runs out first
                (Some(_), Some(quote), _) => Ok(Exec::MarketCapped {
                    qty: lots(n.qty)?,
                    quote: spec.quote_atoms(quote)?,
                }),
                _ => Err(RejectReason::BadQuantityFields),
            }
        };
        let limit = |tif, post_only| -> Result<Exec, RejectReason> {
            if n.quote_qty.is_some() {
                return Err(RejectReason::BadQuantityFields);
            }
            Ok(Exec::Limit {
                price: price()?,
                qty: lots(n.qty)?,
                tif,
                post_only,
            })
        };
        let stop = || -> Result<Ticks, RejectReason> {
            let t = spec.ticks(n.stop_price.ok_or(RejectReason::MissingStopPrice)?)?;
            if t == Ticks(0) {
                return Err(RejectReason::MissingStopPrice);
            }
            Ok(t)
        };
        let buy = n.side == Side::Buy;
        let (exec, trigger) = match n.order_type {
            OrderType::Limit => (limit(n.tif, false)?, None),
            OrderType::LimitMaker => (limit(TimeInForce::Gtc, true)?, None),
            OrderType::Market => (market()?, None),
            OrderType::StopLoss => (market()?, Some((stop()?, buy))),
            OrderType::TakeProfit => (market()?, Some((stop()?, !buy))),
            OrderType::StopLossLimit => (limit(n.tif, false)?, Some((stop()?, buy))),
            OrderType::TakeProfitLimit => (limit(n.tif, false)?, Some((stop()?, !buy))),
        };
        Ok((
            Order {
                order_id: n.order_id,
                user_id: n.user_id,
                side: n.side,
                stp: n.stp,
                exec,
            },
            trigger,
        ))
    }

    /// Would a limit at `price` on `side` trade against the book now?
    fn crosses(&self, side: Side, price: Ticks) -> bool {
        match side {
            Side::Buy => self.book.best(Side::Sell).is_some_and(|(p, _)| p <= price),
            Side::Sell => self.book.best(Side::Buy).is_some_and(|(p, _)| p >= price),
        }
    }

    /// The worst price a market order of `side` may trade at, from the reference price.
    fn band_limit(&self, side: Side) -> Option<Ticks> {
        let reference = self
            .last_price
            .or_else(|| self.book.best(side.opposite()).map(|(p, _)| p))?;
        let bps = u128::from(self.spec.market_band_bps);
        let r = u128::from(reference.get());
        Some(Ticks(match side {
            Side::Buy => u64::try_from(r * (10_000 + bps) / 10_000).unwrap_or(u64::MAX),
            // ceil, so the band never widens through rounding
            Side::Sell => u64::try_from((r * (10_000 - bps)).div_ceil(10_000))
                .unwrap_or(0)
                .max(1),
        }))
    }

    /// FOK pre-check: can `qty` fill completely within `price`, given the taker's STP?
    fn fok_fillable(&self, o: &Order, price: Ticks, qty: Lots) -> bool {
        let mut got = Lots::ZERO;
        self.book.walk(o.side.opposite(), |m| {
            let ok = match o.side {
                Side::Buy => m.price <= price,
                Side::Sell => m.price >= price,
            };
            if !ok {
                return false;
            }
            if m.user_id == o.user_id && o.stp != StpMode::None {
                if o.stp == StpMode::ExpireMaker {
                    return true; // would be cancelled, not traded
                }
                return false; // the taker would expire here
            }
            got = got.saturating_add(m.remaining);
            got < qty
        });
        got >= qty
    }

    /// Runs an accepted (or triggered) order: match, then rest or expire.
    fn execute(&mut self, o: &Order, out: &mut Vec<Event>) {
        let (limit, mut left) = match o.exec {
            Exec::Limit {
                price, qty, tif, ..
            } => {
                if tif == TimeInForce::Fok && !self.fok_fillable(o, price, qty) {
                    self.expire(o, Left::Lots(qty), ExpireReason::Fok, out);
                    return;
                }
                (Some(price), Left::Lots(qty))
            }
            Exec::Market { qty } => (self.band_limit(o.side), Left::Lots(qty)),
            Exec::MarketQuote { quote } => (self.band_limit(o.side), Left::Quote(quote)),
            Exec::MarketCapped { qty, quote } => {
                (self.band_limit(o.side), Left::Capped(qty, quote))
            }
        };
        let end = match limit {
            Some(limit) => self.take(o, limit, &mut left, out),
            None => End::NoLiquidity,
        };
        match (o.exec, end) {
            (_, End::Filled) => {}
            (_, End::Stp) => self.expire(o, left, ExpireReason::Stp, out),
            (Exec::Limit { price, tif, .. }, _) => match (tif, left) {
                (TimeInForce::Gtc, Left::Lots(rem)) => {
                    let total = self.book.insert(Resting {
                        order_id: o.order_id,
                        user_id: o.user_id,
                        side: o.side,
                        price,
                        remaining: rem,
                        stp: o.stp,
                    });
                    self.delta(o.side, price, total, out);
                }
                (TimeInForce::Fok, _) => self.expire(o, left, ExpireReason::Fok, out),
                _ => self.expire(o, left, ExpireReason::Ioc, out),
            },
            (_, End::Band) => self.expire(o, left, ExpireReason::PriceBand, out),
            (_, End::QuoteExhausted) => self.expire(o, left, ExpireReason::QuoteExhausted, out),
            (_, End::NoLiquidity | End::NoCross) => {
                self.expire(o, left, ExpireReason::NoLiquidity, out)
            }
        }
    }

    fn expire(&mut self, o: &Order, left: Left, reason: ExpireReason, out: &mut Vec<Event>) {
        let (remaining, remaining_quote) = match left {
            Left::Lots(l) => (l, 0),
            Left::Quote(q) => (Lots::ZERO, q),
            Left::Capped(l, q) => (l, q),
        };
        self.emit(out, |seq| Event::Expired {
            seq,
            order_id: o.order_id,
            user_id: o.user_id,
            remaining,
            remaining_quote,
            reason,
        });
    }

    /// The matching loop: trades `o` against the opposite side up to `limit`.
    fn take(&mut self, o: &Order, limit: Ticks, left: &mut Left, out: &mut Vec<Event>) -> End {
        let opp = o.side.opposite();
        let is_market = !matches!(o.exec, Exec::Limit { .. });
        loop {
            let Some(maker) = self.book.front(opp).copied() else {
                return End::NoLiquidity;
            };
            let in_limit = match o.side {
                Side::Buy => maker.price <= limit,
                Side::Sell => maker.price >= limit,
            };
            if !in_limit {
                return if is_market { End::Band } else { End::NoCross };
            }
            if maker.user_id == o.user_id && o.stp != StpMode::None {
                if matches!(o.stp, StpMode::ExpireMaker | StpMode::ExpireBoth) {
                    self.cancel_resting(maker.order_id, CancelReason::Stp, out);
                }
                if matches!(o.stp, StpMode::ExpireTaker | StpMode::ExpireBoth) {
                    return End::Stp;
                }
                continue;
            }
            let lots = match *left {
                Left::Lots(l) => l.min(maker.remaining),
                Left::Quote(q) => {
                    let affordable = q / self.spec.lot_cost(maker.price);
                    maker
                        .remaining
                        .min(Lots(u64::try_from(affordable).unwrap_or(u64::MAX)))
                }
                Left::Capped(l, q) => {
                    let affordable = q / self.spec.lot_cost(maker.price);
                    l.min(maker.remaining)
                        .min(Lots(u64::try_from(affordable).unwrap_or(u64::MAX)))
                }
            };
            if lots.is_zero() {
                return End::QuoteExhausted;
            }
            let notional = self.spec.notional_atoms(maker.price, lots);
            let base = self.spec.base_atoms(lots);
            // each side pays its fee in what it receives: the buyer base, the seller quote
            let (taker_gets, maker_gets) = match o.side {
                Side::Buy => (base, notional),
                Side::Sell => (notional, base),
            };
            let maker_filled = lots == maker.remaining;
            self.trade_seq += 1;
            let trade = Trade {
                trade_id: self.trade_seq,
                price: maker.price,
                qty: lots,
                quote_atoms: notional,
                taker_side: o.side,
                taker_order: o.order_id,
                taker_user: o.user_id,
                maker_order: maker.order_id,
                maker_user: maker.user_id,
                taker_fee: SymbolSpec::fee(taker_gets, self.spec.taker_fee_ppm),
                maker_fee: SymbolSpec::fee(maker_gets, self.spec.maker_fee_ppm),
                maker_filled,
            };
            let seq = self.next_seq();
            out.push(Event::Trade { seq, trade });
            let total = if maker_filled {
                self.book
                    .remove(maker.order_id)
                    .map_or(Lots::ZERO, |(_, t)| t)
            } else {
                self.book.reduce(maker.order_id, lots).unwrap_or(Lots::ZERO)
            };
            self.delta(opp, maker.price, total, out);
            self.last_price = Some(maker.price);
            *left = match *left {
                Left::Lots(l) => Left::Lots(l - lots),
                Left::Quote(q) => Left::Quote(q - notional),
                Left::Capped(l, q) => Left::Capped(l - lots, q - notional),
            };
            if left.is_done() {
                return End::Filled;
            }
        }
    }

    fn cancel_resting(&mut self, id: OrderId, reason: CancelReason, out: &mut Vec<Event>) {
        if let Some((o, total)) = self.book.remove(id) {
            self.delta(o.side, o.price, total, out);
            self.emit(out, |seq| Event::Cancelled {
                seq,
                order_id: o.order_id,
                user_id: o.user_id,
                remaining: o.remaining,
                reason,
            });
        }
    }

    /// Cancels an open order of `user`; `false` if there is none.
    fn cancel(
        &mut self,
        id: OrderId,
        user: UserId,
        reason: CancelReason,
        out: &mut Vec<Event>,
    ) -> bool {
        if self.book.get(id).is_some_and(|o| o.user_id == user) {
            self.cancel_resting(id, reason, out);
            return true;
        }
        let Some(&(rising, stop, sseq)) = self.stop_index.get(&id) else {
            return false;
        };
        let key = (stop, sseq);
        if self
            .stops_map(rising)
            .get(&key)
            .is_none_or(|s| s.order.user_id != user)
        {
            return false;
        }
        self.stop_index.remove(&id);
        let Some(s) = self.stops_map(rising).remove(&key) else {
            return false;
        };
        let remaining = match s.order.exec {
            Exec::Limit { qty, .. } | Exec::Market { qty } | Exec::MarketCapped { qty, .. } => qty,
            Exec::MarketQuote { .. } => Lots::ZERO,
        };
        self.emit(out, |seq| Event::Cancelled {
            seq,
            order_id: id,
            user_id: user,
            remaining,
            reason,
        });
        true
    }

    fn amend(&mut self, id: OrderId, user: UserId, new_qty: domain::Qty, out: &mut Vec<Event>) {
        let new = match self.spec.lots(new_qty) {
            Ok(Lots::ZERO) => Err(RejectReason::InvalidQuantity),
            other => other,
        };
        let new = match new {
            Ok(l) => l,
            Err(r) => return self.reject(id, user, r, out),
        };
        if let Some(o) = self.book.get(id).copied().filter(|o| o.user_id == user) {
            if new >= o.remaining {
                return self.reject(id, user, RejectReason::AmendNotLower, out);
            }
            let by = o.remaining - new;
            let total = self.book.reduce(id, by).unwrap_or(Lots::ZERO);
            self.delta(o.side, o.price, total, out);
            self.emit(out, |seq| Event::Amended {
                seq,
                order_id: id,
                user_id: user,
                remaining: new,
                reduced_by: by,
            });
            return;
        }
        let found = self.stop_index.get(&id).copied();
        let Some((rising, stop, sseq)) = found else {
            return self.reject(id, user, RejectReason::UnknownOrder, out);
        };
        let Some(s) = self
            .stops_map(rising)
            .get_mut(&(stop, sseq))
            .filter(|s| s.order.user_id == user)
        else {
            return self.reject(id, user, RejectReason::UnknownOrder, out);
        };
        let by = match &mut s.order.exec {
            Exec::Limit { qty, .. } | Exec::Market { qty } if new < *qty => {
                let by = *qty - new;
                *qty = new;
                by
            }
            Exec::MarketQuote { .. } | Exec::MarketCapped { .. } => {
                return self.reject(id, user, RejectReason::BadQuantityFields, out)
            }
            _ => return self.reject(id, user, RejectReason::AmendNotLower, out),
        };
        self.emit(out, |seq| Event::Amended {
            seq,
            order_id: id,
            user_id: user,
            remaining: new,
            reduced_by: by,
        });
    }

    /// Fires every stop whose trigger holds, in arrival order, until none does.
    fn run_triggers(&mut self, out: &mut Vec<Event>) {
        if self.stop_index.is_empty() {
            return;
        }
        loop {
            let Some(last) = self.last_price else { return };
            let mut fired: Vec<Stop> = Vec::new();
            // rising: stop <= last
            while let Some((&k, _)) = self.stops.first_key_value() {
                if k.0 > last {
                    break;
                }
                if let Some(s) = self.stops.remove(&k) {
                    fired.push(s);
                }
            }
            // falling: stop >= last
            while let Some((&k, _)) = self.stops_falling.last_key_value() {
                if k.0 < last {
                    break;
                }
                if let Some(s) = self.stops_falling.remove(&k) {
                    fired.push(s);
                }
            }
            if fired.is_empty() {
                return;
            }
            fired.sort_by_key(|s| s.seq);
            for s in fired {
                self.stop_index.remove(&s.order.order_id);
                self.emit(out, |seq| Event::Triggered {
                    seq,
                    order_id: s.order.order_id,
                    user_id: s.order.user_id,
                });
                self.execute(&s.order, out);
            }
        }
    }

    /// The whole state as bytes (postcard).
    pub fn snapshot(&self) -> Vec<u8> {
        let mut stops: Vec<Stop> = self
            .stops
            .values()
            .chain(self.stops_falling.values())
            .copied()
            .collect();
        stops.sort_by_key(|s| s.seq);
        let (seen_prev, seen_cur) = self.seen.to_lists();
        let snap = SnapshotV1 {
            version: 1,
            spec: self.spec.clone(),
            bids: self.book.orders(Side::Buy),
            asks: self.book.orders(Side::Sell),
            stops,
            last_price: self.last_price,
            seq: self.seq,
            trade_seq: self.trade_seq,
            order_seq: self.order_seq,
            seen_prev,
            seen_cur,
            dedup_window: self.seen.window,
            sources: self.sources.clone(),
        };
        postcard::to_stdvec(&snap).unwrap_or_default()
    }

    /// Rebuilds a matcher from [`Matcher::snapshot`] bytes.
    ///
    /// # Errors
    /// [`SnapshotError`] for bytes that are not a readable snapshot.
    pub fn restore(bytes: &[u8]) -> Result<Self, SnapshotError> {
        let snap: SnapshotV1 =
            postcard::from_bytes(bytes).map_err(|e| SnapshotError::Decode(e.to_string()))?;
        if snap.version != 1 {
            return Err(SnapshotError::Version(snap.version));
        }
        let mut m = Matcher::with_dedup_window(snap.spec, snap.dedup_window);
        for o in snap.bids.into_iter().chain(snap.asks) {
            m.book.insert(o);
        }
        for s in snap.stops {
            m.stop_index
                .insert(s.order.order_id, (s.rising, s.stop, s.seq));
            m.stops_map(s.rising).insert((s.stop, s.seq), s);
        }
        m.last_price = snap.last_price;
        m.seq = snap.seq;
        m.trade_seq = snap.trade_seq;
        m.order_seq = snap.order_seq;
        m.sources = snap.sources;
        m.seen.prev.extend(snap.seen_prev);
        m.seen.cur.extend(snap.seen_cur);
        Ok(m)
    }
}

#[cfg(test)]
mod tests;
