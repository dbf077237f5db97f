//! The shard map: one sqlx pool per shard plus the meta pool, `shard_of(user_id)`,
//! migrations, and creating month tables/partitions ahead of time.
//!
//! Invariants:
//! * a user lives on shard `user_id % shard_count`; the count comes from config;
//! * the same migrations run on every shard; meta has its own;
//! * month tables are only created here (ahead of time), never inside an order
//!   transaction, and only for whitelisted symbols.

use std::collections::BTreeSet;
use std::num::NonZeroU16;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use domain::{ShardId, UserId};
use serde::Serialize;
use sqlx::migrate::Migrator;
use sqlx::mysql::{MySqlConnectOptions, MySqlConnection, MySqlPool, MySqlPoolOptions, MySqlRow};
use sqlx::{Column, ConnectOptions, Connection, Row, TypeInfo};
use tracing::{info, instrument};

use crate::config::{redact_url, PoolSettings, Settings};
use crate::error::RouterError;
use crate::tables::{Month, TableKind, TableName, TableRouter};

/// Migrations applied to every shard.
pub static SHARD_MIGRATOR: Migrator = sqlx::migrate!("../sql/shard");
/// Migrations applied to the meta schema.
pub static META_MIGRATOR: Migrator = sqlx::migrate!("../sql/meta");

/// The partitioned ledger table whose monthly partitions `ensure_tables` maintains.
pub const LEDGER_TABLE: &str = "account_transactions";

/// Pools for every shard and the meta schema.
#[derive(Debug, Clone)]
pub struct ShardMap {
    shards: Vec<MySqlPool>,
    urls: Vec<String>,
    meta: MySqlPool,
    meta_url: String,
}

impl ShardMap {
    /// Builds the pools. Connections are opened lazily, so a shard that is down shows up
    /// as an error on first use (and in `status`), not as a failure to start.
    ///
    /// # Errors
    /// [`RouterError::Config`] for invalid settings or a URL that does not parse.
    pub fn connect_lazy(settings: &Settings) -> Result<Self, RouterError> {
        settings.validate()?;
        let shards = settings
            .shards
            .iter()
            .map(|u| pool_for(u, &settings.pool))
            .collect::<Result<_, _>>()?;
        Ok(Self {
            shards,
            urls: settings.shards.iter().map(|u| redact_url(u)).collect(),
            meta: pool_for(&settings.meta, &settings.pool)?,
            meta_url: redact_url(&settings.meta),
        })
    }

    /// Like [`ShardMap::connect_lazy`], first creating the databases named in the URLs
    /// if they do not exist (what `migrate` needs on a fresh server).
    ///
    /// # Errors
    /// A server that cannot be reached, or a bad URL.
    pub async fn connect_creating(settings: &Settings) -> Result<Self, RouterError> {
        for (place, url) in settings
            .shards
            .iter()
            .enumerate()
            .map(|(i, u)| (format!("shard {i}"), u))
            .chain(std::iter::once(("meta".to_owned(), &settings.meta)))
        {
            create_database(&place, url).await?;
        }
        Self::connect_lazy(settings)
    }

    /// Number of shards.
    pub fn count(&self) -> u16 {
        u16::try_from(self.shards.len()).unwrap_or(u16::MAX)
    }

    /// The shard a user lives on: `user_id % shard_count`.
    pub fn shard_of(&self, user: UserId) -> ShardId {
        user.shard(NonZeroU16::new(self.count()).unwrap_or(NonZeroU16::MIN))
    }

    /// The pool of a shard.
    ///
    /// # Errors
    /// [`RouterError::NoSuchShard`] when out of range.
    pub fn pool(&self, shard: ShardId) -> Result<&MySqlPool, RouterError> {
        self.shards
            .get(usize::from(shard.get()))
            .ok_or(RouterError::NoSuchShard {
                shard: shard.get(),
                count: self.count(),
            })
    }

    /// The pool of the shard `user` lives on.
    pub fn pool_for(&self, user: UserId) -> &MySqlPool {
        let idx = usize::from(self.shard_of(user).get());
        &self.shards[idx]
    }

    /// Every shard with its pool, in order.
    pub fn iter(&self) -> impl Iterator<Item = (ShardId, &MySqlPool)> {
        self.shards
            .iter()
            .enumerate()
            .map(|(i, p)| (ShardId::new(u16::try_from(i).unwrap_or(u16::MAX)), p))
    }

