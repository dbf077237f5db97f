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
//! Confirms (the amount has left the source and not yet reached the target) — the
//! audit is exact when no global is `confirming`.

use std::sync::Arc;
use std::time::Duration;

use domain::{Amount, Asset, UserId};
use sqlx::MySqlPool;

use crate::{RouterError, ShardMap};

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
    /// Not a configured asset.
    #[error("unknown asset {0}")]
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
    /// Infrastructure.
    #[error(transparent)]
    Router(#[from] RouterError),
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

/// The transfer coordinator.
#[derive(Clone)]
pub struct Tcc {
    shards: ShardMap,
    next_id: Arc<dyn Fn() -> Result<u64, crate::SnowflakeError> + Send + Sync>,
    failpoint: Option<String>,
    /// A Try slower than this is given up (and the global cancelled).
    pub try_timeout: Duration,
}

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
    pub fn new(
        shards: ShardMap,
        next_id: Arc<dyn Fn() -> Result<u64, crate::SnowflakeError> + Send + Sync>,
    ) -> Self {
        Self {
            shards,
            next_id,
            failpoint: std::env::var("EXCHANGE_FAILPOINT").ok(),
            try_timeout: Duration::from_secs(5),
        }
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
        let precision: Option<(u32,)> =
            sqlx::query_as("SELECT `precision` FROM assets WHERE asset = ?")
                .bind(asset_code.as_str())
                .fetch_optional(self.meta())
                .await
                .map_err(meta_err)?;
        let Some((precision,)) = precision else {
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
        for user in [from, to] {
            let found: Option<(u64,)> =
                sqlx::query_as("SELECT id FROM user_directory WHERE id = ? AND status = 'active'")
                    .bind(user.get())
                    .fetch_optional(self.meta())
                    .await
                    .map_err(meta_err)?;
            if found.is_none() {
                return Err(TransferError::UnknownUser(user.get()));
            }
        }
        Ok((asset_code, value))
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
            retrying(|| self.local(gid, from, to, &asset, amount)).await?;
            return Ok(Transfer {
                gid,
                local: true,
                outcome: Outcome::Confirmed,
            });
        }
        let payload = serde_json::json!({
            "from": from.get(), "to": to.get(), "asset": asset.as_str(), "amount": amount.to_string(),
        });
        sqlx::query("INSERT INTO tcc_global (gid, kind, status, payload) VALUES (?, 'transfer', 'trying', ?)")
            .bind(gid)
            .bind(payload.to_string())
            .execute(self.meta())
            .await
            .map_err(meta_err)?;
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
                tokio::time::timeout(self.try_timeout, self.try_source(&leg)),
                tokio::time::timeout(self.try_timeout, self.try_target(&leg)),
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
        if !self.set_status(gid, "trying", "confirming").await? {
            // the recovery loop cancelled it meanwhile (we were slower than its timeout)
            return Err(TransferError::Router(RouterError::Busy(format!(
                "transfer {gid} was cancelled by recovery before it could confirm"
            ))));
        }
        let outcome = match self.confirm_both(&leg).await {
            Ok(()) => {
                self.set_status(gid, "confirming", "confirmed").await?;
                Outcome::Confirmed
            }
            Err(e) => {
                tracing::warn!(gid, error = %e, "confirm failed; left to recovery");
                self.backoff(gid, 0).await?;
                Outcome::Confirming
            }
        };
        Ok(Transfer {
            gid,
            local: false,
            outcome,
        })
    }

    /// Both Confirms at once; one after the other when a failpoint is armed, so a
    /// crash test can stop between them.
    async fn confirm_both(&self, leg: &Leg) -> Result<(), TransferError> {
        if self.failpoint.is_some() {
            self.confirm_source(leg).await?;
            self.failpoint("tcc.after_confirm_source");
            self.confirm_target(leg).await?;
            return Ok(());
        }
        let (s, t) = tokio::join!(self.confirm_source(leg), self.confirm_target(leg));
        s.and(t).map(|_| ())
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
    async fn set_status(&self, gid: u64, from: &str, to: &str) -> Result<bool, RouterError> {
        let r = sqlx::query("UPDATE tcc_global SET status = ? WHERE gid = ? AND status = ?")
            .bind(to)
            .bind(gid)
            .bind(from)
            .execute(self.meta())
            .await
            .map_err(meta_err)?;
        Ok(r.rows_affected() == 1)
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

    /// One local transaction for two users of one shard.
    async fn local(
        &self,
        gid: u64,
        from: UserId,
        to: UserId,
        asset: &Asset,
        amount: Amount,
    ) -> Result<(), TransferError> {
        let shard = self.shards.shard_of(from).get();
        let place = |e| RouterError::db_on_shard(shard, e);
        let mut tx = self.shards.pool_for(from).begin().await.map_err(place)?;
        // lock both balance rows in user order: two opposite transfers on one shard
        // must not deadlock
        let (first, second) = if from < to { (from, to) } else { (to, from) };
        for u in [first, second] {
            sqlx::query(
                "SELECT version FROM account_balances \
                 WHERE user_id = ? AND currency = ? AND account_type = 'spot' FOR UPDATE",
            )
            .bind(u.get())
            .bind(asset.as_str())
            .fetch_optional(&mut *tx)
            .await
            .map_err(place)?;
        }
        let available = debit_available(&mut tx, shard, from, asset, amount).await?;
        let credited = credit_available(&mut tx, shard, to, asset, amount).await?;
        insert_transfer(
            &mut tx,
            shard,
            gid,
            "local",
            from,
            to,
            asset,
            amount,
            "confirmed",
        )
        .await?;
        ledger(
            &mut tx, shard, from, asset, "transfer", -amount, available, gid,
        )
        .await?;
        ledger(&mut tx, shard, to, asset, "transfer", amount, credited, gid).await?;
        tx.commit().await.map_err(place)?;
        Ok(())
    }

    /// Source Try: freeze the amount.
    ///
    /// # Errors
    /// [`TransferError::Insufficient`] (nothing written); database errors.
    async fn try_source_once(&self, leg: &Leg) -> Result<BranchResult, TransferError> {
        let shard = self.shards.shard_of(leg.from).get();
        let place = |e| RouterError::db_on_shard(shard, e);
        let mut tx = self
            .shards
            .pool_for(leg.from)
            .begin()
            .await
            .map_err(place)?;
        if let Some(r) = barrier_try(&mut tx, shard, leg.gid, SOURCE).await? {
            tx.commit().await.map_err(place)?;
            return Ok(r);
        }
        let after =
            match crate::accounts::freeze_on(&mut tx, shard, leg.from, &leg.asset, leg.amount, 8)
                .await
            {
                Ok(crate::accounts::Freeze::Done(b)) => b,
                Ok(crate::accounts::Freeze::Insufficient { available }) => {
                    tx.rollback().await.map_err(place)?;
                    return Err(TransferError::Insufficient {
                        asset: leg.asset,
                        available,
                    });
                }
                Err(e) => return Err(e.into()),
            };
        insert_transfer(
            &mut tx, shard, leg.gid, SOURCE, leg.from, leg.to, &leg.asset, leg.amount, "tried",
        )
        .await?;
        ledger(
            &mut tx,
            shard,
            leg.from,
            &leg.asset,
            "freeze",
            -leg.amount,
            after.available,
            leg.gid,
        )
        .await?;
        tx.commit().await.map_err(place)?;
        Ok(BranchResult::Done)
    }

    /// Target Try: record the pending credit.
    ///
    /// # Errors
    /// Database errors.
    async fn try_target_once(&self, leg: &Leg) -> Result<BranchResult, TransferError> {
        let shard = self.shards.shard_of(leg.to).get();
        let place = |e| RouterError::db_on_shard(shard, e);
        let mut tx = self.shards.pool_for(leg.to).begin().await.map_err(place)?;
        if let Some(r) = barrier_try(&mut tx, shard, leg.gid, TARGET).await? {
            tx.commit().await.map_err(place)?;
            return Ok(r);
        }
        insert_transfer(
            &mut tx, shard, leg.gid, TARGET, leg.to, leg.from, &leg.asset, leg.amount, "tried",
        )
        .await?;
        tx.commit().await.map_err(place)?;
        Ok(BranchResult::Done)
    }

    /// Source Confirm: spend the frozen amount.
    ///
    /// # Errors
    /// Database errors; a Confirm without its Try (a coordinator bug) is refused.
    async fn confirm_source_once(&self, leg: &Leg) -> Result<BranchResult, TransferError> {
        let shard = self.shards.shard_of(leg.from).get();
        let place = |e| RouterError::db_on_shard(shard, e);
        let mut tx = self
            .shards
            .pool_for(leg.from)
            .begin()
            .await
            .map_err(place)?;
        if !barrier(&mut tx, shard, leg.gid, SOURCE, "confirm", "normal").await? {
            tx.commit().await.map_err(place)?;
            return Ok(BranchResult::Repeated);
        }
        transition(&mut tx, shard, leg.gid, SOURCE, "tried", "confirmed").await?;
        let r = sqlx::query(
            "UPDATE account_balances SET frozen = frozen - CAST(? AS DECIMAL(36,18)), version = version + 1 \
             WHERE user_id = ? AND currency = ? AND account_type = 'spot' AND frozen >= CAST(? AS DECIMAL(36,18))",
        )
        .bind(leg.amount.to_db_string())
        .bind(leg.from.get())
        .bind(leg.asset.as_str())
        .bind(leg.amount.to_db_string())
        .execute(&mut *tx)
        .await
        .map_err(place)?;
        if r.rows_affected() != 1 {
            return Err(inconsistent(
                leg.gid,
                "source frozen balance is short of the transfer",
            ));
        }
        let b = crate::accounts::balance(&mut *tx, shard, leg.from, &leg.asset)
            .await?
            .ok_or_else(|| inconsistent(leg.gid, "source balance vanished"))?;
        ledger(
            &mut tx,
            shard,
            leg.from,
            &leg.asset,
            "transfer",
            -leg.amount,
            b.available,
            leg.gid,
        )
        .await?;
        tx.commit().await.map_err(place)?;
        Ok(BranchResult::Done)
    }

    /// Target Confirm: credit the amount.
    ///
    /// # Errors
    /// Database errors; a Confirm without its Try is refused.
    async fn confirm_target_once(&self, leg: &Leg) -> Result<BranchResult, TransferError> {
        let shard = self.shards.shard_of(leg.to).get();
        let place = |e| RouterError::db_on_shard(shard, e);
        let mut tx = self.shards.pool_for(leg.to).begin().await.map_err(place)?;
        if !barrier(&mut tx, shard, leg.gid, TARGET, "confirm", "normal").await? {
            tx.commit().await.map_err(place)?;
            return Ok(BranchResult::Repeated);
        }
        transition(&mut tx, shard, leg.gid, TARGET, "tried", "confirmed").await?;
        let after = credit_available(&mut tx, shard, leg.to, &leg.asset, leg.amount).await?;
        ledger(
            &mut tx, shard, leg.to, &leg.asset, "transfer", leg.amount, after, leg.gid,
        )
        .await?;
        tx.commit().await.map_err(place)?;
        Ok(BranchResult::Done)
    }

    /// Source Cancel: unfreeze (or, before any Try, the empty-rollback marker).
    ///
    /// # Errors
    /// Database errors.
    async fn cancel_source_once(&self, leg: &Leg) -> Result<BranchResult, TransferError> {
        let shard = self.shards.shard_of(leg.from).get();
        let place = |e| RouterError::db_on_shard(shard, e);
        let mut tx = self
            .shards
            .pool_for(leg.from)
            .begin()
            .await
            .map_err(place)?;
        if let Some(r) = barrier_cancel(&mut tx, shard, leg.gid, SOURCE).await? {
            tx.commit().await.map_err(place)?;
            return Ok(r);
        }
        transition(&mut tx, shard, leg.gid, SOURCE, "tried", "cancelled").await?;
        let r = sqlx::query(
            "UPDATE account_balances SET available = available + CAST(? AS DECIMAL(36,18)), \
               frozen = frozen - CAST(? AS DECIMAL(36,18)), version = version + 1 \
             WHERE user_id = ? AND currency = ? AND account_type = 'spot' AND frozen >= CAST(? AS DECIMAL(36,18))",
        )
        .bind(leg.amount.to_db_string())
        .bind(leg.amount.to_db_string())
        .bind(leg.from.get())
        .bind(leg.asset.as_str())
        .bind(leg.amount.to_db_string())
        .execute(&mut *tx)
        .await
        .map_err(place)?;
        if r.rows_affected() != 1 {
            return Err(inconsistent(
                leg.gid,
                "source frozen balance is short of the transfer",
            ));
        }
        let b = crate::accounts::balance(&mut *tx, shard, leg.from, &leg.asset)
            .await?
            .ok_or_else(|| inconsistent(leg.gid, "source balance vanished"))?;
        ledger(
            &mut tx,
            shard,
            leg.from,
            &leg.asset,
            "unfreeze",
            leg.amount,
            b.available,
            leg.gid,
        )
        .await?;
        tx.commit().await.map_err(place)?;
        Ok(BranchResult::Done)
    }

    /// Target Cancel: drop the pending credit (or the empty-rollback marker).
    ///
    /// # Errors
    /// Database errors.
    async fn cancel_target_once(&self, leg: &Leg) -> Result<BranchResult, TransferError> {
        let shard = self.shards.shard_of(leg.to).get();
        let place = |e| RouterError::db_on_shard(shard, e);
        let mut tx = self.shards.pool_for(leg.to).begin().await.map_err(place)?;
        if let Some(r) = barrier_cancel(&mut tx, shard, leg.gid, TARGET).await? {
            tx.commit().await.map_err(place)?;
            return Ok(r);
        }
        transition(&mut tx, shard, leg.gid, TARGET, "tried", "cancelled").await?;
        tx.commit().await.map_err(place)?;
        Ok(BranchResult::Done)
    }

    /// Source Try: freeze the amount.
    ///
    /// # Errors
    /// [`TransferError::Insufficient`] (nothing written); database errors. A deadlock is retried (the branch's transaction is atomic).
    pub async fn try_source(&self, leg: &Leg) -> Result<BranchResult, TransferError> {
        retrying(|| self.try_source_once(leg)).await
    }

    /// Target Try: record the pending credit.
    ///
    /// # Errors
    /// Database errors. A deadlock is retried (the branch's transaction is atomic).
    pub async fn try_target(&self, leg: &Leg) -> Result<BranchResult, TransferError> {
        retrying(|| self.try_target_once(leg)).await
    }

    /// Source Confirm: spend the frozen amount.
    ///
    /// # Errors
    /// Database errors; a Confirm without its Try (a coordinator bug) is refused. A deadlock is retried (the branch's transaction is atomic).
    pub async fn confirm_source(&self, leg: &Leg) -> Result<BranchResult, TransferError> {
        retrying(|| self.confirm_source_once(leg)).await
    }

    /// Target Confirm: credit the amount.
    ///
    /// # Errors
    /// Database errors; a Confirm without its Try is refused. A deadlock is retried (the branch's transaction is atomic).
    pub async fn confirm_target(&self, leg: &Leg) -> Result<BranchResult, TransferError> {
        retrying(|| self.confirm_target_once(leg)).await
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
        for (gid,) in rows {
            match self.resolve(gid).await {
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
        let leg = parse_payload(gid, &payload)?;
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

impl crate::error::Retryable for TransferError {
    fn retryable(&self) -> bool {
        matches!(self, Self::Router(e) if e.is_retryable())
    }
}

use crate::error::retry_deadlocks as retrying;

fn inconsistent(gid: u64, what: &str) -> TransferError {
    TransferError::Router(RouterError::InvalidInput(format!("transfer {gid}: {what}")))
}

/// Writes a barrier row; `false` if it was there already.
async fn barrier(
    conn: &mut sqlx::MySqlConnection,
    shard: u16,
    gid: u64,
    branch: &str,
    op: &str,
    reason: &str,
) -> Result<bool, RouterError> {
    let r = sqlx::query(
        "INSERT IGNORE INTO tcc_branches (gid, branch_id, op, reason) VALUES (?, ?, ?, ?)",
    )
    .bind(gid)
    .bind(branch)
    .bind(op)
    .bind(reason)
    .execute(conn)
    .await
    .map_err(|e| RouterError::db_on_shard(shard, e))?;
    Ok(r.rows_affected() == 1)
}

/// The Try barrier: `None` when this Try is new (go on), otherwise what it was.
async fn barrier_try(
    conn: &mut sqlx::MySqlConnection,
    shard: u16,
    gid: u64,
    branch: &str,
) -> Result<Option<BranchResult>, RouterError> {
    if barrier(&mut *conn, shard, gid, branch, "try", "normal").await? {
        return Ok(None);
    }
    let (reason,): (String,) = sqlx::query_as(
        "SELECT CAST(reason AS CHAR) FROM tcc_branches WHERE gid = ? AND branch_id = ? AND op = 'try'",
    )
    .bind(gid)
    .bind(branch)
    .fetch_one(conn)
    .await
    .map_err(|e| RouterError::db_on_shard(shard, e))?;
    Ok(Some(if reason == "rollback" {
        BranchResult::Hanging
    } else {
        BranchResult::Repeated
    }))
}

/// The Cancel barrier: `None` when there is a Try to undo (go on).
async fn barrier_cancel(
    conn: &mut sqlx::MySqlConnection,
    shard: u16,
    gid: u64,
    branch: &str,
) -> Result<Option<BranchResult>, RouterError> {
    if !barrier(&mut *conn, shard, gid, branch, "cancel", "normal").await? {
        return Ok(Some(BranchResult::Repeated));
    }
    // no Try yet: take its barrier as the empty-rollback marker (a late Try is refused)
    if barrier(&mut *conn, shard, gid, branch, "try", "rollback").await? {
        return Ok(Some(BranchResult::EmptyRollback));
    }
    // the Try was refused (insufficient funds) after writing nothing: no row to undo
    let tried: Option<(String,)> =
        sqlx::query_as("SELECT CAST(status AS CHAR) FROM transfers WHERE gid = ? AND branch = ?")
            .bind(gid)
            .bind(branch)
            .fetch_optional(conn)
            .await
            .map_err(|e| RouterError::db_on_shard(shard, e))?;
    Ok(if tried.is_some() {
        None
    } else {
        Some(BranchResult::EmptyRollback)
    })
}

/// Moves a branch row between statuses; anything else is a coordinator bug.
async fn transition(
    conn: &mut sqlx::MySqlConnection,
    shard: u16,
    gid: u64,
    branch: &str,
    from: &str,
    to: &str,
) -> Result<(), TransferError> {
    let r =
        sqlx::query("UPDATE transfers SET status = ? WHERE gid = ? AND branch = ? AND status = ?")
            .bind(to)
            .bind(gid)
            .bind(branch)
            .bind(from)
            .execute(conn)
            .await
            .map_err(|e| RouterError::db_on_shard(shard, e))?;
    if r.rows_affected() != 1 {
        return Err(inconsistent(gid, &format!("{branch} branch is not {from}")));
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
async fn insert_transfer(
    conn: &mut sqlx::MySqlConnection,
    shard: u16,
    gid: u64,
    branch: &str,
    user: UserId,
    counter: UserId,
    asset: &Asset,
    amount: Amount,
    status: &str,
) -> Result<(), RouterError> {
    sqlx::query(
        "INSERT INTO transfers (gid, branch, user_id, counter_user_id, currency, amount, status) \
         VALUES (?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(gid)
    .bind(branch)
    .bind(user.get())
    .bind(counter.get())
    .bind(asset.as_str())
    .bind(amount.to_db_string())
    .bind(status)
    .execute(conn)
    .await
    .map_err(|e| RouterError::db_on_shard(shard, e))?;
    Ok(())
}

#[allow(clippy::too_many_arguments)]
async fn ledger(
    conn: &mut sqlx::MySqlConnection,
    shard: u16,
    user: UserId,
    asset: &Asset,
    kind: &str,
    amount: Amount,
    balance_after: Amount,
    gid: u64,
) -> Result<(), RouterError> {
    sqlx::query(
        "INSERT INTO account_transactions (user_id, currency, type, amount, balance_after, ref_type, ref_id) \
         VALUES (?, ?, ?, ?, ?, 'transfer', ?)",
    )
    .bind(user.get())
    .bind(asset.as_str())
    .bind(kind)
    .bind(amount.to_db_string())
    .bind(balance_after.to_db_string())
    .bind(gid)
    .execute(conn)
    .await
    .map_err(|e| RouterError::db_on_shard(shard, e))?;
    Ok(())
}

/// Takes `amount` from available with the optimistic lock (one try: the row is
/// re-read under the transaction's lock if the version moved); returns available after.
async fn debit_available(
    conn: &mut sqlx::MySqlConnection,
    shard: u16,
    user: UserId,
    asset: &Asset,
    amount: Amount,
) -> Result<Amount, TransferError> {
    for _ in 0..8 {
        let cur = crate::accounts::balance(&mut *conn, shard, user, asset).await?;
        let available = cur.as_ref().map_or(Amount::ZERO, |b| b.available);
        let Some(cur) = cur.filter(|b| b.available.get() >= amount.get()) else {
            return Err(TransferError::Insufficient {
                asset: *asset,
                available,
            });
        };
        let r = sqlx::query(
            "UPDATE account_balances SET available = available - CAST(? AS DECIMAL(36,18)), version = version + 1 \
             WHERE user_id = ? AND currency = ? AND account_type = 'spot' AND version = ? \
               AND available >= CAST(? AS DECIMAL(36,18))",
        )
        .bind(amount.to_db_string())
        .bind(user.get())
        .bind(asset.as_str())
        .bind(cur.version)
        .bind(amount.to_db_string())
        .execute(&mut *conn)
        .await
        .map_err(|e| RouterError::db_on_shard(shard, e))?;
        if r.rows_affected() == 1 {
            return Ok(cur.available.checked_sub(amount)?);
        }
    }
    Err(TransferError::Router(RouterError::Busy(format!(
        "balance of user {user} {asset} kept changing"
    ))))
}

/// Adds `amount` to available (creating the row); returns available after.
async fn credit_available(
    conn: &mut sqlx::MySqlConnection,
    shard: u16,
    user: UserId,
    asset: &Asset,
    amount: Amount,
) -> Result<Amount, TransferError> {
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
    let b = crate::accounts::balance(&mut *conn, shard, user, asset)
        .await?
        .ok_or_else(|| RouterError::InvalidInput("balance vanished".into()))?;
    Ok(b.available)
}
