//! Deposits and withdrawals (DESIGN.md "Money invariant").
//!
//! **Deposits** are reported when seen on a chain ([`report_deposit`]: pending, unique
//! by `(txid, asset)` across all shards through meta `deposit_txids`) and credited once
//! their confirmations reach the asset's `required_confirmations`
//! ([`confirm_deposit`]): the status change, the balance and the ledger row in one
//! transaction, conditional on the deposit not being completed yet — reporting or
//! confirming twice credits once. No chain is reachable here: `shardctl chain` is the
//! simulator that reports and confirms; the crediting path is this one.
//!
//! **Withdrawals**: [`request_withdrawal`] (2FA code when the user enabled it, an
//! address from the user's allowlist, the asset's minimum and rolling-24 h limit)
//! freezes the amount on the user's shard and queues the withdrawal for review
//! (`reviewing`); [`review`] approves or rejects (unfreezes) with a comment;
//! [`process`] marks an approved one as being sent; [`complete`] removes the frozen
//! amount (the fee goes to the shard's fee account) or [`fail`] unfreezes it. Every
//! change is conditional on the previous status: a second approve does nothing.

use domain::{Amount, Asset, UserId};
use sqlx::MySqlPool;

use crate::balances::{credit_on as credit, ledger_on as ledger};
use router::{RouterError, ShardMap};

/// A funding operation refused (nothing changed) or failed.
#[derive(Debug, thiserror::Error)]
pub enum FundingError {
    /// No such (active) user.
    #[error("unknown user {0}")]
    UnknownUser(u64),
    /// Not a configured asset, or disabled.
    #[error("unknown or disabled asset {0}")]
    UnknownAsset(String),
    /// Zero, negative, malformed, or finer than the asset's precision.
    #[error("invalid amount {amount}: {reason}")]
    InvalidAmount {
        /// What was given.
        amount: String,
        /// Why.
        reason: String,
    },
    /// Below the asset's minimum withdrawal (or not above its fee).
    #[error("amount below the minimum withdrawal of {min}")]
    BelowMinimum {
        /// The minimum.
        min: Amount,
    },
    /// The address is not in the user's allowlist for that asset and chain.
    #[error("address {0} is not in your withdrawal allowlist for this asset and chain")]
    AddressNotAllowed(String),
    /// The rolling 24 h limit would be exceeded.
    #[error("daily withdrawal limit {limit} exceeded ({used} used in the last 24 h)")]
    DailyLimit {
        /// The limit.
        limit: Amount,
        /// Already requested in the window.
        used: Amount,
    },
    /// Not enough available.
    #[error("insufficient balance: {available} {asset} available")]
    Insufficient {
        /// Asset.
        asset: Asset,
        /// Available.
        available: Amount,
    },
    /// 2FA is enabled and no code was given.
    #[error("two-factor code required")]
    TwoFactorRequired,
    /// The 2FA code is wrong (or already used).
    #[error("two-factor code invalid")]
    TwoFactorInvalid,
    /// Too many wrong 2FA codes: 2FA-protected actions are refused for a while.
    #[error("too many wrong two-factor codes: try again in 15 minutes")]
    TwoFactorLocked,
    /// The `(txid, asset)` was reported for another user.
    #[error("deposit {txid} {asset} was already reported for another user")]
    TxidTaken {
        /// Txid.
        txid: String,
        /// Asset.
        asset: String,
    },
    /// No such deposit or withdrawal.
    #[error("not found: {0}")]
    NotFound(String),
    /// Infrastructure.
    #[error(transparent)]
    Router(#[from] RouterError),
}

impl domain::Kinded for FundingError {
    fn kind(&self) -> domain::ErrorKind {
        use domain::ErrorKind as K;
        match self {
            Self::Router(e) => e.kind(),
            Self::NotFound(_) | Self::UnknownUser(_) => K::NotFound,
            Self::TxidTaken { .. } => K::Conflict,
            _ => K::Rejected,
        }
    }
}

impl router::error::Retryable for FundingError {
    fn retryable(&self) -> bool {
        matches!(self, Self::Router(e) if e.is_retryable())
    }
}

impl From<domain::MoneyError> for FundingError {
    fn from(e: domain::MoneyError) -> Self {
        Self::Router(e.into())
    }
}

/// Wrong 2FA codes in a row before 2FA-protected actions are locked for 15 minutes.
pub const TWO_FACTOR_ATTEMPTS: u32 = 5;

/// An asset's funding parameters (meta `assets`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AssetParams {
    /// Asset.
    pub asset: Asset,
    /// Fraction digits accepted.
    pub precision: u32,
    /// Fee of a withdrawal (included in its amount).
    pub withdraw_fee: Amount,
    /// Smallest withdrawal.
    pub min_withdraw: Amount,
    /// Confirmations before a deposit is credited.
    pub required_confirmations: u32,
    /// Per user, rolling 24 h; zero = none.
    pub daily_withdraw_limit: Amount,
}

fn meta_err(e: sqlx::Error) -> RouterError {
    RouterError::db("meta", e)
}

