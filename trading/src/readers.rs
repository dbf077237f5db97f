//! Readers of orders and trades: one typed record per order row, by order id or by
//! client order id, the open orders of a user, a user's orders by cursor over the month
//! tables, and a user's trades by trade-id cursor. (Balances: `ledger::balances::all_of`.)
//!
//! Invariants: an order id names exactly one month table (its snowflake month), so a
//! lookup by id reads one table on one shard; a client order id is found through
//! `client_orders` (one row per user), never by scanning month tables; lists page by
//! the `(order_id)` cursor (ids grow with time), newest month first, never by OFFSET,
//! one query per month table touched (no N+1).

use domain::{
    Amount, Month, OrderId, OrderStatus, OrderType, Price, Qty, ShardId, Side, Symbol, TimeInForce,
    UserId,
};
use router::{RouterError, ShardMap, TableKind, TableName, TableRouter};
use serde::Serialize;
use sqlx::mysql::MySqlRow;
use sqlx::Row;

/// One order as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OrderRecord {
    /// The order id.
    pub order_id: OrderId,
    /// The client's id for it, if it gave one.
    pub client_order_id: Option<String>,
    /// Its owner.
    pub user_id: UserId,
    /// Its symbol.
    pub symbol: Symbol,
    /// Buy or sell.
    pub side: Side,
    /// Its type.
    pub order_type: OrderType,
    /// Time in force.
    pub tif: TimeInForce,
    /// Limit price.
    pub price: Option<Price>,
    /// Base quantity (none for a market order by quote amount).
    pub qty: Option<Qty>,
    /// Quote amount of a market order by quote.
    pub quote_qty: Option<Amount>,
    /// Stop price.
    pub stop_price: Option<Price>,
    /// Base quantity executed.
    pub filled_qty: Amount,
    /// Quote amount executed.
    pub filled_amount: Amount,
    /// Still frozen for it.
    pub frozen_amount: Amount,
    /// Status.
    pub status: OrderStatus,
    /// Creation time, ms since the Unix epoch.
    pub created_ms: i64,
    /// Last update, ms since the Unix epoch.
    pub updated_ms: i64,
}

/// Why a reader failed.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// Routing or database failure.
    #[error(transparent)]
    Router(#[from] RouterError),
    /// A stored value that does not parse: a bug or a corrupted row.
    #[error("order row {order_id} on {table}: {reason}")]
    Corrupt {
        /// The table.
        table: String,
        /// The row.
        order_id: u64,
        /// What did not parse.
        reason: String,
    },
}

impl domain::Kinded for ReadError {
    fn kind(&self) -> domain::ErrorKind {
        match self {
            Self::Router(e) => e.kind(),
            Self::Corrupt { .. } => domain::ErrorKind::Internal,
        }
    }
}

const COLUMNS: &str = "order_id, client_order_id, user_id, CAST(side AS CHAR) AS side, \
     CAST(type AS CHAR) AS type, CAST(time_in_force AS CHAR) AS tif, \
     CAST(price AS CHAR) AS price, CAST(quantity AS CHAR) AS quantity, \
     CAST(quote_quantity AS CHAR) AS quote_quantity, CAST(stop_price AS CHAR) AS stop_price, \
     CAST(filled_quantity AS CHAR) AS filled_quantity, CAST(filled_amount AS CHAR) AS filled_amount, \
     CAST(frozen_amount AS CHAR) AS frozen_amount, CAST(status AS CHAR) AS status, \
     CAST(UNIX_TIMESTAMP(created_at) * 1000 AS SIGNED) AS created_ms, \
     CAST(UNIX_TIMESTAMP(updated_at) * 1000 AS SIGNED) AS updated_ms";

