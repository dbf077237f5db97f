//! Internal transfers between users, across shards by TCC (DESIGN.md "TCC transfers").
//!
//! A transfer between users of two shards is a **global** row in meta `tcc_global`
//! (`trying` → `confirming` → `confirmed`, or `trying`/`confirming`… → `cancelling` →
//! `cancelled`) with two **branches**, each one local transaction on its user's shard
//! that writes, together:
//! * a **barrier** row `tcc_branches (gid, branch, op)` — its primary key makes every
//!   branch call idempotent (a repeated call finds its row and does nothing);
//! * the branch's `transfers` row and the balance change:
//!   * source Try freezes the amount (the same optimistic-lock update as orders), target
//!     Try records the pending credit;
//!   * Confirm spends the source's frozen amount / credits the target (a ledger row
//!     `transfer` each);
//!   * Cancel unfreezes the source / drops the target's pending credit.
//!
//! Cancel before Try (**empty rollback**) writes the Try barrier with reason
//! `rollback` and changes nothing; a Try arriving after that (**anti-hanging**) finds
//! the barrier taken and does nothing. Every status change is conditional on the
//! previous status. The coordinator ([`Tcc::transfer`]) retries nothing itself beyond
//! one attempt per phase: what it could not finish is left `confirming`/`cancelling`
//! (or `trying`, when it died) for [`Tcc::recover`], which retries with backoff, and
//! cancels a `trying` global once it is older than the Try timeout.
//!
//! A transfer between two users of one shard is one local transaction (a `local` row,
//! no global).
//!
//! Money: Σ(available + frozen) over all shards changes only between a transfer's two
//! Confirms, which run source first (the amount has left the source and not yet
//! reached the target: never the other way round) — the audit is exact when no global
//! is `confirming`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, OnceLock, RwLock};
use std::time::Duration;

use domain::{Amount, Asset, UserId};
use sqlx::MySqlPool;

use futures_util::StreamExt;

use router::batch::Batcher;
use router::sqltext::{exec, Ran, Sql, TextTx};
use router::{RouterError, ShardMap};

/// A process-aborting failure injected at a step boundary (crash tests): set
/// `EXCHANGE_FAILPOINT` to one of these names.
pub const FAILPOINTS: [&str; 4] = [
    "tcc.after_global",
    "tcc.after_try",
    "tcc.after_confirm_source",
    "tcc.during_cancel",
];

/// The branches of a cross-shard transfer.
pub const SOURCE: &str = "source";
/// The branch crediting the payee.
pub const TARGET: &str = "target";

/// Why a transfer was refused (nothing changed) or did not complete.
#[derive(Debug, thiserror::Error)]
pub enum TransferError {
    /// Payer and payee are the same user.
    #[error("cannot transfer to yourself")]
    SelfTransfer,
    /// The payer or payee does not exist.
    #[error("unknown user {0}")]
    UnknownUser(u64),
    /// Not a configured asset, or a disabled one.
    #[error("unknown or disabled asset {0}")]
    UnknownAsset(String),
    /// Zero, negative, or finer than the asset's precision.
    #[error("invalid amount {amount}: {reason}")]
    InvalidAmount {
        /// What was given.
        amount: String,
        /// Why.
        reason: String,
    },
    /// The payer's available balance is short.
    #[error("insufficient balance: {available} {asset} available")]
    Insufficient {
        /// Asset.
        asset: Asset,
        /// Available at the check.
        available: Amount,
    },
    /// The COMMIT of a same-shard transfer was sent and neither its reply nor a later
    /// look could say whether it happened. Ask [`Tcc::local_outcome`] with this id
    /// before anything else: a new transfer would be a second one.
    #[error("outcome unknown for transfer {gid}: {reason}")]
    OutcomeUnknown {
        /// The transfer's id.
        gid: u64,
        /// What failed.
        reason: String,
    },
    /// The COMMIT's reply was lost and a look found the transfer absent: nothing
    /// happened; a retry is safe.
    #[error("transfer {gid} not committed: {reason}")]
    NotCommitted {
        /// The id it would have had.
        gid: u64,
        /// What failed.
        reason: String,
    },
    /// Infrastructure.
    #[error(transparent)]
    Router(#[from] RouterError),
}

impl domain::Kinded for TransferError {
    fn kind(&self) -> domain::ErrorKind {
        use domain::ErrorKind as K;
        match self {
            Self::Router(e) => e.kind(),
            Self::OutcomeUnknown { .. } => K::OutcomeUnknown,
            Self::NotCommitted { .. } => K::Unavailable,
            Self::UnknownUser(_) => K::NotFound,
            Self::SelfTransfer
            | Self::UnknownAsset(_)
            | Self::InvalidAmount { .. }
            | Self::Insufficient { .. } => K::Rejected,
        }
    }
}

impl From<domain::MoneyError> for TransferError {
    fn from(e: domain::MoneyError) -> Self {
        Self::Router(e.into())
    }
}

/// How a transfer ended for its caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Done: the payee has the money.
    Confirmed,
    /// Committed (both Tries succeeded) but a Confirm is still to be applied by the
    /// recovery loop: the payee will have the money.
    Confirming,
}

/// A transfer's id and how it ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transfer {
    /// Transfer id (the global id for a cross-shard one).
    pub gid: u64,
    /// Same shard: one local transaction.
    pub local: bool,
    /// Outcome.
    pub outcome: Outcome,
}

/// What a branch call did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BranchResult {
    /// Applied now.
    Done,
    /// Already applied earlier (a repeated call): nothing changed.
    Repeated,
    /// Cancel without a Try: the rollback marker was written, nothing else.
    EmptyRollback,
    /// A Try after its Cancel: refused, nothing changed.
    Hanging,
}

/// A global transaction's row.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Global {
    /// Id.
    pub gid: u64,
    /// `trying`, `confirming`, `confirmed`, `cancelling`, `cancelled`.
    pub status: String,
    /// Payer.
    pub from: u64,
    /// Payee.
    pub to: u64,
    /// Asset.
    pub asset: String,
    /// Amount.
    pub amount: String,
    /// Recovery attempts so far.
    pub retries: u32,
    /// Created (UTC).
    pub created_at: String,
}

/// What one recovery pass did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Recovered {
    /// Globals finished as confirmed.
    pub confirmed: u64,
    /// Globals finished as cancelled.
    pub cancelled: u64,
    /// Globals whose retry failed again (rescheduled with backoff).
    pub failed: u64,
}

/// A branch call that goes through the per-shard group commit ([`Tcc::branch`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BranchOp {
    /// [`Tcc::try_source`].
    TrySource,
    /// [`Tcc::try_target`].
    TryTarget,
    /// [`Tcc::confirm_source`].
    ConfirmSource,
    /// [`Tcc::confirm_target`].
    ConfirmTarget,
}

impl BranchOp {
    fn branch(self) -> &'static str {
        match self {
            Self::TrySource | Self::ConfirmSource => SOURCE,
            Self::TryTarget | Self::ConfirmTarget => TARGET,
        }
    }

    fn op(self) -> &'static str {
        match self {
            Self::TrySource | Self::TryTarget => "try",
            Self::ConfirmSource | Self::ConfirmTarget => "confirm",
        }
    }

    fn user(self, leg: &Leg) -> UserId {
        match self.branch() {
            SOURCE => leg.from,
            _ => leg.to,
        }
    }
}

type BranchReply = Result<BranchResult, TransferError>;

/// A change of `tcc_global` through the meta group commit.
#[derive(Debug)]
enum MetaJob {
    /// A new global, `trying`.
    Insert { gid: u64, payload: String },
    /// `from` → `to`; answered `false` when the global was not in `from`.
    Status {
        gid: u64,
        from: &'static str,
        to: &'static str,
    },
}

/// The group-commit queues of one coordinator: one per shard for branch calls, one
/// for the meta schema's global rows (started on first use).
struct Batches {
    shards: Vec<Batcher<(BranchOp, Leg), BranchReply>>,
    meta: Batcher<MetaJob, Result<bool, RouterError>>,
}

