//! Order placement on the user's shard (DESIGN.md "Order flow" 1–3).
//!
//! [`Placer::place`] validates a request against the symbol's configuration (tick,
//! step, quantity limits, minimum notional, trading status), assigns a snowflake
//! order id (whose month names the order's table), and then, in **one local
//! transaction** on the user's shard:
//! 1. finds an earlier order with the same client order id (an idempotent retry:
//!    the original order is returned, nothing else happens);
//! 2. freezes the funds the order may spend with the optimistic-lock update
//!    (`... WHERE version = ? AND available >= ?`); not enough → "insufficient
//!    balance";
//! 3. inserts the order into `orders_{SYMBOL}_{YYYYMM}`, the client order id, a
//!    `freeze` ledger row and an outbox row carrying the matcher input.
//!
//! Either all of it commits or none of it: a reject leaves nothing behind.
//!
//! Group commit ([`Placer::group_writer`]) writes many placements in one transaction
//! with a fixed number of statements (see `write_set`): one locking read of the
//! balances involved, the freezes decided in memory in arrival order and netted per
//! (user, asset) into one versioned UPDATE, then multi-row inserts. A refused
//! placement simply contributes nothing; the rest commit together.
//!
//! What is frozen (the rule is `domain::hold`, shared with the audit): a buy freezes
//! `price × qty` of the quote asset (limit-like) or its `quoteOrderQty` (market); a
//! sell freezes `qty` of the base asset. Fees are charged
//! in the asset received, so they never need to be frozen. A MARKET/STOP buy by base
//! quantity and a MARKET/STOP sell by quote amount are refused: what they may spend is
//! not known at placement, and nothing may trade with funds that were not frozen.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;

use domain::{
    Amount, Asset, OrderId, OrderType, Price, Qty, ShardId, Side, Symbol, TimeInForce, UserId,
};
use router::{RouterError, ShardMap, SnowflakeError, TableRouter};
use serde::Serialize;
use sqlx::MySqlPool;
use tokio::sync::{mpsc, oneshot};

use crate::outbox::{insert_outbox, OutboxRow};
use crate::readers::{self, OrderRecord, ReadError};
use domain::hold::{held_asset, required_hold, HeldAsset, HoldShape};
use ledger::balances::text::{LedgerRow, VersionedFreeze};
use matcher::wire::{OrderInput, ORDERS_TOPIC};
use matcher::{NewOrder, RejectReason, StpMode, SymbolSpec};
use router::sqltext::{Sql, TextTx};

/// A symbol's trading configuration (meta `symbols` joined with `assets`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SymbolConfig {
    /// Grid, precisions, fees, band.
    pub spec: SymbolSpec,
    /// Smallest order quantity.
    pub min_qty: Qty,
    /// Largest order quantity.
    pub max_qty: Qty,
    /// Smallest `price × qty` (or quote amount).
    pub min_notional: Amount,
    /// `false` while halted.
    pub trading: bool,
}

/// Loads every symbol's configuration from the meta schema.
///
/// # Errors
/// Database errors; a row whose values do not form a valid spec.
pub async fn load_symbols(meta: &MySqlPool) -> Result<BTreeMap<Symbol, SymbolConfig>, PlaceError> {
    type Row = (
        String,
        String,
        String,
        String,
        String,
        String,
        String,
        String,
        u8,
        u8,
        u32,
        u32,
        u32,
        String,
    );
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT s.symbol, s.base_asset, s.quote_asset, CAST(s.tick_size AS CHAR), CAST(s.step_size AS CHAR), \
                CAST(s.min_qty AS CHAR), CAST(s.max_qty AS CHAR), CAST(s.min_notional AS CHAR), \
                b.precision, q.precision, s.maker_fee_ppm, s.taker_fee_ppm, s.market_band_bps, CAST(s.status AS CHAR) \
         FROM symbols s JOIN assets b ON b.asset = s.base_asset JOIN assets q ON q.asset = s.quote_asset",
    )
    .fetch_all(meta)
    .await
    .map_err(|e| PlaceError::Router(RouterError::db("meta", e)))?;
    let mut out = BTreeMap::new();
    for (sym, base, quote, tick, step, min_q, max_q, min_n, bp, qp, maker, taker, band, status) in
        rows
    {
        let bad = |what: &str| PlaceError::Config(format!("symbol {sym}: bad {what}"));
        let symbol = Symbol::new(&sym).map_err(|_| bad("name"))?;
        let spec = SymbolSpec::new(
            symbol,
            Asset::new(&base).map_err(|_| bad("base asset"))?,
            Asset::new(&quote).map_err(|_| bad("quote asset"))?,
            Price::from_db_str(&tick).map_err(|_| bad("tick_size"))?,
            Qty::from_db_str(&step).map_err(|_| bad("step_size"))?,
            u32::from(bp),
            u32::from(qp),
            maker,
            taker,
            band,
        )
        .map_err(|e| PlaceError::Config(e.to_string()))?;
        out.insert(
            symbol,
            SymbolConfig {
                spec,
                min_qty: Qty::from_db_str(&min_q).map_err(|_| bad("min_qty"))?,
                max_qty: Qty::from_db_str(&max_q).map_err(|_| bad("max_qty"))?,
                min_notional: Amount::from_db_str(&min_n).map_err(|_| bad("min_notional"))?,
                trading: status == "trading",
            },
        );
    }
    Ok(out)
}

/// Writes a symbol's rules and filters (`shardctl symbol rules`, which checks first
/// that the change is safe).
///
/// # Errors
/// Meta unreachable; [`PlaceError::Config`] for a symbol not in meta.
pub async fn write_symbol_rules(meta: &MySqlPool, c: &SymbolConfig) -> Result<(), PlaceError> {
    let s = &c.spec;
    let done = sqlx::query(
        "UPDATE symbols SET tick_size = ?, step_size = ?, min_qty = ?, max_qty = ?, \
         min_notional = ?, maker_fee_ppm = ?, taker_fee_ppm = ?, market_band_bps = ? \
         WHERE symbol = ?",
    )
    .bind(s.tick_size.to_db_string())
    .bind(s.step_size.to_db_string())
    .bind(c.min_qty.to_db_string())
    .bind(c.max_qty.to_db_string())
    .bind(c.min_notional.to_db_string())
    .bind(s.maker_fee_ppm)
    .bind(s.taker_fee_ppm)
    .bind(s.market_band_bps)
    .bind(s.symbol.as_str())
    .execute(meta)
    .await
    .map_err(|e| PlaceError::Router(RouterError::db("meta", e)))?;
    if done.rows_affected() == 0 {
        // unchanged values also affect 0 rows: tell those apart from a missing symbol
        let known: Option<(String,)> =
            sqlx::query_as("SELECT symbol FROM symbols WHERE symbol = ?")
                .bind(s.symbol.as_str())
                .fetch_optional(meta)
                .await
                .map_err(|e| PlaceError::Router(RouterError::db("meta", e)))?;
        if known.is_none() {
            return Err(PlaceError::Config(format!(
                "no symbol {} in meta",
                s.symbol
            )));
        }
    }
    Ok(())
}

