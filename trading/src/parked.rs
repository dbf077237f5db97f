//! Fill batches held back from settlement: the shard table `parked_fills` (migration
//! 0014, issue 13 defect 6). The settler in `engine` writes and applies them; operators
//! see them through `shardctl status` / `shardctl fills parked` and ask for a retry with
//! `shardctl fills retry`. Every statement on the table is here, so the engine and
//! `shardctl` (which never depend on each other) share one definition of it.
//!
//! Rules the settler keeps (`engine::parking`):
//! * a batch that fails `park_after` times in a row is parked `failed`;
//! * while a symbol has a parked batch on the shard, every later batch of that symbol
//!   is parked `queued` behind it: applying it would move the symbol's `applied_seq`
//!   mark past the parked events, which would later be skipped as redeliveries;
//! * a redelivered batch whose last seq is at or below the highest parked seq of its
//!   (symbol, stream) is already here and is not parked again;
//! * a retry applies a symbol's batches in `id` (arrival) order and deletes each once
//!   applied; the first that fails again stops its symbol and answers the request.
//!
//! This crate only reads and writes the rows; it never decodes or applies a batch.

use std::time::{Duration, Instant};

use serde::Serialize;
use sqlx::MySqlPool;

/// Why a batch is parked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ParkState {
    /// Applying it failed (`attempts` times; `last_error` says why).
    Failed,
    /// Held behind an earlier parked batch of its symbol (never attempted since).
    Queued,
}

impl ParkState {
    /// The column value.
    pub const fn as_db_str(self) -> &'static str {
        match self {
            Self::Failed => "failed",
            Self::Queued => "queued",
        }
    }
}

/// A parked batch as listed (without its bytes).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ParkedBatch {
    /// Arrival order on this shard (a retry applies a symbol's batches by it).
    pub id: u64,
    /// Symbol.
    pub symbol: String,
    /// The matcher stream the seqs come from.
    pub stream: String,
    /// Seq of its first event.
    pub first_seq: u64,
    /// Seq of its last event.
    pub last_seq: u64,
    /// Events in it.
    pub events: u32,
    /// Its offset in the shard's `fills` partition, for reference.
    pub fills_offset: Option<i64>,
    /// Failed, or queued behind an earlier one.
    pub state: ParkState,
    /// Failed attempts to apply it.
    pub attempts: u32,
    /// The last failure (for a queued batch: what it waits behind).
    pub last_error: String,
    /// A retry was asked for and the settler has not answered yet.
    pub retry_requested: bool,
    /// When it was parked (UTC, ms).
    pub parked_at: String,
    /// When applying it last failed.
    pub last_attempt_at: Option<String>,
}

/// A batch to park.
#[derive(Debug, Clone, Copy)]
pub struct NewParked<'a> {
    /// Symbol.
    pub symbol: &'a str,
    /// Matcher stream.
    pub stream: &'a str,
    /// Seq of its first event (0 when it has none).
    pub first_seq: u64,
    /// Seq of its last event (0 when it has none).
    pub last_seq: u64,
    /// Events in it.
    pub events: u32,
    /// The bytes as they came from the topic.
    pub batch: &'a [u8],
    /// Its offset in the fills partition.
    pub fills_offset: Option<i64>,
    /// Failed or queued.
    pub state: ParkState,
    /// Failed attempts so far.
    pub attempts: u32,
    /// Why.
    pub last_error: &'a str,
}

const COLUMNS: &str = "id, symbol, stream, first_seq, last_seq, events, fills_offset, \
     CAST(state AS CHAR), attempts, last_error, retry_requested, \
     DATE_FORMAT(parked_at, '%Y-%m-%d %H:%i:%s.%f'), DATE_FORMAT(last_attempt_at, '%Y-%m-%d %H:%i:%s.%f')";

type Row = (
    u64,
    String,
    String,
    u64,
    u64,
    u32,
    Option<i64>,
    String,
    u32,
    String,
    bool,
    String,
    Option<String>,
);

fn parse(r: Row) -> ParkedBatch {
    let trim = |t: String| t.get(..23).map(str::to_owned).unwrap_or(t);
    ParkedBatch {
        id: r.0,
        symbol: r.1,
        stream: r.2,
        first_seq: r.3,
        last_seq: r.4,
        events: r.5,
        fills_offset: r.6,
        state: if r.7 == "queued" {
            ParkState::Queued
        } else {
            ParkState::Failed
        },
        attempts: r.8,
        last_error: r.9,
        retry_requested: r.10,
        parked_at: trim(r.11),
        last_attempt_at: r.12.map(trim),
    }
}

/// Parks a batch; returns its id.
///
/// # Errors
/// Database errors (nothing was parked then).
pub async fn park(pool: &MySqlPool, p: &NewParked<'_>) -> Result<u64, sqlx::Error> {
    let done = sqlx::query(
        "INSERT INTO parked_fills (symbol, stream, first_seq, last_seq, events, batch, fills_offset, \
         state, attempts, last_error, last_attempt_at) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, IF(? > 0, CURRENT_TIMESTAMP(3), NULL))",
    )
    .bind(p.symbol)
    .bind(p.stream)
    .bind(p.first_seq)
    .bind(p.last_seq)
    .bind(p.events)
    .bind(p.batch)
    .bind(p.fills_offset)
    .bind(p.state.as_db_str())
    .bind(p.attempts)
    .bind(p.last_error)
    .bind(p.attempts)
    .execute(pool)
    .await?;
    Ok(done.last_insert_id())
}

