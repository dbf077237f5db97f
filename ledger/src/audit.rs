//! Money audits over every shard. Each check returns what it found; none of them
//! changes anything.
//!
//! * [`conservation`] — the money invariant (DESIGN.md "Money invariant"): for every
//!   asset, Σ over shards of (available + frozen), fee accounts included,
//!   = Σ completed deposits − Σ completed withdrawals;
//! * [`frozen_vs_open_orders`] — per shard and (user, asset): the balance's `frozen`
//!   = what the user's open orders and in-flight withdrawals hold; final orders hold
//!   nothing and no open order holds a negative amount;
//! * [`trade_halves`] — every trade has exactly one `buy` and one `sell` row over all
//!   shards, with equal price, quantity and amount;
//! * [`ledger_replay`] — per shard and (user, asset): the ledger rows, replayed in
//!   the order they were written, give the balance exactly (available and frozen),
//!   and every row's `balance_after` is the available balance the replay has after it.
//!
//! When they are exact:
//! * [`frozen_vs_open_orders`] and [`ledger_replay`] are exact per shard **at any
//!   time**, also on a live system: placement and settlement change a balance, its
//!   ledger rows and the order rows that explain it in one local transaction (so do
//!   funding and transfers), and each shard is read in one consistent
//!   snapshot (`START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY`, REPEATABLE
//!   READ, one connection);
//! * [`conservation`] and [`trade_halves`] are exact only when the pipeline is
//!   **quiescent across shards**: a trade's two halves settle on two shards in two
//!   separate transactions (so is the money they move), and the shards are not read at
//!   one common instant. On a live system they can report a difference that goes
//!   away once the in-flight batches are settled; run them again after the settlers
//!   have caught up before acting on a failure.

use std::collections::{BTreeMap, BTreeSet};

use domain::{Amount, ShardId};
use serde::Serialize;
use sqlx::Connection;

use router::{RouterError, ShardMap};

/// One asset's totals.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AssetTotals {
    /// Σ (available + frozen) over all shards.
    pub balances: Amount,
    /// Σ completed deposits.
    pub deposits: Amount,
    /// Σ completed withdrawals as sent (`actual_amount`: the fee stays with the
    /// shard's fee account, inside the balances).
    pub withdrawals: Amount,
}

impl AssetTotals {
    /// Whether the invariant holds for this asset.
    pub fn holds(&self) -> bool {
        self.deposits
            .checked_sub(self.withdrawals)
            .is_ok_and(|expected| expected == self.balances)
    }
}

/// Totals per asset over every shard.
///
/// Exact only when the pipeline is quiescent across shards (see the module docs): the
/// shards are read one after the other, and a trade moves money on two shards in two
/// transactions.
///
/// # Errors
/// Database errors naming the shard; sums out of range.
pub async fn conservation(shards: &ShardMap) -> Result<BTreeMap<String, AssetTotals>, RouterError> {
    let mut out: BTreeMap<String, AssetTotals> = BTreeMap::new();
    for (shard, pool) in shards.iter() {
        let place = |e| RouterError::db_on_shard(shard.get(), e);
        let queries = [
            ("SELECT currency, CAST(SUM(available + frozen) AS CHAR) FROM account_balances GROUP BY currency", 'b'),
            ("SELECT currency, CAST(SUM(amount) AS CHAR) FROM deposits WHERE status = 'completed' GROUP BY currency", 'd'),
            ("SELECT currency, CAST(SUM(actual_amount) AS CHAR) FROM withdrawals WHERE status = 'completed' GROUP BY currency", 'w'),
        ];
        for (sql, tag) in queries {
            let rows: Vec<(String, String)> =
                sqlx::query_as(sql).fetch_all(pool).await.map_err(place)?;
            for (currency, sum) in rows {
                let v = Amount::from_db_str(&sum)?;
                let t = out.entry(currency).or_default();
                let slot = match tag {
                    'b' => &mut t.balances,
                    'd' => &mut t.deposits,
                    _ => &mut t.withdrawals,
                };
                *slot = slot.checked_add(v)?;
            }
        }
    }
    Ok(out)
}

// ------------------------------------------------------- frozen vs open orders ---

/// Order statuses that still hold frozen funds.
pub const OPEN_ORDER_STATUSES: [domain::OrderStatus; 3] = domain::OrderStatus::OPEN;
/// Final order statuses: such an order holds nothing.
pub const FINAL_ORDER_STATUSES: [domain::OrderStatus; 4] = domain::OrderStatus::FINAL;
/// Withdrawal statuses whose `amount` (fee included) is held frozen.
pub const HOLDING_WITHDRAWAL_STATUSES: [&str; 4] =
    ["pending", "reviewing", "approved", "processing"];

/// `'a', 'b', 'c'` for an `IN (…)` list of constant statuses.
fn in_list(statuses: &[&str]) -> String {
    statuses
        .iter()
        .map(|s| format!("'{s}'"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// An open order of one symbol as its shard's database holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DbOpenOrder {
    /// The shard.
    pub shard: ShardId,
    /// The order.
    pub order_id: u64,
    /// Its owner.
    pub user_id: u64,
    /// `buy` / `sell`.
    pub side: String,
    /// `limit`, `stop_loss`, … (as stored).
    pub order_type: String,
    /// `quantity − filled_quantity` (`None` for a market-by-quote order).
    pub remaining: Option<Amount>,
}

/// Every open order ([`OPEN_ORDER_STATUSES`]) of `symbol` on every shard, over all its
/// month tables, by shard then order id: what `shardctl symbol rules` counts before a
/// grid change and what the matcher-vs-database audit compares with the books.
///
/// # Errors
/// Database errors naming the shard; a value that does not parse.
pub async fn open_orders_of(
    shards: &ShardMap,
    symbol: &domain::Symbol,
) -> Result<Vec<DbOpenOrder>, RouterError> {
    type Row = (u64, u64, String, String, Option<String>);
    let prefix = format!("orders_{symbol}_");
    let open = domain::OrderStatus::sql_list(&OPEN_ORDER_STATUSES);
    let mut out = Vec::new();
    for (shard, pool) in shards.iter() {
        let place = |e| RouterError::db_on_shard(shard.get(), e);
        // names from the catalog (a REGEXP on [A-Z0-9] symbols): safe to splice
        for table in shards
            .month_tables(shard)
            .await?
            .into_iter()
            .filter(|t| t.starts_with(&prefix))
        {
            let rows: Vec<Row> = sqlx::query_as(&format!(
                "SELECT order_id, user_id, CAST(side AS CHAR), CAST(type AS CHAR), \
                        CAST(quantity - filled_quantity AS CHAR) \
                 FROM `{table}` WHERE status IN ({open}) ORDER BY order_id"
            ))
            .fetch_all(pool)
            .await
            .map_err(place)?;
            for (order_id, user_id, side, order_type, remaining) in rows {
                let remaining = remaining
                    .map(|r| Amount::from_db_str(&r))
                    .transpose()
                    .map_err(|e| {
                        RouterError::Config(format!("{table} order {order_id}: remaining {e}"))
                    })?;
                out.push(DbOpenOrder {
                    shard,
                    order_id,
                    user_id,
                    side,
                    order_type,
                    remaining,
                });
            }
        }
    }
    out.sort_by_key(|o| (o.shard, o.order_id));
    Ok(out)
}

/// A (user, asset) whose `frozen` balance is not what its holds add up to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FrozenMismatch {
    /// The shard the user lives on.
    pub shard: ShardId,
    /// The user (`0` is the shard's fee account, which never holds anything).
    pub user_id: u64,
    /// The asset.
    pub asset: String,
    /// `account_balances.frozen` of the spot account (zero when there is no row).
    pub frozen_balance: Amount,
    /// `orders_part + withdrawals_part + transfers_part`: what the balance should hold.
    pub expected: Amount,
    /// Σ `frozen_amount` of the user's open orders in this asset, every order table.
    pub orders_part: Amount,
    /// Σ `amount` (fee included) of the user's withdrawals that hold funds.
    pub withdrawals_part: Amount,
    /// Σ `amount` of the user's outgoing transfers tried but not yet confirmed or
    /// cancelled (TCC source branches in status `tried`).
    pub transfers_part: Amount,
}

/// What is wrong with a single order's `frozen_amount`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OrderHoldProblem {
    /// An open order holds a negative amount.
    NegativeOpen,
    /// A final order (filled, canceled, rejected, expired) still holds funds.
    FinalStillHolds,
    /// An open order holds other than what its remaining quantity needs (`needs`): a
    /// limit-priced buy price × (quantity − filled), a sell quantity − filled, a
    /// market or stop buy its quote amount − what it spent.
    NotWhatItNeeds,
}