/// The transfer coordinator.
#[derive(Clone)]
pub struct Tcc {
    shards: ShardMap,
    next_id: router::snowflake::IdSource,
    failpoint: Option<String>,
    /// A Try slower than this (its wait in the shard's queue included) is given up,
    /// and the global cancelled.
    pub try_timeout: Duration,
    /// Most branch calls (or global-row changes) one group-commit transaction takes;
    /// read when the queues start (the first transfer), later changes are ignored.
    pub batch_max: usize,
    batches: Arc<OnceLock<Batches>>,
    /// Asset → (precision, enabled, read at), kept [`ASSET_CACHE_TTL`].
    precisions: Arc<RwLock<AssetCache>>,
}

/// Asset → (precision, enabled, when read).
type AssetCache = HashMap<Asset, (u32, bool, std::time::Instant)>;

/// How long a read of an asset's row (precision, enabled) is trusted: disabling an
/// asset stops its transfers within this.
pub const ASSET_CACHE_TTL: Duration = Duration::from_secs(10);

impl std::fmt::Debug for Tcc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tcc")
            .field("failpoint", &self.failpoint)
            .finish_non_exhaustive()
    }
}

fn meta_err(e: sqlx::Error) -> RouterError {
    RouterError::db("meta", e)
}

impl Tcc {
    /// A coordinator over `shards` (and their meta schema), with transfer ids from
    /// `next_id` (a snowflake generator). Reads `EXCHANGE_FAILPOINT`.
    pub fn new(shards: ShardMap, next_id: router::snowflake::IdSource) -> Self {
        Self {
            shards,
            next_id,
            failpoint: std::env::var("EXCHANGE_FAILPOINT").ok(),
            try_timeout: Duration::from_secs(5),
            batch_max: 64,
            batches: Arc::default(),
            precisions: Arc::default(),
        }
    }

    /// The group-commit queues, started on the current runtime on first use. Their
    /// tasks hold a copy of the coordinator without the queues (no cycle: they end when
    /// the last copy of this coordinator is dropped).
    fn batches(&self) -> &Batches {
        self.batches.get_or_init(|| {
            let plain = Self {
                batches: Arc::default(),
                ..self.clone()
            };
            let shards = self
                .shards
                .iter()
                .map(|(shard, _)| {
                    let tcc = plain.clone();
                    Batcher::spawn(4096, self.batch_max, move |jobs| {
                        let tcc = tcc.clone();
                        async move { tcc.branch_batch(shard.get(), jobs).await }
                    })
                })
                .collect();
            let tcc = plain;
            let meta = Batcher::spawn(4096, self.batch_max, move |jobs| {
                let tcc = tcc.clone();
                async move { tcc.meta_batch(jobs).await }
            });
            Batches { shards, meta }
        })
    }

    /// (batches, branch calls) run by the per-shard group commits so far.
    pub fn batch_stats(&self) -> (u64, u64) {
        self.batches.get().map_or((0, 0), |b| {
            b.shards.iter().fold((0, 0), |(n, j), s| {
                let (bn, bj) = s.stats();
                (n + bn, j + bj)
            })
        })
    }

    /// A branch call through its shard's group commit: it shares one local
    /// transaction with the other calls queued on that shard, with the same effect as
    /// the single call ([`Tcc::try_source`] …): a refused call (insufficient balance)
    /// writes nothing and does not fail the others.
    ///
    /// # Errors
    /// As the single calls.
    pub async fn branch(&self, op: BranchOp, leg: &Leg) -> Result<BranchResult, TransferError> {
        let shard = usize::from(self.shards.shard_of(op.user(leg)).get());
        let queue = self
            .batches()
            .shards
            .get(shard)
            .ok_or_else(|| inconsistent(leg.gid, "no queue for the shard"))?;
        queue
            .submit((op, *leg))
            .await
            .unwrap_or_else(|| Err(gone(leg.gid)))
    }

    fn meta(&self) -> &MySqlPool {
        self.shards.meta()
    }

    /// Aborts the process here if the failpoint `name` is armed (crash tests).
    fn failpoint(&self, name: &str) {
        if self.failpoint.as_deref() == Some(name) {
            eprintln!("failpoint {name}: aborting");
            std::process::abort();
        }
    }

    /// Checks a transfer request; returns the asset's precision-checked amount.
    async fn check(
        &self,
        from: UserId,
        to: UserId,
        asset: &str,
        amount: &str,
    ) -> Result<(Asset, Amount), TransferError> {
        if from == to {
            return Err(TransferError::SelfTransfer);
        }
        let invalid = |reason: &str| TransferError::InvalidAmount {
            amount: amount.to_owned(),
            reason: reason.to_owned(),
        };
        let asset_code =
            Asset::new(asset).map_err(|_| TransferError::UnknownAsset(asset.to_owned()))?;
        let Some(precision) = self.precision(asset_code).await? else {
            return Err(TransferError::UnknownAsset(asset.to_owned()));
        };
        let value = amount
            .parse::<Amount>()
            .map_err(|e| invalid(&e.to_string()))?;
        if !value.is_positive() {
            return Err(invalid("must be positive"));
        }
        if value.get().normalize().scale() > precision {
            return Err(invalid(&format!(
                "{asset_code} has {precision} decimal places"
            )));
        }
        let found: Vec<(u64,)> = sqlx::query_as(
            "SELECT id FROM user_directory WHERE id IN (?, ?) AND status = 'active'",
        )
        .bind(from.get())
        .bind(to.get())
        .fetch_all(self.meta())
        .await
        .map_err(meta_err)?;
        for user in [from, to] {
            if !found.iter().any(|(id,)| *id == user.get()) {
                return Err(TransferError::UnknownUser(user.get()));
            }
        }
        Ok((asset_code, value))
    }

    /// An enabled asset's decimal places (`None`: not configured, or disabled). Read
    /// from meta at most every [`ASSET_CACHE_TTL`], so a disabled asset is refused soon
    /// after it is disabled.
    async fn precision(&self, asset: Asset) -> Result<Option<u32>, TransferError> {
        let cached = self
            .precisions
            .read()
            .ok()
            .and_then(|m| m.get(&asset).copied())
            .filter(|(_, _, at)| at.elapsed() < ASSET_CACHE_TTL);
        let (p, enabled) = match cached {
            Some((p, enabled, _)) => (p, enabled),
            None => {
                let row: Option<(u32, String)> = sqlx::query_as(
                    "SELECT `precision`, CAST(status AS CHAR) FROM assets WHERE asset = ?",
                )
                .bind(asset.as_str())
                .fetch_optional(self.meta())
                .await
                .map_err(meta_err)?;
                let Some((p, status)) = row else {
                    return Ok(None);
                };
                let enabled = status == "enabled";
                if let Ok(mut m) = self.precisions.write() {
                    m.insert(asset, (p, enabled, std::time::Instant::now()));
                }
                (p, enabled)
            }
        };
        Ok(enabled.then_some(p))
    }

