//! What `shardctl status` reads of a server: its version, the migration level, and a
//! row count of its main table; Redis's answer to PING. Every probe is bounded by the
//! pool's acquire timeout (the caller picks a short one).

use std::time::Duration;

use sqlx::MySqlPool;

use crate::config::RedisSettings;
use crate::RouterError;

/// The table whose rows a probe counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Counted {
    /// meta: `user_directory`.
    Directory,
    /// a shard: `users`.
    Users,
}

impl Counted {
    fn sql(self) -> &'static str {
        match self {
            Self::Directory => "SELECT COUNT(*) FROM user_directory",
            Self::Users => "SELECT COUNT(*) FROM users",
        }
    }
}

/// A server's answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    /// `SELECT VERSION()`.
    pub version: String,
    /// Highest applied migration (`None` if the history table is unreadable).
    pub migration: Option<i64>,
    /// Rows of the counted table (`None` if it is unreadable).
    pub rows: Option<i64>,
}

/// Probes one server.
///
/// # Errors
/// [`RouterError::Db`] if the server does not answer `SELECT VERSION()`.
pub async fn probe(pool: &MySqlPool, counted: Counted) -> Result<Probe, RouterError> {
    let (version,): (String,) = sqlx::query_as("SELECT VERSION()")
        .fetch_one(pool)
        .await
        .map_err(|e| RouterError::db("probe", e))?;
    let migration: Option<(i64,)> =
        sqlx::query_as("SELECT COALESCE(MAX(version), 0) FROM _sqlx_migrations WHERE success = 1")
            .fetch_optional(pool)
            .await
            .ok()
            .flatten();
    let rows: Option<(i64,)> = sqlx::query_as(counted.sql())
        .fetch_optional(pool)
        .await
        .ok()
        .flatten();
    Ok(Probe {
        version,
        migration: migration.map(|(v,)| v),
        rows: rows.map(|(r,)| r),
    })
}

/// Redis's reply to `PING` within `timeout`.
///
/// # Errors
/// [`RouterError::Redis`] if it is unreachable, slow or refuses.
pub async fn ping_redis(
    settings: &RedisSettings,
    timeout: Duration,
) -> Result<String, RouterError> {
    let pool = crate::directory::redis_pool(settings)?;
    let mut conn = tokio::time::timeout(timeout, pool.get())
        .await
        .map_err(|_| RouterError::Redis("timed out".into()))??;
    let pong: String = deadpool_redis::redis::cmd("PING")
        .query_async(&mut *conn)
        .await?;
    Ok(pong)
}

/// The servers of `map` (meta, then each shard) that do not answer `SELECT 1` within
/// `timeout`, by name (`meta`, `shard 2`): empty when all do. For readiness probes.
pub async fn unreachable(map: &crate::ShardMap, timeout: Duration) -> Vec<String> {
    async fn alive(pool: &MySqlPool, timeout: Duration) -> bool {
        matches!(
            tokio::time::timeout(timeout, sqlx::query("SELECT 1").execute(pool)).await,
            Ok(Ok(_))
        )
    }
    let mut down = Vec::new();
    if !alive(map.meta(), timeout).await {
        down.push("meta".to_owned());
    }
    for (shard, pool) in map.iter() {
        if !alive(pool, timeout).await {
            down.push(format!("shard {shard}"));
        }
    }
    down
}