/// Halts (`trading = false`) or resumes a symbol.
///
/// # Errors
/// Meta unreachable.
pub async fn set_symbol_trading(
    meta: &MySqlPool,
    symbol: &Symbol,
    trading: bool,
) -> Result<(), PlaceError> {
    sqlx::query("UPDATE symbols SET status = ? WHERE symbol = ?")
        .bind(if trading { "trading" } else { "halt" })
        .bind(symbol.as_str())
        .execute(meta)
        .await
        .map_err(|e| PlaceError::Router(RouterError::db("meta", e)))?;
    Ok(())
}

/// The price a market-like order's cap is held against: a stop's stop price, else
/// the caller's market reference; without one the order is refused (`missing` says
/// what to send instead).
fn hold_reference(req: &PlaceRequest, missing: &'static str) -> Result<Price, Reject> {
    if matches!(req.order_type, OrderType::StopLoss | OrderType::TakeProfit) {
        req.stop_price
            .ok_or(Reject::Invalid(RejectReason::MissingStopPrice))
    } else {
        req.market_reference.ok_or(Reject::Unsupported(missing))
    }
}

/// What a market-like buy of `qty` by base quantity holds: `qty × reference × (1 +
/// band)`, rounded up to the quote precision (a hold: at most one atom more than the
/// exact bound, released after the order ends); `None` past `DECIMAL(36,18)`.
pub fn market_cap(qty: Qty, reference: Price, spec: &SymbolSpec) -> Option<Amount> {
    let band = domain::Decimal::new(10_000 + i64::from(spec.market_band_bps), 4);
    let exact = qty.get().checked_mul(reference.get())?.checked_mul(band)?;
    let up = exact.round_dp_with_strategy(
        spec.quote_precision,
        rust_decimal::RoundingStrategy::AwayFromZero,
    );
    Amount::new(up).ok().filter(|a| a.is_positive())
}

/// What a market-like sell for `quote` (`quoteOrderQty`) holds: the base quantity
/// that amount needs at the worst price the band allows, `quote / (reference × (1 −
/// band))`, rounded up to the step (a hold: the matcher sells no more than that and
/// stops once `quote` is reached; the rest is released); `None` when it does not fit.
pub fn market_base_cap(quote: Amount, reference: Price, spec: &SymbolSpec) -> Option<Qty> {
    let band = domain::Decimal::new(10_000 - i64::from(spec.market_band_bps), 4);
    let worst = reference.get().checked_mul(band)?;
    let lots = quote
        .get()
        .checked_div(worst)?
        .checked_div(spec.step_size.get())?
        .ceil();
    Qty::new(lots.checked_mul(spec.step_size.get())?.normalize()).ok()
}

/// A placement request, Binance-shaped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlaceRequest {
    /// Owner.
    pub user_id: UserId,
    /// Symbol (checked against the whitelist and config: a well-formed symbol that is
    /// not listed is [`Reject::UnknownSymbol`]).
    pub symbol: Symbol,
    /// Side.
    pub side: Side,
    /// Order type.
    pub order_type: OrderType,
    /// Time in force (limit-like orders).
    pub tif: TimeInForce,
    /// Limit price.
    pub price: Option<Price>,
    /// Base quantity.
    pub qty: Option<Qty>,
    /// Quote amount (`quoteOrderQty`).
    pub quote_qty: Option<Amount>,
    /// Stop price.
    pub stop_price: Option<Price>,
    /// Self-trade prevention.
    pub stp: StpMode,
    /// `newClientOrderId`; generated from the order id when absent.
    pub client_order_id: Option<String>,
    /// For a MARKET buy by base quantity: the price its hold is computed from (the
    /// gateway gives the last trade price, else the best ask). The order freezes
    /// `quantity × reference × (1 + market band)`, rounded up to the quote precision,
    /// and the matcher never spends more than that (it stops at its quantity, its band
    /// or that amount, whichever comes first; the rest is released). STOP_LOSS /
    /// TAKE_PROFIT buys by quantity use their stop price instead. A MARKET sell by
    /// `quoteOrderQty` holds the base that amount needs at `reference × (1 − band)`
    /// (the gateway gives the last price, else the best bid). Ignored otherwise.
    pub market_reference: Option<Price>,
}

/// Which order a cancel is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CancelTarget {
    /// By order id.
    Order(OrderId),
    /// By the client order id it was placed with (`origClientOrderId`).
    Client(String),
}

impl From<OrderId> for CancelTarget {
    fn from(id: OrderId) -> Self {
        Self::Order(id)
    }
}

/// The acknowledgement of a placed (or previously placed) order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Ack {
    /// Snowflake order id.
    pub order_id: OrderId,
    /// Symbol.
    pub symbol: Symbol,
    /// Client order id.
    pub client_order_id: String,
    /// Asset frozen.
    pub frozen_asset: Asset,
    /// Amount frozen.
    pub frozen: Amount,
    /// `true` when this is an earlier order returned for a retried client order id.
    pub duplicate: bool,
}

