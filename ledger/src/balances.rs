//! Balances on a shard, changed only by optimistic-lock updates.
//!
//! Every change is `UPDATE … SET …, version = version + 1 WHERE user_id = ? AND
//! currency = ? AND version = ? [AND available >= ?]`. Zero rows means somebody else
//! changed the row first (or funds are short): re-read and retry a bounded number of
//! times. Invariants, per row: `available >= 0`, `frozen >= 0` (also a CHECK
//! constraint), `version` grows by exactly one per successful change, and a freeze or
//! unfreeze never changes `available + frozen`.
//!
//! Every money value bound into arithmetic or a comparison is written
//! `CAST(? AS DECIMAL(36,18))`: MariaDB/MySQL turn a string operand of `-`, `+` or `>=`
//! into a DOUBLE, which silently rounds past ~16 digits (a plain `SET col = ?` or an
//! INSERT is exact and needs no cast).

use domain::{Amount, Asset, UserId};
use serde::Serialize;
use sqlx::{Executor, MySql, Row};

use router::get_amount;
use router::RouterError;

/// One balance row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Balance {
    /// Spendable.
    pub available: Amount,
    /// Held by open orders, pending withdrawals and transfers.
    pub frozen: Amount,
    /// Optimistic-lock version.
    pub version: u64,
}

/// Outcome of a freeze attempt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum Freeze {
    /// Funds moved from available to frozen; the new row.
    Done(Balance),
    /// Not enough available (a business reject, not an error).
    Insufficient {
        /// What was available at the last read.
        available: Amount,
    },
}

/// The `user_id` of each shard's fee account (trading and withdrawal fees land there,
/// inside the money invariant).
pub const FEE_ACCOUNT: u64 = 0;

/// Reads a balance on `shard` (`None` when the user has never held the asset).
///
/// # Errors
/// Database errors; a stored value that cannot be held exactly.
pub async fn balance<'e, E>(
    exec: E,
    shard: u16,
    user: UserId,
    asset: &Asset,
) -> Result<Option<Balance>, RouterError>
where
    E: Executor<'e, Database = MySql>,
{
    let row = sqlx::query(
        "SELECT available, frozen, version FROM account_balances \
         WHERE user_id = ? AND currency = ? AND account_type = 'spot'",
    )
    .bind(user.get())
    .bind(asset.as_str())
    .fetch_optional(exec)
    .await
    .map_err(|e| RouterError::db_on_shard(shard, e))?;
    row.map(|r| {
        Ok(Balance {
            available: get_amount(&r, "available")?,
            frozen: get_amount(&r, "frozen")?,
            version: r
                .try_get("version")
                .map_err(|e| RouterError::db_on_shard(shard, e))?,
        })
    })
    .transpose()
}

/// Every balance of `user` (spot), by asset: what the gateway's account endpoint and
/// the balance stream start from. One query on the user's shard.
///
/// # Errors
/// Database errors; a stored value that cannot be held exactly; a stored asset code
/// that is not valid.
pub async fn all_of(
    shards: &router::ShardMap,
    user: UserId,
) -> Result<Vec<(Asset, Balance)>, RouterError> {
    let shard = shards.shard_of(user).get();
    let rows = sqlx::query(
        "SELECT CAST(currency AS CHAR) AS currency, available, frozen, version FROM account_balances \
         WHERE user_id = ? AND account_type = 'spot' ORDER BY currency",
    )
    .bind(user.get())
    .fetch_all(shards.pool_for(user))
    .await
    .map_err(|e| RouterError::db_on_shard(shard, e))?;
    rows.iter()
        .map(|r| {
            let code: String = r
                .try_get("currency")
                .map_err(|e| RouterError::db_on_shard(shard, e))?;
            let asset = Asset::new(&code)
                .map_err(|e| RouterError::InvalidInput(format!("stored asset {code:?}: {e}")))?;
            Ok((
                asset,
                Balance {
                    available: get_amount(r, "available")?,
                    frozen: get_amount(r, "frozen")?,
                    version: r
                        .try_get("version")
                        .map_err(|e| RouterError::db_on_shard(shard, e))?,
                },
            ))
        })
        .collect()
}

