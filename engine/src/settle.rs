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
//!   asset over all shards never changes in a trade;
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
use router::{RouterError, TableName, TableRouter};
use serde::{Deserialize, Serialize};
use sqlx::{MySqlConnection, MySqlPool};

use crate::matcher::{Event, RejectReason, SymbolSpec, Trade};

/// Topic of matcher output for settlement, partitioned by shard.
pub const FILLS_TOPIC: &str = "fills";
/// The per-shard fee account.
pub const FEE_ACCOUNT: u64 = 0;

/// One symbol's events for one shard.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FillBatch {
    /// The matcher stream (its orders topic): seqs are comparable only within one.
    pub stream: String,
    /// Symbol.
    pub symbol: Symbol,
    /// Events in `seq` order.
    pub events: Vec<Event>,
}

impl FillBatch {
    /// Bytes for the topic.
    pub fn encode(&self) -> Vec<u8> {
        postcard::to_stdvec(self).unwrap_or_default()
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
        Event::Accepted { user_id, .. }
        | Event::Rejected { user_id, .. }
        | Event::Triggered { user_id, .. }
        | Event::Cancelled { user_id, .. }
        | Event::Expired { user_id, .. }
        | Event::Amended { user_id, .. } => vec![user_id.shard(count)],
        Event::BookDelta { .. } => vec![],
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

/// What a batch did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Applied {
    /// Events applied (moved the mark).
    pub applied: usize,
    /// Redelivered events skipped.
    pub skipped: usize,
}

/// An order being settled, loaded once per batch and written back at the end.
#[derive(Debug, Clone)]
struct OrderState {
    table: TableName,
    user: UserId,
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
}

impl OrderState {
    fn is_final(&self) -> bool {
        self.status.is_final()
    }