/// Loads an enabled asset's parameters.
///
/// # Errors
/// [`FundingError::UnknownAsset`]; database errors.
pub async fn asset_params(meta: &MySqlPool, asset: &str) -> Result<AssetParams, FundingError> {
    let unknown = || FundingError::UnknownAsset(asset.to_owned());
    let code = Asset::new(asset).map_err(|_| unknown())?;
    let row: Option<(u32, String, String, u32, String)> = sqlx::query_as(
        "SELECT `precision`, CAST(withdraw_fee AS CHAR), CAST(min_withdraw AS CHAR), \
                required_confirmations, CAST(daily_withdraw_limit AS CHAR) \
         FROM assets WHERE asset = ? AND status = 'enabled'",
    )
    .bind(code.as_str())
    .fetch_optional(meta)
    .await
    .map_err(meta_err)?;
    let (precision, fee, min, confirmations, limit) = row.ok_or_else(unknown)?;
    Ok(AssetParams {
        asset: code,
        precision,
        withdraw_fee: Amount::from_db_str(&fee)?,
        min_withdraw: Amount::from_db_str(&min)?,
        required_confirmations: confirmations,
        daily_withdraw_limit: Amount::from_db_str(&limit)?,
    })
}

/// Parses a positive amount no finer than the asset's precision.
///
/// # Errors
/// [`FundingError::InvalidAmount`].
pub fn check_amount(params: &AssetParams, raw: &str) -> Result<Amount, FundingError> {
    let invalid = |reason: String| FundingError::InvalidAmount {
        amount: raw.to_owned(),
        reason,
    };
    let v = raw.parse::<Amount>().map_err(|e| invalid(e.to_string()))?;
    if !v.is_positive() {
        return Err(invalid("must be positive".into()));
    }
    if v.get().normalize().scale() > params.precision {
        return Err(invalid(format!(
            "{} has {} decimal places",
            params.asset, params.precision
        )));
    }
    Ok(v)
}

async fn active_user(map: &ShardMap, user: UserId) -> Result<(), FundingError> {
    let found: Option<(u64,)> =
        sqlx::query_as("SELECT id FROM user_directory WHERE id = ? AND status = 'active'")
            .bind(user.get())
            .fetch_optional(map.meta())
            .await
            .map_err(meta_err)?;
    found
        .map(|_| ())
        .ok_or(FundingError::UnknownUser(user.get()))
}

// ------------------------------------------------------------------- deposits ---

/// A deposit's state after a report or a confirmation.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Deposit {
    /// Row id on the user's shard.
    pub id: u64,
    /// Owner.
    pub user_id: u64,
    /// Asset.
    pub asset: String,
    /// Amount.
    pub amount: Amount,
    /// Txid.
    pub txid: String,
    /// `pending`, `confirming`, `completed`.
    pub status: String,
    /// Confirmations seen.
    pub confirmations: u32,
    /// Confirmations needed.
    pub required: u32,
    /// This call credited the balance.
    pub credited: bool,
}

/// Records a deposit seen on a chain (idempotent: the same `(txid, asset)` again
/// returns the existing deposit).
///
/// # Errors
/// [`FundingError`]: unknown user/asset, bad amount, the txid taken by another user.
#[allow(clippy::too_many_arguments)]
pub async fn report_deposit(
    map: &ShardMap,
    user: UserId,
    asset: &str,
    chain: &str,
    txid: &str,
    from_address: &str,
    to_address: &str,
    amount: &str,
) -> Result<Deposit, FundingError> {
    let params = asset_params(map.meta(), asset).await?;
    let amount = check_amount(&params, amount)?;
    active_user(map, user).await?;
    if txid.is_empty() || txid.len() > 255 {
        return Err(FundingError::NotFound(
            "txid must be 1..=255 characters".into(),
        ));
    }
    // every refusal before the txid is claimed: a refused report claims nothing
    if chain.is_empty() || chain.len() > 20 || from_address.len() > 255 || to_address.len() > 255 {
        return Err(FundingError::InvalidAmount {
            amount: amount.to_string(),
            reason: "chain must be 1..=20 and addresses at most 255 characters".into(),
        });
    }
    sqlx::query("INSERT IGNORE INTO deposit_txids (txid, currency, user_id) VALUES (?, ?, ?)")
        .bind(txid)
        .bind(params.asset.as_str())
        .bind(user.get())
        .execute(map.meta())
        .await
        .map_err(meta_err)?;
    let (owner,): (u64,) =
        sqlx::query_as("SELECT user_id FROM deposit_txids WHERE txid = ? AND currency = ?")
            .bind(txid)
            .bind(params.asset.as_str())
            .fetch_one(map.meta())
            .await
            .map_err(meta_err)?;
    if owner != user.get() {
        return Err(FundingError::TxidTaken {
            txid: txid.to_owned(),
            asset: params.asset.to_string(),
        });
    }
    let shard = map.shard_of(user).get();
    // a plain INSERT (IGNORE would also turn truncation into a warning); a repeated
    // report finds the row already there
    let inserted = sqlx::query(
        "INSERT INTO deposits (user_id, currency, amount, chain, txid, from_address, to_address, \
           confirmations, required_confirmations, status) VALUES (?, ?, ?, ?, ?, ?, ?, 0, ?, 'pending')",
    )
    .bind(user.get())
    .bind(params.asset.as_str())
    .bind(amount.to_db_string())
    .bind(chain)
    .bind(txid)
    .bind(from_address)
    .bind(to_address)
    .bind(params.required_confirmations)
    .execute(map.pool_for(user))
    .await;
    match inserted {
        Ok(_) => {}
        Err(sqlx::Error::Database(db)) if db.is_unique_violation() => {}
        Err(e) => return Err(RouterError::db_on_shard(shard, e).into()),
    }
    let d = load_deposit(map.pool_for(user), shard, txid, &params.asset, false).await?;
    if d.user_id != user.get() {
        return Err(FundingError::TxidTaken {
            txid: txid.to_owned(),
            asset: params.asset.to_string(),
        });
    }
    Ok(d)
}