/// An order whose own `frozen_amount` is impossible for its status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BadOrderHold {
    /// The shard.
    pub shard: ShardId,
    /// The `orders_{SYMBOL}_{YYYYMM}` table.
    pub table: String,
    /// The order.
    pub order_id: u64,
    /// Its user.
    pub user_id: u64,
    /// Its status.
    pub status: String,
    /// `frozen_currency`.
    pub asset: String,
    /// `frozen_amount`.
    pub frozen_amount: Amount,
    /// What it should hold, for [`OrderHoldProblem::NotWhatItNeeds`] (`None`: the
    /// order's fields do not say, e.g. a quantity missing).
    pub needs: Option<Amount>,
    /// Which rule it breaks.
    pub problem: OrderHoldProblem,
}

/// What each (user, asset) should hold frozen: [open orders, withdrawals, transfers].
type Holds = BTreeMap<(u64, String), [Amount; 3]>;

/// Adds the rows of `sql` — `user, asset, COUNT(*), CAST(SUM(amount) AS CHAR)` grouped
/// by user and asset, read on `shard` — to part `part` of `holds`; returns how many
/// rows were summed.
async fn add_holds(
    conn: &mut sqlx::MySqlConnection,
    shard: ShardId,
    sql: &str,
    holds: &mut Holds,
    part: usize,
) -> Result<u64, RouterError> {
    let rows: Vec<(u64, String, i64, String)> = sqlx::query_as(sql)
        .fetch_all(conn)
        .await
        .map_err(|e| RouterError::db_on_shard(shard.get(), e))?;
    let mut counted = 0;
    for (user, asset, n, sum) in rows {
        counted += u64::try_from(n).unwrap_or_default();
        let slot = &mut holds.entry((user, asset)).or_default()[part];
        *slot = slot.checked_add(Amount::from_db_str(&sum)?)?;
    }
    Ok(counted)
}

/// Result of [`frozen_vs_open_orders`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct FrozenReport {
    /// Shards read.
    pub shards: u16,
    /// Order tables read, summed over shards.
    pub order_tables: usize,
    /// (user, asset) pairs compared: every spot balance row, plus pairs that hold
    /// funds but have no balance row.
    pub pairs_checked: u64,
    /// Open orders found.
    pub open_orders: u64,
    /// Withdrawals found holding funds.
    pub holding_withdrawals: u64,
    /// Transfers (source branches) holding funds.
    pub holding_transfers: u64,
    /// Balances that differ from their holds, by shard, user, asset.
    pub mismatches: Vec<FrozenMismatch>,
    /// Orders whose own `frozen_amount` is impossible for their status.
    pub bad_orders: Vec<BadOrderHold>,
}

impl FrozenReport {
    /// Whether nothing was found.
    pub fn holds(&self) -> bool {
        self.mismatches.is_empty() && self.bad_orders.is_empty()
    }

    /// Adds another (shard's) report to this one.
    pub fn merge(&mut self, other: FrozenReport) {
        self.shards += other.shards;
        self.order_tables += other.order_tables;
        self.pairs_checked += other.pairs_checked;
        self.open_orders += other.open_orders;
        self.holding_withdrawals += other.holding_withdrawals;
        self.holding_transfers += other.holding_transfers;
        self.mismatches.extend(other.mismatches);
        self.bad_orders.extend(other.bad_orders);
    }
}

/// Per shard, per (user, asset): `account_balances.frozen` (spot) = Σ `frozen_amount`
/// of the user's open orders ([`OPEN_ORDER_STATUSES`]) over every
/// `orders_{SYMBOL}_{YYYYMM}` table on the shard + Σ `amount` of the user's
/// withdrawals in [`HOLDING_WITHDRAWAL_STATUSES`] (`amount` includes the fee:
/// `actual_amount = amount − fee`). Also reports open orders holding a negative amount
/// and final orders ([`FINAL_ORDER_STATUSES`]) still holding funds.
///
/// Exact per shard at any time, also while orders are placed and settled: placement
/// and settlement change the balance and the order row in one transaction, and each
/// shard is read in one consistent snapshot on one connection.
///
/// Also counted: outgoing transfers whose TCC source branch is `tried` (frozen by Try,
/// not yet spent by Confirm nor released by Cancel).
///
/// # Errors
/// Database errors naming the shard; values that cannot be held exactly.
pub async fn frozen_vs_open_orders(shards: &ShardMap) -> Result<FrozenReport, RouterError> {
    frozen_vs_open_orders_with(shards, |_, _| {}).await
}

/// [`frozen_vs_open_orders`], calling `progress(shard, message)` after each shard.
///
/// # Errors
/// As [`frozen_vs_open_orders`].
pub async fn frozen_vs_open_orders_with(
    shards: &ShardMap,
    mut progress: impl FnMut(ShardId, &str),
) -> Result<FrozenReport, RouterError> {
    let mut report = FrozenReport::default();
    for (shard, _) in shards.iter() {
        let r = frozen_on_shard(shards, shard).await?;
        progress(
            shard,
            &format!(
                "frozen: {} (user, asset) checked, {} order tables, {} open orders, {} withdrawals holding, {} offenders",
                r.pairs_checked,
                r.order_tables,
                r.open_orders,
                r.holding_withdrawals,
                r.mismatches.len() + r.bad_orders.len()
            ),
        );
        report.merge(r);
    }
    Ok(report)
}

