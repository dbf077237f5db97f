//! The router's error type. Every failure names what it was about (shard, table,
//! symbol) so an operator can act on the message alone.

use thiserror::Error;

/// Errors of the router layer.
#[derive(Debug, Error)]
pub enum RouterError {
    /// A configuration value is missing or invalid.
    #[error("config: {0}")]
    Config(String),
    /// A symbol that is not in the configured whitelist.
    #[error("unknown symbol {0:?}: not in the symbol whitelist")]
    UnknownSymbol(String),
    /// Input that can never name a table (bad charset, length, ...).
    #[error("invalid symbol {input:?}: {reason}")]
    InvalidSymbol {
        /// What was given.
        input: String,
        /// Why it was refused.
        reason: String,
    },
    /// A routed table does not exist on a shard: reported, never skipped.
    #[error("table {table} does not exist on shard {shard} (run `shardctl ensure-tables`)")]
    MissingTable {
        /// Table name.
        table: String,
        /// Shard index.
        shard: u16,
    },
    /// A month range that is reversed or too long.
    #[error("bad month range: {0}")]
    BadRange(String),
    /// A snowflake id that cannot be decoded or routed.
    #[error("bad id {id}: {reason}")]
    BadId {
        /// The raw id.
        id: u64,
        /// Why.
        reason: String,
    },
    /// Shard index out of range.
    #[error("shard {shard} does not exist (shard count {count})")]
    NoSuchShard {
        /// Index asked for.
        shard: u16,
        /// Configured count.
        count: u16,
    },
    /// An optimistic-lock update kept losing to concurrent writers.
    #[error("busy: {0}")]
    Busy(String),
    /// Invalid input to the user directory.
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// The clock moved back by more than the tolerated skew.
    #[error(transparent)]
    Snowflake(#[from] crate::snowflake::SnowflakeError),
    /// Database error with the shard it came from (`None` = meta).
    #[error("database error on {place}: {source}")]
    Db {
        /// `shard N` or `meta`.
        place: String,
        /// The sqlx error.
        #[source]
        source: sqlx::Error,
    },
    /// A migration failed.
    #[error("migration on {place}: {source}")]
    Migrate {
        /// `shard N` or `meta`.
        place: String,
        /// The sqlx error.
        #[source]
        source: sqlx::migrate::MigrateError,
    },
    /// Redis error.
    #[error("redis: {0}")]
    Redis(String),
    /// A decimal read from MySQL that cannot be held exactly.
    #[error("decimal: {0}")]
    Decimal(#[from] domain::MoneyError),
}

impl RouterError {
    /// Wraps a sqlx error with the place it happened.
    pub fn db(place: impl Into<String>, source: sqlx::Error) -> Self {
        Self::Db {
            place: place.into(),
            source,
        }
    }

    /// Like [`RouterError::db`] but turns MySQL's "table doesn't exist" (1146) into
    /// [`RouterError::MissingTable`], so callers never mistake it for "no rows".
    pub fn db_on_shard(shard: u16, source: sqlx::Error) -> Self {
        if let sqlx::Error::Database(db) = &source {
            if db.code().as_deref() == Some("42S02") {
                let table = db
                    .message()
                    .split('\'')
                    .nth(1)
                    .and_then(|qualified| qualified.rsplit('.').next())
                    .unwrap_or("?")
                    .to_owned();
                return Self::MissingTable { table, shard };
            }
        }
        Self::db(format!("shard {shard}"), source)
    }
}

impl RouterError {
    /// A deadlock or lock-wait timeout: the transaction was rolled back and may simply
    /// be run again.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Db {
                source: sqlx::Error::Database(db),
                ..
            } => {
                matches!(db.code().as_deref(), Some("40001" | "HY000"))
                    && (db.message().contains("Deadlock")
                        || db.message().contains("Lock wait timeout"))
            }
            _ => false,
        }
    }
}

/// Errors that may say "run the transaction again" (a deadlock victim).
pub trait Retryable {
    /// The failed transaction was rolled back by the server and may be run again.
    fn retryable(&self) -> bool;
}

impl Retryable for RouterError {
    fn retryable(&self) -> bool {
        self.is_retryable()
    }
}

/// Runs a whole local transaction (`f`) again when the server picked it as a deadlock
/// victim, up to 8 attempts with a short growing pause. InnoDB may deadlock two
/// transactions that lock the same rows through different indexes, whatever order
/// the code locks them in; the victim is rolled back entirely, so running it again is
/// safe.
///
/// # Errors
/// The last attempt's error, or the first error that is not a deadlock.
pub async fn retry_deadlocks<T, E, F, Fut>(mut f: F) -> Result<T, E>
where
    E: Retryable,
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
{
    let mut attempt = 0u32;
    loop {
        match f().await {
            Err(e) if e.retryable() && attempt < 7 => {
                attempt += 1;
                tokio::time::sleep(std::time::Duration::from_millis(u64::from(attempt) * 3)).await;
            }
            other => return other,
        }
    }
}

impl From<deadpool_redis::redis::RedisError> for RouterError {
    fn from(e: deadpool_redis::redis::RedisError) -> Self {
        Self::Redis(e.to_string())
    }
}

impl From<deadpool_redis::PoolError> for RouterError {
    fn from(e: deadpool_redis::PoolError) -> Self {
        Self::Redis(e.to_string())
    }
}