/// Why a placement was refused. Nothing changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
pub enum Reject {
    /// Not a configured, whitelisted symbol.
    #[error("unknown symbol {0:?}")]
    UnknownSymbol(String),
    /// The symbol is halted.
    #[error("symbol {0} is not trading")]
    Halted(Symbol),
    /// A field the order type needs is missing or not allowed, or off the grid.
    #[error("invalid order: {0:?}")]
    Invalid(RejectReason),
    /// A symbol filter (quantity limits, minimum notional).
    #[error("filter {filter} failed: {detail}")]
    Filter {
        /// Binance filter name (`LOT_SIZE`, `NOTIONAL`).
        filter: &'static str,
        /// What was wrong.
        detail: String,
    },
    /// An order shape whose spending cannot be bounded at placement.
    #[error("unsupported order: {0}")]
    Unsupported(&'static str),
    /// Cancel of an order that is not open or not the user's.
    #[error("unknown order")]
    UnknownOrder,
    /// Client order id malformed (`^[.A-Za-z:/0-9_-]{1,36}$`).
    #[error("invalid client order id")]
    BadClientOrderId,
    /// Not enough available balance.
    #[error("insufficient balance: {available} {asset} available")]
    InsufficientBalance {
        /// Asset.
        asset: Asset,
        /// What was available.
        available: Amount,
    },
}

/// Infrastructure failure (the request may be retried with the same client order id).
#[derive(Debug, thiserror::Error)]
pub enum PlaceError {
    /// The batch was rolled back (or never began): nothing of it happened.
    #[error("{0}")]
    NotCommitted(String),
    /// The COMMIT was sent and its reply lost: the order may or may not exist. Look it
    /// up by `order_id` (or retry with `client_order_id`, which answers the original
    /// order if it was placed).
    #[error("outcome unknown for order {order_id} ({client_order_id}): {reason}")]
    OutcomeUnknown {
        /// The id the order has if it was placed.
        order_id: OrderId,
        /// Its client order id.
        client_order_id: String,
        /// What failed.
        reason: String,
    },
    /// Internal: a COMMIT whose reply was lost, with what that transaction would have
    /// answered each job (becomes [`PlaceError::OutcomeUnknown`] per accepted order).
    #[error("commit outcome unknown: {error}")]
    CommitUnknown {
        /// What failed.
        error: RouterError,
        /// The answers the transaction planned, one per job.
        planned: Vec<Result<Ack, Reject>>,
    },
    /// Database or routing error.
    #[error(transparent)]
    Router(#[from] RouterError),
    /// No order id could be issued.
    #[error(transparent)]
    Id(#[from] SnowflakeError),
    /// Bad symbol configuration.
    #[error("config: {0}")]
    Config(String),
    /// Arithmetic left the DECIMAL(36,18) range.
    #[error("amount out of range: {0}")]
    Money(#[from] domain::MoneyError),
}

impl domain::Kinded for PlaceError {
    fn kind(&self) -> domain::ErrorKind {
        use domain::ErrorKind as K;
        match self {
            Self::Router(e) => e.kind(),
            Self::NotCommitted(_) => K::Unavailable,
            Self::OutcomeUnknown { .. } | Self::CommitUnknown { .. } => K::OutcomeUnknown,
            Self::Id(_) => K::Unavailable,
            Self::Config(_) => K::Internal,
            Self::Money(_) => K::Rejected,
        }
    }
}

impl domain::Kinded for Reject {
    fn kind(&self) -> domain::ErrorKind {
        match self {
            Self::UnknownOrder => domain::ErrorKind::NotFound,
            _ => domain::ErrorKind::Rejected,
        }
    }
}

/// A validated request: everything needed for the transaction.
#[derive(Debug, Clone)]
struct Checked {
    user_id: UserId,
    symbol: Symbol,
    order: NewOrder,
    client_order_id: String,
    frozen_asset: Asset,
    frozen: Amount,
}

/// Places orders. Cheap to clone; share it.
#[derive(Clone)]
pub struct Placer {
    shards: ShardMap,
    router: TableRouter,
    /// The symbols' rules, swapped whole by [`Placer::reload_symbols`].
    symbols: Arc<std::sync::RwLock<Arc<BTreeMap<Symbol, SymbolConfig>>>>,
    next_id: router::snowflake::IdSource,
    faults: Arc<Faults>,
}

impl std::fmt::Debug for Placer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Placer")
            .field("symbols", &self.symbols().len())
            .finish_non_exhaustive()
    }
}

impl Placer {
    /// A placer over `shards`, for the symbols in both the whitelist and `symbols`,
    /// issuing order ids from `next_id` (a snowflake generator).
    pub fn new(
        shards: ShardMap,
        router: TableRouter,
        symbols: BTreeMap<Symbol, SymbolConfig>,
        next_id: router::snowflake::IdSource,
    ) -> Self {
        Self {
            shards,
            router,
            symbols: Arc::new(std::sync::RwLock::new(Arc::new(symbols))),
            next_id,
            faults: Arc::default(),
        }
    }

    /// Fault injection shared by every batch of this placer (tests only).
    pub fn faults(&self) -> &Faults {
        &self.faults
    }

    /// Places an order: `Ok(Ok(ack))`, `Ok(Err(reject))` (nothing changed), or an
    /// infrastructure error.
    ///
    /// # Errors
    /// [`PlaceError`] for database, id or configuration failures.
    pub async fn place(&self, req: &PlaceRequest) -> Result<Result<Ack, Reject>, PlaceError> {
        let checked = match self.check(req)? {
            Ok(c) => c,
            Err(r) => return Ok(Err(r)),
        };
        self.write(checked).await
    }

    /// Requests a cancel of `target` (by order id or client order id): checks the order
    /// is the user's, of `symbol`, and still open, then writes the cancel request to the
    /// outbox. Answers the order as it stood when the request was written (its status
    /// still open); the result arrives as a matcher event (the settler releases the
    /// remaining funds), and a cancel racing a fill resolves in the matcher's order.
    ///
    /// # Errors
    /// [`PlaceError`] for database failures.
    pub async fn cancel(
        &self,
        user: UserId,
        symbol: Symbol,
        target: impl Into<CancelTarget>,
    ) -> Result<Result<OrderRecord, Reject>, PlaceError> {
        // whitelisted is enough: a symbol dropped from the trading config (or halted)
        // must still let its open orders be cancelled, or their funds stay frozen
        if self.router.symbol(symbol.as_str()).is_err() {
            return Ok(Err(Reject::UnknownSymbol(symbol.to_string())));
        }
        let found = match target.into() {
            CancelTarget::Order(order_id) => {
                readers::order(&self.shards, &self.router, symbol, order_id, Some(user))
                    .await
                    .map(|mut rows| rows.pop().map(|(_, o)| o))
            }
            CancelTarget::Client(cid) => {
                readers::order_by_client_id(&self.shards, &self.router, user, &cid)
                    .await
                    .map(|o| o.filter(|o| o.symbol == symbol))
            }
        };
        let found = match found {
            Ok(found) => found,
            // an id no table can hold, or a month without a table: nobody's order
            Err(ReadError::Router(
                RouterError::MissingTable { .. }
                | RouterError::BadId { .. }
                | RouterError::BadRange(_),
            )) => None,
            Err(ReadError::Router(e)) => return Err(e.into()),
            Err(e @ ReadError::Corrupt { .. }) => return Err(PlaceError::Config(e.to_string())),
        };
        let Some(order) = found.filter(|o| o.status.is_open()) else {
            return Ok(Err(Reject::UnknownOrder));
        };
        let shard = self.shards.shard_of(user).get();
        let place = |e| PlaceError::Router(RouterError::db_on_shard(shard, e));
        let input = OrderInput::Cancel {
            symbol,
            order_id: order.order_id,
            user_id: user,
        };
        let row = OutboxRow {
            topic: ORDERS_TOPIC,
            key: symbol.as_str().as_bytes().to_vec(),
            payload: input.encode(),
        };
        let mut tx = self.shards.pool_for(user).begin().await.map_err(place)?;
        insert_outbox(&mut tx, &[row]).await.map_err(place)?;
        tx.commit().await.map_err(place)?;
        Ok(Ok(order))
    }