async fn load_deposit<'e, E>(
    exec: E,
    shard: u16,
    txid: &str,
    asset: &Asset,
    credited: bool,
) -> Result<Deposit, FundingError>
where
    E: sqlx::Executor<'e, Database = sqlx::MySql>,
{
    let row: Option<(u64, u64, String, String, i32, i32)> = sqlx::query_as(
        "SELECT id, user_id, CAST(amount AS CHAR), CAST(status AS CHAR), confirmations, required_confirmations \
         FROM deposits WHERE txid = ? AND currency = ?",
    )
    .bind(txid)
    .bind(asset.as_str())
    .fetch_optional(exec)
    .await
    .map_err(|e| RouterError::db_on_shard(shard, e))?;
    let (id, user_id, amount, status, confirmations, required) =
        row.ok_or_else(|| FundingError::NotFound(format!("deposit {txid} {asset}")))?;
    Ok(Deposit {
        id,
        user_id,
        asset: asset.to_string(),
        amount: Amount::from_db_str(&amount)?,
        txid: txid.to_owned(),
        status,
        confirmations: u32::try_from(confirmations).unwrap_or(0),
        required: u32::try_from(required).unwrap_or(0),
        credited,
    })
}

/// Records `confirmations` for a reported deposit (never lowering what was seen);
/// once they reach the requirement, credits it — exactly once.
///
/// # Errors
/// [`FundingError::NotFound`] for an unreported deposit; database errors.
pub async fn confirm_deposit(
    map: &ShardMap,
    txid: &str,
    asset: &str,
    confirmations: u32,
) -> Result<Deposit, FundingError> {
    router::error::retry_deadlocks(|| confirm_once(map, txid, asset, confirmations)).await
}

async fn confirm_once(
    map: &ShardMap,
    txid: &str,
    asset: &str,
    confirmations: u32,
) -> Result<Deposit, FundingError> {
    let code = Asset::new(asset).map_err(|_| FundingError::UnknownAsset(asset.to_owned()))?;
    let owner: Option<(u64,)> =
        sqlx::query_as("SELECT user_id FROM deposit_txids WHERE txid = ? AND currency = ?")
            .bind(txid)
            .bind(code.as_str())
            .fetch_optional(map.meta())
            .await
            .map_err(meta_err)?;
    let (owner,) =
        owner.ok_or_else(|| FundingError::NotFound(format!("deposit {txid} {asset}")))?;
    let user = UserId::new(owner).map_err(|e| RouterError::InvalidInput(e.to_string()))?;
    let shard = map.shard_of(user).get();
    let place = |e| RouterError::db_on_shard(shard, e);
    let mut tx = map.pool_for(user).begin().await.map_err(place)?;
    let row: Option<(u64, String, String, i32, u64)> = sqlx::query_as(
        "SELECT id, CAST(amount AS CHAR), CAST(status AS CHAR), required_confirmations, user_id FROM deposits \
         WHERE txid = ? AND currency = ? FOR UPDATE",
    )
    .bind(txid)
    .bind(code.as_str())
    .fetch_optional(&mut *tx)
    .await
    .map_err(place)?;
    let (id, amount, status, required, row_user) =
        row.ok_or_else(|| FundingError::NotFound(format!("deposit {txid} {asset}")))?;
    if row_user != user.get() {
        return Err(FundingError::Router(RouterError::InvalidInput(format!(
            "deposit {txid} {asset}: the shard row belongs to user {row_user}, meta says {user}"
        ))));
    }
    let mut credited = false;
    if status == "completed" || status == "failed" {
        // later confirmations are recorded; nothing is credited again
        sqlx::query("UPDATE deposits SET confirmations = GREATEST(confirmations, ?) WHERE id = ?")
            .bind(confirmations)
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(place)?;
    } else {
        let done = i64::from(confirmations) >= i64::from(required);
        sqlx::query(
            "UPDATE deposits SET confirmations = GREATEST(confirmations, ?), status = ?, \
               completed_at = IF(? , CURRENT_TIMESTAMP(3), completed_at) WHERE id = ?",
        )
        .bind(confirmations)
        .bind(if done { "completed" } else { "confirming" })
        .bind(done)
        .bind(id)
        .execute(&mut *tx)
        .await
        .map_err(place)?;
        if done {
            let amount = Amount::from_db_str(&amount)?;
            let after = credit(&mut tx, shard, user, &code, amount).await?;
            ledger(
                &mut tx, shard, user, &code, "deposit", amount, after, "deposit", id,
            )
            .await?;
            credited = true;
        }
    }
    let d = load_deposit(&mut *tx, shard, txid, &code, credited).await?;
    tx.commit().await.map_err(place)?;
    Ok(d)
}