    /// Transfers `amount` of `asset` from `from` to `to`.
    ///
    /// # Errors
    /// [`TransferError`]: a refusal changed nothing; after a database error during
    /// Confirm/Cancel the global is left for [`Tcc::recover`].
    pub async fn transfer(
        &self,
        from: UserId,
        to: UserId,
        asset: &str,
        amount: &str,
    ) -> Result<Transfer, TransferError> {
        let (asset, amount) = self.check(from, to, asset, amount).await?;
        let gid = (self.next_id)().map_err(RouterError::from)?;
        if self.shards.shard_of(from) == self.shards.shard_of(to) {
            let done = Transfer {
                gid,
                local: true,
                outcome: Outcome::Confirmed,
            };
            return match retrying(|| self.local(gid, from, to, &asset, amount)).await {
                Ok(()) => Ok(done),
                // the COMMIT went out and its reply did not come back: look
                Err(TransferError::OutcomeUnknown { reason, .. }) => {
                    let mut last = reason;
                    for attempt in 0..3u64 {
                        tokio::time::sleep(Duration::from_millis(50 * (attempt + 1))).await;
                        match self.local_outcome(gid, from).await {
                            Ok(true) => return Ok(done),
                            Ok(false) => {
                                return Err(TransferError::NotCommitted { gid, reason: last })
                            }
                            Err(e) => last = e.to_string(),
                        }
                    }
                    Err(TransferError::OutcomeUnknown { gid, reason: last })
                }
                Err(e) => Err(e),
            };
        }
        let payload = serde_json::json!({
            "from": from.get(), "to": to.get(), "asset": asset.as_str(), "amount": amount.to_string(),
        });
        self.meta_job(MetaJob::Insert {
            gid,
            payload: payload.to_string(),
        })
        .await?;
        self.failpoint("tcc.after_global");
        let leg = Leg {
            gid,
            from,
            to,
            asset,
            amount,
        };
        // Try both; any failure (or a timeout) cancels
        // both Tries at once (independent shards); any failure or timeout cancels
        let tried = {
            let judge = |name: &str, r: Result<Result<BranchResult, TransferError>, _>| match r {
                Ok(Ok(BranchResult::Done | BranchResult::Repeated)) => Ok(()),
                Ok(Ok(other)) => Err(TransferError::Router(RouterError::Busy(format!(
                    "transfer {gid}: {name} Try {other:?}"
                )))),
                Ok(Err(e)) => Err(e),
                Err(tokio::time::error::Elapsed { .. }) => Err(TransferError::Router(
                    RouterError::Busy(format!("transfer {gid}: {name} Try timed out")),
                )),
            };
            let (source, target) = tokio::join!(
                tokio::time::timeout(self.try_timeout, self.branch(BranchOp::TrySource, &leg)),
                tokio::time::timeout(self.try_timeout, self.branch(BranchOp::TryTarget, &leg)),
            );
            judge("source", source).and(judge("target", target))
        };
        if let Err(e) = tried {
            if self.set_status(gid, "trying", "cancelling").await? {
                // best effort now; the recovery loop finishes what fails here
                if self.cancel_both(&leg).await.is_ok() {
                    self.set_status(gid, "cancelling", "cancelled").await?;
                } else {
                    self.backoff(gid, 0).await?;
                }
            }
            return Err(e);
        }
        self.failpoint("tcc.after_try");
        match self.set_status(gid, "trying", "confirming").await {
            Ok(true) => {}
            // the recovery loop cancelled it meanwhile (we were slower than its timeout)
            Ok(false) => {
                return Err(TransferError::Router(RouterError::Busy(format!(
                    "transfer {gid} was cancelled by recovery before it could confirm"
                ))))
            }
            Err(e) => {
                return Err(TransferError::Router(RouterError::Busy(format!(
                    "transfer {gid}: outcome unknown ({e}); `shardctl tcc list` shows it until recovery finishes it"
                ))))
            }
        }
        // decided: from here the transfer happens; a failure only delays it (recovery),
        // so the caller is never told it failed
        let outcome = match self.confirm_both(&leg).await {
            Ok(()) => {
                if let Err(e) = self.set_status(gid, "confirming", "confirmed").await {
                    tracing::warn!(gid, error = %e, "both confirmed; the status is left to recovery");
                }
                Outcome::Confirmed
            }
            Err(e) => {
                tracing::warn!(gid, error = %e, "confirm failed; left to recovery");
                if let Err(e) = self.backoff(gid, 0).await {
                    tracing::warn!(gid, error = %e, "could not schedule the retry");
                }
                Outcome::Confirming
            }
        };
        Ok(Transfer {
            gid,
            local: false,
            outcome,
        })
    }

    /// The source Confirm, then the target's: the payee is never credited before the
    /// payer's frozen amount is spent.
    async fn confirm_both(&self, leg: &Leg) -> Result<(), TransferError> {
        self.branch(BranchOp::ConfirmSource, leg).await?;
        self.failpoint("tcc.after_confirm_source");
        self.branch(BranchOp::ConfirmTarget, leg).await?;
        Ok(())
    }

    /// Both Cancels at once (one after the other when a failpoint is armed).
    async fn cancel_both(&self, leg: &Leg) -> Result<(), TransferError> {
        if self.failpoint.is_some() {
            self.cancel_source(leg).await?;
            self.failpoint("tcc.during_cancel");
            self.cancel_target(leg).await?;
            return Ok(());
        }
        let (s, t) = tokio::join!(self.cancel_source(leg), self.cancel_target(leg));
        s.and(t).map(|_| ())
    }

    /// Moves a global from `from` to `to` status; `false` if it was not in `from`.
    /// Goes through the meta group commit.
    async fn set_status(
        &self,
        gid: u64,
        from: &'static str,
        to: &'static str,
    ) -> Result<bool, RouterError> {
        self.meta_job(MetaJob::Status { gid, from, to }).await
    }

    async fn meta_job(&self, job: MetaJob) -> Result<bool, RouterError> {
        let gid = match &job {
            MetaJob::Insert { gid, .. } | MetaJob::Status { gid, .. } => *gid,
        };
        match self.batches().meta.submit(job).await {
            Some(r) => r,
            None => Err(match gone(gid) {
                TransferError::Router(e) => e,
                other => RouterError::Busy(other.to_string()),
            }),
        }
    }

    /// The single-statement form of a meta job (the fallback of a failed batch).
    async fn meta_single(&self, job: &MetaJob) -> Result<bool, RouterError> {
        let r = match job {
            MetaJob::Insert { gid, payload } => sqlx::query(
                "INSERT INTO tcc_global (gid, kind, status, payload) VALUES (?, 'transfer', 'trying', ?)",
            )
            .bind(gid)
            .bind(payload)
            .execute(self.meta())
            .await,
            MetaJob::Status { gid, from, to } => {
                sqlx::query("UPDATE tcc_global SET status = ? WHERE gid = ? AND status = ?")
                    .bind(to)
                    .bind(gid)
                    .bind(from)
                    .execute(self.meta())
                    .await
            }
        };
        Ok(r.map_err(meta_err)?.rows_affected() == 1)
    }

    /// Schedules the next recovery attempt: 100 ms × 2^retries, at most 30 s.
    async fn backoff(&self, gid: u64, retries: u32) -> Result<(), RouterError> {
        let ms = 100u64.saturating_mul(1 << retries.min(9)).min(30_000);
        sqlx::query(
            "UPDATE tcc_global SET retries = retries + 1, \
             next_retry_at = CURRENT_TIMESTAMP(3) + INTERVAL ? * 1000 MICROSECOND WHERE gid = ?",
        )
        .bind(ms)
        .bind(gid)
        .execute(self.meta())
        .await
        .map_err(meta_err)?;
        Ok(())
    }

    /// One local transaction for two users of one shard, in SQL text: both balance
    /// rows locked in user order (two opposite transfers on one shard must not
    /// deadlock), then the payer's optimistic-lock debit, the payee's credit, the
    /// `local` row and both ledger rows.
    async fn local(
        &self,
        gid: u64,
        from: UserId,
        to: UserId,
        asset: &Asset,
        amount: Amount,
    ) -> Result<(), TransferError> {
        let (shard, mut tx) = self.text_tx(from).await?;
        let mut sql = Sql::new();
        sql.raw("START TRANSACTION;\n");
        let (first, second) = if from < to { (from, to) } else { (to, from) };
        balance_sql(&mut sql, first, asset);
        balance_sql(&mut sql, second, asset);
        let ran = run(&mut tx, shard, &sql).await?;
        let payer = balance_of(&ran, from)?;
        let (available, _, version) = payer.unwrap_or((Amount::ZERO, Amount::ZERO, 0));
        if payer.is_none() || available.get() < amount.get() {
            finish(&mut tx, shard, "ROLLBACK").await?;
            return Err(TransferError::Insufficient {
                asset: *asset,
                available,
            });
        }
        let payee = balance_of(&ran, to)?.map_or(Amount::ZERO, |b| b.0);
        let mut sql = Sql::new();
        sql.raw("UPDATE account_balances SET available = available - ")
            .dec(amount)
            .raw(", version = version + 1 WHERE user_id = ")
            .int(from.get())
            .raw(" AND currency = ")
            .str(asset.as_str())
            .raw(" AND account_type = 'spot' AND version = ")
            .int(version)
            .raw(" AND available >= ")
            .dec(amount)
            .raw(";\n");
        credit_sql(&mut sql, to, asset, amount);
        transfer_row_sql(&mut sql, gid, "local", from, to, asset, amount, "confirmed");
        ledger_sql(
            &mut sql,
            from,
            asset,
            "transfer",
            -amount,
            available.checked_sub(amount)?,
            gid,
        );
        ledger_sql(
            &mut sql,
            to,
            asset,
            "transfer",
            amount,
            payee.checked_add(amount)?,
            gid,
        );
        let ran = run(&mut tx, shard, &sql).await?;
        expect_one(&ran, 0, gid, "the payer's balance changed under its lock")?;
        finish(&mut tx, shard, "COMMIT")
            .await
            .map_err(|e| TransferError::OutcomeUnknown {
                gid,
                reason: e.to_string(),
            })?;
        Ok(())
    }