/// Every parked batch of the shard, oldest first.
///
/// # Errors
/// Database errors.
pub async fn list(pool: &MySqlPool) -> Result<Vec<ParkedBatch>, sqlx::Error> {
    let rows: Vec<Row> = sqlx::query_as(&format!("SELECT {COLUMNS} FROM parked_fills ORDER BY id"))
        .fetch_all(pool)
        .await?;
    Ok(rows.into_iter().map(parse).collect())
}

/// How many batches are parked on the shard.
///
/// # Errors
/// Database errors.
pub async fn count(pool: &MySqlPool) -> Result<u64, sqlx::Error> {
    let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM parked_fills")
        .fetch_one(pool)
        .await?;
    Ok(u64::try_from(n).unwrap_or(0))
}

/// A symbol's parked batches with their bytes, in the order a retry applies them.
///
/// # Errors
/// Database errors.
pub async fn queue(
    pool: &MySqlPool,
    symbol: &str,
) -> Result<Vec<(ParkedBatch, Vec<u8>)>, sqlx::Error> {
    let rows: Vec<(u64, Vec<u8>)> =
        sqlx::query_as("SELECT id, batch FROM parked_fills WHERE symbol = ? ORDER BY id")
            .bind(symbol)
            .fetch_all(pool)
            .await?;
    let mut listed: std::collections::BTreeMap<u64, ParkedBatch> =
        list(pool).await?.into_iter().map(|b| (b.id, b)).collect();
    // (a row removed between the two reads is left out)
    Ok(rows
        .into_iter()
        .filter_map(|(id, bytes)| listed.remove(&id).map(|b| (b, bytes)))
        .collect())
}

/// The symbols with a retry asked for (`shardctl fills retry`), in name order.
///
/// # Errors
/// Database errors.
pub async fn symbols_to_retry(pool: &MySqlPool) -> Result<Vec<String>, sqlx::Error> {
    let rows: Vec<(String,)> = sqlx::query_as(
        "SELECT DISTINCT symbol FROM parked_fills WHERE retry_requested = 1 ORDER BY symbol",
    )
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().map(|(s,)| s).collect())
}

/// Removes a batch that has been applied.
///
/// # Errors
/// Database errors.
pub async fn remove(pool: &MySqlPool, id: u64) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM parked_fills WHERE id = ?")
        .bind(id)
        .execute(pool)
        .await?;
    Ok(())
}

/// Records that batch `id` of `symbol` failed again (now `failed`, one more attempt,
/// the error) and answers the symbol's retry request (cleared on all its rows), in one
/// statement.
///
/// # Errors
/// Database errors.
pub async fn failed_again(
    pool: &MySqlPool,
    id: u64,
    symbol: &str,
    error: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE parked_fills SET retry_requested = 0, \
           state = IF(id = ?, 'failed', state), \
           attempts = attempts + IF(id = ?, 1, 0), \
           last_error = IF(id = ?, ?, last_error), \
           last_attempt_at = IF(id = ?, CURRENT_TIMESTAMP(3), last_attempt_at) \
         WHERE symbol = ?",
    )
    .bind(id)
    .bind(id)
    .bind(id)
    .bind(error)
    .bind(id)
    .bind(symbol)
    .execute(pool)
    .await?;
    Ok(())
}

/// Asks the shard's settler to apply its parked batches again; returns how many are
/// parked. The settler polls for requests every second while it has parked batches.
///
/// # Errors
/// Database errors.
pub async fn request_retry(pool: &MySqlPool) -> Result<u64, sqlx::Error> {
    sqlx::query("UPDATE parked_fills SET retry_requested = 1")
        .execute(pool)
        .await?;
    count(pool).await
}

/// What became of a retry request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RetryOutcome {
    /// Batches parked when the retry was asked for.
    pub requested: u64,
    /// Still parked when the wait ended (those a failure stopped, or every one when
    /// no settler answered).
    pub remaining: Vec<ParkedBatch>,
    /// The settler answered the whole request (applied everything, or reported a
    /// failure) within the wait; `false`: some of it is still pending (no settler for
    /// the shard running?), and stays asked for.
    pub answered: bool,
}

impl RetryOutcome {
    /// Everything was applied.
    pub fn applied_all(&self) -> bool {
        self.answered && self.remaining.is_empty()
    }
}

/// Asks for a retry ([`request_retry`]) and waits up to `wait` for the settler to
/// answer it: every batch applied (none left), or a failure reported (no row still
/// asked for).
///
/// # Errors
/// Database errors.
pub async fn retry(pool: &MySqlPool, wait: Duration) -> Result<RetryOutcome, sqlx::Error> {
    let requested = request_retry(pool).await?;
    let until = Instant::now() + wait;
    let answered = loop {
        let (left, asked): (i64, i64) = sqlx::query_as(
            "SELECT COUNT(*), CAST(COALESCE(SUM(retry_requested), 0) AS SIGNED) FROM parked_fills",
        )
        .fetch_one(pool)
        .await?;
        if left == 0 || asked == 0 {
            break true;
        }
        if Instant::now() >= until {
            break false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    Ok(RetryOutcome {
        requested,
        remaining: list(pool).await?,
        answered,
    })
}