/// [`frozen_vs_open_orders`] for one shard.
///
/// # Errors
/// As [`frozen_vs_open_orders`]; [`RouterError::NoSuchShard`].
pub async fn frozen_on_shard(
    shards: &ShardMap,
    shard: ShardId,
) -> Result<FrozenReport, RouterError> {
    let place = |e| RouterError::db_on_shard(shard.get(), e);
    // the names come from a REGEXP on the catalog ([A-Z0-9] symbol, 6 digits), so they
    // are safe to splice; listed before the snapshot starts (DDL is not snapshotted)
    let tables: Vec<String> = shards
        .month_tables(shard)
        .await?
        .into_iter()
        .filter(|t| t.starts_with("orders_"))
        .collect();
    let mut conn = shards.pool(shard)?.acquire().await.map_err(place)?;
    // applies to the next transaction only: no session state leaks into the pool
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        .execute(&mut *conn)
        .await
        .map_err(place)?;
    let mut tx = conn
        .begin_with("START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY")
        .await
        .map_err(place)?;

    let mut report = FrozenReport {
        shards: 1,
        order_tables: tables.len(),
        ..FrozenReport::default()
    };
    // (user, asset) → [orders part, withdrawals part, transfers part]
    let mut holds = Holds::new();
    let open = domain::OrderStatus::sql_list(&OPEN_ORDER_STATUSES);
    let fin = domain::OrderStatus::sql_list(&FINAL_ORDER_STATUSES);
    for table in &tables {
        report.open_orders += add_holds(
            &mut tx,
            shard,
            &format!(
                "SELECT user_id, frozen_currency, COUNT(*), CAST(SUM(frozen_amount) AS CHAR) FROM `{table}` \
                 WHERE status IN ({open}) GROUP BY user_id, frozen_currency"
            ),
            &mut holds,
            0,
        )
        .await?;
        // what an open order still needs, by the one hold rule (`domain::hold`, which
        // placement freezes by; the settlers keep it so: a buy filled below its limit
        // gets the difference back): every open order is read and judged here
        type Row = (
            u64,
            u64,
            String,
            String,
            String,
            String,
            Option<String>,
            Option<String>,
            Option<String>,
            String,
            String,
            String,
        );
        let open_rows: Vec<Row> = sqlx::query_as(&format!(
            "SELECT order_id, user_id, CAST(status AS CHAR), CAST(side AS CHAR), CAST(type AS CHAR), \
                    frozen_currency, CAST(price AS CHAR), CAST(quantity AS CHAR), \
                    CAST(quote_quantity AS CHAR), CAST(filled_quantity AS CHAR), \
                    CAST(filled_amount AS CHAR), CAST(frozen_amount AS CHAR) \
             FROM `{table}` WHERE status IN ({open}) ORDER BY order_id"
        ))
        .fetch_all(&mut *tx)
        .await
        .map_err(place)?;
        let final_rows: Vec<(u64, u64, String, String, String)> = sqlx::query_as(&format!(
            "SELECT order_id, user_id, CAST(status AS CHAR), frozen_currency, CAST(frozen_amount AS CHAR) \
             FROM `{table}` WHERE status IN ({fin}) AND frozen_amount <> 0 ORDER BY order_id"
        ))
        .fetch_all(&mut *tx)
        .await
        .map_err(place)?;
        let mut bad: Vec<BadOrderHold> = Vec::new();
        for (order_id, user_id, status, side, ty, asset, price, qty, quote, fq, fa, frozen) in
            open_rows
        {
            let frozen_amount = Amount::from_db_str(&frozen)?;
            let parsed = || -> Option<domain::hold::HoldShape> {
                Some(domain::hold::HoldShape {
                    side: domain::Side::from_db_str(&side).ok()?,
                    order_type: domain::OrderType::from_db_str(&ty).ok()?,
                    // a NULL column is `None`; a value that does not parse voids the shape
                    price: price
                        .as_deref()
                        .map(domain::Price::from_db_str)
                        .transpose()
                        .ok()?,
                    qty: qty.as_deref().map(Amount::from_db_str).transpose().ok()?,
                    quote_qty: quote.as_deref().map(Amount::from_db_str).transpose().ok()?,
                    filled_qty: Amount::from_db_str(&fq).ok()?,
                    filled_amount: Amount::from_db_str(&fa).ok()?,
                })
            };
            // a shape without a rule, or a hold finer than the ledger's 18 places, has no
            // valid hold: reported with `needs` unknown, never rounded
            let needs = parsed()
                .and_then(|shape| domain::hold::required_hold(&shape))
                .and_then(Result::ok);
            let problem = if frozen_amount.is_negative() {
                OrderHoldProblem::NegativeOpen
            } else if needs != Some(frozen_amount) {
                OrderHoldProblem::NotWhatItNeeds
            } else {
                continue;
            };
            bad.push(BadOrderHold {
                shard,
                table: table.clone(),
                order_id,
                user_id,
                status,
                asset,
                frozen_amount,
                needs: needs.filter(|_| problem == OrderHoldProblem::NotWhatItNeeds),
                problem,
            });
        }
        for (order_id, user_id, status, asset, frozen) in final_rows {
            bad.push(BadOrderHold {
                shard,
                table: table.clone(),
                order_id,
                user_id,
                status,
                asset,
                frozen_amount: Amount::from_db_str(&frozen)?,
                needs: None,
                problem: OrderHoldProblem::FinalStillHolds,
            });
        }
        bad.sort_by_key(|b| b.order_id);
        report.bad_orders.extend(bad);
    }
    report.holding_withdrawals = add_holds(
        &mut tx,
        shard,
        &format!(
            "SELECT user_id, currency, COUNT(*), CAST(SUM(amount) AS CHAR) FROM withdrawals \
             WHERE status IN ({}) GROUP BY user_id, currency",
            in_list(&HOLDING_WITHDRAWAL_STATUSES)
        ),
        &mut holds,
        1,
    )
    .await?;
    report.holding_transfers = add_holds(
        &mut tx,
        shard,
        "SELECT user_id, currency, COUNT(*), CAST(SUM(amount) AS CHAR) FROM transfers \
         WHERE branch = 'source' AND status = 'tried' GROUP BY user_id, currency",
        &mut holds,
        2,
    )
    .await?;

    // every spot row is compared; only the non-zero ones need to be read (a zero row
    // with no holds matches, one with holds is found through the holds below)
    let (rows_total,): (i64,) =
        sqlx::query_as("SELECT COUNT(*) FROM account_balances WHERE account_type = 'spot'")
            .fetch_one(&mut *tx)
            .await
            .map_err(place)?;
    report.pairs_checked = u64::try_from(rows_total).unwrap_or_default();
    let frozen_rows: Vec<(u64, String, String)> = sqlx::query_as(
        "SELECT user_id, currency, CAST(frozen AS CHAR) FROM account_balances \
         WHERE account_type = 'spot' AND frozen <> 0",
    )
    .fetch_all(&mut *tx)
    .await
    .map_err(place)?;
    let mut frozen: BTreeMap<(u64, String), Amount> = BTreeMap::new();
    for (user, asset, f) in frozen_rows {
        frozen.insert((user, asset), Amount::from_db_str(&f)?);
    }
    let keys: BTreeSet<(u64, String)> = frozen.keys().chain(holds.keys()).cloned().collect();
    for key in keys {
        let [orders_part, withdrawals_part, transfers_part] =
            holds.get(&key).copied().unwrap_or_default();
        let expected = orders_part
            .checked_add(withdrawals_part)?
            .checked_add(transfers_part)?;
        let frozen_balance = match frozen.get(&key) {
            Some(f) => *f,
            None => {
                // frozen is zero: count the pair if it has no balance row at all
                let (n,): (i64,) = sqlx::query_as(
                    "SELECT COUNT(*) FROM account_balances \
                     WHERE user_id = ? AND currency = ? AND account_type = 'spot'",
                )
                .bind(key.0)
                .bind(&key.1)
                .fetch_one(&mut *tx)
                .await
                .map_err(place)?;
                if n == 0 {
                    report.pairs_checked += 1;
                }
                Amount::ZERO
            }
        };
        if frozen_balance != expected {
            report.mismatches.push(FrozenMismatch {
                shard,
                user_id: key.0,
                asset: key.1,
                frozen_balance,
                expected,
                orders_part,
                withdrawals_part,
                transfers_part,
            });
        }
    }
    tx.commit().await.map_err(place)?;
    Ok(report)
}

