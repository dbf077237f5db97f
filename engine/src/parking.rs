//! Parking of fill batches that keep failing (issue 13, defect 6): a poison batch no
//! longer stops its shard's settlement for good, and no money is skipped.
//!
//! * A batch that fails [`ParkPolicy::after`] times in a row is **parked**: its bytes,
//!   symbol, stream, seq range, attempts and last error go to the shard's
//!   `parked_fills` table (`trading::parked`), and the settler goes on with the next
//!   batch.
//! * **Its symbol is held on that shard**: settlers skip events at or below the
//!   symbol's `applied_seq` mark, so applying a later batch of the same symbol would
//!   move the mark past the parked events, and a retry would then skip them as
//!   redeliveries. So while a symbol has a parked batch on the shard, every later
//!   batch of it is parked too (`queued`, in arrival order); other symbols, and the
//!   same symbol on other shards, keep settling.
//! * **Restarts**: the table is the record, the `fills` offset only a hint (committed
//!   after a batch was applied or parked). A settler loads the parked batches before it
//!   applies anything; a redelivered batch whose last seq is at or below the highest
//!   parked seq of its (symbol, stream) is parked already and is dropped, not parked
//!   twice; one past it is new (a replayed matcher may cut batches differently) and is
//!   queued — a retry applies batches in order and the mark skips what overlaps.
//! * **Retry**: `shardctl fills retry` flags the shard's rows; the settler, which
//!   polls for that every [`ParkPolicy::poll`] while it has parked batches, applies
//!   each flagged symbol's batches oldest first, deleting each once applied (a crash
//!   in between re-applies it, which the mark makes a no-op); the first that fails
//!   again stays parked with its new error and answers the request. Only the settler
//!   applies batches, so a retry never races the live stream of the same symbol.
//! * **Visible**: `/ready` is 503 while any batch is parked, with one line per shard;
//!   `/metrics` has `exchange_settler_parked_batches{shard}`,
//!   `exchange_settler_parked_total` and `exchange_settler_parked_applied_total`.

use std::sync::Arc;
use std::time::Duration;

use domain::ShardId;
use router::RouterError;
use sqlx::MySqlPool;
use tracing::{error, info, warn};
use trading::parked::{self, NewParked, ParkState, ParkedBatch};

use crate::metrics::{Metrics, ParkedHealth};
use crate::settle::{FillBatch, SettleError, Settler};

/// Consecutive failures of one batch before it is parked, unless configured
/// (`EXCHANGE_ENGINE__PARK_AFTER`).
pub const DEFAULT_PARK_AFTER: u32 = 10;

/// When a settler parks a batch, and how often it looks for retry requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParkPolicy {
    /// Consecutive failures of one batch before it is parked (at least 1).
    pub after: u32,
    /// While batches are parked: how often to look for a retry request.
    pub poll: Duration,
}

impl Default for ParkPolicy {
    fn default() -> Self {
        Self {
            after: DEFAULT_PARK_AFTER,
            poll: Duration::from_secs(1),
        }
    }
}

impl ParkPolicy {
    /// Parking after `after` failures (at least 1), polling every second.
    pub fn after(after: u32) -> Self {
        Self {
            after: after.max(1),
            ..Self::default()
        }
    }
}

/// The seqs of a batch's first and last events (0 when it has none).
pub fn seq_range(batch: &FillBatch) -> (u64, u64) {
    (
        batch.events.first().map_or(0, matcher::Event::seq),
        batch.events.last().map_or(0, matcher::Event::seq),
    )
}

/// One shard's parked batches as its settler keeps them: loaded from the table before
/// the settler applies anything, changed only by this settler.
#[derive(Debug)]
pub struct Parking {
    shard: ShardId,
    pool: MySqlPool,
    metrics: Arc<Metrics>,
    /// Oldest first (without the bytes).
    rows: Vec<ParkedBatch>,
}

impl Parking {
    /// Loads `settler`'s shard's parked batches and reports them to `metrics`.
    ///
    /// # Errors
    /// The table cannot be read: the settler must not start then.
    pub async fn load(settler: &Settler, metrics: Arc<Metrics>) -> Result<Self, SettleError> {
        let mut p = Self {
            shard: settler.shard(),
            pool: settler.pool().clone(),
            metrics,
            rows: Vec::new(),
        };
        p.reload().await?;
        if !p.rows.is_empty() {
            warn!(
                shard = p.shard.get(),
                batches = p.rows.len(),
                "fill batches are parked on this shard"
            );
        }
        Ok(p)
    }

    fn db(&self, e: sqlx::Error) -> SettleError {
        SettleError::Router(RouterError::db_on_shard(self.shard.get(), e))
    }

    async fn reload(&mut self) -> Result<(), SettleError> {
        self.rows = parked::list(&self.pool).await.map_err(|e| self.db(e))?;
        self.report();
        Ok(())
    }

