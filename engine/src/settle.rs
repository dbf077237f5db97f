//! Settlement of matcher events on one shard (DESIGN.md "Order flow" 6).
//!
//! [`Settler::apply`] takes a [`FillBatch`] (one symbol's events, in `seq` order) and,
//! in **one local transaction**:
//! * skips events at or below the shard's `applied_seq` mark for the symbol (a
//!   redelivery) and moves the mark to the last event applied;
//! * applies the parts that concern users of this shard: fills (order progress, trade
//!   row, money), cancels/expiries/rejects (the order's remaining frozen funds go back
//!   to available), amends (the reduced part goes back);
//! * nets balance changes per (user, asset) over the whole batch and writes each
//!   balance once, together with one ledger row per change.
//!
//! Money rules:
//! * an order's `frozen_amount` is what is *still* frozen for it; placement sets it,
//!   fills consume it (a buy spends `price × qty` of quote, a sell `qty` of base), a buy
//!   filled below its limit gets the difference back at once (so an open order holds
//!   exactly `limit × remaining`), and a final state (filled, canceled, expired,
//!   rejected) releases the rest;
//! * each side receives the gross amount minus its fee, in the asset it receives; the
//!   fee goes to the shard's fee account (`user_id` 0), so Σ(available + frozen) per
//!   asset over all shards never changes in a trade; the fee account's ledger gets one
//!   `fee` row per asset and batch (`ref_type` `fills:{SYMBOL}`, `ref_id` the batch's
//!   last seq), the users' ledgers one per fee;
//! * ledger rows: `amount` is the change of `available` (`balance_after` = available
//!   after), except `trade` rows spending frozen funds, whose amount is the (negative)
//!   frozen spend with `available` unchanged.
//!
//! The trade row goes to `trades_{SYMBOL}_{YYYYMM}` of the taker order's month (the
//! matcher has no clock; the taker's snowflake id does).

use std::collections::BTreeMap;
use std::num::NonZeroU16;
use std::sync::Arc;

use domain::{Amount, Asset, OrderId, OrderStatus, ShardId, Side, Symbol, UserId};
use ledger::balances::text::{self, Delta, LedgerRow};
use router::{RouterError, TableName, TableRouter};
use serde::{Deserialize, Serialize};
use sqlx::MySqlPool;

use matcher::{Event, RejectReason, SymbolSpec, Trade};
use router::sqltext::Sql;

/// Topic of matcher output for settlement, partitioned by shard.
pub const FILLS_TOPIC: &str = "fills";
/// The per-shard fee account.
pub const FEE_ACCOUNT: u64 = ledger::balances::FEE_ACCOUNT;

/// One symbol's events for one shard.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FillBatch {
    /// The matcher stream (its orders topic): seqs are comparable only within one.
    pub stream: String,
    /// Symbol.
    pub symbol: Symbol,
    /// The rules the events were matched under: ticks, lots and atoms are converted
    /// with these, never with what meta says now, so a rules change can never make
    /// settlement count on another grid than matching did.
    pub rules: SymbolSpec,
    /// Events in `seq` order.
    pub events: Vec<Event>,
}

/// [`FillBatch`] over borrowed parts: the same encoding, without copying the events
/// (the matcher splits one run of events into several batches by size).
#[derive(Serialize)]
struct FillBatchRef<'a> {
    stream: &'a str,
    symbol: &'a Symbol,
    rules: &'a SymbolSpec,
    events: &'a [Event],
}

impl FillBatch {
    /// A batch of `events` matched under `rules`.
    pub fn new(stream: impl Into<String>, rules: SymbolSpec, events: Vec<Event>) -> Self {
        Self {
            stream: stream.into(),
            symbol: rules.symbol,
            rules,
            events,
        }
    }

    /// Bytes for the topic.
    pub fn encode(&self) -> Vec<u8> {
        postcard::to_stdvec(&FillBatchRef {
            stream: &self.stream,
            symbol: &self.symbol,
            rules: &self.rules,
            events: &self.events,
        })
        .unwrap_or_default()
    }

    /// The bytes of a batch of `events` matched under `rules` (what
    /// [`FillBatch::encode`] gives).
    pub fn encode_parts(stream: &str, rules: &SymbolSpec, events: &[Event]) -> Vec<u8> {
        postcard::to_stdvec(&FillBatchRef {
            stream,
            symbol: &rules.symbol,
            rules,
            events,
        })
        .unwrap_or_default()
    }

    /// Parses bytes from the topic.
    ///
    /// # Errors
    /// The postcard error.
    pub fn decode(bytes: &[u8]) -> Result<Self, postcard::Error> {
        postcard::from_bytes(bytes)
    }
}

/// The shards an event must be settled on (none for book deltas).
pub fn shards_of(event: &Event, count: NonZeroU16) -> Vec<ShardId> {
    let mut v = match event {
        Event::Trade { trade, .. } => {
            vec![trade.taker_user.shard(count), trade.maker_user.shard(count)]
        }
        other => event_user(other)
            .map(|u| vec![u.shard(count)])
            .unwrap_or_default(),
    };
    v.dedup();
    v
}