    /// Whether same-shard transfer `gid` of payer `from` committed. It first locks the
    /// payer's balance rows (so a COMMIT the server is still finishing is waited
    /// for), then reads the transfer's row: the answer after
    /// [`TransferError::OutcomeUnknown`].
    ///
    /// # Errors
    /// The shard unreachable.
    pub async fn local_outcome(&self, gid: u64, from: UserId) -> Result<bool, TransferError> {
        use sqlx::Row;
        let (shard, mut tx) = self.text_tx(from).await?;
        let mut sql = Sql::new();
        sql.raw("START TRANSACTION;\nSELECT 'l', user_id FROM account_balances WHERE user_id = ")
            .int(from.get())
            .raw(" FOR UPDATE;\nSELECT 'g', COUNT(*) FROM transfers WHERE gid = ")
            .int(gid)
            .raw(" AND branch = 'local'");
        let ran = run(&mut tx, shard, &sql).await?;
        let found = tagged(&ran, "g")
            .map(|r| r.try_get::<i64, _>(1))
            .transpose()
            .map_err(|e| text_err(shard, e))?
            .unwrap_or(0);
        finish(&mut tx, shard, "ROLLBACK").await?;
        Ok(found > 0)
    }

    /// The shard of `user`, its pool wrapped for a transaction in SQL text.
    async fn text_tx(&self, user: UserId) -> Result<(u16, TextTx), TransferError> {
        let shard = self.shards.shard_of(user).get();
        let tx = TextTx::acquire(self.shards.pool_for(user))
            .await
            .map_err(|e| RouterError::db_on_shard(shard, e))?;
        Ok((shard, tx))
    }

    // Each branch is one local transaction in two or three round trips of SQL text
    // (`router::sqltext`): 1. begin, barrier, locking reads; 2. the writes (checked);
    // 3. commit. Dropped midway (an error), the connection is closed: rolled back.

    /// One of the four batched branch operations as a batch of one: the same code
    /// (barrier, locking read, judged writes, commit) as a call that shares its
    /// shard's group commit, so the two cannot differ in effect.
    async fn single(&self, op: BranchOp, leg: &Leg) -> Result<BranchResult, TransferError> {
        let shard = self.shards.shard_of(op.user(leg)).get();
        let job = [(op, *leg)];
        retrying(|| async {
            self.branch_batch_once(shard, &job)
                .await?
                .pop()
                .unwrap_or_else(|| Err(inconsistent(leg.gid, "a batch of one gave no answer")))
        })
        .await
    }

    async fn cancel_source_once(&self, leg: &Leg) -> Result<BranchResult, TransferError> {
        self.cancel_once(leg, SOURCE).await
    }

    async fn cancel_target_once(&self, leg: &Leg) -> Result<BranchResult, TransferError> {
        self.cancel_once(leg, TARGET).await
    }

    /// Cancel of one branch: the Cancel barrier; with no Try before it, the Try
    /// barrier as the empty-rollback marker (a late Try is refused); else the branch
    /// row `tried` → `cancelled` and, on the source, the frozen amount released.
    async fn cancel_once(&self, leg: &Leg, branch: &str) -> Result<BranchResult, TransferError> {
        use sqlx::Row;
        let user = if branch == SOURCE { leg.from } else { leg.to };
        let (shard, mut tx) = self.text_tx(user).await?;
        let mut sql = Sql::new();
        sql.raw("START TRANSACTION;\n");
        barrier_sql(&mut sql, 0, leg.gid, branch, "cancel", "normal");
        sql.raw("INSERT IGNORE INTO tcc_branches (gid, branch_id, op, reason) VALUES (")
            .int(leg.gid)
            .comma()
            .str(branch)
            .raw(", 'try', 'rollback');\nSELECT 'e', ROW_COUNT();\nSELECT 't', CAST(status AS CHAR) FROM transfers WHERE gid = ")
            .int(leg.gid)
            .raw(" AND branch = ")
            .str(branch)
            .raw(" FOR UPDATE;\n");
        if branch == SOURCE {
            balance_sql(&mut sql, user, &leg.asset);
        }
        let ran = run(&mut tx, shard, &sql).await?;
        if barrier_outcome(&ran, false)?.is_some() {
            finish(&mut tx, shard, "COMMIT").await?;
            return Ok(BranchResult::Repeated);
        }
        let marker = tagged(&ran, "e")
            .map(|r| r.try_get::<i64, _>(1))
            .transpose()
            .map_err(|e| text_err(shard, e))?
            .unwrap_or(0);
        let tried = tagged(&ran, "t")
            .map(|r| r.try_get::<String, _>(1))
            .transpose()
            .map_err(|e| text_err(shard, e))?;
        // no Try before (the marker went in), or a Try that was refused and wrote nothing
        if marker == 1 || tried.is_none() {
            finish(&mut tx, shard, "COMMIT").await?;
            return Ok(BranchResult::EmptyRollback);
        }
        let mut sql = Sql::new();
        transition_sql(&mut sql, leg.gid, branch, "tried", "cancelled");
        if branch == SOURCE {
            let (available, _, _) = balance_of(&ran, user)?
                .ok_or_else(|| inconsistent(leg.gid, "the source has no balance row"))?;
            sql.raw("UPDATE account_balances SET available = available + ")
                .dec(leg.amount)
                .raw(", frozen = frozen - ")
                .dec(leg.amount)
                .raw(", version = version + 1 WHERE user_id = ")
                .int(user.get())
                .raw(" AND currency = ")
                .str(leg.asset.as_str())
                .raw(" AND account_type = 'spot' AND frozen >= ")
                .dec(leg.amount)
                .raw(";\n");
            ledger_sql(
                &mut sql,
                user,
                &leg.asset,
                "unfreeze",
                leg.amount,
                available.checked_add(leg.amount)?,
                leg.gid,
            );
        }
        let ran = run(&mut tx, shard, &sql).await?;
        expect_one(
            &ran,
            0,
            leg.gid,
            &format!("the {branch} branch is not tried"),
        )?;
        if branch == SOURCE {
            expect_one(
                &ran,
                1,
                leg.gid,
                "the source frozen balance is short of the transfer",
            )?;
        }
        finish(&mut tx, shard, "COMMIT").await?;
        Ok(BranchResult::Done)
    }

    /// Source Try: freeze the amount.
    ///
    /// # Errors
    /// [`TransferError::Insufficient`] (nothing written); database errors. A deadlock is retried (the branch's transaction is atomic).
    pub async fn try_source(&self, leg: &Leg) -> Result<BranchResult, TransferError> {
        self.single(BranchOp::TrySource, leg).await
    }

    /// Target Try: record the pending credit.
    ///
    /// # Errors
    /// Database errors. A deadlock is retried (the branch's transaction is atomic).
    pub async fn try_target(&self, leg: &Leg) -> Result<BranchResult, TransferError> {
        self.single(BranchOp::TryTarget, leg).await
    }

    /// Source Confirm: spend the frozen amount.
    ///
    /// # Errors
    /// Database errors; a Confirm without its Try (a coordinator bug) is refused. A deadlock is retried (the branch's transaction is atomic).
    pub async fn confirm_source(&self, leg: &Leg) -> Result<BranchResult, TransferError> {
        self.single(BranchOp::ConfirmSource, leg).await
    }

    /// Target Confirm: credit the amount.
    ///
    /// # Errors
    /// Database errors; a Confirm without its Try is refused. A deadlock is retried (the branch's transaction is atomic).
    pub async fn confirm_target(&self, leg: &Leg) -> Result<BranchResult, TransferError> {
        self.single(BranchOp::ConfirmTarget, leg).await
    }

    /// Source Cancel: unfreeze (or, before any Try, the empty-rollback marker).
    ///
    /// # Errors
    /// Database errors. A deadlock is retried (the branch's transaction is atomic).
    pub async fn cancel_source(&self, leg: &Leg) -> Result<BranchResult, TransferError> {
        retrying(|| self.cancel_source_once(leg)).await
    }

    /// Target Cancel: drop the pending credit (or the empty-rollback marker).
    ///
    /// # Errors
    /// Database errors. A deadlock is retried (the branch's transaction is atomic).
    pub async fn cancel_target(&self, leg: &Leg) -> Result<BranchResult, TransferError> {
        retrying(|| self.cancel_target_once(leg)).await
    }