    fn report(&self) {
        let mut symbols: Vec<String> = self.rows.iter().map(|r| r.symbol.clone()).collect();
        symbols.sort();
        symbols.dedup();
        let first_failure = self
            .rows
            .iter()
            .find(|r| r.state == ParkState::Failed)
            .map(|r| {
                format!(
                    "{} seqs {}..{} failed {} times: {}",
                    r.symbol,
                    r.first_seq,
                    r.last_seq,
                    r.attempts,
                    r.last_error.replace(['\n', '\r'], " ")
                )
            });
        self.metrics.set_parked(
            self.shard.get(),
            ParkedHealth {
                batches: u64::try_from(self.rows.len()).unwrap_or(u64::MAX),
                symbols,
                first_failure,
            },
        );
    }

    /// Nothing is parked.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// `symbol` has a parked batch here: its later batches must be parked behind it.
    pub fn holds(&self, symbol: &str) -> bool {
        self.rows.iter().any(|r| r.symbol == symbol)
    }

    /// `batch` is a redelivery of what is parked already: a batch of its (symbol,
    /// stream) parked here reaches its last seq (or it has no events at all).
    pub fn covers(&self, batch: &FillBatch) -> bool {
        let (_, last) = seq_range(batch);
        batch.events.is_empty()
            || self.rows.iter().any(|r| {
                r.symbol == batch.symbol.as_str() && r.stream == batch.stream && r.last_seq >= last
            })
    }

    /// Parks `batch` (`bytes` as it came from offset `offset`); returns its id.
    ///
    /// # Errors
    /// The insert failed: nothing was parked, the caller must not move on.
    pub async fn park(
        &mut self,
        batch: &FillBatch,
        bytes: &[u8],
        offset: Option<i64>,
        state: ParkState,
        attempts: u32,
        error: &str,
    ) -> Result<u64, SettleError> {
        let (first_seq, last_seq) = seq_range(batch);
        let events = u32::try_from(batch.events.len()).unwrap_or(u32::MAX);
        let id = parked::park(
            &self.pool,
            &NewParked {
                symbol: batch.symbol.as_str(),
                stream: &batch.stream,
                first_seq,
                last_seq,
                events,
                batch: bytes,
                fills_offset: offset,
                state,
                attempts,
                last_error: error,
            },
        )
        .await
        .map_err(|e| self.db(e))?;
        let now = chrono::Utc::now()
            .format("%Y-%m-%d %H:%M:%S%.3f")
            .to_string();
        self.rows.push(ParkedBatch {
            id,
            symbol: batch.symbol.as_str().to_owned(),
            stream: batch.stream.clone(),
            first_seq,
            last_seq,
            events,
            fills_offset: offset,
            state,
            attempts,
            last_error: error.to_owned(),
            retry_requested: false,
            parked_at: now.clone(),
            last_attempt_at: (attempts > 0).then_some(now),
        });
        Metrics::add(&self.metrics.batches_parked, 1);
        self.report();
        Ok(id)
    }

    /// What a batch of `symbol` arriving now waits behind (for a queued row's error).
    pub fn behind(&self, symbol: &str) -> String {
        self.rows
            .iter()
            .find(|r| r.symbol == symbol)
            .map_or_else(String::new, |r| {
                format!(
                    "queued behind parked batch {} of {symbol} (seqs {}..{})",
                    r.id, r.first_seq, r.last_seq
                )
            })
    }

    /// Serves the retry requests (`shardctl fills retry`): for each symbol with a
    /// flagged batch, applies its parked batches oldest first, deleting each once
    /// applied; the first that fails again keeps its place, gets the new error and
    /// answers the request. Then reloads the table.
    ///
    /// # Errors
    /// The table cannot be read or written (the role restarts and loads it again).
    pub async fn serve_retries(&mut self, settler: &Settler) -> Result<(), SettleError> {
        let symbols = parked::symbols_to_retry(&self.pool)
            .await
            .map_err(|e| self.db(e))?;
        if symbols.is_empty() {
            return Ok(());
        }
        for symbol in symbols {
            let queue = parked::queue(&self.pool, &symbol)
                .await
                .map_err(|e| self.db(e))?;
            info!(shard = self.shard.get(), %symbol, batches = queue.len(), "retrying parked fill batches");
            for (row, bytes) in queue {
                let outcome = match FillBatch::decode(&bytes) {
                    Ok(batch) => settler.apply(&batch).await.map_err(|e| e.to_string()),
                    Err(e) => Err(format!("undecodable parked batch: {e}")),
                };
                match outcome {
                    Ok(applied) => {
                        crate::service::after_settled(settler, &self.metrics, &applied).await;
                        parked::remove(&self.pool, row.id)
                            .await
                            .map_err(|e| self.db(e))?;
                        Metrics::add(&self.metrics.parked_applied, 1);
                        info!(
                            shard = self.shard.get(), %symbol, id = row.id,
                            seqs = %format!("{}..{}", row.first_seq, row.last_seq),
                            "parked fill batch applied"
                        );
                    }
                    Err(e) => {
                        Metrics::add(&self.metrics.settle_errors, 1);
                        error!(
                            shard = self.shard.get(), %symbol, id = row.id, error = %e,
                            "parked fill batch failed again; it and the batches behind it stay parked"
                        );
                        parked::failed_again(&self.pool, row.id, &symbol, &e)
                            .await
                            .map_err(|e| self.db(e))?;
                        break;
                    }
                }
            }
        }
        self.reload().await
    }
}