/// Moves `amount` from available to frozen on the user's shard with the optimistic
/// lock, retrying up to `max_retries` times when another writer got there first.
///
/// A primitive on its own connection that writes **no ledger row** (nothing refers to
/// the hold): no writer of the exchange calls it (they call [`freeze_on`] inside the
/// transaction that writes the `freeze` row), and a balance changed by it alone is
/// reported by [`crate::audit::ledger_replay`].
///
/// # Errors
/// [`RouterError::InvalidInput`] for a non-positive amount; `Conflict`-style
/// exhaustion is reported as [`RouterError::Busy`]; database errors.
pub async fn freeze(
    shards: &router::ShardMap,
    user: UserId,
    asset: &Asset,
    amount: Amount,
    max_retries: u32,
) -> Result<Freeze, RouterError> {
    let mut conn = shards
        .pool_for(user)
        .acquire()
        .await
        .map_err(|e| RouterError::db_on_shard(shards.shard_of(user).get(), e))?;
    freeze_on(
        &mut conn,
        shards.shard_of(user).get(),
        user,
        asset,
        amount,
        max_retries,
    )
    .await
}

/// [`freeze`] on a given connection (or transaction: `&mut *tx`) of `shard`, so it can
/// be one statement of a larger local transaction (order placement).
///
/// # Errors
/// As [`freeze`].
pub async fn freeze_on(
    conn: &mut sqlx::MySqlConnection,
    shard: u16,
    user: UserId,
    asset: &Asset,
    amount: Amount,
    max_retries: u32,
) -> Result<Freeze, RouterError> {
    if !amount.is_positive() {
        return Err(RouterError::InvalidInput(format!(
            "freeze amount must be positive, got {amount}"
        )));
    }
    let amount_sql = amount.to_db_string();
    for _ in 0..=max_retries {
        let Some(cur) = balance(&mut *conn, shard, user, asset).await? else {
            return Ok(Freeze::Insufficient {
                available: Amount::ZERO,
            });
        };
        if cur.available.get() < amount.get() {
            return Ok(Freeze::Insufficient {
                available: cur.available,
            });
        }
        let res = sqlx::query(
            "UPDATE account_balances \
             SET available = available - CAST(? AS DECIMAL(36,18)), frozen = frozen + CAST(? AS DECIMAL(36,18)), \
                 version = version + 1 \
             WHERE user_id = ? AND currency = ? AND account_type = 'spot' AND version = ? \
               AND available >= CAST(? AS DECIMAL(36,18))",
        )
        .bind(&amount_sql)
        .bind(&amount_sql)
        .bind(user.get())
        .bind(asset.as_str())
        .bind(cur.version)
        .bind(&amount_sql)
        .execute(&mut *conn)
        .await
        .map_err(|e| RouterError::db_on_shard(shard, e))?;
        if res.rows_affected() == 1 {
            return Ok(Freeze::Done(Balance {
                available: cur.available.checked_sub(amount)?,
                frozen: cur.frozen.checked_add(amount)?,
                version: cur.version + 1,
            }));
        }
    }
    Err(RouterError::Busy(format!(
        "balance of user {user} {asset} changed {} times in a row",
        max_retries + 1
    )))
}

/// Credits a completed deposit: the `deposits` row, the balance (created if needed,
/// `version` + 1) and the ledger row, in one local transaction on the user's shard.
/// Idempotent by `(txid, asset)`: a repeated call changes nothing and returns `false`.
///
/// # Errors
/// [`RouterError::InvalidInput`] for a non-positive amount; database errors.
pub async fn credit_deposit(
    shards: &router::ShardMap,
    user: UserId,
    asset: &Asset,
    amount: Amount,
    txid: &str,
) -> Result<bool, RouterError> {
    if !amount.is_positive() {
        return Err(RouterError::InvalidInput(format!(
            "deposit amount must be positive, got {amount}"
        )));
    }
    // the global (txid, asset) index first, as `funding::report_deposit` does: the
    // same deposit can never be recorded for two users on two shards
    let indexed =
        sqlx::query("INSERT IGNORE INTO deposit_txids (txid, currency, user_id) VALUES (?, ?, ?)")
            .bind(txid)
            .bind(asset.as_str())
            .bind(user.get())
            .execute(shards.meta())
            .await
            .map_err(|e| RouterError::db("meta", e))?;
    if indexed.rows_affected() == 0 {
        let (owner,): (u64,) =
            sqlx::query_as("SELECT user_id FROM deposit_txids WHERE txid = ? AND currency = ?")
                .bind(txid)
                .bind(asset.as_str())
                .fetch_one(shards.meta())
                .await
                .map_err(|e| RouterError::db("meta", e))?;
        if owner != user.get() {
            return Err(RouterError::InvalidInput(format!(
                "deposit {txid} {asset} was already recorded for user {owner}"
            )));
        }
    }
    let shard = shards.shard_of(user).get();
    let place = |e| RouterError::db_on_shard(shard, e);
    let amount_sql = amount.to_db_string();
    let mut tx = shards.pool_for(user).begin().await.map_err(place)?;
    let inserted = sqlx::query(
        "INSERT INTO deposits (user_id, currency, amount, chain, txid, from_address, to_address, \
           confirmations, required_confirmations, status, completed_at) \
         VALUES (?, ?, ?, 'internal', ?, '', '', 1, 1, 'completed', CURRENT_TIMESTAMP(3))",
    )
    .bind(user.get())
    .bind(asset.as_str())
    .bind(&amount_sql)
    .bind(txid)
    .execute(&mut *tx)
    .await;
    let deposit_id = match inserted {
        Ok(r) => r.last_insert_id(),
        Err(sqlx::Error::Database(db)) if db.is_unique_violation() => return Ok(false),
        Err(e) => return Err(place(e)),
    };
    let after = credit_on(&mut tx, shard, user, asset, amount).await?;
    ledger_on(
        &mut tx, shard, user, asset, "deposit", amount, after, "deposit", deposit_id,
    )
    .await?;
    tx.commit().await.map_err(place)?;
    Ok(true)
}