    /// The meta pool.
    pub fn meta(&self) -> &MySqlPool {
        &self.meta
    }

    /// The shard's URL with the password masked.
    pub fn url(&self, shard: ShardId) -> &str {
        self.urls
            .get(usize::from(shard.get()))
            .map_or("?", String::as_str)
    }

    /// The meta URL with the password masked.
    pub fn meta_url(&self) -> &str {
        &self.meta_url
    }

    /// Applies every pending migration: meta first, then each shard.
    ///
    /// # Errors
    /// [`RouterError::Migrate`] naming the place that failed.
    #[instrument(skip(self))]
    pub async fn migrate_up(&self) -> Result<(), RouterError> {
        run_migrations(&META_MIGRATOR, &self.meta, "meta").await?;
        for (id, pool) in self.iter() {
            run_migrations(&SHARD_MIGRATOR, pool, &format!("shard {id}")).await?;
        }
        Ok(())
    }

    /// Reverts migrations above `target` (0 = everything) on every shard, then meta.
    ///
    /// # Errors
    /// [`RouterError::Migrate`] naming the place that failed.
    #[instrument(skip(self))]
    pub async fn migrate_down(&self, target: i64) -> Result<(), RouterError> {
        for (id, pool) in self.iter() {
            SHARD_MIGRATOR
                .undo(pool, target)
                .await
                .map_err(|source| RouterError::Migrate {
                    place: format!("shard {id}"),
                    source,
                })?;
        }
        META_MIGRATOR
            .undo(&self.meta, target)
            .await
            .map_err(|source| RouterError::Migrate {
                place: "meta".into(),
                source,
            })
    }

    /// Creates month tables for every whitelisted symbol from `now`'s month through
    /// `months_ahead` months later, and the ledger's monthly partitions, on every
    /// shard. Idempotent: a second call creates nothing.
    ///
    /// # Errors
    /// A database error naming the shard.
    #[instrument(skip(self, router, now))]
    pub async fn ensure_tables(
        &self,
        router: &TableRouter,
        now: DateTime<Utc>,
        months_ahead: u32,
    ) -> Result<EnsureReport, RouterError> {
        let first = Month::of(now);
        let months: Vec<Month> = (0..=months_ahead).map(|i| first.plus(i)).collect();
        let mut report = EnsureReport::default();
        for (shard, pool) in self.iter() {
            // one runner per shard database at a time (lock names are server-wide, so the
            // name carries the database): every service runs this at start, and two
            // REORGANIZE PARTITION of the same pmax would collide
            let place = |e| RouterError::db_on_shard(shard.get(), e);
            let mut conn = pool.acquire().await.map_err(place)?;
            let (locked,): (Option<i64>,) = sqlx::query_as(
                "SELECT GET_LOCK(CONCAT('exchange.ensure_tables.', DATABASE()), 60)",
            )
            .fetch_one(&mut *conn)
            .await
            .map_err(place)?;
            if locked != Some(1) {
                return Err(RouterError::Busy(format!(
                    "shard {shard}: another ensure-tables held the lock for 60 s"
                )));
            }
            let done = ensure_on_shard(&mut conn, shard, router, &months).await;
            let released =
                sqlx::query("DO RELEASE_LOCK(CONCAT('exchange.ensure_tables.', DATABASE()))")
                    .execute(&mut *conn)
                    .await
                    .map_err(place);
            let r = done?;
            released?;
            report.tables_created += r.tables_created;
            report.partitions_added += r.partitions_added;
        }
        Ok(report)
    }

    /// Names of the existing `orders_*`/`trades_*` month tables on a shard.
    ///
    /// # Errors
    /// A database error naming the shard.
    pub async fn month_tables(&self, shard: ShardId) -> Result<BTreeSet<String>, RouterError> {
        list_month_tables(self.pool(shard)?, shard).await
    }