    fn completely_filled(&self) -> bool {
        match (self.quantity, self.quote_quantity) {
            (Some(q), _) => self.filled_qty.get() >= q.get(),
            (None, Some(a)) => self.filled_amount.get() >= a.get(),
            (None, None) => false,
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
    ref_type: &'static str,
    ref_id: u64,
}

/// Settles one shard.
#[derive(Clone)]
pub struct Settler {
    shard: ShardId,
    count: NonZeroU16,
    pool: MySqlPool,
    router: TableRouter,
    specs: Arc<BTreeMap<Symbol, SymbolSpec>>,
}

impl std::fmt::Debug for Settler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settler")
            .field("shard", &self.shard)
            .finish_non_exhaustive()
    }
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
        }
    }

    fn mine(&self, user: UserId) -> bool {
        user.shard(self.count) == self.shard
    }

    fn db(&self, e: sqlx::Error) -> SettleError {
        SettleError::Router(RouterError::db_on_shard(self.shard.get(), e))
    }

    /// Applies a batch in one transaction.
    ///
    /// # Errors
    /// [`SettleError`]; nothing was written then.
    pub async fn apply(&self, batch: &FillBatch) -> Result<Applied, SettleError> {
        let spec = self
            .specs
            .get(&batch.symbol)
            .ok_or_else(|| SettleError::Inconsistent(format!("no spec for {}", batch.symbol)))?
            .clone();
        let mut tx = self.pool.begin().await.map_err(|e| self.db(e))?;
        sqlx::query("INSERT IGNORE INTO applied_seq (symbol, stream, seq) VALUES (?, ?, 0)")
            .bind(batch.symbol.as_str())
            .bind(&batch.stream)
            .execute(&mut *tx)
            .await
            .map_err(|e| self.db(e))?;
        let (mark, stream): (u64, String) =
            sqlx::query_as("SELECT seq, stream FROM applied_seq WHERE symbol = ? FOR UPDATE")
                .bind(batch.symbol.as_str())
                .fetch_one(&mut *tx)
                .await
                .map_err(|e| self.db(e))?;
        if stream != batch.stream {
            return Err(SettleError::Inconsistent(format!(
                "{} on shard {} is settled from matcher stream {stream:?}; refusing a batch from {:?} \
                 (its seqs are not comparable; nothing applied)",
                batch.symbol, self.shard, batch.stream
            )));
        }
        let mut result = Applied::default();
        let mut orders: BTreeMap<OrderId, OrderState> = BTreeMap::new();
        let mut ledger: Vec<Ledger> = Vec::new();
        let mut new_mark = mark;
        for event in &batch.events {
            if event.seq() <= mark {
                result.skipped += 1;
                continue;
            }
            new_mark = new_mark.max(event.seq());
            result.applied += 1;
            self.settle_event(&mut tx, &spec, event, &mut orders, &mut ledger)
                .await?;
        }
        if result.applied == 0 {
            tx.rollback().await.map_err(|e| self.db(e))?;
            return Ok(result);
        }
        self.write_orders(&mut tx, &orders).await?;
        self.write_balances(&mut tx, &ledger).await?;
        sqlx::query("UPDATE applied_seq SET seq = ? WHERE symbol = ?")
            .bind(new_mark)
            .bind(batch.symbol.as_str())
            .execute(&mut *tx)
            .await
            .map_err(|e| self.db(e))?;
        tx.commit().await.map_err(|e| self.db(e))?;
        Ok(result)
    }

    async fn settle_event(
        &self,
        conn: &mut MySqlConnection,
        spec: &SymbolSpec,
        event: &Event,
        orders: &mut BTreeMap<OrderId, OrderState>,
        ledger: &mut Vec<Ledger>,
    ) -> Result<(), SettleError> {
        match event {
            Event::Trade { seq, trade } => {
                for (order, user, is_maker) in [
                    (trade.taker_order, trade.taker_user, false),
                    (trade.maker_order, trade.maker_user, true),
                ] {
                    if self.mine(user) {
                        self.fill(conn, spec, *seq, trade, order, is_maker, orders, ledger)
                            .await?;
                    }
                }
            }
            Event::Cancelled {
                order_id, user_id, ..
            } if self.mine(*user_id) => {
                self.finish(conn, spec, *order_id, OrderStatus::Canceled, orders, ledger)
                    .await?;
            }
            Event::Expired {
                order_id, user_id, ..
            } if self.mine(*user_id) => {
                self.finish(conn, spec, *order_id, OrderStatus::Expired, orders, ledger)
                    .await?;
            }
            Event::Rejected {
                order_id,
                user_id,
                reason,
                ..
            } if self.mine(*user_id) => {
                // rejects of cancels/amends and of redelivered ids touch no order's money
                let place_reject = !matches!(
                    reason,
                    RejectReason::DuplicateOrderId
                        | RejectReason::UnknownOrder
                        | RejectReason::AmendNotLower
                );
                if place_reject {
                    self.finish(conn, spec, *order_id, OrderStatus::Rejected, orders, ledger)
                        .await?;
                }
            }
            Event::Amended {
                order_id,
                user_id,
                reduced_by,
                ..
            } if self.mine(*user_id) => {
                let reduced = spec
                    .qty(*reduced_by)
                    .ok_or_else(|| SettleError::Inconsistent("amend size".into()))?;
                let o = self.order(conn, spec, *order_id, orders).await?;
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
                ledger.push(Ledger {
                    user: o.user.get(),
                    asset: o.frozen_asset,
                    kind: "unfreeze",
                    d_available: release,
                    d_frozen: -release,
                    ref_type: "order",
                    ref_id: order_id.get(),
                });
            }
            _ => {}
        }
        Ok(())
    }

    /// Loads an order of this shard (once per batch).
    #[allow(clippy::map_entry)] // an entry cannot be held across the awaited load
    async fn order<'a>(
        &self,
        conn: &mut MySqlConnection,
        spec: &SymbolSpec,
        id: OrderId,
        orders: &'a mut BTreeMap<OrderId, OrderState>,
    ) -> Result<&'a mut OrderState, SettleError> {
        if !orders.contains_key(&id) {
            let table = self.router.orders_table(&spec.symbol, id)?;
            type Row = (
                u64,
                String,
                Option<String>,
                Option<String>,
                Option<String>,
                String,
                String,
                String,
                String,
                String,
                String,
            );
            let row: Option<Row> = sqlx::query_as(&format!(
                "SELECT user_id, CAST(side AS CHAR), CAST(price AS CHAR), CAST(quantity AS CHAR), CAST(quote_quantity AS CHAR), \
                        frozen_currency, CAST(frozen_amount AS CHAR), CAST(filled_quantity AS CHAR), CAST(filled_amount AS CHAR), \
                        CAST(fee AS CHAR), CAST(status AS CHAR) \
                 FROM `{table}` WHERE order_id = ? FOR UPDATE"
            ))
            .bind(id.get())
            .fetch_optional(&mut *conn)
            .await
            .map_err(|e| self.db(e))?;
            let Some((user, side, price, qty, quote, fasset, frozen, fq, fa, fee, status)) = row
            else {
                return Err(SettleError::Inconsistent(format!(
                    "order {id} not found in {table} on shard {}",
                    self.shard
                )));
            };
            let amt = |s: &str| Amount::from_db_str(s);
            let opt = |s: Option<String>| s.map(|v| Amount::from_db_str(&v)).transpose();
            let bad = |what: &str| SettleError::Inconsistent(format!("order {id}: bad {what}"));
            orders.insert(
                id,
                OrderState {
                    table,
                    user: UserId::new(user).map_err(|_| bad("user"))?,
                    side: Side::from_db_str(&side).map_err(|_| bad("side"))?,
                    price: opt(price)?,
                    quantity: opt(qty)?,
                    quote_quantity: opt(quote)?,
                    frozen_asset: Asset::new(&fasset).map_err(|_| bad("frozen currency"))?,
                    frozen: amt(&frozen)?,
                    filled_qty: amt(&fq)?,
                    filled_amount: amt(&fa)?,
                    fee: amt(&fee)?,
                    status: OrderStatus::from_db_str(&status).map_err(|_| bad("status"))?,
                },
            );
        }
        orders
            .get_mut(&id)
            .ok_or_else(|| SettleError::Inconsistent(format!("order {id} vanished")))
    }

    #[allow(clippy::too_many_arguments)]
    async fn fill(
        &self,
        conn: &mut MySqlConnection,
        spec: &SymbolSpec,
        seq: u64,
        t: &Trade,
        order_id: OrderId,
        is_maker: bool,
        orders: &mut BTreeMap<OrderId, OrderState>,
        ledger: &mut Vec<Ledger>,
    ) -> Result<(), SettleError> {
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
        let o = self.order(conn, spec, order_id, orders).await?;
        if o.side != side {
            return Err(bad("side mismatch"));
        }
        o.frozen = o.frozen.checked_sub(spent)?;
        o.filled_qty = o.filled_qty.checked_add(base)?;
        o.filled_amount = o.filled_amount.checked_add(quote)?;
        o.fee = o.fee.checked_add(fee)?;
        o.status = OrderStatus::PartiallyFilled;
        let user = o.user.get();
        let frozen_asset = o.frozen_asset;
        ledger.push(Ledger {
            user,
            asset: frozen_asset,
            kind: "trade",
            d_available: Amount::ZERO,
            d_frozen: -spent,
            ref_type: "trade",
            ref_id: t.trade_id,
        });
        ledger.push(Ledger {
            user,
            asset: recv_asset,
            kind: "trade",
            d_available: gross,
            d_frozen: Amount::ZERO,
            ref_type: "trade",
            ref_id: t.trade_id,
        });
        if fee.is_positive() {
            ledger.push(Ledger {
                user,
                asset: recv_asset,
                kind: "fee",
                d_available: -fee,
                d_frozen: Amount::ZERO,
                ref_type: "trade",
                ref_id: t.trade_id,
            });
            ledger.push(Ledger {
                user: FEE_ACCOUNT,
                asset: recv_asset,
                kind: "fee",
                d_available: fee,
                d_frozen: Amount::ZERO,
                ref_type: "trade",
                ref_id: t.trade_id,
            });
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
                ledger.push(Ledger {
                    user,
                    asset: frozen_asset,
                    kind: "unfreeze",
                    d_available: improvement,
                    d_frozen: -improvement,
                    ref_type: "trade",
                    ref_id: t.trade_id,
                });
            }
        }
        if o.completely_filled() {
            self.finish(conn, spec, order_id, OrderStatus::Filled, orders, ledger)
                .await?;
        }
        let trades = self.router.table(
            router::TableKind::Trades,
            &spec.symbol,
            router::Month::of_id(t.taker_order.get())?,
        )?;
        sqlx::query(&format!(
            "INSERT INTO `{trades}` (trade_id, side, symbol, order_id, user_id, counter_order_id, counter_user_id, \
               price, quantity, amount, is_maker, fee, fee_currency, seq) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
        ))
        .bind(t.trade_id)
        .bind(side.as_db_str())
        .bind(spec.symbol.as_str())
        .bind(order_id.get())
        .bind(user)
        .bind(counter_order.get())
        .bind(counter_user.get())
        .bind(price.to_db_string())
        .bind(qty.to_db_string())
        .bind(quote.to_db_string())
        .bind(is_maker)
        .bind(fee.to_db_string())
        .bind(recv_asset.as_str())
        .bind(seq)
        .execute(&mut *conn)
        .await
        .map_err(|e| self.db(e))?;
        Ok(())
    }

    /// Moves an order to a final state and releases what is still frozen for it.
    async fn finish(
        &self,
        conn: &mut MySqlConnection,
        spec: &SymbolSpec,
        id: OrderId,
        status: OrderStatus,
        orders: &mut BTreeMap<OrderId, OrderState>,
        ledger: &mut Vec<Ledger>,
    ) -> Result<(), SettleError> {
        let o = self.order(conn, spec, id, orders).await?;
        if o.is_final() {
            return Ok(());
        }
        o.status = status;
        let rest = o.frozen;
        if rest.is_positive() {
            o.frozen = Amount::ZERO;
            ledger.push(Ledger {
                user: o.user.get(),
                asset: o.frozen_asset,
                kind: "unfreeze",
                d_available: rest,
                d_frozen: -rest,
                ref_type: "order",
                ref_id: id.get(),
            });
        }
        Ok(())
    }

    async fn write_orders(
        &self,
        conn: &mut MySqlConnection,
        orders: &BTreeMap<OrderId, OrderState>,
    ) -> Result<(), SettleError> {
        for (id, o) in orders {
            sqlx::query(&format!(
                "UPDATE `{}` SET frozen_amount = ?, filled_quantity = ?, filled_amount = ?, fee = ?, status = ?, \
                   quantity = COALESCE(?, quantity), \
                   filled_at = IF(? = 'filled', CURRENT_TIMESTAMP(3), filled_at) WHERE order_id = ?",
                o.table
            ))
            .bind(o.frozen.to_db_string())
            .bind(o.filled_qty.to_db_string())
            .bind(o.filled_amount.to_db_string())
            .bind(o.fee.to_db_string())
            .bind(o.status.as_db_str())
            .bind(o.quantity.map(|q| q.to_db_string()))
            .bind(o.status.as_db_str())
            .bind(id.get())
            .execute(&mut *conn)
            .await
            .map_err(|e| self.db(e))?;
        }
        Ok(())
    }

    /// Nets the ledger per (user, asset), writes each balance once (rows locked in key
    /// order) and the ledger rows with their running `balance_after`.
    async fn write_balances(
        &self,
        conn: &mut MySqlConnection,
        ledger: &[Ledger],
    ) -> Result<(), SettleError> {
        let mut net: BTreeMap<(u64, Asset), (Amount, Amount)> = BTreeMap::new();
        for l in ledger {
            let e = net
                .entry((l.user, l.asset))
                .or_insert((Amount::ZERO, Amount::ZERO));
            e.0 = e.0.checked_add(l.d_available)?;
            e.1 = e.1.checked_add(l.d_frozen)?;
        }
        let mut available: BTreeMap<(u64, Asset), Amount> = BTreeMap::new();
        for ((user, asset), (da, df)) in &net {
            let row: Option<(String,)> = sqlx::query_as(
                "SELECT CAST(available AS CHAR) FROM account_balances \
                 WHERE user_id = ? AND currency = ? AND account_type = 'spot' FOR UPDATE",
            )
            .bind(user)
            .bind(asset.as_str())
            .fetch_optional(&mut *conn)
            .await
            .map_err(|e| self.db(e))?;
            let exists = row.is_some();
            let before = row
                .map(|(a,)| Amount::from_db_str(&a))
                .transpose()?
                .unwrap_or(Amount::ZERO);
            available.insert((*user, *asset), before);
            // CHECK (available >= 0 AND frozen >= 0) guards the result. (Not INSERT ... ON
            // DUPLICATE KEY UPDATE: MariaDB checks the constraint on the would-be-inserted
            // deltas first, and a negative delta is normal here.)
            let res = if exists {
                sqlx::query(
                    "UPDATE account_balances SET available = available + CAST(? AS DECIMAL(36,18)), \
                       frozen = frozen + CAST(? AS DECIMAL(36,18)), version = version + 1 \
                     WHERE user_id = ? AND currency = ? AND account_type = 'spot'",
                )
                .bind(da.to_db_string())
                .bind(df.to_db_string())
                .bind(user)
                .bind(asset.as_str())
                .execute(&mut *conn)
                .await
            } else {
                sqlx::query("INSERT INTO account_balances (user_id, currency, available, frozen) VALUES (?, ?, ?, ?)")
                    .bind(user)
                    .bind(asset.as_str())
                    .bind(da.to_db_string())
                    .bind(df.to_db_string())
                    .execute(&mut *conn)
                    .await
            };
            res.map_err(|e| self.db(e))?;
        }
        for l in ledger {
            let a = available.entry((l.user, l.asset)).or_insert(Amount::ZERO);
            *a = a.checked_add(l.d_available)?;
            let amount = if l.d_available.is_zero() {
                l.d_frozen
            } else {
                l.d_available
            };
            if amount.is_zero() {
                continue;
            }
            sqlx::query(
                "INSERT INTO account_transactions (user_id, currency, type, amount, balance_after, ref_type, ref_id) \
                 VALUES (?, ?, ?, ?, ?, ?, ?)",
            )
            .bind(l.user)
            .bind(l.asset.as_str())
            .bind(l.kind)
            .bind(amount.to_db_string())
            .bind(a.to_db_string())
            .bind(l.ref_type)
            .bind(l.ref_id)
            .execute(&mut *conn)
            .await
            .map_err(|e| self.db(e))?;
        }
        Ok(())
    }
}