/// Adds `amount` to a spot balance's available (creating the row) inside the caller's
/// transaction; returns available after.
///
/// # Errors
/// Database errors.
pub async fn credit_on(
    conn: &mut sqlx::MySqlConnection,
    shard: u16,
    user: UserId,
    asset: &Asset,
    amount: Amount,
) -> Result<Amount, RouterError> {
    sqlx::query(
        "INSERT INTO account_balances (user_id, currency, available) VALUES (?, ?, ?) \
         ON DUPLICATE KEY UPDATE available = available + CAST(? AS DECIMAL(36,18)), version = version + 1",
    )
    .bind(user.get())
    .bind(asset.as_str())
    .bind(amount.to_db_string())
    .bind(amount.to_db_string())
    .execute(&mut *conn)
    .await
    .map_err(|e| RouterError::db_on_shard(shard, e))?;
    let b = balance(&mut *conn, shard, user, asset)
        .await?
        .ok_or_else(|| RouterError::InvalidInput("balance vanished".into()))?;
    Ok(b.available)
}

/// Writes one ledger row (`account_transactions`) inside the caller's transaction.
///
/// # Errors
/// Database errors.
#[allow(clippy::too_many_arguments)]
pub async fn ledger_on(
    conn: &mut sqlx::MySqlConnection,
    shard: u16,
    user: UserId,
    asset: &Asset,
    kind: &str,
    amount: Amount,
    balance_after: Amount,
    ref_type: &str,
    ref_id: u64,
) -> Result<(), RouterError> {
    sqlx::query(
        "INSERT INTO account_transactions (user_id, currency, type, amount, balance_after, ref_type, ref_id) \
         VALUES (?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(user.get())
    .bind(asset.as_str())
    .bind(kind)
    .bind(amount.to_db_string())
    .bind(balance_after.to_db_string())
    .bind(ref_type)
    .bind(ref_id)
    .execute(conn)
    .await
    .map_err(|e| RouterError::db_on_shard(shard, e))?;
    Ok(())
}

/// The SQL text of balance and ledger writes that batched writers (placement's group
/// commit, the settler, TCC batches) splice into their multi-statement transactions.
/// The statements on `account_balances` and `account_transactions` are written here
/// and nowhere else; the callers decide *what* moves, this module *how* it is written.
///
/// Every amount goes in as an exact `DECIMAL(36,18)` literal ([`Sql::dec`]); the
/// table's `CHECK (available >= 0 AND frozen >= 0)` guards every result.
pub mod text {
    use domain::{Amount, Asset};
    use router::sqltext::Sql;

    /// One row of the ledger (`account_transactions`).
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct LedgerRow<'a> {
        /// The user.
        pub user: u64,
        /// The asset.
        pub asset: Asset,
        /// `freeze`, `unfreeze`, `trade`, `fee`, `deposit`, `withdraw`, `transfer`
        /// (the column's ENUM; how each one moves available and frozen:
        /// [`crate::audit::ledger_replay`]).
        pub kind: &'a str,
        /// The signed change this row records.
        pub amount: Amount,
        /// The available balance after it.
        pub balance_after: Amount,
        /// What caused it (`order`, `trade`, `transfer`, …).
        pub ref_type: &'a str,
        /// Its id.
        pub ref_id: u64,
    }

    /// One freeze of an optimistic-lock batch: move `amount` from available to frozen
    /// if the row still has `version` and enough available.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct VersionedFreeze {
        /// The user.
        pub user: u64,
        /// The asset.
        pub asset: Asset,
        /// How much (positive).
        pub amount: Amount,
        /// The version read under the row lock.
        pub version: u64,
    }

    /// A signed change of one balance row.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct Delta {
        /// The user.
        pub user: u64,
        /// The asset.
        pub asset: Asset,
        /// Change of available.
        pub available: Amount,
        /// Change of frozen.
        pub frozen: Amount,
    }

    /// The versioned freeze of every row in `freezes`, one statement (nothing when
    /// empty). A row whose version moved or whose available is short is left as it
    /// was: the caller checks the affected-row count.
    pub fn versioned_freezes(sql: &mut Sql, freezes: &[VersionedFreeze]) {
        if freezes.is_empty() {
            return;
        }
        sql.raw("UPDATE account_balances b JOIN (");
        for (i, f) in freezes.iter().enumerate() {
            sql.raw(if i == 0 {
                "SELECT "
            } else {
                " UNION ALL SELECT "
            });
            sql.int(f.user)
                .raw(" AS u, ")
                .str(f.asset.as_str())
                .raw(" AS c, ");
            sql.dec(f.amount)
                .raw(" AS amt, ")
                .int(f.version)
                .raw(" AS ver");
        }
        sql.raw(
            ") v ON b.user_id = v.u AND b.currency = v.c AND b.account_type = 'spot' \
             SET b.available = b.available - CAST(v.amt AS DECIMAL(36,18)), \
                 b.frozen = b.frozen + CAST(v.amt AS DECIMAL(36,18)), b.version = b.version + 1 \
             WHERE b.version = v.ver AND b.available >= CAST(v.amt AS DECIMAL(36,18));\n",
        );
    }

    /// Adds each delta to its existing row (rows locked by the caller), one statement.
    pub fn add_to_rows(sql: &mut Sql, deltas: &[Delta]) {
        if deltas.is_empty() {
            return;
        }
        sql.raw("UPDATE account_balances b JOIN (");
        for (i, d) in deltas.iter().enumerate() {
            sql.raw(if i == 0 {
                "SELECT "
            } else {
                " UNION ALL SELECT "
            });
            sql.int(d.user)
                .raw(" AS u, ")
                .str(d.asset.as_str())
                .raw(" AS c, ");
            sql.dec(d.available)
                .raw(" AS da, ")
                .dec(d.frozen)
                .raw(" AS df");
        }
        sql.raw(
            ") v ON b.user_id = v.u AND b.currency = v.c AND b.account_type = 'spot' \
             SET b.available = b.available + CAST(v.da AS DECIMAL(36,18)), \
                 b.frozen = b.frozen + CAST(v.df AS DECIMAL(36,18)), b.version = b.version + 1;\n",
        );
    }

    /// Inserts new rows holding the deltas as their balances, one statement. (Not
    /// `INSERT … ON DUPLICATE KEY UPDATE`: MariaDB checks the constraint on the
    /// would-be-inserted deltas first, and a negative delta is normal for an update.)
    pub fn insert_rows(sql: &mut Sql, rows: &[Delta]) {
        if rows.is_empty() {
            return;
        }
        sql.raw("INSERT INTO account_balances (user_id, currency, available, frozen) VALUES ");
        sql.tuples(rows, |q, d| {
            q.int(d.user)
                .comma()
                .str(d.asset.as_str())
                .comma()
                .dec(d.available)
                .comma()
                .dec(d.frozen);
        });
        sql.raw(";\n");
    }

    /// One multi-row insert of `rows` into the ledger (nothing when empty).
    pub fn ledger_rows<'a>(sql: &mut Sql, rows: impl IntoIterator<Item = LedgerRow<'a>>) {
        let rows: Vec<LedgerRow<'a>> = rows.into_iter().collect();
        if rows.is_empty() {
            return;
        }
        sql.raw("INSERT INTO account_transactions (user_id, currency, type, amount, balance_after, ref_type, ref_id) VALUES ");
        sql.tuples(&rows, |q, r| {
            q.int(r.user)
                .comma()
                .str(r.asset.as_str())
                .comma()
                .str(r.kind)
                .comma();
            q.dec(r.amount)
                .comma()
                .dec(r.balance_after)
                .comma()
                .str(r.ref_type)
                .comma();
            q.int(r.ref_id);
        });
        sql.raw(";\n");
    }
}
