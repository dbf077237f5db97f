//! `shardctl` — the operator's shard admin CLI.
//!
//! Configuration comes from the same layered settings as every service
//! (`EXCHANGE_CONFIG`, `EXCHANGE_*` env, defaults). Exit code 0 on success, 1 when a
//! check fails (e.g. a shard is down in `status`), 2 on usage errors.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use domain::{OrderId, ShardId, UserId};
use router::directory::{redis_pool, NO_PASSWORD};
use router::{decode, Settings, ShardMap, TableRouter, UserDirectory, WorkerLease};

#[derive(Debug, Parser)]
#[command(
    name = "shardctl",
    version,
    about = "Shard admin for the exchange: status, migrations, month tables, locating users and orders"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Every shard, meta and Redis: reachable, version, migration level, row counts.
    Status,
    /// Apply (default) or revert migrations on meta and every shard.
    Migrate {
        #[command(subcommand)]
        action: Option<MigrateAction>,
    },
    /// Create month tables and ledger partitions ahead of time (idempotent).
    EnsureTables {
        /// Months after the current one to create (default: config `months_ahead`).
        #[arg(long)]
        months_ahead: Option<u32>,
    },
    /// Where something lives.
    Locate {
        #[command(subcommand)]
        what: Locate,
    },
    /// Money audits (exit 1 if any fails): the money invariant per asset
    /// (Σ(available + frozen) over all shards, fee accounts included, = Σ completed
    /// deposits − Σ completed withdrawals); per shard, every frozen balance = what its
    /// open orders and withdrawals hold; every trade has one buy and one sell half.
    /// The first and last are exact only while the pipeline is quiescent.
    Audit,
    /// Issue snowflake ids (worker id from config, else leased in Redis) and decode them.
    Ids {
        /// How many.
        #[arg(long, default_value_t = 3)]
        count: u32,
    },
    /// User directory operations.
    User {
        #[command(subcommand)]
        action: UserAction,
    },
    /// Transfer between two users (TCC across shards, one transaction on one shard).
    /// `EXCHANGE_FAILPOINT=tcc.after_try` (etc.) aborts the process at that step.
    Transfer {
        from: u64,
        to: u64,
        asset: String,
        amount: String,
    },
    /// TCC global transactions: list, finish, recover.
    Tcc {
        #[command(subcommand)]
        action: TccAction,
    },
    /// Chain simulator: report deposits and their confirmations (the crediting path is
    /// the real one).
    Chain {
        #[command(subcommand)]
        action: ChainAction,
    },
    /// Withdrawals: allowlist, request, review, send, complete.
    Withdraw {
        #[command(subcommand)]
        action: WithdrawAction,
    },
}

#[derive(Debug, Subcommand)]
enum ChainAction {
    /// Report a deposit seen on the chain (pending until confirmed).
    Deposit {
        user: u64,
        asset: String,
        amount: String,
        /// Default: a fresh random txid.
        #[arg(long)]
        txid: Option<String>,
        #[arg(long, default_value = "SIM")]
        chain: String,
    },
    /// Report confirmations of a deposit (credited once they reach the asset's
    /// requirement).
    Confirm {
        txid: String,
        asset: String,
        /// Default: the asset's requirement.
        #[arg(long)]
        confirmations: Option<u32>,
    },
}