    /// Validation and freeze computation, no I/O.
    /// The symbols' configuration in force (a snapshot: a reload does not change it).
    pub fn symbols(&self) -> Arc<BTreeMap<Symbol, SymbolConfig>> {
        self.symbols
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Re-reads the symbols from meta and puts them in force for the next checks, so
    /// a halt, a resume or a rules change reaches placement without a restart (the
    /// matcher still decides which rules match: see the README, "Changing a symbol's
    /// rules"). Returns the symbols whose configuration changed.
    ///
    /// # Errors
    /// Meta unreachable or a row that does not parse (the rules in force stay).
    pub async fn reload_symbols(&self, meta: &MySqlPool) -> Result<Vec<Symbol>, PlaceError> {
        let fresh = load_symbols(meta).await?;
        let old = self.symbols();
        let changed: Vec<Symbol> = fresh
            .iter()
            .filter(|(s, c)| old.get(s) != Some(c))
            .map(|(s, _)| *s)
            .chain(old.keys().filter(|s| !fresh.contains_key(s)).copied())
            .collect();
        if !changed.is_empty() {
            *self
                .symbols
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(fresh);
        }
        Ok(changed)
    }

    /// Every check [`Placer::place`] makes before writing (symbol, filters, grid, order
    /// shape), without the balance and without writing: `POST /api/v3/order/test`.
    ///
    /// # Errors
    /// As `place` before its transaction (an order id that cannot be issued).
    pub fn check_only(&self, req: &PlaceRequest) -> Result<Result<(), Reject>, PlaceError> {
        Ok(self.check(req)?.map(|_| ()))
    }

    fn check(&self, req: &PlaceRequest) -> Result<Result<Checked, Reject>, PlaceError> {
        let reject = |r| Ok(Err(r));
        let Ok(symbol) = self.router.symbol(req.symbol.as_str()) else {
            return reject(Reject::UnknownSymbol(req.symbol.to_string()));
        };
        let symbols = self.symbols();
        let Some(cfg) = symbols.get(&symbol) else {
            return reject(Reject::UnknownSymbol(req.symbol.to_string()));
        };
        if !cfg.trading {
            return reject(Reject::Halted(symbol));
        }
        if let Some(c) = &req.client_order_id {
            let ok = (1..=36).contains(&c.len())
                && c.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b".:/_-".contains(&b));
            if !ok {
                return reject(Reject::BadClientOrderId);
            }
        }
        let spec = &cfg.spec;
        let limit_like = matches!(
            req.order_type,
            OrderType::Limit
                | OrderType::LimitMaker
                | OrderType::StopLossLimit
                | OrderType::TakeProfitLimit
        );
        // grid checks with the matcher's own rules
        if let Some(p) = req.price.filter(|_| limit_like) {
            if let Err(r) = spec.ticks(p) {
                return reject(Reject::Invalid(r));
            }
        }
        if let Some(p) = req.stop_price {
            if let Err(r) = spec.ticks(p) {
                return reject(Reject::Invalid(r));
            }
        }
        if let Some(q) = req.qty {
            if let Err(r) = spec.lots(q) {
                return reject(Reject::Invalid(r));
            }
            if q.get() < cfg.min_qty.get() || q.get() > cfg.max_qty.get() {
                return reject(Reject::Filter {
                    filter: "LOT_SIZE",
                    detail: format!("quantity {q} outside [{}, {}]", cfg.min_qty, cfg.max_qty),
                });
            }
        }
        if let Some(a) = req.quote_qty {
            if let Err(r) = spec.quote_atoms(a) {
                return reject(Reject::Invalid(r));
            }
        }
        // a market-like buy by base quantity holds a quote cap the matcher respects
        let cap = match (limit_like, req.side, req.qty, req.quote_qty) {
            (false, Side::Buy, Some(q), None) => {
                let reference = match hold_reference(
                    req,
                    "no market price yet to hold a MARKET buy by quantity against: give quoteOrderQty",
                ) {
                    Ok(r) => r,
                    Err(r) => return reject(r),
                };
                match market_cap(q, reference, spec) {
                    Some(cap) => Some((cap, q.get().checked_mul(reference.get()))),
                    None => return reject(Reject::Invalid(RejectReason::TooLarge)),
                }
            }
            _ => None,
        };
        // a market-like sell by quote amount holds a base cap the matcher respects
        let base_cap = match (limit_like, req.side, req.qty, req.quote_qty) {
            (false, Side::Sell, None, Some(a)) => {
                let reference = match hold_reference(
                    req,
                    "no market price yet to hold a MARKET sell by quoteOrderQty against: give quantity",
                ) {
                    Ok(r) => r,
                    Err(r) => return reject(r),
                };
                let Some(q) = market_base_cap(a, reference, spec) else {
                    return reject(Reject::Invalid(RejectReason::TooLarge));
                };
                if q.get() > cfg.max_qty.get() {
                    return reject(Reject::Filter {
                        filter: "LOT_SIZE",
                        detail: format!("the quantity it may sell, {q}, is above {}", cfg.max_qty),
                    });
                }
                Some(q)
            }
            _ => None,
        };
        // the shape checks; what is frozen comes from the one hold rule (`domain::hold`)
        let notional = match (limit_like, req.side, req.price, req.qty, req.quote_qty) {
            (true, _, None, _, _) => return reject(Reject::Invalid(RejectReason::MissingPrice)),
            (true, _, _, None, _) | (false, _, _, None, None) => {
                return reject(Reject::Invalid(RejectReason::InvalidQuantity))
            }
            (true, _, _, _, Some(_)) | (false, _, _, Some(_), Some(_)) => {
                return reject(Reject::Invalid(RejectReason::BadQuantityFields))
            }
            (true, _, Some(p), Some(q), None) => Some(p.checked_notional(q)?),
            (false, Side::Buy, _, None, Some(a)) => Some(a),
            (false, Side::Sell, _, Some(_), None) => None,
            (false, Side::Buy, _, Some(_), None) => match cap {
                Some((_, Some(n))) => Some(
                    Amount::new(n)
                        .map_err(|_| PlaceError::Config("a capped notional out of range".into()))?,
                ),
                _ => return reject(Reject::Invalid(RejectReason::TooLarge)),
            },
            (false, Side::Sell, _, None, Some(a)) => Some(a),
        };
        let shape = HoldShape {
            side: req.side,
            order_type: req.order_type,
            price: req.price.filter(|_| limit_like),
            qty: req.qty.or(base_cap).map(Amount::from),
            quote_qty: req.quote_qty.or(cap.map(|c| c.0)),
            filled_qty: Amount::ZERO,
            filled_amount: Amount::ZERO,
        };
        let frozen = required_hold(&shape).ok_or_else(|| {
            PlaceError::Config("an accepted order shape without a hold rule".into())
        })??;
        let frozen_asset = match held_asset(req.side) {
            HeldAsset::Base => spec.base,
            HeldAsset::Quote => spec.quote,
        };
        if let Some(n) = notional {
            if n.get() < cfg.min_notional.get() {
                return reject(Reject::Filter {
                    filter: "NOTIONAL",
                    detail: format!("notional {n} below {}", cfg.min_notional),
                });
            }
        }
        let order_id =
            OrderId::new((self.next_id)()?).map_err(|e| PlaceError::Config(e.to_string()))?;
        let client_order_id = req
            .client_order_id
            .clone()
            .unwrap_or_else(|| format!("x-{order_id}"));
        let order = NewOrder {
            order_id,
            user_id: req.user_id,
            side: req.side,
            order_type: req.order_type,
            tif: req.tif,
            price: req.price.filter(|_| limit_like),
            qty: req.qty.or(base_cap),
            quote_qty: req.quote_qty.or(cap.map(|c| c.0)),
            stop_price: req.stop_price,
            stp: req.stp,
        };
        Ok(Ok(Checked {
            user_id: req.user_id,
            symbol,
            order,
            client_order_id,
            frozen_asset,
            frozen,
        }))
    }