    /// The `kind` tables of `symbol` covering `[from, to]` on `shard`, oldest first,
    /// checked to exist: what a history query iterates. A month in the range that has
    /// no table is [`RouterError::MissingTable`], never silently skipped.
    ///
    /// # Errors
    /// Unknown symbol, bad range, a missing table, database errors.
    pub async fn tables_in_range(
        &self,
        shard: ShardId,
        router: &TableRouter,
        kind: TableKind,
        symbol: &domain::Symbol,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<TableName>, RouterError> {
        let tables = router.tables_in_range(kind, symbol, from, to)?;
        self.require_tables(shard, &tables).await?;
        Ok(tables)
    }

    /// Checks that every table exists on `shard`; the first missing one is an error.
    /// Used before a multi-month query so a gap is reported, not skipped.
    ///
    /// # Errors
    /// [`RouterError::MissingTable`] naming the table and shard.
    pub async fn require_tables(
        &self,
        shard: ShardId,
        tables: &[TableName],
    ) -> Result<(), RouterError> {
        let existing = self.month_tables(shard).await?;
        match tables.iter().find(|t| !existing.contains(t.as_str())) {
            Some(t) => Err(RouterError::MissingTable {
                table: t.to_string(),
                shard: shard.get(),
            }),
            None => Ok(()),
        }
    }
}

/// What [`ShardMap::ensure_tables`] did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct EnsureReport {
    /// Month tables created (all shards).
    pub tables_created: u32,
    /// Ledger partitions added (all shards).
    pub partitions_added: u32,
}

fn pool_for(url: &str, p: &PoolSettings) -> Result<MySqlPool, RouterError> {
    let opts = MySqlConnectOptions::from_str(url)
        .map_err(|e| RouterError::Config(format!("bad database url {}: {e}", redact_url(url))))?
        .charset("utf8mb4")
        .log_statements(tracing::log::LevelFilter::Trace);
    Ok(MySqlPoolOptions::new()
        // settlement, the outbox seq counter and the daily withdrawal limit are written
        // for READ COMMITTED (a locking read followed by plain reads must see what
        // committed before the lock); stock MySQL 8 and MariaDB default to REPEATABLE
        // READ, so every session sets it rather than trusting the server's config
        .after_connect(|conn, _| {
            Box::pin(async move {
                sqlx::Executor::execute(
                    &mut *conn,
                    "SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED",
                )
                .await?;
                Ok(())
            })
        })
        .max_connections(p.max_connections)
        .min_connections(p.min_connections)
        .acquire_timeout(p.acquire_timeout())
        .idle_timeout(Some(std::time::Duration::from_secs(p.idle_timeout_s)))
        .connect_lazy_with(opts))
}

/// `CREATE DATABASE IF NOT EXISTS` for the database named in `url`.
async fn create_database(place: &str, url: &str) -> Result<(), RouterError> {
    let opts = MySqlConnectOptions::from_str(url)
        .map_err(|e| RouterError::Config(format!("bad database url {}: {e}", redact_url(url))))?;
    let db = opts
        .get_database()
        .ok_or_else(|| RouterError::Config(format!("{place}: url has no database name")))?
        .to_owned();
    if db.is_empty() || !db.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') || db.len() > 64
    {
        return Err(RouterError::Config(format!(
            "{place}: bad database name {db:?}"
        )));
    }
    // connect to the server's built-in schema to create ours
    let mut conn = opts
        .database("information_schema")
        .connect()
        .await
        .map_err(|e| RouterError::db(place, e))?;
    sqlx::query(&format!(
        "CREATE DATABASE IF NOT EXISTS `{db}` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci"
    ))
    .execute(&mut conn)
    .await
    .map_err(|e| RouterError::db(place, e))?;
    conn.close().await.map_err(|e| RouterError::db(place, e))
}

async fn run_migrations(m: &Migrator, pool: &MySqlPool, place: &str) -> Result<(), RouterError> {
    m.run(pool).await.map_err(|source| RouterError::Migrate {
        place: place.to_owned(),
        source,
    })?;
    info!(place, "migrations applied");
    Ok(())
}

/// Splits the ledger's `pmax` so every month in `months` has its own partition.
/// Partitions only grow forward: months at or below the newest existing monthly
/// partition are already covered by it or an earlier one.
async fn list_month_tables<'e, E>(exec: E, shard: ShardId) -> Result<BTreeSet<String>, RouterError>
where
    E: sqlx::Executor<'e, Database = sqlx::MySql>,
{
    let rows: Vec<(String,)> = sqlx::query_as(
        "SELECT CAST(table_name AS CHAR) FROM information_schema.tables \
         WHERE table_schema = DATABASE() \
         AND table_name REGEXP BINARY '^(orders|trades)_[A-Z0-9]{2,20}_[0-9]{6}$'",
    )
    .fetch_all(exec)
    .await
    .map_err(|e| RouterError::db_on_shard(shard.get(), e))?;
    Ok(rows.into_iter().map(|(n,)| n).collect())
}