fn parse(row: &MySqlRow, symbol: Symbol, table: &TableName) -> Result<OrderRecord, ReadError> {
    let raw_id: u64 = row
        .try_get("order_id")
        .map_err(|e| RouterError::db("order row", e))?;
    let bad = |reason: String| ReadError::Corrupt {
        table: table.to_string(),
        order_id: raw_id,
        reason,
    };
    let text = |c: &str| -> Result<Option<String>, ReadError> {
        row.try_get::<Option<String>, _>(c)
            .map_err(|e| bad(format!("{c}: {e}")))
    };
    let need = |c: &str| -> Result<String, ReadError> {
        text(c)?.ok_or_else(|| bad(format!("{c} is NULL")))
    };
    let num = |c: &str| -> Result<i64, ReadError> {
        row.try_get::<i64, _>(c)
            .map_err(|e| bad(format!("{c}: {e}")))
    };
    let user: u64 = row
        .try_get("user_id")
        .map_err(|e| bad(format!("user_id: {e}")))?;
    let opt_price = |c: &str| -> Result<Option<Price>, ReadError> {
        text(c)?
            .map(|t| Price::from_db_str(&t).map_err(|e| bad(format!("{c}: {e}"))))
            .transpose()
    };
    let amount = |c: &str| -> Result<Amount, ReadError> {
        Amount::from_db_str(&need(c)?).map_err(|e| bad(format!("{c}: {e}")))
    };
    Ok(OrderRecord {
        order_id: OrderId::new(raw_id).map_err(|e| bad(e.to_string()))?,
        client_order_id: text("client_order_id")?,
        user_id: UserId::new(user).map_err(|e| bad(e.to_string()))?,
        symbol,
        side: Side::from_db_str(&need("side")?).map_err(|e| bad(e.to_string()))?,
        order_type: OrderType::from_db_str(&need("type")?).map_err(|e| bad(e.to_string()))?,
        tif: TimeInForce::from_db_str(&need("tif")?).map_err(|e| bad(e.to_string()))?,
        price: opt_price("price")?,
        qty: text("quantity")?
            .map(|t| Qty::from_db_str(&t).map_err(|e| bad(format!("quantity: {e}"))))
            .transpose()?,
        quote_qty: text("quote_quantity")?
            .map(|t| Amount::from_db_str(&t).map_err(|e| bad(format!("quote_quantity: {e}"))))
            .transpose()?,
        stop_price: opt_price("stop_price")?,
        filled_qty: amount("filled_quantity")?,
        filled_amount: amount("filled_amount")?,
        frozen_amount: amount("frozen_amount")?,
        status: OrderStatus::from_db_str(&need("status")?).map_err(|e| bad(e.to_string()))?,
        created_ms: num("created_ms")?,
        updated_ms: num("updated_ms")?,
    })
}

/// Reads the orders that answer `WHERE {filter}` (bound with `user` then `extra`) from
/// one month table of one shard, a missing table reported as such.
async fn select(
    map: &ShardMap,
    shard: ShardId,
    symbol: Symbol,
    table: &TableName,
    filter: &str,
    binds: &[u64],
) -> Result<Vec<OrderRecord>, ReadError> {
    let sql = format!("SELECT {COLUMNS} FROM `{}` WHERE {filter}", table.as_str());
    let mut q = sqlx::query(&sql);
    for b in binds {
        q = q.bind(*b);
    }
    let rows = q
        .fetch_all(map.pool(shard)?)
        .await
        .map_err(|e| RouterError::db_on_shard(shard.get(), e))?;
    rows.iter().map(|r| parse(r, symbol, table)).collect()
}

/// An order by id. With `user`, only that user's shard is read and only that user's
/// order is returned; without, every shard is searched (the operator's `locate`).
///
/// # Errors
/// [`ReadError::Router`] for an unknown symbol, a missing table or a database error.
pub async fn order(
    map: &ShardMap,
    router: &TableRouter,
    symbol: Symbol,
    order_id: OrderId,
    user: Option<UserId>,
) -> Result<Vec<(ShardId, OrderRecord)>, ReadError> {
    let table = router.orders_table(&symbol, order_id)?;
    let shards: Vec<ShardId> = match user {
        Some(u) => vec![map.shard_of(u)],
        None => map.iter().map(|(s, _)| s).collect(),
    };
    let mut found = Vec::new();
    for shard in shards {
        map.require_tables(shard, std::slice::from_ref(&table))
            .await?;
        let rows = match user {
            Some(u) => {
                select(
                    map,
                    shard,
                    symbol,
                    &table,
                    "order_id = ? AND user_id = ?",
                    &[order_id.get(), u.get()],
                )
                .await?
            }
            None => {
                select(
                    map,
                    shard,
                    symbol,
                    &table,
                    "order_id = ?",
                    &[order_id.get()],
                )
                .await?
            }
        };
        found.extend(rows.into_iter().map(|r| (shard, r)));
    }
    Ok(found)
}