    /// Globals not finished yet (all of them, or only those stuck: older than
    /// `stuck_after` or already retried).
    ///
    /// # Errors
    /// Meta database errors.
    pub async fn list(&self, stuck_after: Option<Duration>) -> Result<Vec<Global>, RouterError> {
        let rows: Vec<(u64, String, String, u32, String, i64)> = sqlx::query_as(
            "SELECT gid, CAST(status AS CHAR), CAST(payload AS CHAR), retries, \
                    DATE_FORMAT(created_at, '%Y-%m-%d %H:%i:%s.%f'), \
                    TIMESTAMPDIFF(MICROSECOND, created_at, CURRENT_TIMESTAMP(3)) DIV 1000 \
             FROM tcc_global WHERE status NOT IN ('confirmed', 'cancelled') ORDER BY gid",
        )
        .fetch_all(self.meta())
        .await
        .map_err(meta_err)?;
        let mut out = Vec::new();
        for (gid, status, payload, retries, created_at, age_ms) in rows {
            if let Some(limit) = stuck_after {
                let old = u128::try_from(age_ms).unwrap_or(0) >= limit.as_millis();
                if !old && retries == 0 {
                    continue;
                }
            }
            let leg = parse_payload(gid, &payload)?;
            out.push(Global {
                gid,
                status,
                from: leg.from.get(),
                to: leg.to.get(),
                asset: leg.asset.to_string(),
                amount: leg.amount.to_string(),
                retries,
                created_at,
            });
        }
        Ok(out)
    }

    /// One recovery pass over unfinished globals whose retry time has come: `trying`
    /// ones older than the Try timeout are cancelled, `confirming` ones confirmed,
    /// `cancelling` ones cancelled. A failure reschedules the global with backoff.
    ///
    /// # Errors
    /// Meta database errors (branch failures are counted, not returned).
    pub async fn recover(&self) -> Result<Recovered, RouterError> {
        let timeout_ms = u64::try_from(self.try_timeout.as_millis()).unwrap_or(u64::MAX);
        let rows: Vec<(u64,)> = sqlx::query_as(
            "SELECT gid FROM tcc_global WHERE next_retry_at <= CURRENT_TIMESTAMP(3) AND ( \
               status IN ('confirming', 'cancelling') OR \
               (status = 'trying' AND created_at <= CURRENT_TIMESTAMP(3) - INTERVAL ? * 1000 MICROSECOND)) \
             ORDER BY gid LIMIT 1000",
        )
        .bind(timeout_ms)
        .fetch_all(self.meta())
        .await
        .map_err(meta_err)?;
        let mut done = Recovered::default();
        // up to 64 at once: their branch calls share the shards' group commits
        let results: Vec<(u64, Result<Option<bool>, TransferError>)> =
            futures_util::stream::iter(rows)
                .map(|(gid,)| async move { (gid, self.resolve(gid).await) })
                .buffer_unordered(64)
                .collect()
                .await;
        for (gid, result) in results {
            match result {
                Ok(Some(true)) => done.confirmed += 1,
                Ok(Some(false)) => done.cancelled += 1,
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(gid, error = %e, "recovery of transfer failed; backing off");
                    done.failed += 1;
                }
            }
        }
        Ok(done)
    }

    /// Finishes one global now: `confirming` → confirmed, `trying` or `cancelling` →
    /// cancelled. `Some(true)` confirmed, `Some(false)` cancelled, `None` when it was
    /// already final (or unknown).
    ///
    /// # Errors
    /// Branch or meta errors (the global is rescheduled with backoff).
    pub async fn resolve(&self, gid: u64) -> Result<Option<bool>, TransferError> {
        let row: Option<(String, String, u32)> = sqlx::query_as(
            "SELECT CAST(status AS CHAR), CAST(payload AS CHAR), retries FROM tcc_global WHERE gid = ?",
        )
        .bind(gid)
        .fetch_optional(self.meta())
        .await
        .map_err(meta_err)?;
        let Some((status, payload, retries)) = row else {
            return Ok(None);
        };
        let leg = match parse_payload(gid, &payload) {
            Ok(leg) => leg,
            Err(e) => {
                // never retried in a tight loop: an operator must look at it
                self.backoff(gid, retries).await?;
                return Err(e.into());
            }
        };
        if status == "trying" {
            // a Try still within its timeout may be in flight: not ours to cancel yet
            let (age_ms,): (i64,) = sqlx::query_as(
                "SELECT TIMESTAMPDIFF(MICROSECOND, created_at, CURRENT_TIMESTAMP(3)) DIV 1000 FROM tcc_global WHERE gid = ?",
            )
            .bind(gid)
            .fetch_one(self.meta())
            .await
            .map_err(meta_err)?;
            if u128::try_from(age_ms).unwrap_or(0) < self.try_timeout.as_millis() {
                return Ok(None);
            }
        }
        let result = match status.as_str() {
            "confirming" => self.confirm_both(&leg).await.map(|()| Some(true)),
            "trying" | "cancelling" => {
                if status == "trying" && !self.set_status(gid, "trying", "cancelling").await? {
                    // it moved on meanwhile: next pass
                    return Ok(None);
                }
                self.cancel_both(&leg).await.map(|()| Some(false))
            }
            _ => return Ok(None),
        };
        match result {
            Ok(Some(true)) => {
                self.set_status(gid, "confirming", "confirmed").await?;
                Ok(Some(true))
            }
            Ok(other) => {
                self.set_status(gid, "cancelling", "cancelled").await?;
                Ok(other)
            }
            Err(e) => {
                self.backoff(gid, retries).await?;
                Err(e)
            }
        }
    }
}

/// One balance row as a branch batch sees it: read under its lock, changed in memory
/// call by call, written once.
#[derive(Debug, Clone, Copy)]
struct Held {
    available: Amount,
    frozen: Amount,
    /// `None`: no row yet (a payee's first credit inserts it).
    version: Option<u64>,
    changed: bool,
}

/// The rows a branch batch writes besides balances.
#[derive(Default)]
struct BranchWrites {
    /// new `transfers` rows, `tried`
    tried: Vec<TransferRow>,
    /// (gid, branch) `tried` → `confirmed`
    confirmed: Vec<(u64, &'static str)>,
    ledger: Vec<LedgerRow>,
    /// barrier rows of refused calls, taken back: (gid, branch, op)
    refused: Vec<(u64, &'static str, &'static str)>,
}

impl Tcc {
    /// Runs one shard's queued branch calls as one local transaction; if that fails
    /// as a whole (after its deadlock retries), each call on its own.
    async fn branch_batch(&self, shard: u16, jobs: Vec<(BranchOp, Leg)>) -> Vec<BranchReply> {
        match retrying(|| self.branch_batch_once(shard, &jobs)).await {
            Ok(answers) => answers,
            Err(e) => {
                tracing::warn!(shard, calls = jobs.len(), error = %e, "branch batch failed; running its calls one by one");
                // each in its own transaction, at once (their barrier rows serialise
                // copies of one call)
                futures_util::future::join_all(jobs.iter().map(|(op, leg)| self.single(*op, leg)))
                    .await
            }
        }
    }