/// Month tables and ledger partitions of one shard (caller holds the shard's lock).
async fn ensure_on_shard(
    conn: &mut MySqlConnection,
    shard: ShardId,
    router: &TableRouter,
    months: &[Month],
) -> Result<EnsureReport, RouterError> {
    let mut report = EnsureReport::default();
    let existing = list_month_tables(&mut *conn, shard).await?;
    for symbol in router.symbols() {
        for &month in months {
            for kind in [TableKind::Orders, TableKind::Trades] {
                let table = router.table(kind, symbol, month)?;
                if existing.contains(table.as_str()) {
                    continue;
                }
                let sql = format!(
                    "CREATE TABLE IF NOT EXISTS `{}` LIKE `{}`",
                    table.as_str(),
                    kind.template()
                );
                sqlx::query(&sql)
                    .execute(&mut *conn)
                    .await
                    .map_err(|e| RouterError::db_on_shard(shard.get(), e))?;
                tracing::debug!(
                    shard = shard.get(),
                    table = table.as_str(),
                    "created month table"
                );
                report.tables_created += 1;
            }
        }
    }
    report.partitions_added = ensure_ledger_partitions(conn, shard, months).await?;
    Ok(report)
}

async fn ensure_ledger_partitions(
    conn: &mut MySqlConnection,
    shard: ShardId,
    months: &[Month],
) -> Result<u32, RouterError> {
    let names: Vec<(String,)> = sqlx::query_as(
        "SELECT CAST(partition_name AS CHAR) FROM information_schema.partitions \
         WHERE table_schema = DATABASE() AND table_name = ? AND partition_name IS NOT NULL",
    )
    .bind(LEDGER_TABLE)
    .fetch_all(&mut *conn)
    .await
    .map_err(|e| RouterError::db_on_shard(shard.get(), e))?;
    if names.is_empty() {
        return Err(RouterError::MissingTable {
            table: LEDGER_TABLE.into(),
            shard: shard.get(),
        });
    }
    let newest = names
        .iter()
        .filter_map(|(n,)| {
            n.strip_prefix('p')
                .and_then(|m| Month::parse_yyyymm(m).ok())
        })
        .max();
    let mut added = 0;
    for &m in months.iter().filter(|m| newest.is_none_or(|n| **m > n)) {
        let sql = format!(
            "ALTER TABLE `{LEDGER_TABLE}` REORGANIZE PARTITION `pmax` INTO (\
             PARTITION `p{}` VALUES LESS THAN (TO_DAYS('{}')), \
             PARTITION `pmax` VALUES LESS THAN MAXVALUE)",
            m.yyyymm(),
            m.next().first_day()
        );
        sqlx::query(&sql)
            .execute(&mut *conn)
            .await
            .map_err(|e| RouterError::db_on_shard(shard.get(), e))?;
        info!(shard = shard.get(), partition = %m, "added ledger partition");
        added += 1;
    }
    Ok(added)
}

/// Reads a `DECIMAL` column exactly as [`domain::Amount`]: the server sends decimals as
/// text, which is parsed without rounding; a value rust_decimal cannot hold exactly
/// (more than ~28 significant digits) is an error, never a rounded number.
///
/// # Errors
/// [`RouterError::Decimal`] for a value that cannot be held exactly, `Db` for a
/// missing column or a column that is not `DECIMAL`.
pub fn get_amount(row: &MySqlRow, column: &str) -> Result<domain::Amount, RouterError> {
    let text = get_decimal_text(row, column)?;
    Ok(domain::Amount::from_db_str(&text)?)
}

/// The exact text of a `DECIMAL` column (`NULL` → `None` is not accepted here).
fn get_decimal_text(row: &MySqlRow, column: &str) -> Result<String, RouterError> {
    let col = row
        .try_column(column)
        .map_err(|e| RouterError::db("row", e))?;
    let ty = col.type_info().name();
    if ty != "DECIMAL" {
        return Err(RouterError::db(
            "row",
            sqlx::Error::ColumnDecode {
                index: column.to_owned(),
                source: format!("expected DECIMAL, found {ty}").into(),
            },
        ));
    }
    // a DECIMAL arrives as its exact decimal text in both protocols
    let text: &str = row
        .try_get_unchecked(column)
        .map_err(|e| RouterError::db("row", e))?;
    Ok(text.to_owned())
}