    /// The local transaction on the user's shard, for one order.
    async fn write(&self, c: Checked) -> Result<Result<Ack, Reject>, PlaceError> {
        let shard = self.shards.shard_of(c.user_id);
        let pool = self.shards.pool(shard)?;
        let mut out = match write_batch(pool, shard.get(), &self.router, &[&c], &self.faults).await
        {
            Err(PlaceError::CommitUnknown { error, planned }) => {
                return match planned.into_iter().next() {
                    Some(plan) => unknown_answer(plan, &error.to_string()),
                    None => Err(PlaceError::Config("empty batch result".into())),
                }
            }
            other => other?,
        };
        out.pop()
            .ok_or_else(|| PlaceError::Config("empty batch result".into()))
    }

    /// A group-commit writer for `shard`: placements sent to it are written in batches,
    /// one transaction per batch (one fsync for many orders); a reject (insufficient
    /// balance) or an idempotent retry changes nothing for that order and does not
    /// disturb the others. Every caller gets its own result.
    pub fn group_writer(&self, shard: ShardId, cfg: GroupCommit) -> GroupWriter {
        let (tx, rx) = mpsc::channel(cfg.queue);
        let rx = Arc::new(tokio::sync::Mutex::new(rx));
        let batches = Arc::new(GroupStats::default());
        let tasks = (0..cfg.writers.max(1))
            .map(|_| {
                tokio::spawn(group_loop(
                    shard,
                    self.shards.pool(shard).cloned().map_err(|e| e.to_string()),
                    self.router.clone(),
                    cfg,
                    rx.clone(),
                    batches.clone(),
                    self.faults.clone(),
                ))
            })
            .collect();
        GroupWriter {
            shard,
            tx,
            batches,
            _tasks: Arc::new(tasks),
        }
    }

    /// Like [`Placer::place`], through the user's shard's group writer.
    ///
    /// # Errors
    /// As [`Placer::place`]; also when the writer has stopped.
    pub async fn place_grouped(
        &self,
        writers: &[GroupWriter],
        req: &PlaceRequest,
    ) -> Result<Result<Ack, Reject>, PlaceError> {
        let checked = match self.check(req)? {
            Ok(c) => c,
            Err(r) => return Ok(Err(r)),
        };
        let shard = self.shards.shard_of(checked.user_id);
        let w = writers
            .iter()
            .find(|w| w.shard == shard)
            .ok_or_else(|| PlaceError::Config(format!("no group writer for shard {shard}")))?;
        let (reply, rx) = oneshot::channel();
        let (order_id, client_order_id) = (checked.order.order_id, checked.client_order_id.clone());
        w.tx.send(Job { checked, reply }).await.map_err(|_| {
            PlaceError::NotCommitted(format!("group writer of shard {shard} stopped"))
        })?;
        // the writer took the job: a lost answer may follow a commit
        rx.await.map_err(|_| PlaceError::OutcomeUnknown {
            order_id,
            client_order_id,
            reason: format!("group writer of shard {shard} dropped the request"),
        })?
    }
}

/// Fault injection for tests of the "outcome unknown" path ([`Placer::faults`]); a
/// production caller never sets it.
#[derive(Debug, Default)]
pub struct Faults {
    lost_replies: AtomicU32,
    failed_attempts: AtomicU32,
}

impl Faults {
    /// The next `n` COMMITs that write succeed on the server and then act as if their
    /// reply was lost (as when the connection breaks right after the server committed).
    pub fn lose_commit_replies(&self, n: u32) {
        self.lost_replies.store(n, Ordering::SeqCst);
    }

    /// The next `n` attempts of a batch fail before their first statement (as when the
    /// connection is gone).
    pub fn fail_attempts(&self, n: u32) {
        self.failed_attempts.store(n, Ordering::SeqCst);
    }

    fn take(counter: &AtomicU32) -> bool {
        counter
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
    }

    fn lose_reply(&self) -> bool {
        Self::take(&self.lost_replies)
    }

    fn fail_attempt(&self) -> bool {
        Self::take(&self.failed_attempts)
    }
}

/// Group-commit tuning.
#[derive(Debug, Clone, Copy)]
pub struct GroupCommit {
    /// Bounded queue of waiting placements (backpressure).
    pub queue: usize,
    /// Most placements per transaction.
    pub max_batch: usize,
    /// How long the first placement of a batch waits for company.
    pub max_wait: std::time::Duration,
    /// Batches in flight at once: while one commits (waits for its fsync), the next
    /// is collected and written. Batches lock balances in key order and take the
    /// outbox counter last, so they cannot deadlock each other. Default 1: measured
    /// on this machine, 2 or 4 gave the same throughput and no better latency at half
    /// load (the outbox counter serialises their commits anyway, and they wait on each
    /// other's balance locks).
    pub writers: usize,
}

impl Default for GroupCommit {
    fn default() -> Self {
        Self {
            queue: 4_096,
            max_batch: 256,
            max_wait: std::time::Duration::from_micros(500),
            writers: 1,
        }
    }
}

/// A handle to one shard's group-commit writer. Cheap to clone.
#[derive(Debug, Clone)]
pub struct GroupWriter {
    shard: ShardId,
    tx: mpsc::Sender<Job>,
    batches: Arc<GroupStats>,
    _tasks: Arc<Vec<tokio::task::JoinHandle<()>>>,
}

impl GroupWriter {
    /// Transactions committed so far (each carrying one or more placements).
    pub fn batches(&self) -> u64 {
        self.batches.batches.load(Ordering::Relaxed)
    }