// ---------------------------------------------------------------- withdrawals ---

/// A withdrawal row.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Withdrawal {
    /// Snowflake id.
    pub withdrawal_id: u64,
    /// Owner.
    pub user_id: u64,
    /// Asset.
    pub asset: String,
    /// Amount frozen (fee included).
    pub amount: Amount,
    /// Fee.
    pub fee: Amount,
    /// Sent on chain.
    pub actual_amount: Amount,
    /// Chain.
    pub chain: String,
    /// Destination.
    pub address: String,
    /// Status.
    pub status: String,
    /// Reviewer comment.
    pub comment: Option<String>,
    /// On-chain txid once sent.
    pub txid: Option<String>,
}

/// Adds an address to the user's allowlist (idempotent).
///
/// # Errors
/// Unknown user/asset; database errors.
pub async fn add_address(
    map: &ShardMap,
    user: UserId,
    asset: &str,
    chain: &str,
    address: &str,
    label: Option<&str>,
) -> Result<(), FundingError> {
    let params = asset_params(map.meta(), asset).await?;
    active_user(map, user).await?;
    if !valid_address(address) || chain.is_empty() || chain.len() > 20 {
        return Err(FundingError::AddressNotAllowed(address.to_owned()));
    }
    let shard = map.shard_of(user).get();
    sqlx::query(
        "INSERT IGNORE INTO withdraw_addresses (user_id, currency, chain, address, label) VALUES (?, ?, ?, ?, ?)",
    )
    .bind(user.get())
    .bind(params.asset.as_str())
    .bind(chain)
    .bind(address)
    .bind(label)
    .execute(map.pool_for(user))
    .await
    .map_err(|e| RouterError::db_on_shard(shard, e))?;
    Ok(())
}

/// An address as chains write them: 1–128 of ASCII letters, digits and `._:-`. No
/// spaces anywhere — the column's collation pads with spaces (`utf8mb4_bin` is PAD
/// SPACE on MariaDB), so `"Taddr "` would otherwise match the allowlisted `"Taddr"`.
pub fn valid_address(address: &str) -> bool {
    (1..=128).contains(&address.len())
        && address
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
}

/// Requests a withdrawal: checks, then freezes the amount and queues it for review, in
/// one transaction on the user's shard (the user's balance row is locked first, so two
/// requests cannot both pass the daily limit).
///
/// # Errors
/// [`FundingError`] refusals (nothing changed); database errors.
#[allow(clippy::too_many_arguments)]
pub async fn request_withdrawal(
    map: &ShardMap,
    withdrawal_id: u64,
    user: UserId,
    asset: &str,
    chain: &str,
    address: &str,
    amount: &str,
    two_factor_code: Option<&str>,
    now_unix: u64,
) -> Result<Withdrawal, FundingError> {
    router::error::retry_deadlocks(|| {
        request_once(
            map,
            withdrawal_id,
            user,
            asset,
            chain,
            address,
            amount,
            two_factor_code,
            now_unix,
        )
    })
    .await
}