    /// The batch in three round trips of SQL text: 1. begin, every call's barrier row,
    /// one locking read of the balances involved (user order); 2. every write, each
    /// checked; 3. commit. In between, the calls are judged in arrival order against
    /// the balances as the calls before them left them, so two Tries of one payer in
    /// one batch see each other. A refused call's barrier row is deleted again: it
    /// leaves nothing, as a rolled-back single call would.
    async fn branch_batch_once(
        &self,
        shard: u16,
        jobs: &[(BranchOp, Leg)],
    ) -> Result<Vec<BranchReply>, TransferError> {
        use sqlx::Row;
        let pool = self
            .shards
            .pool(domain::ShardId::new(shard))
            .map_err(TransferError::Router)?;
        let mut tx = TextTx::acquire(pool)
            .await
            .map_err(|e| text_err(shard, e))?;
        // a call queued twice in one batch (the same gid, branch and op) is judged once:
        // the copy gets the first one's answer
        let mut first_of: HashMap<(u64, BranchOp), usize> = HashMap::new();
        let mut copy_of: Vec<Option<usize>> = Vec::with_capacity(jobs.len());
        for (i, (op, leg)) in jobs.iter().enumerate() {
            match first_of.get(&(leg.gid, *op)) {
                Some(first) => copy_of.push(Some(*first)),
                None => {
                    first_of.insert((leg.gid, *op), i);
                    copy_of.push(None);
                }
            }
        }
        let mut sql = Sql::new();
        // a batch waits for a row lock 5 s at most (not InnoDB's 50 s): the calls queued
        // behind it have their own Try timeout
        sql.raw("SET SESSION innodb_lock_wait_timeout = 5;\nSTART TRANSACTION;\n");
        // balances locked in (user, asset) order, as placement and settlement do
        let mut wanted: BTreeSet<(u64, Asset)> = BTreeSet::new();
        for (i, (op, leg)) in jobs.iter().enumerate() {
            if copy_of[i].is_some() {
                continue;
            }
            barrier_sql(&mut sql, i, leg.gid, op.branch(), op.op(), "normal");
            if *op != BranchOp::TryTarget {
                wanted.insert((op.user(leg).get(), leg.asset));
            }
        }
        if !wanted.is_empty() {
            sql.raw("SELECT 'b', CAST(available AS CHAR), CAST(frozen AS CHAR), version, user_id, CAST(currency AS CHAR) FROM account_balances WHERE account_type = 'spot' AND (user_id, currency) IN (")
                .tuples(&wanted, |sql, (u, a)| {
                    sql.int(*u).comma().str(a.as_str());
                })
                .raw(") ORDER BY user_id, currency FOR UPDATE;\n");
        }
        let ran = run(&mut tx, shard, &sql).await?;

        // what was read: barrier outcomes by call, balances by (user, asset)
        let bad = |e: sqlx::Error| inconsistent(0, &e.to_string());
        let mut barriers: HashMap<usize, (i64, Option<String>)> = HashMap::new();
        let mut held: HashMap<(UserId, Asset), Held> = HashMap::new();
        for row in &ran.rows {
            match row.try_get::<String, _>(0).map_err(bad)?.as_str() {
                "r" => {
                    let i: i64 = row.try_get(3).map_err(bad)?;
                    barriers.insert(
                        usize::try_from(i).unwrap_or(usize::MAX),
                        (row.try_get(1).map_err(bad)?, row.try_get(2).map_err(bad)?),
                    );
                }
                _ => {
                    let user = UserId::new(row.try_get::<u64, _>(4).map_err(bad)?)
                        .map_err(|e| inconsistent(0, &e.to_string()))?;
                    let a: String = row.try_get(5).map_err(bad)?;
                    let a = Asset::new(&a).map_err(|e| inconsistent(0, &e.to_string()))?;
                    let available: String = row.try_get(1).map_err(bad)?;
                    let frozen: String = row.try_get(2).map_err(bad)?;
                    held.insert(
                        (user, a),
                        Held {
                            available: Amount::from_db_str(&available)?,
                            frozen: Amount::from_db_str(&frozen)?,
                            version: Some(row.try_get(3).map_err(bad)?),
                            changed: false,
                        },
                    );
                }
            }
        }

        // judge each call in arrival order
        let mut answers = Vec::with_capacity(jobs.len());
        let mut w = BranchWrites::default();
        for (i, (op, leg)) in jobs.iter().enumerate() {
            if let Some(first) = copy_of[i] {
                let echo = match &answers[first] {
                    Ok(BranchResult::Done) => Ok(BranchResult::Repeated),
                    Ok(r) => Ok(*r),
                    Err(TransferError::Insufficient { asset, available }) => {
                        Err(TransferError::Insufficient {
                            asset: *asset,
                            available: *available,
                        })
                    }
                    Err(e) => Err(inconsistent(leg.gid, &e.to_string())),
                };
                answers.push(echo);
                continue;
            }
            let (inserted, reason) = barriers
                .get(&i)
                .ok_or_else(|| inconsistent(leg.gid, "barrier result missing"))?;
            if *inserted != 1 {
                let hanging = op.op() == "try" && reason.as_deref() == Some("rollback");
                answers.push(Ok(if hanging {
                    BranchResult::Hanging
                } else {
                    BranchResult::Repeated
                }));
                continue;
            }
            let user = op.user(leg);
            let answer = match op {
                BranchOp::TrySource => match held.get_mut(&(user, leg.asset)) {
                    Some(b) if b.available.get() >= leg.amount.get() => {
                        b.available = b.available.checked_sub(leg.amount)?;
                        b.frozen = b.frozen.checked_add(leg.amount)?;
                        b.changed = true;
                        w.tried.push(leg.row(SOURCE, "tried"));
                        w.ledger
                            .push(leg.ledger(user, "freeze", -leg.amount, b.available));
                        Ok(BranchResult::Done)
                    }
                    b => Err(TransferError::Insufficient {
                        asset: leg.asset,
                        available: b.map_or(Amount::ZERO, |b| b.available),
                    }),
                },
                BranchOp::TryTarget => {
                    w.tried.push(leg.row(TARGET, "tried"));
                    Ok(BranchResult::Done)
                }
                BranchOp::ConfirmSource => match held.get_mut(&(user, leg.asset)) {
                    Some(b) if b.frozen.get() >= leg.amount.get() => {
                        b.frozen = b.frozen.checked_sub(leg.amount)?;
                        b.changed = true;
                        w.confirmed.push((leg.gid, SOURCE));
                        w.ledger
                            .push(leg.ledger(user, "transfer", -leg.amount, b.available));
                        Ok(BranchResult::Done)
                    }
                    Some(_) => Err(inconsistent(
                        leg.gid,
                        "the source frozen balance is short of the transfer",
                    )),
                    None => Err(inconsistent(leg.gid, "the source has no balance row")),
                },
                BranchOp::ConfirmTarget => {
                    let b = held.entry((user, leg.asset)).or_insert(Held {
                        available: Amount::ZERO,
                        frozen: Amount::ZERO,
                        version: None,
                        changed: false,
                    });
                    b.available = b.available.checked_add(leg.amount)?;
                    b.changed = true;
                    w.confirmed.push((leg.gid, TARGET));
                    w.ledger
                        .push(leg.ledger(user, "transfer", leg.amount, b.available));
                    Ok(BranchResult::Done)
                }
            };
            if answer.is_err() {
                w.refused.push((leg.gid, op.branch(), op.op()));
            }
            answers.push(answer);
        }

        // every write, each checked before the commit
        let mut sql = Sql::new();
        let mut expect: Vec<(u64, &str)> = Vec::new();
        let mut changed: Vec<_> = held.iter().filter(|(_, b)| b.changed).collect();
        changed.sort_by_key(|((u, a), _)| (*u, *a));
        for ((user, asset), b) in changed {
            match b.version {
                Some(version) => {
                    sql.raw("UPDATE account_balances SET available = ")
                        .dec(b.available)
                        .raw(", frozen = ")
                        .dec(b.frozen)
                        .raw(", version = version + 1 WHERE user_id = ")
                        .int(user.get())
                        .raw(" AND currency = ")
                        .str(asset.as_str())
                        .raw(" AND account_type = 'spot' AND version = ")
                        .int(version)
                        .raw(";\n");
                    expect.push((1, "a balance changed under its lock"));
                }
                None => {
                    sql.raw("INSERT INTO account_balances (user_id, currency, available, frozen) VALUES (")
                        .int(user.get())
                        .comma()
                        .str(asset.as_str())
                        .comma()
                        .dec(b.available)
                        .comma()
                        .dec(b.frozen)
                        .raw(");\n");
                    expect.push((1, "a new balance row"));
                }
            }
        }
        if !w.tried.is_empty() {
            transfers_sql(&mut sql, &w.tried);
            expect.push((w.tried.len() as u64, "transfer rows"));
        }
        for (gid, branch) in &w.confirmed {
            transition_sql(&mut sql, *gid, branch, "tried", "confirmed");
            expect.push((1, "a branch to confirm is not tried"));
        }
        if !w.ledger.is_empty() {
            ledgers_sql(&mut sql, &w.ledger);
            expect.push((w.ledger.len() as u64, "ledger rows"));
        }
        for (gid, branch, op) in &w.refused {
            sql.raw("DELETE FROM tcc_branches WHERE gid = ")
                .int(*gid)
                .raw(" AND branch_id = ")
                .str(branch)
                .raw(" AND op = ")
                .str(op)
                .raw(";\n");
            expect.push((1, "a refused call's barrier row"));
        }
        if !sql.is_empty() {
            // only DML in this round trip: one affected count per statement, in order
            // (a SELECT here would add an entry of its own and shift them); an UPDATE
            // counts matched rows, the same as changed ones since `version` always moves
            let ran = run(&mut tx, shard, &sql).await?;
            for (k, (n, what)) in expect.iter().enumerate() {
                if ran.affected.get(k) != Some(n) {
                    return Err(inconsistent(0, &format!("branch batch: {what}")));
                }
            }
        }
        // the pool's next user gets the server's lock wait back (an error above closes
        // the connection instead)
        finish(
            &mut tx,
            shard,
            "COMMIT; SET SESSION innodb_lock_wait_timeout = DEFAULT",
        )
        .await?;
        Ok(answers)
    }