    /// Committed batches, the placements in them, and the time spent writing them
    /// (transaction start to commit, µs, summed over batches).
    pub fn stats(&self) -> (u64, u64, u64) {
        let b = &self.batches;
        (
            b.batches.load(Ordering::Relaxed),
            b.placements.load(Ordering::Relaxed),
            b.write_us.load(Ordering::Relaxed),
        )
    }
}

/// Counters of a group writer.
#[derive(Debug, Default)]
struct GroupStats {
    batches: AtomicU64,
    placements: AtomicU64,
    write_us: AtomicU64,
}

type Reply = oneshot::Sender<Result<Result<Ack, Reject>, PlaceError>>;

#[derive(Debug)]
struct Job {
    checked: Checked,
    reply: Reply,
}

async fn group_loop(
    shard: ShardId,
    pool: Result<MySqlPool, String>,
    router: TableRouter,
    cfg: GroupCommit,
    rx: Arc<tokio::sync::Mutex<mpsc::Receiver<Job>>>,
    batches: Arc<GroupStats>,
    faults: Arc<Faults>,
) {
    let pool = match pool {
        Ok(p) => p,
        Err(e) => {
            while let Some(job) = rx.lock().await.recv().await {
                let _ = job.reply.send(Err(PlaceError::Config(e.clone())));
            }
            return;
        }
    };
    let s = shard.get();
    loop {
        // one writer collects a batch at a time; the others are writing theirs
        let mut jobs = {
            let mut rx = rx.lock().await;
            let Some(first) = rx.recv().await else {
                return;
            };
            let mut jobs = vec![first];
            let deadline = tokio::time::Instant::now() + cfg.max_wait;
            while jobs.len() < cfg.max_batch {
                match tokio::time::timeout_at(deadline, rx.recv()).await {
                    Ok(Some(j)) => jobs.push(j),
                    _ => break,
                }
            }
            jobs
        };
        // lock balance rows in (user, asset) order, as the settlers do: no deadlocks
        // between a batch and a settler over the same users
        jobs.sort_by_key(|j| (j.checked.user_id, j.checked.frozen_asset));
        let checked: Vec<&Checked> = jobs.iter().map(|j| &j.checked).collect();
        let t0 = std::time::Instant::now();
        match write_batch(&pool, s, &router, &checked, &faults).await {
            Ok(results) => {
                batches.batches.fetch_add(1, Ordering::Relaxed);
                batches
                    .placements
                    .fetch_add(checked.len() as u64, Ordering::Relaxed);
                batches.write_us.fetch_add(
                    u64::try_from(t0.elapsed().as_micros()).unwrap_or(u64::MAX),
                    Ordering::Relaxed,
                );
                for (job, r) in jobs.into_iter().zip(results) {
                    let _ = job.reply.send(Ok(r));
                }
            }
            Err(PlaceError::CommitUnknown { error, planned }) => {
                // the COMMIT's reply was lost and no retry could look: each accepted
                // caller gets the id its order has if it was placed (a retry with the
                // same client order id is answered with that order, never a second
                // one); a refusal in that transaction wrote nothing and stands
                let msg = error.to_string();
                for (job, plan) in jobs.into_iter().zip(planned) {
                    let _ = job.reply.send(unknown_answer(plan, &msg));
                }
            }
            Err(e) if jobs.len() > 1 => {
                // nothing of the batch is durable. One job can be the cause (its month
                // table missing, an earlier order's symbol gone): each job is written
                // again on its own, so the others succeed and only the cause fails
                tracing::debug!(error = %e, jobs = jobs.len(), "batch failed; writing its jobs one by one");
                for job in jobs {
                    let one = [&job.checked];
                    let answer = match write_batch(&pool, s, &router, &one, &faults).await {
                        Ok(mut r) => Ok(r.pop().unwrap_or(Err(Reject::UnknownOrder))),
                        Err(PlaceError::CommitUnknown { error, planned }) => {
                            planned.into_iter().next().map_or_else(
                                || Err(PlaceError::NotCommitted(error.to_string())),
                                |plan| unknown_answer(plan, &error.to_string()),
                            )
                        }
                        Err(e) => Err(not_committed(e)),
                    };
                    let _ = job.reply.send(answer);
                }
            }
            Err(e) => {
                // a batch of one: its caller learns why
                let e = not_committed(e);
                if let Some(job) = jobs.into_iter().next() {
                    let _ = job.reply.send(Err(e));
                }
            }
        }
    }
}

/// What a caller whose write failed (nothing committed) is told: a missing month
/// table as such (it will not heal by retrying), anything else as "not committed".
fn not_committed(e: PlaceError) -> PlaceError {
    match e {
        PlaceError::Router(r @ RouterError::MissingTable { .. }) => PlaceError::Router(r),
        PlaceError::NotCommitted(m) => PlaceError::NotCommitted(m),
        other => PlaceError::NotCommitted(format!("not committed: {other}")),
    }
}

/// A caller's answer when its batch's COMMIT reply was lost: an accepted placement
/// may or may not exist ([`PlaceError::OutcomeUnknown`] with the id it has if it was
/// placed); a refusal in that transaction wrote nothing and stands.
fn unknown_answer(
    plan: Result<Ack, Reject>,
    reason: &str,
) -> Result<Result<Ack, Reject>, PlaceError> {
    match plan {
        Ok(ack) => Err(PlaceError::OutcomeUnknown {
            order_id: ack.order_id,
            client_order_id: ack.client_order_id,
            reason: reason.to_owned(),
        }),
        Err(reject) => Ok(Err(reject)),
    }
}

/// One batch in one transaction. Any database error (a deadlock rolls the whole
/// transaction back, and a statement after it would run outside it) abandons the
/// transaction and retries the whole batch, up to three times: a batch is applied
/// completely or not at all, and each caller's answer matches what was committed.
async fn write_batch(
    pool: &MySqlPool,
    shard: u16,
    router: &TableRouter,
    jobs: &[&Checked],
    faults: &Faults,
) -> Result<Vec<Result<Ack, Reject>>, PlaceError> {
    let place = |e| PlaceError::Router(RouterError::db_on_shard(shard, e));
    let mut last = None;
    // once a COMMIT's reply was lost, only a later attempt that completes can say
    // what happened (it finds the committed orders by their client order ids)
    // the plan of the latest attempt whose COMMIT's reply was lost: what may be
    // committed (each job's order id, or the earlier order it was answered with)
    let mut unknown: Option<Vec<Result<Ack, Reject>>> = None;
    for attempt in 0..3u32 {
        if attempt > 0 {
            tokio::time::sleep(std::time::Duration::from_millis(u64::from(attempt) * 5)).await;
        }
        if faults.fail_attempt() {
            last = Some(PlaceError::NotCommitted(format!(
                "shard {shard}: the attempt failed before it began (fault injection)"
            )));
            continue;
        }
        let conn = match pool.acquire().await {
            Ok(c) => c,
            Err(e) => {
                last = Some(place(e));
                continue;
            }
        };
        let mut tx = TextTx::new(conn);
        match write_set(&mut tx, shard, router, jobs, faults).await {
            Ok(results) => return Ok(results),
            Err(PlaceError::CommitUnknown { error, planned }) => {
                tx.abandon().await;
                unknown = Some(planned);
                last = Some(PlaceError::Router(error));
            }
            Err(e) => {
                tx.abandon().await;
                last = Some(e);
            }
        }
    }
    let last = last.unwrap_or_else(|| PlaceError::NotCommitted("batch failed".into()));
    match unknown {
        Some(planned) => Err(PlaceError::CommitUnknown {
            error: match last {
                PlaceError::Router(e) => e,
                other => RouterError::Busy(other.to_string()),
            },
            planned,
        }),
        None => Err(last),
    }
}

/// A balance row locked by a batch.
#[derive(Debug, Clone, Copy)]
struct Locked {
    available: Amount,
    version: u64,
    /// What this batch freezes from it.
    freeze: Amount,
}

/// Writes a set of placements in one transaction with three round trips, whatever
/// the set's size (statements in SQL text, [`router::sqltext`]):
/// 1. `START TRANSACTION`, the earlier orders with the same client order ids
///    (idempotent retries: the original order is the answer, nothing else happens),
///    and one locking read of every (user, asset) balance involved;
/// 2. after deciding in memory, in the order given, whether each placement fits the
///    balance left by the ones before it ("insufficient balance" changes nothing):
///    one optimistic-lock UPDATE of all those balances, netted per (user, asset),
///    each guarded by `version = read version AND available >= netted freeze` (all
///    must match, or the whole set is retried), then multi-row inserts of client
///    order ids, orders (per month table), `freeze` ledger rows and outbox rows (seqs
///    from the locked `outbox_seq` counter, last);
/// 3. `COMMIT`.
async fn write_set(
    tx: &mut TextTx,
    shard: u16,
    router: &TableRouter,
    jobs: &[&Checked],
    faults: &Faults,
) -> Result<Vec<Result<Ack, Reject>>, PlaceError> {
    use sqlx::Row;
    let place = |e| PlaceError::Router(RouterError::db_on_shard(shard, e));
    let bad = |e: sqlx::Error| PlaceError::Config(format!("shard {shard}: {e}"));
    let mut keys: BTreeMap<(u64, Asset), Option<Locked>> = BTreeMap::new();
    for c in jobs {
        keys.insert((c.user_id.get(), c.frozen_asset), None);
    }

    // 1. begin, look up, lock
    let mut sql = Sql::new();
    // the balances are locked first and the client order ids looked up after, with a
    // locking read: a commit of the same placements still in flight (its reply lost,
    // the server finishing it) holds those balance rows, so this waits for it and then
    // sees its client order ids; a lookup taken first could miss them and refuse a
    // placement that did commit as "insufficient balance"
    sql.raw("START TRANSACTION; SELECT 'b', user_id, currency, CAST(available AS CHAR), version FROM account_balances WHERE account_type = 'spot' AND (user_id, currency) IN (");
    sql.tuples(keys.keys(), |q, (u, a)| {
        q.int(*u).comma().str(a.as_str());
    });
    sql.raw(") FOR UPDATE; SELECT 'e', user_id, client_order_id, symbol, order_id FROM client_orders WHERE (user_id, client_order_id) IN (");
    sql.tuples(jobs, |q, c| {
        q.int(c.user_id.get()).comma().str(&c.client_order_id);
    });
    sql.raw(") LOCK IN SHARE MODE");
    let ran = sql.run(tx.conn().map_err(place)?).await.map_err(place)?;
    let mut found = Vec::new();
    for row in &ran.rows {
        let tag: String = row.try_get(0).map_err(bad)?;
        if tag == "e" {
            let cid: Vec<u8> = row.try_get(2).map_err(bad)?;
            found.push((
                row.try_get::<u64, _>(1).map_err(bad)?,
                String::from_utf8(cid)
                    .map_err(|_| PlaceError::Config("client order id is not text".into()))?,
                row.try_get::<String, _>(3).map_err(bad)?,
                row.try_get::<u64, _>(4).map_err(bad)?,
            ));
        } else {
            let u: u64 = row.try_get(1).map_err(bad)?;
            let a: String = row.try_get(2).map_err(bad)?;
            let avail: String = row.try_get(3).map_err(bad)?;
            let version: u64 = row.try_get(4).map_err(bad)?;
            let asset = Asset::new(&a).map_err(|e| PlaceError::Config(e.to_string()))?;
            if let Some(slot) = keys.get_mut(&(u, asset)) {
                *slot = Some(Locked {
                    available: Amount::from_db_str(&avail)?,
                    version,
                    freeze: Amount::ZERO,
                });
            }
        }
    }
    let mut earlier = existing(tx.conn().map_err(place)?, shard, router, found).await?;

    // decide each placement in order; `after` is the available balance it leaves
    let mut results: Vec<Result<Ack, Reject>> = Vec::with_capacity(jobs.len());
    let mut accepted: Vec<(&Checked, Amount)> = Vec::new();
    for c in jobs {
        let key = (c.user_id.get(), c.client_order_id.clone());
        if let Some(ack) = earlier.get(&key) {
            // the order this job's own earlier attempt committed (its reply lost) is
            // this placement, not a duplicate of another
            results.push(Ok(Ack {
                duplicate: ack.order_id != c.order.order_id,
                ..ack.clone()
            }));
            continue;
        }
        let slot = keys
            .get_mut(&(c.user_id.get(), c.frozen_asset))
            .and_then(Option::as_mut);
        let left = slot.as_ref().map_or(Amount::ZERO, |l| {
            l.available.checked_sub(l.freeze).unwrap_or(Amount::ZERO)
        });
        let Some(locked) = slot.filter(|_| left.get() >= c.frozen.get()) else {
            results.push(Err(Reject::InsufficientBalance {
                asset: c.frozen_asset,
                available: left,
            }));
            continue;
        };
        locked.freeze = locked.freeze.checked_add(c.frozen)?;
        let ack = Ack {
            order_id: c.order.order_id,
            symbol: c.symbol,
            client_order_id: c.client_order_id.clone(),
            frozen_asset: c.frozen_asset,
            frozen: c.frozen,
            duplicate: false,
        };
        // a second request with the same client order id in this very batch
        earlier.insert(
            key,
            Ack {
                duplicate: true,
                ..ack.clone()
            },
        );
        results.push(Ok(ack));
        accepted.push((c, left.checked_sub(c.frozen)?));
    }
    if accepted.is_empty() {
        // nothing was written: the answers (earlier orders, refusals) are final whatever
        // the COMMIT's reply; a connection whose COMMIT failed is closed, not pooled
        if router::sqltext::exec(tx.conn().map_err(place)?, "COMMIT")
            .await
            .is_ok()
        {
            tx.finish();
        }
        return Ok(results);
    }

    // 2. every write
    let freezes: Vec<((u64, Asset), Locked)> = keys
        .into_iter()
        .filter_map(|(k, l)| l.filter(|l| l.freeze.is_positive()).map(|l| (k, l)))
        .collect();
    let mut sql = Sql::new();
    let versioned: Vec<VersionedFreeze> = freezes
        .iter()
        .map(|((u, a), l)| VersionedFreeze {
            user: *u,
            asset: *a,
            amount: l.freeze,
            version: l.version,
        })
        .collect();
    ledger::balances::text::versioned_freezes(&mut sql, &versioned);
    sql.raw("INSERT INTO client_orders (user_id, client_order_id, symbol, order_id) VALUES ");
    sql.tuples(&accepted, |q, (c, _)| {
        q.int(c.user_id.get())
            .comma()
            .str(&c.client_order_id)
            .comma();
        q.str(c.symbol.as_str()).comma().int(c.order.order_id.get());
    });
    let mut by_table: BTreeMap<router::TableName, Vec<&Checked>> = BTreeMap::new();
    for (c, _) in &accepted {
        by_table
            .entry(router.orders_table(&c.symbol, c.order.order_id)?)
            .or_default()
            .push(c);
    }
    for (table, orders) in &by_table {
        sql.raw(";\nINSERT INTO `").raw(table.as_str()).raw(
            "` (order_id, client_order_id, user_id, symbol, side, type, time_in_force, \
               price, quantity, quote_quantity, stop_price, frozen_currency, frozen_amount) VALUES ",
        );
        sql.tuples(orders, |q, c| {
            let o = &c.order;
            q.int(o.order_id.get())
                .comma()
                .str(&c.client_order_id)
                .comma();
            q.int(c.user_id.get())
                .comma()
                .str(c.symbol.as_str())
                .comma();
            q.str(o.side.as_db_str())
                .comma()
                .str(o.order_type.as_db_str())
                .comma();
            q.str(o.tif.as_db_str()).comma();
            q.opt_dec(o.price.map(Amount::from)).comma();
            q.opt_dec(o.qty.map(Amount::from)).comma();
            q.opt_dec(o.quote_qty).comma();
            q.opt_dec(o.stop_price.map(Amount::from)).comma();
            q.str(c.frozen_asset.as_str()).comma().dec(c.frozen);
        });
    }
    sql.raw(";\n");
    ledger::balances::text::ledger_rows(
        &mut sql,
        accepted.iter().map(|(c, after)| LedgerRow {
            user: c.user_id.get(),
            asset: c.frozen_asset,
            kind: "freeze",
            amount: -c.frozen,
            balance_after: *after,
            ref_type: "order",
            ref_id: c.order.order_id.get(),
        }),
    );
    // last: the outbox counter row stays locked until the commit, so seqs follow
    // commit order (see the relay in `engine`)
    let n = accepted.len() as u64;
    sql.raw("UPDATE outbox_seq SET last_seq = (@outbox_first := last_seq + 1) + ")
        .int(n - 1)
        .raw(" WHERE id = 1;\nINSERT INTO outbox (seq, topic, msg_key, payload) VALUES ");
    sql.tuples(accepted.iter().enumerate(), |q, (i, (c, _))| {
        let input = OrderInput::Place {
            symbol: c.symbol,
            order: c.order.clone(),
        };
        q.raw("@outbox_first + ")
            .int(i as u64)
            .comma()
            .str(ORDERS_TOPIC)
            .comma();
        q.bytes(c.symbol.as_str().as_bytes())
            .comma()
            .bytes(&input.encode());
    });
    let ran = sql.run(tx.conn().map_err(place)?).await.map_err(place)?;
    let updated = ran.affected.first().copied().unwrap_or(0);
    if updated != freezes.len() as u64 {
        return Err(PlaceError::Router(RouterError::Busy(format!(
            "shard {shard}: {} of {} balances changed under the batch's lock",
            freezes.len() as u64 - updated.min(freezes.len() as u64),
            freezes.len()
        ))));
    }
    if ran.affected.get(ran.affected.len().saturating_sub(2)) != Some(&1) {
        return Err(PlaceError::Config(format!(
            "shard {shard}: outbox_seq has no row 1 (migration 0007 missing?)"
        )));
    }

    // 3. commit: an error here leaves the outcome unknown (the server may have
    // committed and the reply been lost)
    let unknown = |error: RouterError, planned: &[Result<Ack, Reject>]| PlaceError::CommitUnknown {
        error,
        planned: planned.to_vec(),
    };
    let conn = tx
        .conn()
        .map_err(|e| unknown(RouterError::db_on_shard(shard, e), &results))?;
    router::sqltext::exec(conn, "COMMIT")
        .await
        .map_err(|e| unknown(RouterError::db_on_shard(shard, e), &results))?;
    tx.finish();
    if faults.lose_reply() {
        return Err(unknown(
            RouterError::Busy(format!(
                "shard {shard}: the commit reply was lost (fault injection)"
            )),
            &results,
        ));
    }
    Ok(results)
}

/// The earlier orders of `found` (user, client order id, symbol, order id) rows of
/// `client_orders`, by (user, client order id). Retries are rare: one read each.
async fn existing(
    conn: &mut sqlx::MySqlConnection,
    shard: u16,
    router: &TableRouter,
    found: Vec<(u64, String, String, u64)>,
) -> Result<std::collections::HashMap<(u64, String), Ack>, PlaceError> {
    let place = |e| PlaceError::Router(RouterError::db_on_shard(shard, e));
    let mut out = std::collections::HashMap::with_capacity(found.len());
    for (user, client_order_id, symbol, order_id) in found {
        let symbol = router.symbol(&symbol)?;
        let order_id = OrderId::new(order_id).map_err(|e| PlaceError::Config(e.to_string()))?;
        let table = router.orders_table(&symbol, order_id)?;
        // the ack of the original placement: what it froze then (the hold rule at
        // nothing filled), not what is still frozen now after fills
        type Row = (
            String,
            String,
            String,
            Option<String>,
            Option<String>,
            Option<String>,
        );
        let (asset, side, ty, price, qty, quote): Row = sqlx::query_as(&format!(
            "SELECT frozen_currency, CAST(side AS CHAR), CAST(type AS CHAR), CAST(price AS CHAR), \
                    CAST(quantity AS CHAR), CAST(quote_quantity AS CHAR) FROM `{table}` WHERE order_id = ?"
        ))
        .bind(order_id.get())
        .fetch_one(&mut *conn)
        .await
        .map_err(place)?;
        let corrupt =
            |what: &str| PlaceError::Config(format!("order {order_id} in {table}: bad {what}"));
        let shape = domain::hold::HoldShape {
            side: Side::from_db_str(&side).map_err(|_| corrupt("side"))?,
            order_type: OrderType::from_db_str(&ty).map_err(|_| corrupt("type"))?,
            price: price.as_deref().map(Price::from_db_str).transpose()?,
            qty: qty.as_deref().map(Amount::from_db_str).transpose()?,
            quote_qty: quote.as_deref().map(Amount::from_db_str).transpose()?,
            filled_qty: Amount::ZERO,
            filled_amount: Amount::ZERO,
        };
        let frozen = domain::hold::required_hold(&shape).ok_or_else(|| corrupt("shape"))??;
        out.insert(
            (user, client_order_id.clone()),
            Ack {
                order_id,
                symbol,
                client_order_id,
                frozen_asset: Asset::new(&asset).map_err(|e| PlaceError::Config(e.to_string()))?,
                frozen,
                duplicate: true,
            },
        );
    }
    Ok(out)
}