/// Settlement errors (the batch is rolled back; retrying it is safe).
#[derive(Debug, thiserror::Error)]
pub enum SettleError {
    /// Database or routing.
    #[error(transparent)]
    Router(#[from] RouterError),
    /// Arithmetic out of range (a bug or corrupt data: nothing was written).
    #[error(transparent)]
    Money(#[from] domain::MoneyError),
    /// Something the batch refers to is missing or inconsistent.
    #[error("inconsistent: {0}")]
    Inconsistent(String),
}

impl SettleError {
    /// The shard could not be reached (connection refused or broken, no connection
    /// within the pool's timeout): nothing about the batch, so a settler stops and is
    /// restarted rather than count it toward parking.
    pub fn unreachable(&self) -> bool {
        matches!(self, Self::Router(e) if e.is_unreachable())
    }
}

impl domain::Kinded for SettleError {
    fn kind(&self) -> domain::ErrorKind {
        match self {
            Self::Router(e) => e.kind(),
            Self::Money(_) | Self::Inconsistent(_) => domain::ErrorKind::Internal,
        }
    }
}

/// What a batch did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Applied {
    /// Events applied (moved the mark).
    pub applied: usize,
    /// Redelivered events skipped.
    pub skipped: usize,
    /// What changed for users of this shard, in the order it happened; publish after
    /// the commit ([`UserStream`]).
    pub user_events: Vec<UserEvent>,
}

/// A fill of an order, as its owner sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FillInfo {
    /// Trade id (per symbol).
    #[serde(rename = "t")]
    pub trade_id: u64,
    /// Price.
    #[serde(rename = "L")]
    pub price: Amount,
    /// Quantity.
    #[serde(rename = "l")]
    pub qty: Amount,
    /// Fee charged for it.
    #[serde(rename = "n")]
    pub fee: Amount,
    /// Fee asset.
    #[serde(rename = "N")]
    pub fee_asset: Asset,
    /// The order was the maker.
    #[serde(rename = "m")]
    pub is_maker: bool,
}

/// A private event for the WebSocket user stream (Binance's names where they exist).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "e")]
pub enum UserEvent {
    /// An order's state after the batch (cumulative), with the batch's fills.
    #[serde(rename = "executionReport")]
    Order {
        /// Owner (not sent to the user; routes the message).
        #[serde(skip)]
        user_id: u64,
        /// Symbol.
        #[serde(rename = "s")]
        symbol: Symbol,
        /// Order id.
        #[serde(rename = "i")]
        order_id: OrderId,
        /// Client order id.
        #[serde(rename = "c")]
        client_order_id: String,
        /// Side.
        #[serde(rename = "S")]
        side: Side,
        /// Status (Binance spelling).
        #[serde(rename = "X")]
        status: OrderStatus,
        /// Cumulative filled quantity.
        #[serde(rename = "z")]
        filled_qty: Amount,
        /// Cumulative quote quantity.
        #[serde(rename = "Z")]
        filled_quote: Amount,
        /// Fills in this batch.
        fills: Vec<FillInfo>,
    },
    /// A balance after the batch.
    #[serde(rename = "outboundAccountPosition")]
    Balance {
        /// Owner (not sent to the user; routes the message).
        #[serde(skip)]
        user_id: u64,
        /// Asset.
        #[serde(rename = "a")]
        asset: Asset,
        /// Available.
        #[serde(rename = "f")]
        available: Amount,
        /// Frozen.
        #[serde(rename = "l")]
        frozen: Amount,
    },
    /// The matcher accepted an order that nothing else in the batch changed (it
    /// rests, or waits for its trigger): the gateway renders it as an `executionReport`
    /// NEW and answers a RESULT / FULL placement with it.
    #[serde(rename = "orderAccepted")]
    Accepted {
        /// Owner (not sent to the user; routes the message).
        #[serde(skip)]
        user_id: u64,
        /// Symbol.
        #[serde(rename = "s")]
        symbol: Symbol,
        /// Order id.
        #[serde(rename = "i")]
        order_id: OrderId,
    },
}

impl UserEvent {
    /// The user the event belongs to.
    pub fn user_id(&self) -> u64 {
        match self {
            Self::Order { user_id, .. }
            | Self::Balance { user_id, .. }
            | Self::Accepted { user_id, .. } => *user_id,
        }
    }
}

/// Publishes [`UserEvent`]s on Redis: channel `{prefix}user:{user_id}`, one JSON message
/// per event. Pub/sub is fire-and-forget: a subscriber that was away reconciles through
/// the REST queries, which read the shard.
#[derive(Clone)]
pub struct UserStream {
    redis: deadpool_redis::Pool,
    keys: router::keys::Keys,
}

impl std::fmt::Debug for UserStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserStream")
            .field("prefix", &self.keys.prefix())
            .finish_non_exhaustive()
    }
}

impl UserStream {
    /// Publishing to `redis` under `prefix` (`ex:` by default).
    pub fn new(redis: deadpool_redis::Pool, prefix: impl Into<String>) -> Self {
        Self {
            redis,
            keys: router::keys::Keys::new(prefix),
        }
    }

    /// The channel of `user` (`router::keys::Keys::user_channel`).
    pub fn channel(&self, user: u64) -> String {
        match UserId::new(user) {
            Ok(u) => self.keys.user_channel(u),
            Err(_) => format!("{}user:{user}", self.keys.prefix()),
        }
    }