    /// Runs queued global-row changes: new globals in one multi-row insert, status
    /// changes in one transaction (locking read, then one update); a batch that fails
    /// as a whole falls back to one statement per job.
    async fn meta_batch(&self, jobs: Vec<MetaJob>) -> Vec<Result<bool, RouterError>> {
        let mut answers: Vec<Option<Result<bool, RouterError>>> =
            jobs.iter().map(|_| None).collect();
        let inserts: Vec<usize> = (0..jobs.len())
            .filter(|i| matches!(jobs[*i], MetaJob::Insert { .. }))
            .collect();
        let statuses: Vec<usize> = (0..jobs.len())
            .filter(|i| matches!(jobs[*i], MetaJob::Status { .. }))
            .collect();
        if !inserts.is_empty() {
            let mut sql = Sql::new();
            sql.raw("INSERT INTO tcc_global (gid, kind, status, payload) VALUES ")
                .tuples(&inserts, |sql, i| {
                    if let MetaJob::Insert { gid, payload } = &jobs[*i] {
                        sql.int(*gid).raw(", 'transfer', 'trying', ").str(payload);
                    }
                });
            let done = match self.meta().acquire().await {
                Ok(mut conn) => sql.run(&mut conn).await.map(|r| r.affected),
                Err(e) => Err(e),
            };
            match done {
                Ok(affected) if affected.first() == Some(&(inserts.len() as u64)) => {
                    for i in &inserts {
                        answers[*i] = Some(Ok(true));
                    }
                }
                other => tracing::warn!(?other, "global insert batch failed; one by one"),
            }
        }
        if !statuses.is_empty() {
            match retrying(|| self.status_batch(&jobs, &statuses)).await {
                Ok(done) => {
                    for (i, r) in statuses.iter().zip(done) {
                        answers[*i] = Some(Ok(r));
                    }
                }
                // no fallback here: the update and its commit travel together, so a lost
                // reply may hide a committed change, which a second attempt would report
                // as "not in `from`" — each caller is told the outcome is unknown, as a
                // single statement's lost reply would tell it
                Err(e) => {
                    tracing::warn!(error = %e, "global status batch failed");
                    for i in &statuses {
                        answers[*i] = Some(Err(RouterError::Busy(format!(
                            "global status change: outcome unknown ({e})"
                        ))));
                    }
                }
            }
        }
        let mut out = Vec::with_capacity(jobs.len());
        for (job, answer) in jobs.iter().zip(answers) {
            out.push(match answer {
                Some(a) => a,
                None => self.meta_single(job).await,
            });
        }
        out
    }

    /// Status changes of `jobs[statuses]` in one transaction, in arrival order.
    async fn status_batch(
        &self,
        jobs: &[MetaJob],
        statuses: &[usize],
    ) -> Result<Vec<bool>, RouterError> {
        use sqlx::Row;
        let mut tx = TextTx::acquire(self.meta()).await.map_err(meta_err)?;
        let gids: BTreeSet<u64> = statuses
            .iter()
            .filter_map(|i| match &jobs[*i] {
                MetaJob::Status { gid, .. } => Some(*gid),
                MetaJob::Insert { .. } => None,
            })
            .collect();
        let mut sql = Sql::new();
        sql.raw(
            "START TRANSACTION;\nSELECT gid, CAST(status AS CHAR) FROM tcc_global WHERE gid IN (",
        );
        for (k, g) in gids.iter().enumerate() {
            if k > 0 {
                sql.comma();
            }
            sql.int(*g);
        }
        sql.raw(") ORDER BY gid FOR UPDATE;\n");
        let conn = tx.conn().map_err(meta_err)?;
        let ran = sql.run(conn).await.map_err(meta_err)?;
        let mut current: HashMap<u64, String> = HashMap::new();
        for row in &ran.rows {
            current.insert(
                row.try_get(0).map_err(meta_err)?,
                row.try_get(1).map_err(meta_err)?,
            );
        }
        // each job in arrival order against what the ones before it left; the final
        // status of every global moved
        let mut changed: BTreeMap<u64, &str> = BTreeMap::new();
        let mut done = Vec::with_capacity(statuses.len());
        for i in statuses {
            if let MetaJob::Status { gid, from, to } = &jobs[*i] {
                let moved = current.get_mut(gid).filter(|s| s.as_str() == *from);
                done.push(moved.is_some());
                if let Some(status) = moved {
                    *status = (*to).to_owned();
                    changed.insert(*gid, to);
                }
            }
        }
        let mut sql = Sql::new();
        if !changed.is_empty() {
            sql.raw("UPDATE tcc_global SET status = CASE gid");
            for (g, s) in &changed {
                sql.raw(" WHEN ").int(*g).raw(" THEN ").str(s);
            }
            sql.raw(" END WHERE gid IN (");
            for (k, (g, _)) in changed.iter().enumerate() {
                if k > 0 {
                    sql.comma();
                }
                sql.int(*g);
            }
            sql.raw(");\n");
        }
        sql.raw("COMMIT");
        let conn = tx.conn().map_err(meta_err)?;
        let ran = sql.run(conn).await.map_err(meta_err)?;
        tx.finish();
        if !changed.is_empty() && ran.affected.first() != Some(&(changed.len() as u64)) {
            // the rows were locked: cannot happen; say so loudly if it does
            tracing::error!(?ran.affected, expected = changed.len(), "global status batch changed an unexpected number of rows");
        }
        Ok(done)
    }
}

/// One cross-shard transfer's parameters, as its branches see them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Leg {
    /// Global id.
    pub gid: u64,
    /// Payer.
    pub from: UserId,
    /// Payee.
    pub to: UserId,
    /// Asset.
    pub asset: Asset,
    /// Amount.
    pub amount: Amount,
}

impl Leg {
    /// This transfer's `transfers` row on `branch`'s side.
    fn row(&self, branch: &'static str, status: &'static str) -> TransferRow {
        let (user, counter) = if branch == SOURCE {
            (self.from, self.to)
        } else {
            (self.to, self.from)
        };
        TransferRow {
            gid: self.gid,
            branch,
            user,
            counter,
            asset: self.asset,
            amount: self.amount,
            status,
        }
    }

    /// A ledger row of this transfer for `user`.
    fn ledger(
        &self,
        user: UserId,
        kind: &'static str,
        amount: Amount,
        balance_after: Amount,
    ) -> LedgerRow {
        LedgerRow {
            user,
            asset: self.asset,
            kind,
            amount,
            balance_after,
            gid: self.gid,
        }
    }
}

fn text_err(shard: u16, e: sqlx::Error) -> TransferError {
    TransferError::Router(RouterError::db_on_shard(shard, e))
}

async fn run(tx: &mut TextTx, shard: u16, sql: &Sql) -> Result<Ran, TransferError> {
    let conn = tx.conn().map_err(|e| text_err(shard, e))?;
    sql.run(conn).await.map_err(|e| text_err(shard, e))
}

/// Ends the transaction (`COMMIT` / `ROLLBACK`); the connection goes back to the pool.
async fn finish(tx: &mut TextTx, shard: u16, how: &'static str) -> Result<(), TransferError> {
    let conn = tx.conn().map_err(|e| text_err(shard, e))?;
    exec(conn, how).await.map_err(|e| text_err(shard, e))?;
    tx.finish();
    Ok(())
}

/// The first row whose tag (first column) is `tag`.
fn tagged<'a>(ran: &'a Ran, tag: &str) -> Option<&'a sqlx::mysql::MySqlRow> {
    use sqlx::Row;
    ran.rows
        .iter()
        .find(|r| r.try_get::<String, _>(0).is_ok_and(|t| t == tag))
}