/// A user's order by the client order id it was placed with.
///
/// # Errors
/// As [`order`].
pub async fn order_by_client_id(
    map: &ShardMap,
    router: &TableRouter,
    user: UserId,
    client_order_id: &str,
) -> Result<Option<OrderRecord>, ReadError> {
    let shard = map.shard_of(user);
    let row: Option<(String, u64)> = sqlx::query_as(
        "SELECT symbol, order_id FROM client_orders WHERE user_id = ? AND client_order_id = ?",
    )
    .bind(user.get())
    .bind(client_order_id)
    .fetch_optional(map.pool(shard)?)
    .await
    .map_err(|e| RouterError::db_on_shard(shard.get(), e))?;
    let Some((symbol, id)) = row else {
        return Ok(None);
    };
    let symbol = router.symbol(&symbol)?;
    let id = OrderId::new(id).map_err(|e| ReadError::Corrupt {
        table: "client_orders".into(),
        order_id: id,
        reason: e.to_string(),
    })?;
    Ok(order(map, router, symbol, id, Some(user))
        .await?
        .pop()
        .map(|(_, r)| r))
}

/// Where a list of orders starts and how long it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Page {
    /// Only orders with a smaller id than this (the previous page's last id); none =
    /// the newest.
    pub before: Option<OrderId>,
    /// At most this many (1..=1000).
    pub limit: u16,
    /// The oldest month to read.
    pub since: Month,
}

/// A user's orders of one symbol, newest first, from the month tables between
/// `page.since` and the current month: one query per month table, stopping once the
/// page is full. `open_only` keeps the [`OrderStatus::OPEN`] ones.
///
/// # Errors
/// As [`order`]; a month table missing in the range is an error, never skipped.
pub async fn orders_of_user(
    map: &ShardMap,
    router: &TableRouter,
    user: UserId,
    symbol: Symbol,
    page: Page,
    open_only: bool,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<Vec<OrderRecord>, ReadError> {
    let limit = usize::from(page.limit.clamp(1, 1000));
    let shard = map.shard_of(user);
    let mut months = router.tables_in_range(TableKind::Orders, &symbol, page.since.start(), now)?;
    months.reverse();
    let status = if open_only {
        format!(
            " AND status IN ({})",
            OrderStatus::sql_list(&OrderStatus::OPEN)
        )
    } else {
        String::new()
    };
    let mut out = Vec::new();
    for table in months {
        if let Some(b) = page.before {
            // an id names its month: tables after the cursor's month hold only newer ids
            if table.month() > Month::of_id(b.get()).map_err(RouterError::from)? {
                continue;
            }
        }
        map.require_tables(shard, std::slice::from_ref(&table))
            .await?;
        let want = u64::try_from(limit - out.len()).unwrap_or(1000);
        let before = page.before.map_or(u64::MAX, OrderId::get);
        let filter = format!("user_id = ? AND order_id < ?{status} ORDER BY order_id DESC LIMIT ?");
        out.extend(
            select(
                map,
                shard,
                symbol,
                &table,
                &filter,
                &[user.get(), before, want],
            )
            .await?,
        );
        if out.len() >= limit {
            break;
        }
    }
    Ok(out)
}

/// One side of a trade, as stored on its user's shard.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TradeRecord {
    /// The trade id (per-symbol matcher sequence: grows with time across months).
    pub trade_id: u64,
    /// This row's user's side.
    pub side: Side,
    /// The symbol.
    pub symbol: Symbol,
    /// This user's order.
    pub order_id: OrderId,
    /// The other side's order.
    pub counter_order_id: OrderId,
    /// Price.
    pub price: Price,
    /// Base quantity.
    pub qty: Qty,
    /// Quote amount (`price × qty`).
    pub amount: Amount,
    /// Whether this user's order was the resting one.
    pub is_maker: bool,
    /// Fee charged to this user.
    pub fee: Amount,
    /// In this asset.
    pub fee_asset: String,
    /// Time, ms since the Unix epoch.
    pub created_ms: i64,
}