    /// Publishes `events` in one round trip.
    ///
    /// # Errors
    /// [`RouterError::Redis`] when Redis is unreachable or refuses.
    pub async fn publish(&self, events: &[UserEvent]) -> Result<(), RouterError> {
        if events.is_empty() {
            return Ok(());
        }
        let mut conn = self.redis.get().await?;
        let mut pipe = deadpool_redis::redis::pipe();
        for e in events {
            let body = serde_json::to_string(e)
                .map_err(|e| RouterError::Redis(format!("encoding a user event: {e}")))?;
            pipe.publish(self.channel(e.user_id()), body).ignore();
        }
        pipe.query_async::<()>(&mut *conn).await?;
        Ok(())
    }
}

/// An order being settled, loaded once per batch and written back at the end.
#[derive(Debug, Clone)]
struct OrderState {
    table: TableName,
    user: UserId,
    client_order_id: String,
    side: Side,
    price: Option<Amount>,
    quantity: Option<Amount>,
    quote_quantity: Option<Amount>,
    frozen_asset: Asset,
    frozen: Amount,
    filled_qty: Amount,
    filled_amount: Amount,
    fee: Amount,
    status: OrderStatus,
    /// `quantity` was reduced by an amend in this batch.
    amended: bool,
    fills: Vec<FillInfo>,
}

impl OrderState {
    fn is_final(&self) -> bool {
        self.status.is_final()
    }

    fn completely_filled(&self) -> bool {
        match (self.side, self.quantity, self.quote_quantity) {
            // a sell by quote amount: its quantity is only the hold's cap
            (Side::Sell, Some(_), Some(a)) => self.filled_amount.get() >= a.get(),
            (_, Some(q), _) => self.filled_qty.get() >= q.get(),
            (_, None, Some(a)) => self.filled_amount.get() >= a.get(),
            (_, None, None) => false,
        }
    }
}

/// A ledger row to write.
#[derive(Debug, Clone)]
struct Ledger {
    user: u64,
    asset: Asset,
    kind: &'static str,
    /// Change of available.
    d_available: Amount,
    /// Change of frozen.
    d_frozen: Amount,
    ref_type: std::borrow::Cow<'static, str>,
    ref_id: u64,
}

/// (available, frozen) per (user, asset).
type Balances = BTreeMap<(u64, Asset), (Amount, Amount)>;

/// A trade half to insert.
#[derive(Debug, Clone)]
struct TradeRow {
    trade_id: u64,
    side: Side,
    order_id: u64,
    user: u64,
    counter_order: u64,
    counter_user: u64,
    price: Amount,
    qty: Amount,
    quote: Amount,
    is_maker: bool,
    fee: Amount,
    fee_asset: Asset,
    seq: u64,
}

/// Settles one shard.
#[derive(Clone)]
pub struct Settler {
    shard: ShardId,
    count: NonZeroU16,
    pool: MySqlPool,
    router: TableRouter,
    specs: Arc<BTreeMap<Symbol, SymbolSpec>>,
    user_stream: Option<UserStream>,
}

impl std::fmt::Debug for Settler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settler")
            .field("shard", &self.shard)
            .finish_non_exhaustive()
    }
}

/// A batch being settled in memory.
struct Work<'a> {
    spec: &'a SymbolSpec,
    orders: BTreeMap<OrderId, OrderState>,
    ledger: Vec<Ledger>,
    trades: BTreeMap<TableName, Vec<TradeRow>>,
    /// The fee account's income in this batch, per asset (one ledger row each).
    fees: BTreeMap<Asset, Amount>,
}

impl Settler {
    /// A settler for `shard` of `count` shards.
    pub fn new(
        shard: ShardId,
        count: NonZeroU16,
        pool: MySqlPool,
        router: TableRouter,
        specs: BTreeMap<Symbol, SymbolSpec>,
    ) -> Self {
        Self {
            shard,
            count,
            pool,
            router,
            specs: Arc::new(specs),
            user_stream: None,
        }
    }

    /// Publishes each applied batch's [`UserEvent`]s (when run by
    /// [`crate::service::run_settler`]).
    #[must_use]
    pub fn with_user_stream(mut self, stream: UserStream) -> Self {
        self.user_stream = Some(stream);
        self
    }

    /// Where private events go, if anywhere.
    pub fn user_stream(&self) -> Option<&UserStream> {
        self.user_stream.as_ref()
    }

    /// The shard it settles.
    pub fn shard(&self) -> ShardId {
        self.shard
    }

    /// The shard's pool (where parked batches are kept too: [`crate::parking`]).
    pub fn pool(&self) -> &MySqlPool {
        &self.pool
    }

    fn mine(&self, user: UserId) -> bool {
        user.shard(self.count) == self.shard
    }

    fn db(&self, e: sqlx::Error) -> SettleError {
        SettleError::Router(RouterError::db_on_shard(self.shard.get(), e))
    }

    /// The orders of this shard an event changes.
    fn orders_of(&self, event: &Event, out: &mut Vec<OrderId>) {
        match event {
            Event::Trade { trade, .. } => {
                for (order, user) in [
                    (trade.taker_order, trade.taker_user),
                    (trade.maker_order, trade.maker_user),
                ] {
                    if self.mine(user) {
                        out.push(order);
                    }
                }
            }
            Event::Cancelled {
                order_id, user_id, ..
            }
            | Event::Expired {
                order_id, user_id, ..
            }
            | Event::Amended {
                order_id, user_id, ..
            } if self.mine(*user_id) => out.push(*order_id),
            Event::Rejected {
                order_id,
                user_id,
                reason,
                ..
            } if self.mine(*user_id) && touches_money(*reason) => out.push(*order_id),
            _ => {}
        }
    }