#[allow(clippy::too_many_arguments)]
async fn request_once(
    map: &ShardMap,
    withdrawal_id: u64,
    user: UserId,
    asset: &str,
    chain: &str,
    address: &str,
    amount: &str,
    two_factor_code: Option<&str>,
    now_unix: u64,
) -> Result<Withdrawal, FundingError> {
    let params = asset_params(map.meta(), asset).await?;
    let amount = check_amount(&params, amount)?;
    if amount.get() < params.min_withdraw.get() || amount.get() <= params.withdraw_fee.get() {
        return Err(FundingError::BelowMinimum {
            min: if params.min_withdraw.get() > params.withdraw_fee.get() {
                params.min_withdraw
            } else {
                params.withdraw_fee
            },
        });
    }
    if !valid_address(address) {
        return Err(FundingError::AddressNotAllowed(address.to_owned()));
    }
    active_user(map, user).await?;
    let shard = map.shard_of(user).get();
    let place = |e| RouterError::db_on_shard(shard, e);
    let pool = map.pool_for(user);
    let mut tx = pool.begin().await.map_err(place)?;
    // 2FA, decided under the user's row lock: the lock flag, the code and the failure
    // count are read and written by one request at a time, so N parallel guesses are
    // judged one after another and the lock stops them after TWO_FACTOR_ATTEMPTS
    let row: Option<(bool, Option<String>, bool, u64)> = sqlx::query_as(
        "SELECT is_2fa_enabled, totp_secret, \
                COALESCE(totp_locked_until > CURRENT_TIMESTAMP(3), FALSE), totp_last_step \
         FROM users WHERE id = ? FOR UPDATE",
    )
    .bind(user.get())
    .fetch_optional(&mut *tx)
    .await
    .map_err(place)?;
    let (two_fa, secret, locked, last_step) = row.ok_or(FundingError::UnknownUser(user.get()))?;
    if two_fa {
        if locked {
            return Err(FundingError::TwoFactorLocked);
        }
        let code = two_factor_code.ok_or(FundingError::TwoFactorRequired)?;
        let secret = secret.ok_or(FundingError::TwoFactorInvalid)?;
        match totp_match(&secret, code, now_unix) {
            // a code is good once: its step must be later than the last one accepted
            Some(step) if step > last_step => {
                sqlx::query("UPDATE users SET totp_last_step = ?, totp_failures = 0 WHERE id = ?")
                    .bind(step)
                    .bind(user.get())
                    .execute(&mut *tx)
                    .await
                    .map_err(place)?;
            }
            Some(_) => return Err(FundingError::TwoFactorInvalid),
            None => {
                // the failure is counted and committed on its own: the refusal changes
                // nothing else. (SET assigns left to right: both read the count before
                // this failure.)
                sqlx::query(
                    "UPDATE users SET \
                       totp_locked_until = IF(totp_failures + 1 >= ?, CURRENT_TIMESTAMP(3) + INTERVAL 15 MINUTE, totp_locked_until), \
                       totp_failures = IF(totp_failures + 1 >= ?, 0, totp_failures + 1) \
                     WHERE id = ?",
                )
                .bind(TWO_FACTOR_ATTEMPTS)
                .bind(TWO_FACTOR_ATTEMPTS)
                .bind(user.get())
                .execute(&mut *tx)
                .await
                .map_err(place)?;
                tx.commit().await.map_err(place)?;
                return Err(FundingError::TwoFactorInvalid);
            }
        }
    }
    let allowed: Option<(u64,)> = sqlx::query_as(
        "SELECT user_id FROM withdraw_addresses WHERE user_id = ? AND currency = ? AND chain = ? AND address = ?",
    )
    .bind(user.get())
    .bind(params.asset.as_str())
    .bind(chain)
    .bind(address)
    .fetch_optional(&mut *tx)
    .await
    .map_err(place)?;
    if allowed.is_none() {
        return Err(FundingError::AddressNotAllowed(address.to_owned()));
    }
    // serialise this user's requests on the balance row, then the rolling limit: the
    // SUM below runs after the lock, and under READ COMMITTED (which every pooled
    // session sets: router's pool) it sees every request committed before it. Under
    // REPEATABLE READ the snapshot would predate the lock.
    let locked: Option<(u64,)> = sqlx::query_as(
        "SELECT version FROM account_balances WHERE user_id = ? AND currency = ? AND account_type = 'spot' FOR UPDATE",
    )
    .bind(user.get())
    .bind(params.asset.as_str())
    .fetch_optional(&mut *tx)
    .await
    .map_err(place)?;
    if locked.is_none() {
        return Err(FundingError::Insufficient {
            asset: params.asset,
            available: Amount::ZERO,
        });
    }
    if params.daily_withdraw_limit.is_positive() {
        let (used,): (Option<String>,) = sqlx::query_as(
            "SELECT CAST(SUM(amount) AS CHAR) FROM withdrawals WHERE user_id = ? AND currency = ? \
               AND status NOT IN ('rejected', 'failed') AND created_at >= CURRENT_TIMESTAMP(3) - INTERVAL 1 DAY",
        )
        .bind(user.get())
        .bind(params.asset.as_str())
        .fetch_one(&mut *tx)
        .await
        .map_err(place)?;
        let used = used
            .map(|u| Amount::from_db_str(&u))
            .transpose()?
            .unwrap_or(Amount::ZERO);
        if used.checked_add(amount)?.get() > params.daily_withdraw_limit.get() {
            return Err(FundingError::DailyLimit {
                limit: params.daily_withdraw_limit,
                used,
            });
        }
    }
    let after =
        match crate::balances::freeze_on(&mut tx, shard, user, &params.asset, amount, 4).await? {
            crate::balances::Freeze::Done(b) => b,
            crate::balances::Freeze::Insufficient { available } => {
                return Err(FundingError::Insufficient {
                    asset: params.asset,
                    available,
                })
            }
        };
    let actual = amount.checked_sub(params.withdraw_fee)?;
    sqlx::query(
        "INSERT INTO withdrawals (withdrawal_id, user_id, currency, amount, fee, actual_amount, chain, to_address, status) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'reviewing')",
    )
    .bind(withdrawal_id)
    .bind(user.get())
    .bind(params.asset.as_str())
    .bind(amount.to_db_string())
    .bind(params.withdraw_fee.to_db_string())
    .bind(actual.to_db_string())
    .bind(chain)
    .bind(address)
    .execute(&mut *tx)
    .await
    .map_err(place)?;
    ledger(
        &mut tx,
        shard,
        user,
        &params.asset,
        "freeze",
        -amount,
        after.available,
        "withdraw",
        withdrawal_id,
    )
    .await?;
    tx.commit().await.map_err(place)?;
    find_withdrawal(map, withdrawal_id)
        .await?
        .ok_or_else(|| FundingError::NotFound(format!("withdrawal {withdrawal_id}")))
}