/// Where a list of trades starts and how long it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TradePage {
    /// Only trades with a larger id (the previous page's last; Binance's `fromId` is
    /// `after = fromId - 1`); none = from the first.
    pub after: Option<u64>,
    /// At most this many (1..=1000).
    pub limit: u16,
    /// The oldest month to read.
    pub since: Month,
}

/// A user's trades of one symbol in trade-id order after `page.after`, from the month
/// tables from `page.since` to the current month: one query per month table, stopping
/// once the page is full.
///
/// # Errors
/// A month table missing in the range is an error, never skipped; database errors;
/// [`ReadError::Corrupt`] for a stored value that does not parse.
pub async fn trades_of_user(
    map: &ShardMap,
    router: &TableRouter,
    user: UserId,
    symbol: Symbol,
    page: TradePage,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<Vec<TradeRecord>, ReadError> {
    let TradePage {
        after,
        limit,
        since,
    } = page;
    let limit = usize::from(limit.clamp(1, 1000));
    let shard = map.shard_of(user);
    let tables = router.tables_in_range(TableKind::Trades, &symbol, since.start(), now)?;
    let mut out = Vec::new();
    for table in tables {
        map.require_tables(shard, std::slice::from_ref(&table))
            .await?;
        let want = u64::try_from(limit - out.len()).unwrap_or(1000);
        let sql = format!(
            "SELECT trade_id, CAST(side AS CHAR) AS side, order_id, counter_order_id, \
                    CAST(price AS CHAR) AS price, CAST(quantity AS CHAR) AS quantity, \
                    CAST(amount AS CHAR) AS amount, is_maker, CAST(fee AS CHAR) AS fee, fee_currency, \
                    CAST(UNIX_TIMESTAMP(created_at) * 1000 AS SIGNED) AS created_ms \
             FROM `{}` WHERE user_id = ? AND trade_id > ? ORDER BY trade_id, side LIMIT ?",
            table.as_str()
        );
        let rows = sqlx::query(&sql)
            .bind(user.get())
            .bind(after.unwrap_or(0))
            .bind(want)
            .fetch_all(map.pool(shard)?)
            .await
            .map_err(|e| RouterError::db_on_shard(shard.get(), e))?;
        for row in &rows {
            out.push(parse_trade(row, symbol, &table)?);
        }
        if out.len() >= limit {
            break;
        }
    }
    Ok(out)
}

fn parse_trade(
    row: &MySqlRow,
    symbol: Symbol,
    table: &TableName,
) -> Result<TradeRecord, ReadError> {
    let trade_id: u64 = row
        .try_get("trade_id")
        .map_err(|e| RouterError::db("trade row", e))?;
    let bad = |reason: String| ReadError::Corrupt {
        table: table.to_string(),
        order_id: trade_id,
        reason,
    };
    let text = |c: &str| -> Result<String, ReadError> {
        row.try_get::<String, _>(c)
            .map_err(|e| bad(format!("{c}: {e}")))
    };
    let id = |c: &str| -> Result<OrderId, ReadError> {
        let raw: u64 = row.try_get(c).map_err(|e| bad(format!("{c}: {e}")))?;
        OrderId::new(raw).map_err(|e| bad(format!("{c}: {e}")))
    };
    let amount = |c: &str| Amount::from_db_str(&text(c)?).map_err(|e| bad(format!("{c}: {e}")));
    Ok(TradeRecord {
        trade_id,
        side: Side::from_db_str(&text("side")?).map_err(|e| bad(e.to_string()))?,
        symbol,
        order_id: id("order_id")?,
        counter_order_id: id("counter_order_id")?,
        price: Price::from_db_str(&text("price")?).map_err(|e| bad(format!("price: {e}")))?,
        qty: Qty::from_db_str(&text("quantity")?).map_err(|e| bad(format!("quantity: {e}")))?,
        amount: amount("amount")?,
        is_maker: row
            .try_get("is_maker")
            .map_err(|e| bad(format!("is_maker: {e}")))?,
        fee: amount("fee")?,
        fee_asset: text("fee_currency")?,
        created_ms: row
            .try_get("created_ms")
            .map_err(|e| bad(format!("created_ms: {e}")))?,
    })
}