// ---------------------------------------------------------------- trade halves ---

/// Totals of one side's rows of one trades table over all shards.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct HalfTotals {
    /// Rows.
    pub count: u64,
    /// Σ `trade_id` (catches halves of different trades with equal sums).
    pub trade_ids: u128,
    /// Σ `price`.
    pub price: Amount,
    /// Σ `quantity`.
    pub quantity: Amount,
    /// Σ `amount`.
    pub amount: Amount,
}

/// One `trades_{SYMBOL}_{YYYYMM}` table over all shards.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TableHalves {
    /// The table name.
    pub table: String,
    /// `buy` rows over all shards; `None` when a sum left the range of
    /// [`Amount`] (the table is then checked trade by trade).
    pub buy: Option<HalfTotals>,
    /// `sell` rows over all shards, as `buy`.
    pub sell: Option<HalfTotals>,
    /// Whether the totals disagreed (or could not be summed) and the table was
    /// checked trade by trade.
    pub checked_per_trade: bool,
}

/// What is wrong with a trade's halves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HalfProblem {
    /// A sell row without a buy row.
    MissingBuy,
    /// A buy row without a sell row.
    MissingSell,
    /// More than one row of one side (on different shards).
    Duplicate,
    /// One buy and one sell row with different price, quantity or amount.
    Disagree,
}

/// One row of a trade.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TradeHalf {
    /// The shard holding the row.
    pub shard: ShardId,
    /// `buy` or `sell`.
    pub side: String,
    /// The row's user.
    pub user_id: u64,
    /// Price.
    pub price: Amount,
    /// Quantity.
    pub quantity: Amount,
    /// Amount (quote).
    pub amount: Amount,
}

/// A trade whose halves do not pair up.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TradeHalfOffender {
    /// The trades table.
    pub table: String,
    /// The trade.
    pub trade_id: u64,
    /// What is wrong.
    pub problem: HalfProblem,
    /// Every row of the trade found, over all shards.
    pub halves: Vec<TradeHalf>,
}

/// Result of [`trade_halves`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct TradeHalvesReport {
    /// Every trades table found on any shard, by name.
    pub tables: Vec<TableHalves>,
    /// Trades whose halves do not pair up, by table and trade id.
    pub offenders: Vec<TradeHalfOffender>,
    /// Halves stored on another shard than their user's (at most 100 per table and
    /// shard are listed).
    pub misplaced: Vec<MisplacedHalf>,
}

/// A trade half on a shard its user does not live on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MisplacedHalf {
    /// Where it is.
    pub shard: ShardId,
    /// The `trades_{SYMBOL}_{YYYYMM}` table.
    pub table: String,
    /// Trade id.
    pub trade_id: u64,
    /// `buy` / `sell`.
    pub side: String,
    /// Its user.
    pub user_id: u64,
    /// The user's shard (`user_id % shard count`).
    pub belongs_on: ShardId,
}

impl TradeHalvesReport {
    /// Whether every trade has exactly one matching buy and sell half, each on its
    /// user's shard.
    pub fn holds(&self) -> bool {
        self.offenders.is_empty() && self.misplaced.is_empty()
    }

    /// `buy` rows over all tables and shards.
    pub fn buy_halves(&self) -> u64 {
        self.tables
            .iter()
            .filter_map(|t| t.buy.map(|b| b.count))
            .sum()
    }

    /// `sell` rows over all tables and shards.
    pub fn sell_halves(&self) -> u64 {
        self.tables
            .iter()
            .filter_map(|t| t.sell.map(|s| s.count))
            .sum()
    }

    /// The entry of one table.
    pub fn table(&self, name: &str) -> Option<&TableHalves> {
        self.tables.iter().find(|t| t.table == name)
    }
}

/// Every trade in every `trades_{SYMBOL}_{YYYYMM}` table has exactly one `buy` row
/// and one `sell` row over all shards (the buyer's shard holds the buy half, the
/// seller's the sell half), with equal price, quantity and amount.
///
/// Per table, each shard first sends per-side COUNT and Σ of trade id, price,
/// quantity and amount; when buy and sell agree in all of them over all shards the
/// table passes, otherwise every row of the table is loaded from every shard and the
/// offending trades are returned. (Defects that cancel out in all five sums at once
/// pass the first step.)
///
/// Exact only when the pipeline is quiescent across shards: the two halves of a trade
/// are written by two shards' settlers in two transactions.
///
/// # Errors
/// Database errors naming the shard; values that cannot be held exactly.
pub async fn trade_halves(shards: &ShardMap) -> Result<TradeHalvesReport, RouterError> {
    trade_halves_with(shards, |_, _| {}).await
}

/// Per-side totals of one shard's table (`None` = a sum out of range).
type ShardSides = BTreeMap<String, Option<HalfTotals>>;

/// Totals from the text of the sums (`None` when one is out of range).
fn parse_totals(count: u64, ids: &str, price: &str, qty: &str, amount: &str) -> Option<HalfTotals> {
    Some(HalfTotals {
        count,
        trade_ids: ids.parse().ok()?,
        price: Amount::from_db_str(price).ok()?,
        quantity: Amount::from_db_str(qty).ok()?,
        amount: Amount::from_db_str(amount).ok()?,
    })
}

fn add_totals(a: Option<HalfTotals>, b: Option<HalfTotals>) -> Option<HalfTotals> {
    let (a, b) = (a?, b?);
    Some(HalfTotals {
        count: a.count + b.count,
        trade_ids: a.trade_ids.checked_add(b.trade_ids)?,
        price: a.price.checked_add(b.price).ok()?,
        quantity: a.quantity.checked_add(b.quantity).ok()?,
        amount: a.amount.checked_add(b.amount).ok()?,
    })
}