/// The withdrawal with this id, wherever it lives.
///
/// # Errors
/// Database errors.
pub async fn find_withdrawal(map: &ShardMap, id: u64) -> Result<Option<Withdrawal>, FundingError> {
    for (shard, pool) in map.iter() {
        let rows = withdrawals_where(pool, shard.get(), "withdrawal_id = ?", Some(id)).await?;
        if let Some(w) = rows.into_iter().next() {
            return Ok(Some(w));
        }
    }
    Ok(None)
}

/// Withdrawals in `status` (all of them with `None`), every shard, oldest first.
///
/// # Errors
/// Database errors.
pub async fn list_withdrawals(
    map: &ShardMap,
    status: Option<&str>,
) -> Result<Vec<Withdrawal>, FundingError> {
    let mut out = Vec::new();
    for (shard, pool) in map.iter() {
        let rows = match status {
            Some(s) => {
                let rows: Vec<Withdrawal> = withdrawals_where_status(pool, shard.get(), s).await?;
                rows
            }
            None => withdrawals_where(pool, shard.get(), "1 = 1", None).await?,
        };
        out.extend(rows);
    }
    out.sort_by_key(|w| w.withdrawal_id);
    Ok(out)
}

const WITHDRAWAL_COLUMNS: &str =
    "withdrawal_id, user_id, currency, CAST(amount AS CHAR), CAST(fee AS CHAR), \
     CAST(actual_amount AS CHAR), chain, to_address, CAST(status AS CHAR), review_comment, txid";

type WithdrawalRow = (
    u64,
    u64,
    String,
    String,
    String,
    String,
    String,
    String,
    String,
    Option<String>,
    Option<String>,
);

fn to_withdrawal(r: WithdrawalRow) -> Result<Withdrawal, FundingError> {
    let (withdrawal_id, user_id, asset, amount, fee, actual, chain, address, status, comment, txid) =
        r;
    Ok(Withdrawal {
        withdrawal_id,
        user_id,
        asset,
        amount: Amount::from_db_str(&amount)?,
        fee: Amount::from_db_str(&fee)?,
        actual_amount: Amount::from_db_str(&actual)?,
        chain,
        address,
        status,
        comment,
        txid,
    })
}

async fn withdrawals_where(
    pool: &MySqlPool,
    shard: u16,
    cond: &'static str,
    id: Option<u64>,
) -> Result<Vec<Withdrawal>, FundingError> {
    let sql =
        format!("SELECT {WITHDRAWAL_COLUMNS} FROM withdrawals WHERE {cond} ORDER BY withdrawal_id");
    let mut q = sqlx::query_as::<_, WithdrawalRow>(&sql);
    if let Some(id) = id {
        q = q.bind(id);
    }
    let rows = q
        .fetch_all(pool)
        .await
        .map_err(|e| RouterError::db_on_shard(shard, e))?;
    rows.into_iter().map(to_withdrawal).collect()
}

async fn withdrawals_where_status(
    pool: &MySqlPool,
    shard: u16,
    status: &str,
) -> Result<Vec<Withdrawal>, FundingError> {
    let sql = format!(
        "SELECT {WITHDRAWAL_COLUMNS} FROM withdrawals WHERE status = ? ORDER BY withdrawal_id"
    );
    let rows = sqlx::query_as::<_, WithdrawalRow>(&sql)
        .bind(status)
        .fetch_all(pool)
        .await
        .map_err(|e| RouterError::db_on_shard(shard, e))?;
    rows.into_iter().map(to_withdrawal).collect()
}

/// What a state change did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    /// The withdrawal after the call.
    pub withdrawal: Withdrawal,
    /// `false`: it was not in the required status; nothing changed.
    pub changed: bool,
}

/// The money side of a transition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Money {
    None,
    /// available += amount, frozen -= amount.
    Unfreeze,
    /// frozen -= amount; the fee to the fee account.
    Spend,
}

#[allow(clippy::too_many_arguments)]
async fn transition(
    map: &ShardMap,
    id: u64,
    from: &str,
    to: &str,
    money: Money,
    reviewer: Option<u64>,
    comment: Option<&str>,
    txid: Option<&str>,
) -> Result<Transition, FundingError> {
    router::error::retry_deadlocks(|| {
        transition_once(map, id, from, to, money, reviewer, comment, txid)
    })
    .await
}