#[derive(Debug, Subcommand)]
enum WithdrawAction {
    /// Allow an address for a user's withdrawals of an asset on a chain.
    Address {
        user: u64,
        asset: String,
        chain: String,
        address: String,
    },
    /// Request a withdrawal (frozen, queued for review).
    Request {
        user: u64,
        asset: String,
        chain: String,
        address: String,
        amount: String,
        /// 2FA code, when the user enabled 2FA.
        #[arg(long)]
        code: Option<String>,
    },
    /// Withdrawals (optionally in one status), every shard.
    List {
        #[arg(long)]
        status: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Approve a withdrawal under review.
    Approve {
        id: u64,
        #[arg(long, default_value_t = 0)]
        reviewer: u64,
        #[arg(long)]
        comment: String,
    },
    /// Reject a withdrawal under review (its funds are unfrozen).
    Reject {
        id: u64,
        #[arg(long, default_value_t = 0)]
        reviewer: u64,
        #[arg(long)]
        comment: String,
    },
    /// Mark an approved withdrawal as being sent.
    Process { id: u64 },
    /// Complete a withdrawal being sent, with the chain's txid.
    Complete {
        id: u64,
        #[arg(long)]
        txid: String,
    },
    /// Fail a withdrawal being sent (its funds are unfrozen).
    Fail {
        id: u64,
        #[arg(long)]
        reason: String,
    },
}

#[derive(Debug, Subcommand)]
enum TccAction {
    /// Unfinished globals (`--stuck`: older than 60 s or already retried).
    List {
        #[arg(long)]
        stuck: bool,
        /// JSON lines instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Finish one global now: confirming → confirmed, cancelling → cancelled, trying →
    /// cancelled once older than the Try timeout (5 s).
    Resolve { gid: u64 },
    /// Recovery: finish every unfinished global whose retry time has come (a `trying`
    /// one once older than the Try timeout). Once, or every second with `--watch`.
    Recover {
        #[arg(long, default_value_t = 5_000)]
        try_timeout_ms: u64,
        #[arg(long)]
        watch: bool,
    },
}

#[derive(Debug, Subcommand)]
enum MigrateAction {
    /// Apply pending migrations (creating the databases if needed).
    Up,
    /// Revert migrations above `--to` (0 = all; month tables are dropped with their template).
    Down {
        #[arg(long, default_value_t = 0)]
        to: i64,
    },
}

#[derive(Debug, Subcommand)]
enum Locate {
    /// A user by id: shard and whether its row is there.
    User { user_id: u64 },
    /// A user by email.
    Email { email: String },
    /// An order: decoded id and its table on... every shard holds that symbol's table;
    /// with `--user` the one shard.
    Order {
        order_id: u64,
        #[arg(long)]
        symbol: String,
        #[arg(long)]
        user: Option<u64>,
    },
    /// Decode any snowflake id (time, datacenter, worker, sequence, month).
    Id { id: u64 },
}

#[derive(Debug, Subcommand)]
enum UserAction {
    /// Register users by email (idempotent) and print where they landed.
    Add {
        #[arg(required = true)]
        emails: Vec<String>,
    },
}

fn main() -> ExitCode {
    router::telemetry::init();
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match rt.block_on(run(cli)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

/// Returns `Ok(false)` when a check ran and failed.
async fn run(cli: Cli) -> Result<bool> {
    let settings = Settings::load().context("loading settings")?;
    tracing::debug!(settings = ?settings.redacted(), "effective settings");
    match cli.command {
        Command::Status => status(&settings).await,
        Command::Migrate { action } => {
            let map = ShardMap::connect_creating(&settings).await?;
            match action.unwrap_or(MigrateAction::Up) {
                MigrateAction::Up => {
                    map.migrate_up().await?;
                    println!("migrations applied on meta and {} shards", map.count());
                }
                MigrateAction::Down { to } => {
                    map.migrate_down(to).await?;
                    println!(
                        "migrations reverted to version {to} on {} shards and meta",
                        map.count()
                    );
                }
            }
            Ok(true)
        }
        Command::EnsureTables { months_ahead } => {
            let map = ShardMap::connect_lazy(&settings)?;
            let router = TableRouter::new(&settings.symbols)?;
            let ahead = months_ahead.unwrap_or(settings.months_ahead);
            if ahead > 24 {
                bail!("--months-ahead must be at most 24, got {ahead}");
            }
            let report = map
                .ensure_tables(&router, chrono::Utc::now(), ahead)
                .await?;
            println!(
                "ensure-tables: {} symbols x {} months on {} shards: {} tables created, {} ledger partitions added",
                settings.symbols.len(),
                ahead + 1,
                map.count(),
                report.tables_created,
                report.partitions_added
            );
            Ok(true)
        }
        Command::Locate { what } => locate(&settings, what).await,
        Command::Ids { count } => issue_ids(&settings, count).await,
        Command::Transfer {
            from,
            to,
            asset,
            amount,
        } => transfer(&settings, from, to, &asset, &amount).await,
        Command::Tcc { action } => tcc(&settings, action).await,
        Command::Chain { action } => chain(&settings, action).await,
        Command::Withdraw { action } => withdraw(&settings, action).await,
        Command::Audit => audit(&settings).await,
        Command::User {
            action: UserAction::Add { emails },
        } => {
            let dir = directory(&settings)?;
            println!("{:<32} {:>8} {:>6} new", "email", "user_id", "shard");
            for email in emails {
                let r = dir.register(&email, NO_PASSWORD).await?;
                println!(
                    "{:<32} {:>8} {:>6} {}",
                    email,
                    r.user_id,
                    r.shard,
                    if r.created { "yes" } else { "no (existed)" }
                );
            }
            Ok(true)
        }
    }
}

/// Progress of a scan over the shards, on stderr: a bar redrawn in place on a
/// terminal, one line per step otherwise (CI logs, pipes).
struct Progress {
    bar: indicatif::ProgressBar,
    what: &'static str,
}

impl Progress {
    fn new(what: &'static str, shards: u64) -> Self {
        use std::io::IsTerminal;
        let bar = if std::io::stderr().is_terminal() {
            indicatif::ProgressBar::new(shards)
        } else {
            indicatif::ProgressBar::hidden()
        };
        if let Ok(style) = indicatif::ProgressStyle::with_template(
            "[{prefix}] {elapsed_precise} [{bar:24}] {pos}/{len} shards  {wide_msg}",
        ) {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_prefix(what);
        bar.tick();
        Self { bar, what }
    }

    /// One shard done (`step`), or a note about the scan in between.
    fn report(&self, shard: ShardId, msg: &str, step: bool) {
        if self.bar.is_hidden() {
            eprintln!("[{}] shard {shard}: {msg}", self.what);
            return;
        }
        if step {
            self.bar.set_message(format!("shard {shard}: {msg}"));
            self.bar.inc(1);
        } else {
            self.bar
                .println(format!("[{}] shard {shard}: {msg}", self.what));
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.bar.finish_and_clear();
    }
}

/// `shardctl audit`: the three money checks; `Ok(false)` when one fails.
async fn audit(settings: &Settings) -> Result<bool> {
    let map = ShardMap::connect_lazy(settings)?;
    let shards = u64::from(map.count());

    // 1. conservation
    println!("conservation: Σ(available + frozen) = Σ deposits − Σ withdrawals, per asset");
    let totals = router::audit::conservation(&map).await?;
    println!(
        "{:<8} {:>30} {:>30} {:>30}  verdict",
        "asset", "balances", "deposits", "withdrawals"
    );
    let mut conserved = true;
    for (asset, t) in &totals {
        println!(
            "{:<8} {:>30} {:>30} {:>30}  {}",
            asset,
            t.balances.to_string(),
            t.deposits.to_string(),
            t.withdrawals.to_string(),
            if t.holds() { "holds" } else { "BROKEN" }
        );
        conserved &= t.holds();
    }
    if totals.is_empty() {
        println!("no balances yet");
    }

    // 2. frozen balances vs open orders and withdrawals, per shard
    let frozen = {
        let bar = Progress::new("audit frozen", shards);
        router::audit::frozen_vs_open_orders_with(&map, |s, m| bar.report(s, m, true)).await?
    };
    println!();
    println!(
        "frozen vs open orders: {} (user, asset) checked on {} shards ({} order tables, {} open orders, {} withdrawals and {} transfers holding funds): {}",
        frozen.pairs_checked,
        frozen.shards,
        frozen.order_tables,
        frozen.open_orders,
        frozen.holding_withdrawals,
        frozen.holding_transfers,
        if frozen.holds() { "holds" } else { "BROKEN" }
    );
    for m in &frozen.mismatches {
        println!(
            "  MISMATCH shard {} user {} {}: frozen {}, expected {} (orders {}, withdrawals {}, transfers {})",
            m.shard,
            m.user_id,
            m.asset,
            m.frozen_balance,
            m.expected,
            m.orders_part,
            m.withdrawals_part,
            m.transfers_part
        );
    }
    for o in &frozen.bad_orders {
        let what = match o.problem {
            router::audit::OrderHoldProblem::NegativeOpen => "open order holds a negative amount",
            router::audit::OrderHoldProblem::FinalStillHolds => "final order still holds funds",
        };
        println!(
            "  BAD ORDER shard {} {} order {} user {} ({}): frozen {} {}: {what}",
            o.shard, o.table, o.order_id, o.user_id, o.status, o.frozen_amount, o.asset
        );
    }

    // 3. trade halves
    let halves = {
        let bar = Progress::new("audit trades", shards);
        // a step per shard's totals; a mismatching table's per-trade check is a note
        router::audit::trade_halves_with(&map, |s, m| {
            bar.report(s, m, m.starts_with("trade halves:"))
        })
        .await?
    };
    println!();
    println!(
        "trade halves: {} trades tables, {} buy halves, {} sell halves, {} tables checked trade by trade: {}",
        halves.tables.len(),
        halves.buy_halves(),
        halves.sell_halves(),
        halves.tables.iter().filter(|t| t.checked_per_trade).count(),
        if halves.holds() { "holds" } else { "BROKEN" }
    );
    for o in &halves.offenders {
        let rows: Vec<String> = o
            .halves
            .iter()
            .map(|h| {
                format!(
                    "{} on shard {} user {} price {} qty {} amount {}",
                    h.side, h.shard, h.user_id, h.price, h.quantity, h.amount
                )
            })
            .collect();
        println!(
            "  TRADE {} {}: {:?}: {}",
            o.table,
            o.trade_id,
            o.problem,
            rows.join("; ")
        );
    }
    if !(conserved && frozen.holds() && halves.holds()) {
        println!();
        println!(
            "the audit FAILED (conservation and trade halves are exact only while the pipeline is quiescent: rerun once the settlers have caught up)"
        );
    }
    Ok(conserved && frozen.holds() && halves.holds())
}

fn directory(settings: &Settings) -> Result<UserDirectory> {
    let map = ShardMap::connect_lazy(settings)?;
    let redis = redis_pool(&settings.redis)?;
    Ok(UserDirectory::new(
        map,
        redis,
        settings.redis.key_prefix.clone(),
        settings.redis.cache_ttl_s,
    ))
}

type IdSource = std::sync::Arc<dyn Fn() -> Result<u64, router::SnowflakeError> + Send + Sync>;

/// Ids from the configured worker id, else from a worker id leased in Redis (release
/// the lease when done).
async fn id_source(settings: &Settings) -> Result<(Option<WorkerLease>, IdSource)> {
    let sf = &settings.snowflake;
    // a leased worker id issues through its lease (stops if the lease is lost)
    let lease = match sf.worker_id {
        Some(_) => None,
        None => Some(
            WorkerLease::acquire(
                redis_pool(&settings.redis)?,
                &settings.redis.key_prefix,
                sf.datacenter_id,
                Duration::from_millis(sf.lease_ttl_ms),
            )
            .await
            .context("leasing a worker id")?,
        ),
    };
    let next: IdSource = match (&lease, sf.worker_id) {
        (Some(l), _) => {
            let g = l.generator()?;
            std::sync::Arc::new(move || g.next_id())
        }
        (None, w) => {
            let g = router::Snowflake::new(sf.datacenter_id, w.unwrap_or_default())?;
            std::sync::Arc::new(move || g.next_id())
        }
    };
    Ok((lease, next))
}

async fn issue_ids(settings: &Settings, count: u32) -> Result<bool> {
    let (lease, next) = id_source(settings).await?;
    let source = if lease.is_some() {
        "leased in redis"
    } else {
        "from config"
    };
    println!(
        "{:<20} {:<24} {:>3} {:>3} {:>5} month",
        "id", "time (UTC)", "dc", "wk", "seq"
    );
    for _ in 0..count {
        let d = decode(next()?)?;
        println!(
            "{:<20} {:<24} {:>3} {:>3} {:>5} {}",
            d.id,
            d.time().format("%Y-%m-%dT%H:%M:%S%.3fZ"),
            d.datacenter,
            d.worker,
            d.sequence,
            d.month()
        );
    }
    println!("worker id {source}");
    drop(next);
    if let Some(lease) = lease {
        lease.release().await?;
    }
    Ok(true)
}

async fn transfer(
    settings: &Settings,
    from: u64,
    to: u64,
    asset: &str,
    amount: &str,
) -> Result<bool> {
    let map = ShardMap::connect_lazy(settings)?;
    let (lease, next) = id_source(settings).await?;
    let tcc = router::tcc::Tcc::new(map, next);
    let result = tcc
        .transfer(UserId::new(from)?, UserId::new(to)?, asset, amount)
        .await;
    if let Some(lease) = lease {
        lease.release().await?;
    }
    match result {
        Ok(t) => {
            println!(
                "transfer {} {} {amount} {asset} from user {from} to user {to}: {}",
                t.gid,
                if t.local { "(one shard)" } else { "(TCC)" },
                match t.outcome {
                    router::tcc::Outcome::Confirmed => "confirmed",
                    router::tcc::Outcome::Confirming =>
                        "confirming (the recovery loop finishes it)",
                }
            );
            Ok(true)
        }
        Err(router::tcc::TransferError::Router(e)) => Err(e.into()),
        Err(refused) => {
            eprintln!("refused: {refused}");
            Ok(false)
        }
    }
}

async fn tcc(settings: &Settings, action: TccAction) -> Result<bool> {
    let map = ShardMap::connect_lazy(settings)?;
    // resolving and recovering issue no ids
    let no_ids: IdSource = std::sync::Arc::new(|| Err(router::SnowflakeError::LeaseLost));
    let mut tcc = router::tcc::Tcc::new(map, no_ids);
    match action {
        TccAction::List { stuck, json } => {
            let globals = tcc.list(stuck.then_some(Duration::from_secs(60))).await?;
            if json {
                for g in &globals {
                    println!("{}", serde_json::to_string(g)?);
                }
            } else {
                println!(
                    "{:<20} {:<11} {:>8} {:>8} {:<6} {:>24} {:>7} created (UTC)",
                    "gid", "status", "from", "to", "asset", "amount", "retries"
                );
                for g in &globals {
                    println!(
                        "{:<20} {:<11} {:>8} {:>8} {:<6} {:>24} {:>7} {}",
                        g.gid, g.status, g.from, g.to, g.asset, g.amount, g.retries, g.created_at
                    );
                }
                println!("{} unfinished", globals.len());
            }
            Ok(true)
        }
        TccAction::Resolve { gid } => match tcc.resolve(gid).await? {
            Some(true) => {
                println!("transfer {gid}: confirmed");
                Ok(true)
            }
            Some(false) => {
                println!("transfer {gid}: cancelled");
                Ok(true)
            }
            None => {
                println!("transfer {gid}: nothing to do (unknown, final, or moved on meanwhile)");
                Ok(true)
            }
        },
        TccAction::Recover {
            try_timeout_ms,
            watch,
        } => {
            tcc.try_timeout = Duration::from_millis(try_timeout_ms);
            loop {
                let r = match tcc.recover().await {
                    Ok(r) => r,
                    // the loop outlives a meta hiccup; a single pass reports it
                    Err(e) if watch => {
                        eprintln!("recovery pass failed: {e}; retrying in 1 s");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        continue;
                    }
                    Err(e) => return Err(e.into()),
                };
                if r != router::tcc::Recovered::default() || !watch {
                    println!(
                        "recovered: {} confirmed, {} cancelled, {} failed (retried later)",
                        r.confirmed, r.cancelled, r.failed
                    );
                }
                if !watch {
                    return Ok(r.failed == 0);
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

async fn status(settings: &Settings) -> Result<bool> {
    let mut short = settings.clone();
    short.pool.acquire_timeout_ms = 2_000;
    let map = ShardMap::connect_lazy(&short)?;
    let mut all_ok = true;
    println!(
        "{:<6} {:<5} {:<52} {:<22} {:>9} {:>7} {:>12}",
        "place", "state", "url", "version", "migration", "users", "month_tables"
    );
    let meta = probe(map.meta(), "SELECT COUNT(*) FROM user_directory").await;
    all_ok &= print_probe("meta", map.meta_url(), &meta, None);
    for (id, pool) in map.iter() {
        let p = probe(pool, "SELECT COUNT(*) FROM users").await;
        let tables = match &p {
            Ok(_) => map.month_tables(id).await.ok().map(|t| t.len()),
            Err(_) => None,
        };
        all_ok &= print_probe(&format!("shard{}", id.get()), map.url(id), &p, tables);
    }
    // the flow per shard: what the relay still has to publish, withdrawals waiting
    // for review; replication lag needs a replica, none is configured here
    println!();
    println!(
        "{:<6} {:>13} {:>22} {:>16}",
        "place", "relay_backlog", "withdrawals_reviewing", "replication_lag"
    );
    for (id, pool) in map.iter() {
        let backlog: Option<(i64,)> = sqlx::query_as(
            "SELECT COUNT(*) FROM outbox o JOIN outbox_relay r ON r.id = 1 WHERE o.seq > r.published_seq",
        )
        .fetch_optional(pool)
        .await
        .ok()
        .flatten();
        let reviewing: Option<(i64,)> =
            sqlx::query_as("SELECT COUNT(*) FROM withdrawals WHERE status = 'reviewing'")
                .fetch_optional(pool)
                .await
                .ok()
                .flatten();
        let show = |v: Option<(i64,)>| v.map_or_else(|| "?".to_owned(), |(n,)| n.to_string());
        println!(
            "{:<6} {:>13} {:>22} {:>16}",
            format!("shard{}", id.get()),
            show(backlog),
            show(reviewing),
            "no replica"
        );
    }
    let tcc = router::tcc::Tcc::new(
        map.clone(),
        std::sync::Arc::new(|| Err(router::SnowflakeError::LeaseLost)),
    );
    match (tcc.list(None).await, tcc.list(Some(Duration::from_secs(60))).await) {
        (Ok(all), Ok(stuck)) => println!(
            "tcc    {} unfinished transfers, {} stuck (older than 60 s or retried): shardctl tcc list",
            all.len(),
            stuck.len()
        ),
        (Err(e), _) | (_, Err(e)) => println!("tcc    ? ({e})"),
    }
    println!();
    let redis = async {
        let pool = redis_pool(&settings.redis)?;
        let mut conn = tokio::time::timeout(Duration::from_secs(2), pool.get())
            .await
            .context("redis: timed out")??;
        let pong: String = deadpool_redis::redis::cmd("PING")
            .query_async(&mut *conn)
            .await?;
        anyhow::Ok(pong)
    }
    .await;
    match redis {
        Ok(p) => println!(
            "{:<6} {:<5} {:<52} {}",
            "redis",
            "up",
            router::config::redact_url(&settings.redis.url),
            p
        ),
        Err(e) => {
            all_ok = false;
            println!(
                "{:<6} {:<5} {:<52} {e:#}",
                "redis",
                "DOWN",
                router::config::redact_url(&settings.redis.url)
            );
        }
    }
    Ok(all_ok)
}

struct Probe {
    version: String,
    migration: Option<i64>,
    rows: Option<i64>,
}

async fn probe(pool: &sqlx::MySqlPool, count_sql: &str) -> Result<Probe> {
    let (version,): (String,) = sqlx::query_as("SELECT VERSION()").fetch_one(pool).await?;
    let migration: Option<(i64,)> =
        sqlx::query_as("SELECT COALESCE(MAX(version), 0) FROM _sqlx_migrations WHERE success = 1")
            .fetch_optional(pool)
            .await
            .ok()
            .flatten();
    let rows: Option<(i64,)> = sqlx::query_as(count_sql)
        .fetch_optional(pool)
        .await
        .ok()
        .flatten();
    Ok(Probe {
        version: version.chars().take(22).collect(),
        migration: migration.map(|(v,)| v),
        rows: rows.map(|(r,)| r),
    })
}

fn print_probe(place: &str, url: &str, p: &Result<Probe>, tables: Option<usize>) -> bool {
    let dash = || "-".to_owned();
    match p {
        Ok(p) => {
            println!(
                "{:<6} {:<5} {:<52} {:<22} {:>9} {:>7} {:>12}",
                place,
                "up",
                url,
                p.version,
                p.migration.map_or_else(|| "none".into(), |v| v.to_string()),
                p.rows.map_or_else(dash, |v| v.to_string()),
                tables.map_or_else(dash, |v| v.to_string()),
            );
            true
        }
        Err(e) => {
            println!("{place:<6} {:<5} {url:<52} {e:#}", "DOWN");
            false
        }
    }
}

async fn locate(settings: &Settings, what: Locate) -> Result<bool> {
    match what {
        Locate::Id { id } => {
            let d = decode(id)?;
            println!("id          {}", d.id);
            println!(
                "time        {} ({} ms)",
                d.time().format("%Y-%m-%dT%H:%M:%S%.3fZ"),
                d.unix_ms
            );
            println!("datacenter  {}", d.datacenter);
            println!("worker      {}", d.worker);
            println!("sequence    {}", d.sequence);
            println!("month       {}", d.month());
            Ok(true)
        }
        Locate::Order {
            order_id,
            symbol,
            user,
        } => {
            let router = TableRouter::new(&settings.symbols)?;
            let sym = router.symbol(&symbol)?;
            let oid = OrderId::new(order_id)?;
            let table = router.orders_table(&sym, oid)?;
            let d = decode(order_id)?;
            println!("order_id    {order_id}");
            println!("issued      {}", d.time().format("%Y-%m-%dT%H:%M:%S%.3fZ"));
            println!("table       {table}");
            let map = ShardMap::connect_lazy(settings)?;
            let shards: Vec<ShardId> = match user {
                Some(u) => vec![map.shard_of(UserId::new(u)?)],
                None => map.iter().map(|(s, _)| s).collect(),
            };
            let mut found = false;
            for shard in shards {
                map.require_tables(shard, std::slice::from_ref(&table))
                    .await?;
                let sql = format!(
                    "SELECT user_id, CAST(status AS CHAR) FROM `{}` WHERE order_id = ?",
                    table.as_str()
                );
                let row: Option<(u64, String)> = sqlx::query_as(&sql)
                    .bind(order_id)
                    .fetch_optional(map.pool(shard)?)
                    .await
                    .map_err(|e| router::RouterError::db_on_shard(shard.get(), e))?;
                if let Some((uid, status)) = row {
                    println!("shard       {shard} (user {uid}, status {status})");
                    found = true;
                }
            }
            if !found {
                println!("shard       not found in {table} on the shards searched");
            }
            Ok(found)
        }
        Locate::User { user_id } => {
            let dir = directory(settings)?;
            let uid = UserId::new(user_id)?;
            print_user(&dir, uid).await
        }
        Locate::Email { email } => {
            let dir = directory(settings)?;
            match dir.lookup_email(&email).await? {
                Some(uid) => print_user(&dir, uid).await,
                None => bail!("no user with email {email:?}"),
            }
        }
    }
}

async fn print_user(dir: &UserDirectory, uid: UserId) -> Result<bool> {
    let shard = dir.shards().shard_of(uid);
    let present = dir.exists_on_shard(uid).await?;
    println!("user_id     {uid}");
    println!("shard       {shard} ({})", dir.shards().url(shard));
    println!(
        "row         {}",
        if present {
            "present"
        } else {
            "MISSING on its shard"
        }
    );
    Ok(present)
}

/// A refusal is printed and exits 1; infrastructure errors propagate.
fn refused(e: router::funding::FundingError) -> Result<bool> {
    match e {
        router::funding::FundingError::Router(e) => Err(e.into()),
        other => {
            eprintln!("refused: {other}");
            Ok(false)
        }
    }
}

async fn chain(settings: &Settings, action: ChainAction) -> Result<bool> {
    use router::funding;
    let map = ShardMap::connect_lazy(settings)?;
    let result = match action {
        ChainAction::Deposit {
            user,
            asset,
            amount,
            txid,
            chain,
        } => {
            let txid = txid.unwrap_or_else(|| {
                use rand::Rng;
                format!("sim-{:016x}", rand::rng().random::<u64>())
            });
            funding::report_deposit(
                &map,
                UserId::new(user)?,
                &asset,
                &chain,
                &txid,
                "sim-sender",
                &format!("sim-deposit-address-{user}"),
                &amount,
            )
            .await
        }
        ChainAction::Confirm {
            txid,
            asset,
            confirmations,
        } => {
            let n = match confirmations {
                Some(n) => n,
                None => match funding::asset_params(map.meta(), &asset).await {
                    Ok(p) => p.required_confirmations,
                    Err(e) => return refused(e),
                },
            };
            funding::confirm_deposit(&map, &txid, &asset, n).await
        }
    };
    match result {
        Ok(d) => {
            println!(
                "deposit {} {} {} for user {}: {} ({}/{} confirmations){}",
                d.txid,
                d.amount,
                d.asset,
                d.user_id,
                d.status,
                d.confirmations,
                d.required,
                if d.credited { ", credited now" } else { "" }
            );
            Ok(true)
        }
        Err(e) => refused(e),
    }
}

async fn withdraw(settings: &Settings, action: WithdrawAction) -> Result<bool> {
    use router::funding;
    let map = ShardMap::connect_lazy(settings)?;
    let show = |w: &funding::Withdrawal| {
        println!(
            "{:<20} {:>8} {:<6} {:>24} {:>12} {:<10} {:<11} {}",
            w.withdrawal_id,
            w.user_id,
            w.asset,
            w.amount.to_string(),
            w.fee.to_string(),
            w.chain,
            w.status,
            w.address
        );
    };
    let transition = |r: Result<funding::Transition, funding::FundingError>| match r {
        Ok(t) => {
            if t.changed {
                println!(
                    "withdrawal {}: now {}",
                    t.withdrawal.withdrawal_id, t.withdrawal.status
                );
                Ok(true)
            } else {
                eprintln!(
                    "withdrawal {} is {}: nothing changed",
                    t.withdrawal.withdrawal_id, t.withdrawal.status
                );
                Ok(false)
            }
        }
        Err(e) => refused(e),
    };
    match action {
        WithdrawAction::Address {
            user,
            asset,
            chain,
            address,
        } => match funding::add_address(&map, UserId::new(user)?, &asset, &chain, &address, None)
            .await
        {
            Ok(()) => {
                println!("user {user} may withdraw {asset} on {chain} to {address}");
                Ok(true)
            }
            Err(e) => refused(e),
        },
        WithdrawAction::Request {
            user,
            asset,
            chain,
            address,
            amount,
            code,
        } => {
            let (lease, next) = id_source(settings).await?;
            let id = next()?;
            let now = u64::try_from(chrono::Utc::now().timestamp()).unwrap_or(0);
            let r = funding::request_withdrawal(
                &map,
                id,
                UserId::new(user)?,
                &asset,
                &chain,
                &address,
                &amount,
                code.as_deref(),
                now,
            )
            .await;
            if let Some(lease) = lease {
                lease.release().await?;
            }
            match r {
                Ok(w) => {
                    show(&w);
                    Ok(true)
                }
                Err(e) => refused(e),
            }
        }
        WithdrawAction::List { status, json } => {
            let all = match funding::list_withdrawals(&map, status.as_deref()).await {
                Ok(all) => all,
                Err(e) => return refused(e),
            };
            if json {
                for w in &all {
                    println!("{}", serde_json::to_string(w)?);
                }
            } else {
                println!(
                    "{:<20} {:>8} {:<6} {:>24} {:>12} {:<10} {:<11} address",
                    "withdrawal_id", "user", "asset", "amount", "fee", "chain", "status"
                );
                all.iter().for_each(show);
                println!("{} withdrawals", all.len());
            }
            Ok(true)
        }
        WithdrawAction::Approve {
            id,
            reviewer,
            comment,
        } => transition(funding::review(&map, id, true, reviewer, &comment).await),
        WithdrawAction::Reject {
            id,
            reviewer,
            comment,
        } => transition(funding::review(&map, id, false, reviewer, &comment).await),
        WithdrawAction::Process { id } => transition(funding::process(&map, id).await),
        WithdrawAction::Complete { id, txid } => {
            transition(funding::complete(&map, id, &txid).await)
        }
        WithdrawAction::Fail { id, reason } => transition(funding::fail(&map, id, &reason).await),
    }
}
