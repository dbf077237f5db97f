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

impl From<domain::MonthError> for RouterError {
    fn from(e: domain::MonthError) -> Self {
        Self::BadRange(e.0)
    }
}

impl From<domain::SnowflakeIdError> for RouterError {
    fn from(e: domain::SnowflakeIdError) -> Self {
        match e {
            domain::SnowflakeIdError::NotSnowflake { id } => Self::BadId {
                id,
                reason: "top bit set: not a snowflake id".into(),
            },
            domain::SnowflakeIdError::TimeOutOfRange { unix_ms } => Self::BadId {
                id: unix_ms,
                reason: "time outside the snowflake range".into(),
            },
        }
    }
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

/// MySQL / MariaDB error number of a deadlock victim (`ER_LOCK_DEADLOCK`).
pub const ER_LOCK_DEADLOCK: u16 = 1213;
/// MySQL / MariaDB error number of a lock-wait timeout (`ER_LOCK_WAIT_TIMEOUT`).
pub const ER_LOCK_WAIT_TIMEOUT: u16 = 1205;

/// The server's error number of a database error, if it is one.
pub fn mysql_error_number(e: &sqlx::Error) -> Option<u16> {
    match e {
        sqlx::Error::Database(db) => db
            .try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>()
            .map(sqlx::mysql::MySqlDatabaseError::number),
        _ => None,
    }
}

/// Whether a sqlx error means "the server never got or never answered": the
/// connection broke, the pool had none to give, or the I/O timed out.
pub fn is_connection_error(e: &sqlx::Error) -> bool {
    matches!(
        e,
        sqlx::Error::Io(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed
            | sqlx::Error::Tls(_)
    )
}

impl RouterError {
    /// A database error of the "the server never got or never answered" kind
    /// ([`is_connection_error`]): the shard (or meta) is down or unreachable, not
    /// anything about the work itself.
    pub fn is_unreachable(&self) -> bool {
        matches!(self, Self::Db { source, .. } if is_connection_error(source))
    }

    /// A deadlock or lock-wait timeout: the transaction was rolled back and may simply
    /// be run again. Decided by the server's error number, never by message text.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Db { source, .. } => matches!(
                mysql_error_number(source),
                Some(ER_LOCK_DEADLOCK | ER_LOCK_WAIT_TIMEOUT)
            ),
            _ => false,
        }
    }
}

impl domain::Kinded for RouterError {
    fn kind(&self) -> domain::ErrorKind {
        use domain::ErrorKind as K;
        match self {
            Self::UnknownSymbol(_)
            | Self::InvalidSymbol { .. }
            | Self::BadRange(_)
            | Self::BadId { .. }
            | Self::InvalidInput(_)
            | Self::Decimal(_) => K::Rejected,
            Self::Busy(_) | Self::Redis(_) => K::Unavailable,
            Self::Snowflake(e) => match e {
                crate::snowflake::SnowflakeError::ClockMovedBackwards { .. }
                | crate::snowflake::SnowflakeError::LeaseLost => K::Unavailable,
                _ => K::Internal,
            },
            Self::Db { source, .. } => {
                if self.is_retryable() || is_connection_error(source) {
                    K::Unavailable
                } else {
                    K::Internal
                }
            }
            Self::Config(_)
            | Self::MissingTable { .. }
            | Self::NoSuchShard { .. }
            | Self::Migrate { .. } => K::Internal,
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