/// [`trade_halves`], calling `progress(shard, message)` after each shard's totals and
/// before a table is checked trade by trade.
///
/// # Errors
/// As [`trade_halves`].
pub async fn trade_halves_with(
    shards: &ShardMap,
    mut progress: impl FnMut(ShardId, &str),
) -> Result<TradeHalvesReport, RouterError> {
    // table → (buy, sell) over all shards
    let mut totals: BTreeMap<String, (Option<HalfTotals>, Option<HalfTotals>)> = BTreeMap::new();
    let mut present: BTreeMap<String, BTreeSet<ShardId>> = BTreeMap::new();
    let mut misplaced: Vec<MisplacedHalf> = Vec::new();
    for (shard, pool) in shards.iter() {
        let place = |e| RouterError::db_on_shard(shard.get(), e);
        let tables: Vec<String> = shards
            .month_tables(shard)
            .await?
            .into_iter()
            .filter(|t| t.starts_with("trades_"))
            .collect();
        let mut rows_here = 0u64;
        for table in &tables {
            present.entry(table.clone()).or_default().insert(shard);
            let rows: Vec<(String, i64, String, String, String, String)> = sqlx::query_as(&format!(
                "SELECT CAST(side AS CHAR), COUNT(*), CAST(SUM(trade_id) AS CHAR), CAST(SUM(price) AS CHAR), \
                        CAST(SUM(quantity) AS CHAR), CAST(SUM(amount) AS CHAR) \
                 FROM `{table}` GROUP BY side"
            ))
            .fetch_all(pool)
            .await
            .map_err(place)?;
            let mut sides: ShardSides = BTreeMap::new();
            for (side, n, ids, price, qty, amount) in rows {
                let count = u64::try_from(n).unwrap_or_default();
                rows_here += count;
                sides.insert(side, parse_totals(count, &ids, &price, &qty, &amount));
            }
            let count = shards.count();
            let wrong: Vec<(u64, String, u64)> = sqlx::query_as(&format!(
                "SELECT trade_id, CAST(side AS CHAR), user_id FROM `{table}` \
                 WHERE user_id % {count} <> {} ORDER BY trade_id LIMIT 100",
                shard.get()
            ))
            .fetch_all(pool)
            .await
            .map_err(place)?;
            misplaced.extend(
                wrong
                    .into_iter()
                    .map(|(trade_id, side, user_id)| MisplacedHalf {
                        shard,
                        table: table.clone(),
                        trade_id,
                        side,
                        user_id,
                        belongs_on: ShardId::new(
                            u16::try_from(user_id % u64::from(count.max(1))).unwrap_or(u16::MAX),
                        ),
                    }),
            );
            let entry = totals
                .entry(table.clone())
                .or_insert((Some(HalfTotals::default()), Some(HalfTotals::default())));
            let zero = Some(HalfTotals::default());
            entry.0 = add_totals(entry.0, sides.get("buy").copied().unwrap_or(zero));
            entry.1 = add_totals(entry.1, sides.get("sell").copied().unwrap_or(zero));
        }
        progress(
            shard,
            &format!(
                "trade halves: {} trades tables, {rows_here} halves",
                tables.len()
            ),
        );
    }

    let mut report = TradeHalvesReport {
        misplaced,
        ..TradeHalvesReport::default()
    };
    for (table, (buy, sell)) in totals {
        let agree = matches!((buy, sell), (Some(b), Some(s)) if b == s);
        if !agree {
            let on = present.get(&table).cloned().unwrap_or_default();
            if let Some(first) = on.first() {
                progress(
                    *first,
                    &format!("{table}: buy and sell totals differ, checking trade by trade on every shard"),
                );
            }
            report
                .offenders
                .extend(per_trade(shards, &table, &on).await?);
        }
        report.tables.push(TableHalves {
            table,
            buy,
            sell,
            checked_per_trade: !agree,
        });
    }
    Ok(report)
}

/// Loads every row of `table` from the shards that have it and pairs them by trade id.
async fn per_trade(
    shards: &ShardMap,
    table: &str,
    on: &BTreeSet<ShardId>,
) -> Result<Vec<TradeHalfOffender>, RouterError> {
    let mut by_trade: BTreeMap<u64, Vec<TradeHalf>> = BTreeMap::new();
    for &shard in on {
        type Row = (u64, String, u64, String, String, String);
        let rows: Vec<Row> = sqlx::query_as(&format!(
            "SELECT trade_id, CAST(side AS CHAR), user_id, CAST(price AS CHAR), \
                    CAST(quantity AS CHAR), CAST(amount AS CHAR) FROM `{table}`"
        ))
        .fetch_all(shards.pool(shard)?)
        .await
        .map_err(|e| RouterError::db_on_shard(shard.get(), e))?;
        for (trade_id, side, user_id, price, quantity, amount) in rows {
            by_trade.entry(trade_id).or_default().push(TradeHalf {
                shard,
                side,
                user_id,
                price: Amount::from_db_str(&price)?,
                quantity: Amount::from_db_str(&quantity)?,
                amount: Amount::from_db_str(&amount)?,
            });
        }
    }
    let mut out = Vec::new();
    for (trade_id, halves) in by_trade {
        let buys: Vec<&TradeHalf> = halves.iter().filter(|h| h.side == "buy").collect();
        let sells: Vec<&TradeHalf> = halves.iter().filter(|h| h.side == "sell").collect();
        let problem = match (buys.as_slice(), sells.as_slice()) {
            ([b], [s]) if (b.price, b.quantity, b.amount) == (s.price, s.quantity, s.amount) => {
                continue
            }
            ([_], [_]) => HalfProblem::Disagree,
            ([], _) => HalfProblem::MissingBuy,
            (_, []) => HalfProblem::MissingSell,
            _ => HalfProblem::Duplicate,
        };
        out.push(TradeHalfOffender {
            table: table.to_owned(),
            trade_id,
            problem,
            halves,
        });
    }
    Ok(out)
}

// ---------------------------------------------------------------- ledger replay ---

/// Rows a page of [`replay_on_shard`] reads by default (a page grows when one
/// (user, asset, millisecond) group of rows is larger).
pub const REPLAY_PAGE_ROWS: usize = 5_000;

/// Mismatches listed per shard at most (all are counted).
pub const REPLAY_MAX_LISTED: usize = 1_000;

/// Why a ledger row breaks the replay (the first such row of a pair is reported).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LedgerRowProblem {
    /// Its id is below the previous row's of the pair although its `created_at` is
    /// later (the server's clock went back): the replay order, by time, may not be the
    /// order the rows were written in.
    OutOfOrder,
    /// A `type` no writer writes (`funding`, `airdrop`, anything else): replayed as a
    /// change of available.
    UnknownKind,
    /// A zero amount, or a sign its type never has (a `freeze` or `withdraw` that is
    /// not negative, a `deposit` or `unfreeze` that is not positive).
    Sign,
    /// A `withdraw`, an `unfreeze` of a withdrawal or transfer, or a frozen-spending
    /// `transfer` that matches no earlier `freeze` of the same reference and amount;
    /// or a second `freeze` of one withdrawal or transfer.
    Hold,
    /// The replayed available or frozen went below zero at this row (a row missing
    /// before it, or one too many).
    Negative,
    /// `balance_after` is not the replayed available after the row.
    BalanceAfter,
}