    /// The rules to settle `batch` with: the batch's own (the matcher's), checked
    /// against what this settler knows of the symbol — same symbol, same assets (a
    /// grid or fee that differs from meta's is the matcher's rules at the time of the
    /// match, and is what its ticks, lots and atoms mean).
    fn rules_of<'b>(&self, batch: &'b FillBatch) -> Result<&'b SymbolSpec, SettleError> {
        let r = &batch.rules;
        let known = self
            .specs
            .get(&batch.symbol)
            .ok_or_else(|| SettleError::Inconsistent(format!("no spec for {}", batch.symbol)))?;
        if r.symbol != batch.symbol || r.base != known.base || r.quote != known.quote {
            return Err(SettleError::Inconsistent(format!(
                "batch of {} carries rules for {} ({}/{}), meta has {}/{}",
                batch.symbol, r.symbol, r.base, r.quote, known.base, known.quote
            )));
        }
        Ok(r)
    }

    /// Applies a batch in one transaction with two round trips, whatever its size
    /// (statements in SQL text, [`crate::sqltext`]):
    /// 1. `START TRANSACTION`, the symbol's `applied_seq` mark, and locking reads of
    ///    the orders the batch refers to (per month table) and of the balances it may
    ///    touch (its users of this shard and the fee account, in the symbol's two
    ///    assets) — in that order, as every batch does;
    /// 2. after applying the fresh events in memory: multi-row writes of trade halves,
    ///    orders, balances (netted per (user, asset)), ledger rows, the new mark, and
    ///    `COMMIT`.
    ///
    /// # Errors
    /// [`SettleError`]; nothing was written then.
    pub async fn apply(&self, batch: &FillBatch) -> Result<Applied, SettleError> {
        use sqlx::Row;
        let spec = self.rules_of(batch)?;
        let bad = |e: sqlx::Error| SettleError::Inconsistent(format!("shard {}: {e}", self.shard));
        // what the batch may touch (a superset when some events are redeliveries)
        let mut ids = Vec::new();
        for e in &batch.events {
            self.orders_of(e, &mut ids);
        }
        ids.sort_unstable();
        ids.dedup();
        let mut by_table: BTreeMap<TableName, Vec<u64>> = BTreeMap::new();
        for id in &ids {
            by_table
                .entry(self.router.orders_table(&spec.symbol, *id)?)
                .or_default()
                .push(id.get());
        }
        let mut users: Vec<u64> = vec![FEE_ACCOUNT];
        for e in &batch.events {
            match e {
                Event::Trade { trade, .. } => {
                    for u in [trade.taker_user, trade.maker_user] {
                        if self.mine(u) {
                            users.push(u.get());
                        }
                    }
                }
                other => {
                    if let Some(u) = event_user(other).filter(|u| self.mine(*u)) {
                        users.push(u.get());
                    }
                }
            }
        }
        users.sort_unstable();
        users.dedup();

        // 1. begin, mark, locking reads
        let conn = self.pool.acquire().await.map_err(|e| self.db(e))?;
        let mut tx = router::sqltext::TextTx::new(conn);
        let mut sql = Sql::new();
        sql.raw("START TRANSACTION; INSERT IGNORE INTO applied_seq (symbol, stream, seq) VALUES (")
            .str(batch.symbol.as_str())
            .comma()
            .str(&batch.stream)
            .raw(", 0); SELECT 'm', seq, stream FROM applied_seq WHERE symbol = ")
            .str(batch.symbol.as_str())
            .raw(" FOR UPDATE");
        for (table, ids) in &by_table {
            sql.raw(
                ";\nSELECT 'o', order_id, user_id, COALESCE(client_order_id, ''), CAST(side AS CHAR), \
                 CAST(price AS CHAR), CAST(quantity AS CHAR), CAST(quote_quantity AS CHAR), frozen_currency, \
                 CAST(frozen_amount AS CHAR), CAST(filled_quantity AS CHAR), CAST(filled_amount AS CHAR), \
                 CAST(fee AS CHAR), CAST(status AS CHAR) FROM `",
            )
            .raw(table.as_str())
            .raw("` WHERE order_id IN (");
            sql.tuples(ids, |q, id| {
                q.int(*id);
            });
            sql.raw(") FOR UPDATE");
        }
        sql.raw(";\nSELECT 'b', user_id, currency, CAST(available AS CHAR), CAST(frozen AS CHAR) FROM account_balances \
                 WHERE account_type = 'spot' AND (user_id, currency) IN (");
        sql.tuples(
            users
                .iter()
                .flat_map(|u| [(*u, spec.base), (*u, spec.quote)]),
            |q, (u, a)| {
                q.int(u).comma().str(a.as_str());
            },
        );
        sql.raw(") FOR UPDATE");
        let ran = sql
            .run(tx.conn().map_err(|e| self.db(e))?)
            .await
            .map_err(|e| self.db(e))?;
        let mut mark = None;
        let mut loaded: BTreeMap<OrderId, OrderState> = BTreeMap::new();
        let mut before: Balances = BTreeMap::new();
        let mut table_of: BTreeMap<u64, TableName> = BTreeMap::new();
        for (table, ids) in &by_table {
            for id in ids {
                table_of.insert(*id, table.clone());
            }
        }
        for row in &ran.rows {
            let tag: String = row.try_get(0).map_err(bad)?;
            match tag.as_str() {
                "m" => {
                    mark = Some((
                        row.try_get::<u64, _>(1).map_err(bad)?,
                        row.try_get::<String, _>(2).map_err(bad)?,
                    ));
                }
                "o" => {
                    let (id, o) = parse_order(row, &table_of)?;
                    loaded.insert(id, o);
                }
                _ => {
                    let u: u64 = row.try_get(1).map_err(bad)?;
                    let a: String = row.try_get(2).map_err(bad)?;
                    let asset = Asset::new(&a)
                        .map_err(|_| SettleError::Inconsistent(format!("balance asset {a:?}")))?;
                    let avail: String = row.try_get(3).map_err(bad)?;
                    let frozen: String = row.try_get(4).map_err(bad)?;
                    before.insert(
                        (u, asset),
                        (Amount::from_db_str(&avail)?, Amount::from_db_str(&frozen)?),
                    );
                }
            }
        }
        let Some((mark, stream)) = mark else {
            return Err(SettleError::Inconsistent(format!(
                "no applied_seq row for {} on shard {}",
                batch.symbol, self.shard
            )));
        };
        if stream != batch.stream {
            tx.abandon().await;
            return Err(SettleError::Inconsistent(format!(
                "{} on shard {} is settled from matcher stream {stream:?}; refusing a batch from {:?} \
                 (its seqs are not comparable; nothing applied)",
                batch.symbol, self.shard, batch.stream
            )));
        }
        let mut result = Applied::default();
        let fresh: Vec<&Event> = batch.events.iter().filter(|e| e.seq() > mark).collect();
        result.skipped = batch.events.len() - fresh.len();
        result.applied = fresh.len();
        let Some(new_mark) = fresh.iter().map(|e| e.seq()).max() else {
            tx.abandon().await;
            return Ok(result);
        };
        // only the orders the fresh events change
        let mut needed = Vec::new();
        for e in &fresh {
            self.orders_of(e, &mut needed);
        }
        let mut orders = BTreeMap::new();
        for id in needed {
            let Some(o) = loaded.remove(&id) else {
                if orders.contains_key(&id) {
                    continue;
                }
                return Err(SettleError::Inconsistent(format!(
                    "order {id} of {} not found on shard {}",
                    spec.symbol, self.shard
                )));
            };
            orders.insert(id, o);
        }
        // accepted orders of this shard: reported NEW unless the batch changed them
        let accepted: Vec<(u64, OrderId)> = fresh
            .iter()
            .filter_map(|e| match e {
                Event::Accepted {
                    order_id, user_id, ..
                } if self.mine(*user_id) => Some((user_id.get(), *order_id)),
                _ => None,
            })
            .collect();
        let mut work = Work {
            spec,
            orders,
            ledger: Vec::new(),
            trades: BTreeMap::new(),
            fees: BTreeMap::new(),
        };
        for e in &fresh {
            self.settle_event(&mut work, e)?;
        }
        // the fee account's income: one row per asset and batch, referring to the
        // batch's last seq of the symbol (the trades carry each fee)
        let fills_ref = format!("fills:{}", batch.symbol);
        for (asset, fee) in std::mem::take(&mut work.fees) {
            work.ledger.push(Ledger {
                user: FEE_ACCOUNT,
                asset,
                kind: "fee",
                d_available: fee,
                d_frozen: Amount::ZERO,
                ref_type: fills_ref.clone().into(),
                ref_id: new_mark,
            });
        }

        // 2. every write and the commit
        let mut sql = Sql::new();
        Self::trades_sql(&mut sql, &batch.symbol, &work.trades);
        Self::orders_sql(&mut sql, &work.orders);
        let balances = Self::balances_sql(&mut sql, &work.ledger, &before)?;
        sql.raw("UPDATE applied_seq SET seq = ")
            .int(new_mark)
            .raw(" WHERE symbol = ")
            .str(batch.symbol.as_str())
            .raw(";\nCOMMIT");
        sql.run(tx.conn().map_err(|e| self.db(e))?)
            .await
            .map_err(|e| self.db(e))?;
        tx.finish();
        for (user_id, order_id) in accepted {
            if !work.orders.contains_key(&order_id) {
                result.user_events.push(UserEvent::Accepted {
                    user_id,
                    symbol: batch.symbol,
                    order_id,
                });
            }
        }
        for (id, o) in work.orders {
            result.user_events.push(UserEvent::Order {
                user_id: o.user.get(),
                symbol: batch.symbol,
                order_id: id,
                client_order_id: o.client_order_id,
                side: o.side,
                status: o.status,
                filled_qty: o.filled_qty,
                filled_quote: o.filled_amount,
                fills: o.fills,
            });
        }
        for ((user, asset), (available, frozen)) in balances {
            if user != FEE_ACCOUNT {
                result.user_events.push(UserEvent::Balance {
                    user_id: user,
                    asset,
                    available,
                    frozen,
                });
            }
        }
        Ok(result)
    }

    fn settle_event(&self, w: &mut Work<'_>, event: &Event) -> Result<(), SettleError> {
        match event {
            Event::Trade { seq, trade } => {
                for (order, user, is_maker) in [
                    (trade.taker_order, trade.taker_user, false),
                    (trade.maker_order, trade.maker_user, true),
                ] {
                    if self.mine(user) {
                        self.fill(w, *seq, trade, order, is_maker)?;
                    }
                }
            }
            Event::Cancelled {
                order_id, user_id, ..
            } if self.mine(*user_id) => {
                Self::finish(w, *order_id, OrderStatus::Canceled)?;
            }
            Event::Expired {
                order_id, user_id, ..
            } if self.mine(*user_id) => {
                Self::finish(w, *order_id, OrderStatus::Expired)?;
            }
            Event::Rejected {
                order_id,
                user_id,
                reason,
                ..
            } if self.mine(*user_id) && touches_money(*reason) => {
                Self::finish(w, *order_id, OrderStatus::Rejected)?;
            }
            Event::Amended {
                order_id,
                user_id,
                reduced_by,
                ..
            } if self.mine(*user_id) => {
                let reduced = w
                    .spec
                    .qty(*reduced_by)
                    .ok_or_else(|| SettleError::Inconsistent("amend size".into()))?;
                let o = order_mut(&mut w.orders, *order_id)?;
                let release = match (o.side, o.price) {
                    (Side::Buy, Some(p)) => p
                        .get()
                        .checked_mul(reduced.get())
                        .and_then(|d| Amount::new(d).ok()),
                    (Side::Sell, _) => Some(Amount::from(reduced)),
                    (Side::Buy, None) => None,
                }
                .ok_or_else(|| SettleError::Inconsistent(format!("amend of order {order_id}")))?;
                o.frozen = o.frozen.checked_sub(release)?;
                o.quantity = o
                    .quantity
                    .map(|q| q.checked_sub(Amount::from(reduced)))
                    .transpose()?;
                o.amended = true;
                w.ledger.push(Ledger {
                    user: o.user.get(),
                    asset: o.frozen_asset,
                    kind: "unfreeze",
                    d_available: release,
                    d_frozen: -release,
                    ref_type: "order".into(),
                    ref_id: order_id.get(),
                });
            }
            _ => {}
        }
        Ok(())
    }

    fn fill(
        &self,
        w: &mut Work<'_>,
        seq: u64,
        t: &Trade,
        order_id: OrderId,
        is_maker: bool,
    ) -> Result<(), SettleError> {
        let spec = w.spec;
        let bad = |w: &str| SettleError::Inconsistent(format!("trade {}: {w}", t.trade_id));
        let price = spec.price(t.price).ok_or_else(|| bad("price"))?;
        let qty = spec.qty(t.qty).ok_or_else(|| bad("qty"))?;
        let quote = spec
            .quote_amount(t.quote_atoms)
            .ok_or_else(|| bad("notional"))?;
        let base = Amount::from(qty);
        let side = if is_maker {
            t.taker_side.opposite()
        } else {
            t.taker_side
        };
        let (fee_atoms, counter_order, counter_user) = if is_maker {
            (t.maker_fee, t.taker_order, t.taker_user)
        } else {
            (t.taker_fee, t.maker_order, t.maker_user)
        };
        // (spent from frozen, received asset, gross received, fee)
        let (spent, recv_asset, gross, fee) = match side {
            Side::Buy => (
                quote,
                spec.base,
                base,
                spec.base_amount(fee_atoms).ok_or_else(|| bad("fee"))?,
            ),
            Side::Sell => (
                base,
                spec.quote,
                quote,
                spec.quote_amount(fee_atoms).ok_or_else(|| bad("fee"))?,
            ),
        };
        let o = order_mut(&mut w.orders, order_id)?;
        if o.side != side {
            return Err(bad("side mismatch"));
        }
        o.frozen = o.frozen.checked_sub(spent)?;
        o.filled_qty = o.filled_qty.checked_add(base)?;
        o.filled_amount = o.filled_amount.checked_add(quote)?;
        o.fee = o.fee.checked_add(fee)?;
        o.status = OrderStatus::PartiallyFilled;
        o.fills.push(FillInfo {
            trade_id: t.trade_id,
            price: Amount::from(price),
            qty: base,
            fee,
            fee_asset: recv_asset,
            is_maker,
        });
        let user = o.user.get();
        let frozen_asset = o.frozen_asset;
        let mut rows = vec![
            (frozen_asset, "trade", Amount::ZERO, -spent),
            (recv_asset, "trade", gross, Amount::ZERO),
        ];
        if fee.is_positive() {
            rows.push((recv_asset, "fee", -fee, Amount::ZERO));
            let income = w.fees.entry(recv_asset).or_insert(Amount::ZERO);
            *income = income.checked_add(fee)?;
        }
        // a buy that filled below its limit froze `limit × qty` but spent less: the
        // difference goes back now, so an open order holds exactly what it still needs
        if let (Side::Buy, Some(limit)) = (side, o.price) {
            let improvement = limit
                .get()
                .checked_sub(price.get())
                .and_then(|d| d.checked_mul(qty.get()))
                .map(Amount::new)
                .transpose()?
                .unwrap_or(Amount::ZERO);
            if improvement.is_positive() {
                o.frozen = o.frozen.checked_sub(improvement)?;
                rows.push((frozen_asset, "unfreeze", improvement, -improvement));
            }
        }
        for (asset, kind, d_available, d_frozen) in rows {
            w.ledger.push(Ledger {
                user,
                asset,
                kind,
                d_available,
                d_frozen,
                ref_type: "trade".into(),
                ref_id: t.trade_id,
            });
        }
        if o.completely_filled() {
            Self::finish(w, order_id, OrderStatus::Filled)?;
        }
        let table = self.router.table(
            router::TableKind::Trades,
            &spec.symbol,
            router::Month::of_id(t.taker_order.get()).map_err(RouterError::from)?,
        )?;
        w.trades.entry(table).or_default().push(TradeRow {
            trade_id: t.trade_id,
            side,
            order_id: order_id.get(),
            user,
            counter_order: counter_order.get(),
            counter_user: counter_user.get(),
            price: Amount::from(price),
            qty: base,
            quote,
            is_maker,
            fee,
            fee_asset: recv_asset,
            seq,
        });
        Ok(())
    }

    /// Moves an order to a final state and releases what is still frozen for it.
    fn finish(w: &mut Work<'_>, id: OrderId, status: OrderStatus) -> Result<(), SettleError> {
        let o = order_mut(&mut w.orders, id)?;
        if o.is_final() {
            return Ok(());
        }
        o.status = status;
        let rest = o.frozen;
        if rest.is_positive() {
            o.frozen = Amount::ZERO;
            w.ledger.push(Ledger {
                user: o.user.get(),
                asset: o.frozen_asset,
                kind: "unfreeze",
                d_available: rest,
                d_frozen: -rest,
                ref_type: "order".into(),
                ref_id: id.get(),
            });
        }
        Ok(())
    }

    /// Trade halves, one multi-row insert per table. `(trade_id, side)` is unique: a
    /// half already there fails the batch (the `applied_seq` mark makes that a bug,
    /// never a redelivery).
    fn trades_sql(sql: &mut Sql, symbol: &Symbol, trades: &BTreeMap<TableName, Vec<TradeRow>>) {
        for (table, rows) in trades {
            sql.raw("INSERT INTO `").raw(table.as_str()).raw(
                "` (trade_id, side, symbol, order_id, user_id, counter_order_id, counter_user_id, \
                   price, quantity, amount, is_maker, fee, fee_currency, seq) VALUES ",
            );
            sql.tuples(rows, |q, r| {
                q.int(r.trade_id).comma().str(r.side.as_db_str()).comma();
                q.str(symbol.as_str())
                    .comma()
                    .int(r.order_id)
                    .comma()
                    .int(r.user)
                    .comma();
                q.int(r.counter_order).comma().int(r.counter_user).comma();
                q.dec(r.price)
                    .comma()
                    .dec(r.qty)
                    .comma()
                    .dec(r.quote)
                    .comma();
                q.int(u8::from(r.is_maker)).comma().dec(r.fee).comma();
                q.str(r.fee_asset.as_str()).comma().int(r.seq);
            });
            sql.raw(";\n");
        }
    }

    /// Every changed order, one `UPDATE ... JOIN (derived rows)` per table.
    fn orders_sql(sql: &mut Sql, orders: &BTreeMap<OrderId, OrderState>) {
        let mut by_table: BTreeMap<&TableName, Vec<(u64, &OrderState)>> = BTreeMap::new();
        for (id, o) in orders {
            by_table.entry(&o.table).or_default().push((id.get(), o));
        }
        for (table, rows) in by_table {
            sql.raw("UPDATE `").raw(table.as_str()).raw("` o JOIN (");
            for (i, (id, o)) in rows.iter().enumerate() {
                sql.raw(if i == 0 {
                    "SELECT "
                } else {
                    " UNION ALL SELECT "
                });
                sql.int(*id).raw(" AS id, ").dec(o.frozen).raw(" AS fr, ");
                sql.dec(o.filled_qty)
                    .raw(" AS fq, ")
                    .dec(o.filled_amount)
                    .raw(" AS fa, ");
                sql.dec(o.fee)
                    .raw(" AS fee, ")
                    .str(o.status.as_db_str())
                    .raw(" AS st, ");
                sql.opt_dec(o.quantity.filter(|_| o.amended)).raw(" AS qty");
            }
            sql.raw(
                ") v ON o.order_id = v.id \
                 SET o.frozen_amount = CAST(v.fr AS DECIMAL(36,18)), \
                     o.filled_quantity = CAST(v.fq AS DECIMAL(36,18)), \
                     o.filled_amount = CAST(v.fa AS DECIMAL(36,18)), \
                     o.fee = CAST(v.fee AS DECIMAL(36,18)), o.status = v.st, \
                     o.quantity = COALESCE(CAST(v.qty AS DECIMAL(36,18)), o.quantity), \
                     o.filled_at = IF(v.st = 'filled', CURRENT_TIMESTAMP(3), o.filled_at);\n",
            );
        }
    }

    /// Nets the ledger per (user, asset) and writes each balance once (rows already
    /// locked by the first round trip: `before`), and the ledger rows with their
    /// running `balance_after`. Returns each balance after the batch.
    fn balances_sql(
        sql: &mut Sql,
        ledger: &[Ledger],
        before: &Balances,
    ) -> Result<Balances, SettleError> {
        let mut net: BTreeMap<(u64, Asset), (Amount, Amount)> = BTreeMap::new();
        for l in ledger {
            let e = net
                .entry((l.user, l.asset))
                .or_insert((Amount::ZERO, Amount::ZERO));
            e.0 = e.0.checked_add(l.d_available)?;
            e.1 = e.1.checked_add(l.d_frozen)?;
        }
        let mut after = BTreeMap::new();
        let (mut updates, mut inserts) = (Vec::new(), Vec::new());
        for (key, (da, df)) in &net {
            match before.get(key) {
                Some((a, f)) => {
                    after.insert(*key, (a.checked_add(*da)?, f.checked_add(*df)?));
                    updates.push((*key, *da, *df));
                }
                None => {
                    after.insert(*key, (*da, *df));
                    inserts.push((*key, *da, *df));
                }
            }
        }
        // CHECK (available >= 0 AND frozen >= 0) guards every result. (Not INSERT ... ON
        // DUPLICATE KEY UPDATE: MariaDB checks the constraint on the would-be-inserted
        // deltas first, and a negative delta is normal here.)
        let delta = |((user, asset), available, frozen): &((u64, Asset), Amount, Amount)| Delta {
            user: *user,
            asset: *asset,
            available: *available,
            frozen: *frozen,
        };
        text::add_to_rows(sql, &updates.iter().map(delta).collect::<Vec<_>>());
        text::insert_rows(sql, &inserts.iter().map(delta).collect::<Vec<_>>());
        // ledger rows with the running available balance
        let mut running: BTreeMap<(u64, Asset), Amount> =
            before.iter().map(|(k, (a, _))| (*k, *a)).collect();
        let mut rows = Vec::with_capacity(ledger.len());
        for l in ledger {
            let a = running.entry((l.user, l.asset)).or_insert(Amount::ZERO);
            *a = a.checked_add(l.d_available)?;
            let amount = if l.d_available.is_zero() {
                l.d_frozen
            } else {
                l.d_available
            };
            if !amount.is_zero() {
                rows.push((l, amount, *a));
            }
        }
        text::ledger_rows(
            sql,
            rows.iter().map(|(l, amount, after)| LedgerRow {
                user: l.user,
                asset: l.asset,
                kind: l.kind,
                amount: *amount,
                balance_after: *after,
                ref_type: &l.ref_type,
                ref_id: l.ref_id,
            }),
        );
        Ok(after)
    }
}