#[allow(clippy::too_many_arguments)]
async fn transition_once(
    map: &ShardMap,
    id: u64,
    from: &str,
    to: &str,
    money: Money,
    reviewer: Option<u64>,
    comment: Option<&str>,
    txid: Option<&str>,
) -> Result<Transition, FundingError> {
    let w = find_withdrawal(map, id)
        .await?
        .ok_or_else(|| FundingError::NotFound(format!("withdrawal {id}")))?;
    let user = UserId::new(w.user_id).map_err(|e| RouterError::InvalidInput(e.to_string()))?;
    let shard = map.shard_of(user).get();
    let place = |e| RouterError::db_on_shard(shard, e);
    let mut tx = map.pool_for(user).begin().await.map_err(place)?;
    let r = sqlx::query(
        "UPDATE withdrawals SET status = ?, reviewer_id = COALESCE(?, reviewer_id), \
           review_comment = COALESCE(?, review_comment), txid = COALESCE(?, txid), \
           completed_at = IF(? = 'completed', CURRENT_TIMESTAMP(3), completed_at) \
         WHERE withdrawal_id = ? AND status = ?",
    )
    .bind(to)
    .bind(reviewer)
    .bind(comment)
    .bind(txid)
    .bind(to)
    .bind(id)
    .bind(from)
    .execute(&mut *tx)
    .await
    .map_err(place)?;
    let changed = r.rows_affected() == 1;
    if changed && money != Money::None {
        let asset = Asset::new(&w.asset).map_err(|e| RouterError::InvalidInput(e.to_string()))?;
        let (avail_delta, kind) = match money {
            Money::Unfreeze => (w.amount, "unfreeze"),
            _ => (Amount::ZERO, "withdraw"),
        };
        let done = sqlx::query(
            "UPDATE account_balances SET available = available + CAST(? AS DECIMAL(36,18)), \
               frozen = frozen - CAST(? AS DECIMAL(36,18)), version = version + 1 \
             WHERE user_id = ? AND currency = ? AND account_type = 'spot' AND frozen >= CAST(? AS DECIMAL(36,18))",
        )
        .bind(avail_delta.to_db_string())
        .bind(w.amount.to_db_string())
        .bind(user.get())
        .bind(asset.as_str())
        .bind(w.amount.to_db_string())
        .execute(&mut *tx)
        .await
        .map_err(place)?;
        if done.rows_affected() != 1 {
            return Err(FundingError::Router(RouterError::InvalidInput(format!(
                "withdrawal {id}: frozen balance is short of its amount"
            ))));
        }
        let b = crate::balances::balance(&mut *tx, shard, user, &asset)
            .await?
            .ok_or_else(|| RouterError::InvalidInput("balance vanished".into()))?;
        let amount = if money == Money::Unfreeze {
            w.amount
        } else {
            -w.amount
        };
        ledger(
            &mut tx,
            shard,
            user,
            &asset,
            kind,
            amount,
            b.available,
            "withdraw",
            id,
        )
        .await?;
        if money == Money::Spend && w.fee.is_positive() {
            let fee_account = crate::balances::FEE_ACCOUNT;
            sqlx::query(
                "INSERT INTO account_balances (user_id, currency, available) VALUES (?, ?, ?) \
                 ON DUPLICATE KEY UPDATE available = available + CAST(? AS DECIMAL(36,18)), version = version + 1",
            )
            .bind(fee_account)
            .bind(asset.as_str())
            .bind(w.fee.to_db_string())
            .bind(w.fee.to_db_string())
            .execute(&mut *tx)
            .await
            .map_err(place)?;
            let (fee_after,): (String,) = sqlx::query_as(
                "SELECT CAST(available AS CHAR) FROM account_balances WHERE user_id = ? AND currency = ? AND account_type = 'spot'",
            )
            .bind(fee_account)
            .bind(asset.as_str())
            .fetch_one(&mut *tx)
            .await
            .map_err(place)?;
            sqlx::query(
                "INSERT INTO account_transactions (user_id, currency, type, amount, balance_after, ref_type, ref_id) \
                 VALUES (?, ?, 'fee', ?, ?, 'withdraw', ?)",
            )
            .bind(fee_account)
            .bind(asset.as_str())
            .bind(w.fee.to_db_string())
            .bind(fee_after)
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(place)?;
        }
    }
    tx.commit().await.map_err(place)?;
    let withdrawal = find_withdrawal(map, id)
        .await?
        .ok_or_else(|| FundingError::NotFound(format!("withdrawal {id}")))?;
    Ok(Transition {
        withdrawal,
        changed,
    })
}

/// Approves (`reviewing` → `approved`) or rejects (`reviewing` or `approved` →
/// `rejected`, funds unfrozen) a withdrawal, with the reviewer and a comment.
///
/// # Errors
/// [`FundingError::NotFound`]; database errors.
pub async fn review(
    map: &ShardMap,
    id: u64,
    approve: bool,
    reviewer: u64,
    comment: &str,
) -> Result<Transition, FundingError> {
    if approve {
        transition(
            map,
            id,
            "reviewing",
            "approved",
            Money::None,
            Some(reviewer),
            Some(comment),
            None,
        )
        .await
    } else {
        // a withdrawal not yet being sent may still be rejected
        let t = transition(
            map,
            id,
            "reviewing",
            "rejected",
            Money::Unfreeze,
            Some(reviewer),
            Some(comment),
            None,
        )
        .await?;
        if t.changed {
            return Ok(t);
        }
        transition(
            map,
            id,
            "approved",
            "rejected",
            Money::Unfreeze,
            Some(reviewer),
            Some(comment),
            None,
        )
        .await
    }
}