/// The first ledger row of a pair at which a running check of the replay failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BadLedgerRow {
    /// `account_transactions.id`.
    pub id: u64,
    /// `created_at` as stored (`YYYY-MM-DD HH:MM:SS.fff`).
    pub created_at: String,
    /// `type`.
    pub kind: String,
    /// `ref_type`.
    pub ref_type: Option<String>,
    /// `ref_id`.
    pub ref_id: Option<u64>,
    /// `amount`.
    pub amount: Amount,
    /// `balance_after` as stored.
    pub balance_after: Amount,
    /// Available replayed up to and including this row.
    pub replayed_available: Amount,
    /// Frozen replayed up to and including this row.
    pub replayed_frozen: Amount,
    /// The check that failed.
    pub problem: LedgerRowProblem,
}

/// A (user, asset) whose ledger does not replay to its balance, or whose rows fail a
/// running check on the way.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LedgerMismatch {
    /// The shard.
    pub shard: ShardId,
    /// The user (`0`: the shard's fee account).
    pub user_id: u64,
    /// The asset.
    pub asset: String,
    /// Ledger rows of the pair replayed (`0`: a non-zero balance without any).
    pub rows: u64,
    /// Available replayed from the rows.
    pub expected_available: Amount,
    /// Frozen replayed from the rows.
    pub expected_frozen: Amount,
    /// `account_balances.available` (zero without a row).
    pub available: Amount,
    /// `account_balances.frozen` (zero without a row).
    pub frozen: Amount,
    /// Whether the pair has a spot balance row at all.
    pub balance_row: bool,
    /// The first row at which a running check failed (`None`: every row agreed with
    /// the replay; only the end result differs).
    pub first_bad_row: Option<BadLedgerRow>,
}

impl LedgerMismatch {
    /// Whether the replayed balance equals the stored one (the pair is then listed
    /// for a row that failed a running check).
    pub fn balance_matches(&self) -> bool {
        self.expected_available == self.available && self.expected_frozen == self.frozen
    }
}

/// Result of [`ledger_replay`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct LedgerReplayReport {
    /// Shards read.
    pub shards: u16,
    /// Ledger rows replayed.
    pub rows: u64,
    /// (user, asset) pairs compared: every pair with ledger rows, plus non-zero
    /// balances without any.
    pub pairs_checked: u64,
    /// Pairs that do not replay (all of them counted; at most
    /// [`REPLAY_MAX_LISTED`] per shard listed in `mismatches`).
    pub mismatched_pairs: u64,
    /// The mismatching pairs, by shard, user and asset.
    pub mismatches: Vec<LedgerMismatch>,
}

impl LedgerReplayReport {
    /// Whether every pair replays.
    pub fn holds(&self) -> bool {
        self.mismatched_pairs == 0
    }

    /// Adds another (shard's) report to this one.
    pub fn merge(&mut self, other: LedgerReplayReport) {
        self.shards += other.shards;
        self.rows += other.rows;
        self.pairs_checked += other.pairs_checked;
        self.mismatched_pairs += other.mismatched_pairs;
        self.mismatches.extend(other.mismatches);
    }
}

/// Per shard, per (user, asset): replays the spot ledger rows (`account_transactions`)
/// in the order they were written and compares the result with the spot balance
/// (`account_balances`): Σ of the rows' changes = available + frozen, and available
/// and frozen each, exactly. On the way every row is checked: its `balance_after` is
/// the replayed available after it, neither balance goes below zero, its sign fits its
/// type, and the frozen part of every withdrawal and transfer is taken back or spent
/// once, by its own amount.
///
/// The rules, per `type` (`amount` is signed; `balance_after` is always the available
/// balance after the row; every writer locks the balance before it inserts a row):
///
/// | `type` | `ref_type` | available | frozen |
/// |---|---|---|---|
/// | `deposit` (+) | `deposit` | + amount | — |
/// | `freeze` (−) | `order`, `withdraw`, `transfer` | + amount | − amount |
/// | `unfreeze` (+) | `order`, `trade` (a buy's price improvement), `withdraw`, `transfer` | + amount | − amount |
/// | `withdraw` (−) | `withdraw` | — | + amount (its hold spent) |
/// | `trade` (−) | `trade` | — | + amount (the order's hold spent) |
/// | `trade` (+) | `trade` | + amount | — |
/// | `fee` (±) | `trade` (−, the user's), `fills:{SYMBOL}` / `withdraw` (+, the fee account's) | + amount | — |
/// | `transfer` (+) | `transfer` | + amount | — |
/// | `transfer` (−) after a `freeze` of the same transfer id (TCC Confirm of the source) | `transfer` | — | + amount (its hold spent) |
/// | `transfer` (−) without one (a transfer within one shard) | `transfer` | + amount | — |
///
/// The one ambiguous pair of rows, a negative `transfer`, is told apart by the hold:
/// a TCC source branch freezes by a `freeze` row of the transfer id first, a local
/// transfer never does.
///
/// Exact per shard **at any time**, also on a live system: every writer changes a
/// balance and writes its ledger rows in one local transaction, and each shard is read
/// in one consistent snapshot on one connection. The rows of a pair are read in
/// `created_at` order, rows of one millisecond by id: the order they were written in
/// (each writer holds the balance row's lock from before it inserts a row until its
/// commit), unless the server's clock went back (then [`LedgerRowProblem::OutOfOrder`]).
///
/// What it cannot see: a defect that changes a balance and writes a ledger row saying
/// so (a wrong amount consistently applied — what [`frozen_vs_open_orders`],
/// [`trade_halves`] and [`conservation`] are for); which order a `freeze` / `trade` /
/// `unfreeze` row of an order belongs to beyond its reference (an order's hold is
/// checked by [`frozen_vs_open_orders`]); a ledger whose older months were removed (the
/// replay starts from zero and needs every row since the pair's first). It reads spot
/// balances and rows only (the only account type written).
///
/// # Errors
/// Database errors naming the shard; values that cannot be held exactly.
pub async fn ledger_replay(shards: &ShardMap) -> Result<LedgerReplayReport, RouterError> {
    ledger_replay_with(shards, |_, _| {}).await
}

/// [`ledger_replay`], calling `progress(shard, message)` after each shard.
///
/// # Errors
/// As [`ledger_replay`].
pub async fn ledger_replay_with(
    shards: &ShardMap,
    mut progress: impl FnMut(ShardId, &str),
) -> Result<LedgerReplayReport, RouterError> {
    let mut report = LedgerReplayReport::default();
    for (shard, _) in shards.iter() {
        let r = replay_on_shard(shards, shard, REPLAY_PAGE_ROWS).await?;
        progress(
            shard,
            &format!(
                "ledger replay: {} rows, {} (user, asset) checked, {} offenders",
                r.rows, r.pairs_checked, r.mismatched_pairs
            ),
        );
        report.merge(r);
    }
    Ok(report)
}