/// `INSERT IGNORE` of a barrier row, then `SELECT 'r', inserted, try reason`.
fn barrier_sql(sql: &mut Sql, idx: usize, gid: u64, branch: &str, op: &str, reason: &str) {
    sql.raw("INSERT IGNORE INTO tcc_branches (gid, branch_id, op, reason) VALUES (")
        .int(gid)
        .comma()
        .str(branch)
        .comma()
        .str(op)
        .comma()
        .str(reason)
        .raw(
            ");
SELECT 'r', ROW_COUNT(), (SELECT CAST(reason AS CHAR) FROM tcc_branches WHERE gid = ",
        )
        .int(gid)
        .raw(" AND branch_id = ")
        .str(branch)
        .raw(" AND op = 'try'), ")
        .int(idx as u64)
        .raw(";\n");
}

/// `None` when the barrier row was new (go on); otherwise what the call is: a repeat,
/// or (for a Try, `is_try`) a Try after its Cancel.
fn barrier_outcome(ran: &Ran, is_try: bool) -> Result<Option<BranchResult>, TransferError> {
    use sqlx::Row;
    let row = tagged(ran, "r").ok_or_else(|| inconsistent(0, "barrier result missing"))?;
    let inserted: i64 = row
        .try_get(1)
        .map_err(|e| inconsistent(0, &e.to_string()))?;
    if inserted == 1 {
        return Ok(None);
    }
    let reason: Option<String> = row
        .try_get(2)
        .map_err(|e| inconsistent(0, &e.to_string()))?;
    Ok(Some(if is_try && reason.as_deref() == Some("rollback") {
        BranchResult::Hanging
    } else {
        BranchResult::Repeated
    }))
}

/// A locking read of a spot balance: `SELECT 'b', available, frozen, version`.
fn balance_sql(sql: &mut Sql, user: UserId, asset: &Asset) {
    sql.raw("SELECT 'b', CAST(available AS CHAR), CAST(frozen AS CHAR), version, user_id FROM account_balances WHERE user_id = ")
        .int(user.get())
        .raw(" AND currency = ")
        .str(asset.as_str())
        .raw(" AND account_type = 'spot' FOR UPDATE;\n");
}

/// Adds `amount` to `user`'s available (creating the row), in SQL text.
fn credit_sql(sql: &mut Sql, user: UserId, asset: &Asset, amount: Amount) {
    sql.raw("INSERT INTO account_balances (user_id, currency, available) VALUES (")
        .int(user.get())
        .comma()
        .str(asset.as_str())
        .comma()
        .dec(amount)
        .raw(") ON DUPLICATE KEY UPDATE available = available + ")
        .dec(amount)
        .raw(", version = version + 1;\n");
}

/// (available, frozen, version) of `user`'s `'b'` row, if the balance exists.
fn balance_of(ran: &Ran, user: UserId) -> Result<Option<(Amount, Amount, u64)>, TransferError> {
    use sqlx::Row;
    let bad = |e: sqlx::Error| inconsistent(0, &e.to_string());
    for row in &ran.rows {
        let mine = row.try_get::<String, _>(0).is_ok_and(|t| t == "b")
            && row.try_get::<u64, _>(4).is_ok_and(|u| u == user.get());
        if !mine {
            continue;
        }
        let available: String = row.try_get(1).map_err(bad)?;
        let frozen: String = row.try_get(2).map_err(bad)?;
        let version: u64 = row.try_get(3).map_err(bad)?;
        return Ok(Some((
            Amount::from_db_str(&available)?,
            Amount::from_db_str(&frozen)?,
            version,
        )));
    }
    Ok(None)
}

/// The `i`-th write statement of a round trip must have changed exactly one row.
fn expect_one(ran: &Ran, i: usize, gid: u64, what: &str) -> Result<(), TransferError> {
    if ran.affected.get(i) == Some(&1) {
        Ok(())
    } else {
        Err(inconsistent(gid, what))
    }
}

fn transition_sql(sql: &mut Sql, gid: u64, branch: &str, from: &str, to: &str) {
    sql.raw("UPDATE transfers SET status = ")
        .str(to)
        .raw(" WHERE gid = ")
        .int(gid)
        .raw(" AND branch = ")
        .str(branch)
        .raw(" AND status = ")
        .str(from)
        .raw(";\n");
}

/// A `transfers` row.
#[derive(Debug, Clone, Copy)]
struct TransferRow {
    gid: u64,
    branch: &'static str,
    user: UserId,
    counter: UserId,
    asset: Asset,
    amount: Amount,
    status: &'static str,
}

/// A transfer's ledger row (`ref_type` `transfer`, `ref_id` the transfer id).
#[derive(Debug, Clone, Copy)]
struct LedgerRow {
    user: UserId,
    asset: Asset,
    kind: &'static str,
    amount: Amount,
    balance_after: Amount,
    gid: u64,
}

/// One multi-row insert of `rows` into `transfers`.
fn transfers_sql(sql: &mut Sql, rows: &[TransferRow]) {
    sql.raw("INSERT INTO transfers (gid, branch, user_id, counter_user_id, currency, amount, status) VALUES ")
        .tuples(rows, |sql, r| {
            sql.int(r.gid)
                .comma()
                .str(r.branch)
                .comma()
                .int(r.user.get())
                .comma()
                .int(r.counter.get())
                .comma()
                .str(r.asset.as_str())
                .comma()
                .dec(r.amount)
                .comma()
                .str(r.status);
        })
        .raw(";\n");
}

#[allow(clippy::too_many_arguments)]
fn transfer_row_sql(
    sql: &mut Sql,
    gid: u64,
    branch: &'static str,
    user: UserId,
    counter: UserId,
    asset: &Asset,
    amount: Amount,
    status: &'static str,
) {
    transfers_sql(
        sql,
        &[TransferRow {
            gid,
            branch,
            user,
            counter,
            asset: *asset,
            amount,
            status,
        }],
    );
}

/// One multi-row insert of `rows` into the ledger.
fn ledgers_sql(sql: &mut Sql, rows: &[LedgerRow]) {
    sql.raw("INSERT INTO account_transactions (user_id, currency, type, amount, balance_after, ref_type, ref_id) VALUES ")
        .tuples(rows, |sql, r| {
            sql.int(r.user.get())
                .comma()
                .str(r.asset.as_str())
                .comma()
                .str(r.kind)
                .comma()
                .dec(r.amount)
                .comma()
                .dec(r.balance_after)
                .raw(", 'transfer', ")
                .int(r.gid);
        })
        .raw(";\n");
}

fn ledger_sql(
    sql: &mut Sql,
    user: UserId,
    asset: &Asset,
    kind: &'static str,
    amount: Amount,
    balance_after: Amount,
    gid: u64,
) {
    ledgers_sql(
        sql,
        &[LedgerRow {
            user,
            asset: *asset,
            kind,
            amount,
            balance_after,
            gid,
        }],
    );
}

fn parse_payload(gid: u64, payload: &str) -> Result<Leg, RouterError> {
    let bad = |w: &str| RouterError::InvalidInput(format!("tcc_global {gid}: bad payload ({w})"));
    let v: serde_json::Value = serde_json::from_str(payload).map_err(|_| bad("json"))?;
    let user = |k: &str| {
        v[k].as_u64()
            .and_then(|u| UserId::new(u).ok())
            .ok_or_else(|| bad(k))
    };
    Ok(Leg {
        gid,
        from: user("from")?,
        to: user("to")?,
        asset: v["asset"]
            .as_str()
            .and_then(|a| Asset::new(a).ok())
            .ok_or_else(|| bad("asset"))?,
        amount: v["amount"]
            .as_str()
            .and_then(|a| a.parse::<Amount>().ok())
            .ok_or_else(|| bad("amount"))?,
    })
}

impl router::error::Retryable for TransferError {
    fn retryable(&self) -> bool {
        matches!(self, Self::Router(e) if e.is_retryable())
    }
}

use router::error::retry_deadlocks as retrying;

/// The group-commit task is gone (its runtime is shutting down).
fn gone(gid: u64) -> TransferError {
    TransferError::Router(RouterError::Busy(format!(
        "transfer {gid}: the group commit stopped; the call's outcome is unknown"
    )))
}

fn inconsistent(gid: u64, what: &str) -> TransferError {
    TransferError::Router(RouterError::InvalidInput(format!("transfer {gid}: {what}")))
}