/// `approved` → `processing` (being sent).
///
/// # Errors
/// As [`review`].
pub async fn process(map: &ShardMap, id: u64) -> Result<Transition, FundingError> {
    transition(
        map,
        id,
        "approved",
        "processing",
        Money::None,
        None,
        None,
        None,
    )
    .await
}

/// `processing` → `completed`: the frozen amount leaves the exchange (the fee to the
/// shard's fee account), with the chain's txid.
///
/// # Errors
/// As [`review`].
pub async fn complete(map: &ShardMap, id: u64, txid: &str) -> Result<Transition, FundingError> {
    transition(
        map,
        id,
        "processing",
        "completed",
        Money::Spend,
        None,
        None,
        Some(txid),
    )
    .await
}

/// `processing` → `failed`: the funds are unfrozen.
///
/// # Errors
/// As [`review`].
pub async fn fail(map: &ShardMap, id: u64, reason: &str) -> Result<Transition, FundingError> {
    transition(
        map,
        id,
        "processing",
        "failed",
        Money::Unfreeze,
        None,
        Some(reason),
        None,
    )
    .await
}

// ------------------------------------------------------------------- helpers ---

/// RFC 4648 base32 (the TOTP secret's usual encoding); `None` if malformed.
fn base32_decode(s: &str) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let (mut buf, mut bits) = (0u64, 0u32);
    for c in s.bytes().filter(|c| *c != b'=' && *c != b' ') {
        let v = match c.to_ascii_uppercase() {
            c @ b'A'..=b'Z' => c - b'A',
            c @ b'2'..=b'7' => c - b'2' + 26,
            _ => return None,
        };
        buf = (buf << 5) | u64::from(v);
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            out.push(u8::try_from((buf >> bits) & 0xff).ok()?);
        }
    }
    Some(out)
}

/// The RFC 6238 code (HMAC-SHA1, 30 s steps, 6 digits) of `secret` (base32) at step
/// `step`.
pub fn totp_at(secret_b32: &str, step: u64) -> Option<u32> {
    use hmac::{Hmac, Mac};
    let key = base32_decode(secret_b32)?;
    let mut mac = Hmac::<sha1::Sha1>::new_from_slice(&key).ok()?;
    mac.update(&step.to_be_bytes());
    let h = mac.finalize().into_bytes();
    let offset = usize::from(h[19] & 0x0f);
    let bin = (u32::from(h[offset]) & 0x7f) << 24
        | u32::from(h[offset + 1]) << 16
        | u32::from(h[offset + 2]) << 8
        | u32::from(h[offset + 3]);
    Some(bin % 1_000_000)
}

/// Whether `code` is the TOTP of `secret` at `now_unix` (± one 30 s step of clock skew).
pub fn totp_verify(secret_b32: &str, code: &str, now_unix: u64) -> bool {
    totp_match(secret_b32, code, now_unix).is_some()
}

/// The 30 s step `code` belongs to (± one step around `now_unix`), if any.
pub fn totp_match(secret_b32: &str, code: &str, now_unix: u64) -> Option<u64> {
    let code = code.trim();
    if code.len() != 6 {
        return None;
    }
    let code = code.parse::<u32>().ok()?;
    let step = now_unix / 30;
    [step.saturating_sub(1), step, step + 1]
        .into_iter()
        .find(|s| totp_at(secret_b32, *s) == Some(code))
}

/// Withdrawals waiting for review on one shard (`shardctl status`).
///
/// # Errors
/// Database errors.
pub async fn reviewing(pool: &MySqlPool) -> Result<u64, RouterError> {
    let (n,): (i64,) =
        sqlx::query_as("SELECT COUNT(*) FROM withdrawals WHERE status = 'reviewing'")
            .fetch_one(pool)
            .await
            .map_err(|e| RouterError::db("withdrawals", e))?;
    Ok(u64::try_from(n).unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn totp_matches_the_rfc_6238_vectors() {
        // RFC 6238 appendix B, SHA1 key "12345678901234567890" (base32 below), 8 digits
        // there; the low 6 digits here
        let secret = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ";
        for (t, want) in [
            (59u64, 94_287_082u32),
            (1_111_111_109, 7_081_804),
            (1_234_567_890, 89_005_924),
        ] {
            assert_eq!(totp_at(secret, t / 30), Some(want % 1_000_000), "t = {t}");
        }
        assert!(totp_verify(secret, "287082", 59));
        assert!(totp_verify(secret, "287082", 59 + 30), "one step of skew");
        assert!(!totp_verify(secret, "287082", 59 + 90));
        assert!(!totp_verify(secret, "28708x", 59));
        assert_eq!(base32_decode("1"), None);
    }
}