/// One ledger row as the replay reads it.
#[derive(Debug, Clone)]
struct ReplayRow {
    id: u64,
    user: u64,
    asset: String,
    kind: String,
    amount: Amount,
    balance_after: Amount,
    ref_type: Option<String>,
    ref_id: Option<u64>,
    created_at: String,
}

impl ReplayRow {
    /// The keyset position of the row: (user, asset, millisecond).
    fn group(&self) -> (u64, &str, &str) {
        (self.user, &self.asset, &self.created_at)
    }
}

/// The replay of one (user, asset) so far.
#[derive(Debug)]
struct PairReplay {
    user: u64,
    asset: String,
    rows: u64,
    available: Amount,
    frozen: Amount,
    last_id: u64,
    /// What each withdrawal / transfer (`ref_type`, `ref_id`) still holds frozen.
    holds: BTreeMap<(String, u64), Amount>,
    first_bad: Option<BadLedgerRow>,
}

impl PairReplay {
    fn new(user: u64, asset: String) -> Self {
        Self {
            user,
            asset,
            rows: 0,
            available: Amount::ZERO,
            frozen: Amount::ZERO,
            last_id: 0,
            holds: BTreeMap::new(),
            first_bad: None,
        }
    }

    /// Applies one row by the rules of [`ledger_replay`] and runs the row checks.
    fn apply(&mut self, r: &ReplayRow) -> Result<(), RouterError> {
        use LedgerRowProblem as P;
        let a = r.amount;
        let mut problem = None;
        let mut flag = |p: P| {
            problem.get_or_insert(p);
        };
        if self.rows > 0 && r.id < self.last_id {
            flag(P::OutOfOrder);
        }
        self.rows += 1;
        self.last_id = self.last_id.max(r.id);
        // the withdrawal or transfer this row refers to, when it is one (their holds
        // are followed; an order's are not: its fills refer to trades)
        let hold_key = match (r.ref_type.as_deref(), r.ref_id) {
            (Some(t @ ("withdraw" | "transfer")), Some(id)) => Some((t.to_owned(), id)),
            _ => None,
        };
        if a.is_zero() {
            flag(P::Sign);
        }
        // (change of available, change of frozen)
        let (d_available, d_frozen) = match r.kind.as_str() {
            "deposit" => {
                if !a.is_positive() {
                    flag(P::Sign);
                }
                (a, Amount::ZERO)
            }
            "freeze" => {
                if !a.is_negative() {
                    flag(P::Sign);
                }
                if let Some(k) = hold_key {
                    if self.holds.insert(k, -a).is_some() {
                        flag(P::Hold);
                    }
                }
                (a, -a)
            }
            "unfreeze" => {
                if !a.is_positive() {
                    flag(P::Sign);
                }
                if let Some(k) = hold_key {
                    if self.holds.remove(&k) != Some(a) {
                        flag(P::Hold);
                    }
                }
                (a, -a)
            }
            "withdraw" => {
                if !a.is_negative() {
                    flag(P::Sign);
                }
                if hold_key.and_then(|k| self.holds.remove(&k)) != Some(-a) {
                    flag(P::Hold);
                }
                (Amount::ZERO, a)
            }
            "trade" if a.is_negative() => (Amount::ZERO, a),
            "trade" | "fee" => (a, Amount::ZERO),
            "transfer" if a.is_negative() => match hold_key.and_then(|k| self.holds.remove(&k)) {
                Some(held) => {
                    if held != -a {
                        flag(P::Hold);
                    }
                    (Amount::ZERO, a)
                }
                None => (a, Amount::ZERO),
            },
            "transfer" => (a, Amount::ZERO),
            _ => {
                flag(P::UnknownKind);
                (a, Amount::ZERO)
            }
        };
        self.available = self.available.checked_add(d_available)?;
        self.frozen = self.frozen.checked_add(d_frozen)?;
        if self.available.is_negative() || self.frozen.is_negative() {
            flag(P::Negative);
        }
        if r.balance_after != self.available {
            flag(P::BalanceAfter);
        }
        if let (Some(problem), None) = (problem, &self.first_bad) {
            self.first_bad = Some(BadLedgerRow {
                id: r.id,
                created_at: r.created_at.clone(),
                kind: r.kind.clone(),
                ref_type: r.ref_type.clone(),
                ref_id: r.ref_id,
                amount: a,
                balance_after: r.balance_after,
                replayed_available: self.available,
                replayed_frozen: self.frozen,
                problem,
            });
        }
        Ok(())
    }
}

/// Adds `mismatch` to `report` (listed while under [`REPLAY_MAX_LISTED`]).
fn count_mismatch(report: &mut LedgerReplayReport, mismatch: LedgerMismatch) {
    report.mismatched_pairs += 1;
    if report.mismatches.len() < REPLAY_MAX_LISTED {
        report.mismatches.push(mismatch);
    }
}

/// Compares finished pairs with their balance rows (one read for all of them).
async fn compare_pairs(
    conn: &mut sqlx::MySqlConnection,
    shard: ShardId,
    pairs: &mut Vec<PairReplay>,
    report: &mut LedgerReplayReport,
) -> Result<(), RouterError> {
    let mut stored: BTreeMap<(u64, String), (Amount, Amount)> = BTreeMap::new();
    // at most 1,000 pairs (2,000 placeholders) per statement
    for chunk in pairs.chunks(1_000) {
        let mut sql = String::from(
            "SELECT user_id, CAST(currency AS CHAR), CAST(available AS CHAR), CAST(frozen AS CHAR) \
             FROM account_balances WHERE account_type = 'spot' AND (user_id, currency) IN (",
        );
        for i in 0..chunk.len() {
            sql.push_str(if i == 0 { "(?, ?)" } else { ", (?, ?)" });
        }
        sql.push(')');
        let mut q = sqlx::query_as::<_, (u64, String, String, String)>(&sql);
        for p in chunk {
            q = q.bind(p.user).bind(p.asset.as_str());
        }
        let rows = q
            .fetch_all(&mut *conn)
            .await
            .map_err(|e| RouterError::db_on_shard(shard.get(), e))?;
        for (user, asset, available, frozen) in rows {
            stored.insert(
                (user, asset),
                (
                    Amount::from_db_str(&available)?,
                    Amount::from_db_str(&frozen)?,
                ),
            );
        }
    }
    for p in pairs.drain(..) {
        report.pairs_checked += 1;
        let row = stored.remove(&(p.user, p.asset.clone()));
        let (available, frozen) = row.unwrap_or((Amount::ZERO, Amount::ZERO));
        if p.first_bad.is_none() && (p.available, p.frozen) == (available, frozen) {
            continue;
        }
        count_mismatch(
            report,
            LedgerMismatch {
                shard,
                user_id: p.user,
                asset: p.asset,
                rows: p.rows,
                expected_available: p.available,
                expected_frozen: p.frozen,
                available,
                frozen,
                balance_row: row.is_some(),
                first_bad_row: p.first_bad,
            },
        );
    }
    Ok(())
}