/// The owner of a non-trade event (none for book deltas).
fn event_user(e: &Event) -> Option<UserId> {
    match e {
        Event::Accepted { user_id, .. }
        | Event::Rejected { user_id, .. }
        | Event::Triggered { user_id, .. }
        | Event::Cancelled { user_id, .. }
        | Event::Expired { user_id, .. }
        | Event::Amended { user_id, .. } => Some(*user_id),
        Event::Trade { .. } | Event::BookDelta { .. } => None,
    }
}

/// An order row of the first round trip (`'o'`, then the columns in `apply`'s order).
fn parse_order(
    row: &sqlx::mysql::MySqlRow,
    table_of: &BTreeMap<u64, TableName>,
) -> Result<(OrderId, OrderState), SettleError> {
    use sqlx::Row;
    let get = |i: usize| -> Result<Option<String>, SettleError> {
        row.try_get::<Option<String>, _>(i)
            .map_err(|e| SettleError::Inconsistent(format!("order row: {e}")))
    };
    let id: u64 = row
        .try_get(1)
        .map_err(|e| SettleError::Inconsistent(format!("order row: {e}")))?;
    let bad = |what: &str| SettleError::Inconsistent(format!("order {id}: bad {what}"));
    let req =
        |i: usize, what: &str| -> Result<String, SettleError> { get(i)?.ok_or_else(|| bad(what)) };
    let opt = |i: usize| -> Result<Option<Amount>, SettleError> {
        Ok(get(i)?.map(|v| Amount::from_db_str(&v)).transpose()?)
    };
    let amt = |i: usize, what: &str| -> Result<Amount, SettleError> {
        Ok(Amount::from_db_str(&req(i, what)?)?)
    };
    let user: u64 = row
        .try_get(2)
        .map_err(|e| SettleError::Inconsistent(format!("order row: {e}")))?;
    let cid: Vec<u8> = row
        .try_get(3)
        .map_err(|e| SettleError::Inconsistent(format!("order row: {e}")))?;
    let state = OrderState {
        table: table_of.get(&id).cloned().ok_or_else(|| bad("table"))?,
        user: UserId::new(user).map_err(|_| bad("user"))?,
        client_order_id: String::from_utf8(cid).map_err(|_| bad("client order id"))?,
        side: Side::from_db_str(&req(4, "side")?).map_err(|_| bad("side"))?,
        price: opt(5)?,
        quantity: opt(6)?,
        quote_quantity: opt(7)?,
        frozen_asset: Asset::new(&req(8, "frozen currency")?)
            .map_err(|_| bad("frozen currency"))?,
        frozen: amt(9, "frozen")?,
        filled_qty: amt(10, "filled quantity")?,
        filled_amount: amt(11, "filled amount")?,
        fee: amt(12, "fee")?,
        status: OrderStatus::from_db_str(&req(13, "status")?).map_err(|_| bad("status"))?,
        amended: false,
        fills: Vec::new(),
    };
    Ok((OrderId::new(id).map_err(|_| bad("id"))?, state))
}

/// Rejects of cancels/amends and of redelivered ids touch no order's money.
fn touches_money(reason: RejectReason) -> bool {
    !matches!(
        reason,
        RejectReason::DuplicateOrderId | RejectReason::UnknownOrder | RejectReason::AmendNotLower
    )
}

fn order_mut(
    orders: &mut BTreeMap<OrderId, OrderState>,
    id: OrderId,
) -> Result<&mut OrderState, SettleError> {
    orders
        .get_mut(&id)
        .ok_or_else(|| SettleError::Inconsistent(format!("order {id} was not loaded")))
}