/// [`ledger_replay`] for one shard, reading the ledger in pages of `page_rows` rows
/// (a page grows while one (user, asset, millisecond) group does not fit): keyset
/// pages on the ledger's `(user_id, currency, created_at)` index, never an offset, and
/// at most one page of rows and of finished pairs in memory.
///
/// # Errors
/// As [`ledger_replay`]; [`RouterError::NoSuchShard`].
pub async fn replay_on_shard(
    shards: &ShardMap,
    shard: ShardId,
    page_rows: usize,
) -> Result<LedgerReplayReport, RouterError> {
    type Row = (
        u64,
        u64,
        String,
        String,
        String,
        String,
        Option<String>,
        Option<u64>,
        String,
    );
    const COLUMNS: &str = "SELECT id, user_id, CAST(currency AS CHAR), CAST(type AS CHAR), \
         CAST(amount AS CHAR), CAST(balance_after AS CHAR), ref_type, ref_id, \
         CAST(created_at AS CHAR) FROM account_transactions WHERE account_type = 'spot'";
    const ORDER: &str = " ORDER BY user_id, currency, created_at LIMIT ?";
    let place = |e| RouterError::db_on_shard(shard.get(), e);
    let mut conn = shards.pool(shard)?.acquire().await.map_err(place)?;
    // applies to the next transaction only: no session state leaks into the pool
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        .execute(&mut *conn)
        .await
        .map_err(place)?;
    let mut tx = conn
        .begin_with("START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY")
        .await
        .map_err(place)?;
    let mut report = LedgerReplayReport {
        shards: 1,
        ..LedgerReplayReport::default()
    };
    let page_rows = page_rows.max(1);
    let mut limit = page_rows;
    // the last (user, asset, created_at) group replayed
    let mut after: Option<(u64, String, String)> = None;
    let mut current: Option<PairReplay> = None;
    let mut finished: Vec<PairReplay> = Vec::new();
    loop {
        let raw: Vec<Row> = match &after {
            None => sqlx::query_as(&format!("{COLUMNS}{ORDER}"))
                .bind(limit as u64)
                .fetch_all(&mut *tx)
                .await
                .map_err(place)?,
            // the keyset spelled out (MariaDB turns it into index ranges; a row
            // comparison it would not)
            Some((user, asset, at)) => sqlx::query_as(&format!(
                "{COLUMNS} AND (user_id > ? OR (user_id = ? AND (currency > ? OR \
                   (currency = ? AND created_at > ?)))){ORDER}"
            ))
            .bind(user)
            .bind(user)
            .bind(asset.as_str())
            .bind(asset.as_str())
            .bind(at.as_str())
            .bind(limit as u64)
            .fetch_all(&mut *tx)
            .await
            .map_err(place)?,
        };
        let full = raw.len() == limit;
        let mut rows = Vec::with_capacity(raw.len());
        for (id, user, asset, kind, amount, balance_after, ref_type, ref_id, created_at) in raw {
            rows.push(ReplayRow {
                id,
                user,
                asset,
                kind,
                amount: Amount::from_db_str(&amount)?,
                balance_after: Amount::from_db_str(&balance_after)?,
                ref_type,
                ref_id,
                created_at,
            });
        }
        if full {
            // the last group may go on past the page: it is read again with the next
            // one (a page that is one group only is read again, larger)
            let keep = rows.last().and_then(|last| {
                let last = last.group();
                rows.iter().rposition(|r| r.group() != last)
            });
            match keep.map(|i| i + 1) {
                Some(n) => rows.truncate(n),
                None => {
                    limit = limit.saturating_mul(2);
                    continue;
                }
            }
        }
        for group in rows.chunk_by_mut(|a, b| a.group() == b.group()) {
            // within one millisecond, the order of the ids
            group.sort_by_key(|r| r.id);
            for r in group.iter() {
                let same = current
                    .as_ref()
                    .is_some_and(|p| p.user == r.user && p.asset == r.asset);
                if !same {
                    if let Some(done) = current.take() {
                        finished.push(done);
                    }
                    current = Some(PairReplay::new(r.user, r.asset.clone()));
                }
                if let Some(p) = current.as_mut() {
                    p.apply(r)?;
                }
                report.rows += 1;
            }
        }
        compare_pairs(&mut tx, shard, &mut finished, &mut report).await?;
        if let Some(r) = rows.last() {
            after = Some((r.user, r.asset.clone(), r.created_at.clone()));
        }
        limit = page_rows;
        if !full {
            break;
        }
    }
    if let Some(done) = current.take() {
        finished.push(done);
    }
    compare_pairs(&mut tx, shard, &mut finished, &mut report).await?;

    // non-zero balances without a single ledger row
    let mut after: Option<(u64, String)> = None;
    loop {
        const UNLEDGERED: &str =
            "SELECT b.user_id, CAST(b.currency AS CHAR), CAST(b.available AS CHAR), \
               CAST(b.frozen AS CHAR) FROM account_balances b \
             WHERE b.account_type = 'spot' AND (b.available <> 0 OR b.frozen <> 0) \
               AND NOT EXISTS (SELECT 1 FROM account_transactions t WHERE t.user_id = b.user_id \
                 AND t.currency = b.currency AND t.account_type = 'spot')";
        let rows: Vec<(u64, String, String, String)> = match &after {
            None => sqlx::query_as(&format!(
                "{UNLEDGERED} ORDER BY b.user_id, b.currency LIMIT ?"
            ))
            .bind(page_rows as u64)
            .fetch_all(&mut *tx)
            .await
            .map_err(place)?,
            Some((user, asset)) => sqlx::query_as(&format!(
                "{UNLEDGERED} AND (b.user_id > ? OR (b.user_id = ? AND b.currency > ?)) \
                 ORDER BY b.user_id, b.currency LIMIT ?"
            ))
            .bind(user)
            .bind(user)
            .bind(asset.as_str())
            .bind(page_rows as u64)
            .fetch_all(&mut *tx)
            .await
            .map_err(place)?,
        };
        let n = rows.len();
        for (user, asset, available, frozen) in rows {
            after = Some((user, asset.clone()));
            report.pairs_checked += 1;
            count_mismatch(
                &mut report,
                LedgerMismatch {
                    shard,
                    user_id: user,
                    asset,
                    rows: 0,
                    expected_available: Amount::ZERO,
                    expected_frozen: Amount::ZERO,
                    available: Amount::from_db_str(&available)?,
                    frozen: Amount::from_db_str(&frozen)?,
                    balance_row: true,
                    first_bad_row: None,
                },
            );
        }
        if n < page_rows {
            break;
        }
    }
    tx.commit().await.map_err(place)?;
    report
        .mismatches
        .sort_by(|a, b| (a.user_id, &a.asset).cmp(&(b.user_id, &b.asset)));
    Ok(report)
}
