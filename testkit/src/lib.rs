//! Test support for the integration tests of every crate (a dev-dependency only; the
//! `loadtest` tool uses it for its isolated databases). Every function panics on failure:
//! a test with a broken environment should stop loudly.
//!
//! Test isolation against the real services: every test gets its own databases
//! (`t_<name>_<random>` on each shard server and for meta) and its own Redis key
//! prefix; [`TestEnv::drop_all`] removes them. The servers come from the normal
//! settings (defaults / `EXCHANGE_*` env), i.e. the stack `scripts/stack.sh` started.

pub mod engine;
pub mod mariadb;
pub mod proxy;

use rand::distr::{Alphanumeric, SampleString};
use router::directory::redis_pool;
use router::{Settings, ShardMap, UserDirectory};

/// One test's databases, Redis prefix and pools.
#[derive(Debug)]
pub struct TestEnv {
    /// Settings pointing at this test's databases.
    pub settings: Settings,
    /// Pools of this test's databases.
    pub map: ShardMap,
    /// Redis key prefix of this test.
    pub prefix: String,
}

fn with_database(url: &str, db: &str) -> String {
    let (server, _) = url.rsplit_once('/').expect("url has a database part");
    format!("{server}/{db}")
}

impl TestEnv {
    /// Fresh databases on every shard server and meta, migrated up.
    pub async fn new(name: &str) -> TestEnv {
        let env = Self::unmigrated(name).await;
        env.map.migrate_up().await.expect("migrate up");
        env
    }

    /// Fresh, empty databases (created, not migrated).
    pub async fn unmigrated(name: &str) -> TestEnv {
        let tag = Alphanumeric
            .sample_string(&mut rand::rng(), 6)
            .to_lowercase();
        let db = format!("t_{name}_{tag}");
        let mut settings = Settings::load().expect("settings");
        settings.shards = settings
            .shards
            .iter()
            .map(|u| with_database(u, &db))
            .collect();
        settings.meta = with_database(&settings.meta, &format!("{db}_meta"));
        settings.pool.max_connections = 80;
        settings.redis.key_prefix = format!("test:{db}:");
        let map = ShardMap::connect_creating(&settings)
            .await
            .expect("create test databases");
        TestEnv {
            prefix: settings.redis.key_prefix.clone(),
            settings,
            map,
        }
    }

    /// Fresh migrated databases for four shards and meta, all on the one server at
    /// `server_url` (`mysql://user:pass@host:port`): for a server configured unlike the
    /// stack's ([`mariadb::Server`]). Redis is the stack's, under a prefix of its own.
    pub async fn on_one_server(name: &str, server_url: &str) -> TestEnv {
        let tag = Alphanumeric
            .sample_string(&mut rand::rng(), 6)
            .to_lowercase();
        let db = format!("t_{name}_{tag}");
        let mut settings = Settings::load().expect("settings");
        let n = settings.shards.len();
        settings.shards = (0..n).map(|i| format!("{server_url}/{db}_{i}")).collect();
        settings.meta = format!("{server_url}/{db}_meta");
        settings.redis.key_prefix = format!("test:{db}:");
        let map = ShardMap::connect_creating(&settings)
            .await
            .expect("create test databases");
        map.migrate_up().await.expect("migrate up");
        TestEnv {
            prefix: settings.redis.key_prefix.clone(),
            settings,
            map,
        }
    }

    /// Fresh migrated databases like [`TestEnv::new`], except that shard `shard` lives
    /// on the server at `server_url` (`mysql://user:pass@host:port`, e.g. a
    /// [`mariadb::Server`] the test may kill); meta and the other shards stay on the
    /// stack's servers.
    ///
    /// # Panics
    /// When `shard` is not a configured shard, or the databases cannot be created.
    pub async fn with_shard_on(name: &str, shard: u16, server_url: &str) -> TestEnv {
        let tag = Alphanumeric
            .sample_string(&mut rand::rng(), 6)
            .to_lowercase();
        let db = format!("t_{name}_{tag}");
        let mut settings = Settings::load().expect("settings");
        let slot = usize::from(shard);
        assert!(slot < settings.shards.len(), "no shard {shard}");
        settings.shards = settings
            .shards
            .iter()
            .enumerate()
            .map(|(i, u)| {
                if i == slot {
                    format!("{server_url}/{db}")
                } else {
                    with_database(u, &db)
                }
            })
            .collect();
        settings.meta = with_database(&settings.meta, &format!("{db}_meta"));
        settings.pool.max_connections = 80;
        settings.redis.key_prefix = format!("test:{db}:");
        let map = ShardMap::connect_creating(&settings)
            .await
            .expect("create test databases");
        map.migrate_up().await.expect("migrate up");
        TestEnv {
            prefix: settings.redis.key_prefix.clone(),
            settings,
            map,
        }
    }

    /// A user directory over this test's databases.
    pub fn directory(&self) -> UserDirectory {
        UserDirectory::new(self.map.clone(), self.redis(), self.prefix.clone(), 60)
    }

    /// A Redis pool.
    pub fn redis(&self) -> deadpool_redis::Pool {
        redis_pool(&self.settings.redis).expect("redis pool")
    }

    /// Drops this test's databases and Redis keys.
    pub async fn drop_all(self) {
        for (id, pool) in self.map.iter() {
            let (db,): (String,) = sqlx::query_as("SELECT DATABASE()")
                .fetch_one(pool)
                .await
                .expect("db name");
            sqlx::query(&format!("DROP DATABASE IF EXISTS `{db}`"))
                .execute(pool)
                .await
                .unwrap_or_else(|e| panic!("drop shard {id} db: {e}"));
        }
        let (db,): (String,) = sqlx::query_as("SELECT DATABASE()")
            .fetch_one(self.map.meta())
            .await
            .expect("db");
        sqlx::query(&format!("DROP DATABASE IF EXISTS `{db}`"))
            .execute(self.map.meta())
            .await
            .expect("drop meta db");
        let mut conn = self.redis().get().await.expect("redis");
        let keys: Vec<String> = deadpool_redis::redis::cmd("KEYS")
            .arg(format!("{}*", self.prefix))
            .query_async(&mut *conn)
            .await
            .expect("keys");
        if !keys.is_empty() {
            let _: () = deadpool_redis::redis::cmd("DEL")
                .arg(keys)
                .query_async(&mut *conn)
                .await
                .expect("del");
        }
    }
}

/// Tables of the current database of `pool`, sorted.
pub async fn tables(pool: &sqlx::MySqlPool) -> Vec<String> {
    let rows: Vec<(String,)> = sqlx::query_as(
        "SELECT CAST(table_name AS CHAR) FROM information_schema.tables WHERE table_schema = DATABASE() ORDER BY 1",
    )
    .fetch_all(pool)
    .await
    .expect("list tables");
    rows.into_iter().map(|(t,)| t).collect()
}

/// `(available, frozen)` of `user`'s spot `asset` (zero when there is no row).
pub async fn balance(env: &TestEnv, user: u64, asset: &str) -> (domain::Amount, domain::Amount) {
    let user_id = domain::UserId::new(user).expect("user");
    let row: Option<(String, String)> = sqlx::query_as(
        "SELECT CAST(available AS CHAR), CAST(frozen AS CHAR) FROM account_balances \
         WHERE user_id = ? AND currency = ? AND account_type = 'spot'",
    )
    .bind(user)
    .bind(asset)
    .fetch_optional(env.map.pool_for(user_id))
    .await
    .expect("balance");
    let amount = |s: &str| domain::Amount::from_db_str(s).expect("amount");
    row.map_or((domain::Amount::ZERO, domain::Amount::ZERO), |(a, f)| {
        (amount(&a), amount(&f))
    })
}

/// The conservation, frozen-vs-holds and ledger replay audits hold.
pub async fn audits_hold(env: &TestEnv) {
    for (asset, t) in ledger::audit::conservation(&env.map).await.expect("audit") {
        assert!(t.holds(), "{asset}: {t:?}");
    }
    let frozen = ledger::audit::frozen_vs_open_orders(&env.map)
        .await
        .expect("frozen audit");
    assert!(frozen.holds(), "{frozen:?}");
    let replay = ledger::audit::ledger_replay(&env.map)
        .await
        .expect("ledger replay");
    assert!(replay.holds(), "ledger replay: {replay:#?}");
}

/// The four money audits hold (conservation, frozen vs holds, ledger replay, trade
/// halves); returns (buy halves, sell halves) for the caller's own count checks.
pub async fn all_audits_hold(env: &TestEnv) -> (u64, u64) {
    audits_hold(env).await;
    let halves = ledger::audit::trade_halves(&env.map)
        .await
        .expect("halves audit");
    assert!(
        halves.holds(),
        "{:?} {:?}",
        halves.offenders,
        halves.misplaced
    );
    (halves.buy_halves(), halves.sell_halves())
}

/// The status of TCC global `gid` (`trying`, `confirming`, …).
pub async fn global_status(env: &TestEnv, gid: u64) -> String {
    let (s,): (String,) =
        sqlx::query_as("SELECT CAST(status AS CHAR) FROM tcc_global WHERE gid = ?")
            .bind(gid)
            .fetch_one(env.map.meta())
            .await
            .expect("global");
    s
}

/// An exact amount from text.
pub fn amt(s: &str) -> domain::Amount {
    s.parse().expect("amount")
}

/// A user id.
pub fn uid(u: u64) -> domain::UserId {
    domain::UserId::new(u).expect("user")
}

/// Registers `n` users (dense ids 1..=n: user u lives on shard u % 4).
pub async fn users(env: &TestEnv, n: u64) {
    let dir = env.directory();
    for i in 1..=n {
        let r = dir
            .register(&format!("u{i}@money.test"), router::directory::NO_PASSWORD)
            .await
            .expect("register");
        assert_eq!(r.user_id.get(), i);
    }
}

/// An internal deposit (deposit row, balance and ledger together).
pub async fn deposit(env: &TestEnv, user: u64, asset: &str, amount: &str) {
    ledger::balances::credit_deposit(
        &env.map,
        uid(user),
        &domain::Asset::new(asset).expect("asset"),
        amt(amount),
        &format!("dep-{user}-{asset}-{amount}"),
    )
    .await
    .expect("deposit");
}

/// The workspace's own build of binary `name`, next to the running test
/// (`target/<profile>/<name>`); `cargo test --workspace` builds every binary before any
/// test runs. A test binary run alone needs `cargo build -p <crate>` first, and says so.
///
/// # Panics
/// When the binary is not there.
pub fn workspace_bin(name: &str) -> std::path::PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    // target/<profile>/deps/<test> → target/<profile>/<name>
    let bin = exe
        .parent()
        .and_then(std::path::Path::parent)
        .map(|d| d.join(format!("{name}{}", std::env::consts::EXE_SUFFIX)))
        .expect("target dir");
    assert!(
        bin.exists(),
        "{} is missing: build it with `cargo build --bins` (cargo test --workspace does)",
        bin.display()
    );
    bin
}

/// `shardctl` pointed at `env`'s databases and Redis prefix, with quiet logs: add
/// arguments (and environment), then run it.
///
/// The binary is the workspace's own build next to the running test
/// (`target/<profile>/shardctl`); `cargo test --workspace` builds it before any test
/// runs. A test binary of another package run alone needs `cargo build -p shardctl`
/// first, and says so.
pub fn shardctl(env: &TestEnv) -> std::process::Command {
    let mut c = std::process::Command::new(workspace_bin("shardctl"));
    c.env("EXCHANGE_SHARD_URLS", env.settings.shards.join(","))
        .env("EXCHANGE_META", &env.settings.meta)
        .env("EXCHANGE_REDIS__KEY_PREFIX", &env.prefix)
        .env("RUST_LOG", "warn");
    c
}

/// Databases with this month's tables and the symbol config, and a placer over them:
/// what every placement test starts from.
#[derive(Debug)]
pub struct Placement {
    /// This test's databases and Redis prefix.
    pub env: TestEnv,
    /// The table router of `BTCUSDT`, `ETHUSDT`, `ETHBTC`.
    pub router: router::TableRouter,
    /// The symbols' configuration, as loaded from meta.
    pub symbols: std::collections::BTreeMap<domain::Symbol, trading::placement::SymbolConfig>,
    /// A placer issuing order ids from snowflake worker `worker`.
    pub placer: trading::placement::Placer,
}

/// Fresh databases named after `name` with month tables and the symbol config, and a
/// placer issuing order ids from snowflake worker `worker`.
pub async fn placement(name: &str, worker: u8) -> Placement {
    let env = TestEnv::new(name).await;
    let router = router::TableRouter::new(&["BTCUSDT", "ETHUSDT", "ETHBTC"]).expect("router");
    env.map
        .ensure_tables(&router, chrono::Utc::now(), 1)
        .await
        .expect("tables");
    let symbols = trading::placement::load_symbols(env.map.meta())
        .await
        .expect("symbols");
    let ids = std::sync::Arc::new(router::Snowflake::new(0, worker).expect("ids"));
    let placer = trading::placement::Placer::new(
        env.map.clone(),
        router.clone(),
        symbols.clone(),
        std::sync::Arc::new(move || ids.next_id()),
    );
    Placement {
        env,
        router,
        symbols,
        placer,
    }
}

/// A BTCUSDT GTC request of `user` (no client order id).
pub fn order_request(
    user: u64,
    side: domain::Side,
    ty: domain::OrderType,
    price: Option<&str>,
    qty: Option<&str>,
    quote: Option<&str>,
) -> trading::placement::PlaceRequest {
    trading::placement::PlaceRequest {
        user_id: uid(user),
        symbol: "BTCUSDT".parse().expect("symbol"),
        side,
        order_type: ty,
        tif: domain::TimeInForce::Gtc,
        price: price.map(|p| p.parse().expect("price")),
        qty: qty.map(|q| q.parse().expect("qty")),
        quote_qty: quote.map(amt),
        stop_price: None,
        stp: matcher::StpMode::None,
        client_order_id: None,
        market_reference: None,
    }
}

/// Waits (at most `within`) until the pipeline is quiet for `env`: the conservation
/// audit holds and every shard's balances and order rows stay unchanged for a second.
/// Market data can run ahead of settlement, so a test that watched a trade on a stream
/// calls this before the audits.
///
/// # Panics
/// When it does not settle in time.
pub async fn settle_quiet(env: &TestEnv, within: std::time::Duration) {
    let until = std::time::Instant::now() + within;
    let fingerprint = || async {
        let mut f = Vec::new();
        for (_, pool) in env.map.iter() {
            let row: (Option<String>, Option<String>, i64) = sqlx::query_as(
                "SELECT CAST(SUM(available) AS CHAR), CAST(SUM(frozen) AS CHAR), CAST(COALESCE(SUM(version), 0) AS SIGNED) FROM account_balances",
            )
            .fetch_one(pool)
            .await
            .expect("balances");
            f.push(row);
        }
        f
    };
    let mut last = fingerprint().await;
    let mut since = std::time::Instant::now();
    loop {
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        let now = fingerprint().await;
        if now != last {
            last = now;
            since = std::time::Instant::now();
        } else if since.elapsed() >= std::time::Duration::from_secs(1) {
            let totals = ledger::audit::conservation(&env.map).await.expect("audit");
            if totals.iter().all(|(_, t)| t.holds()) {
                return;
            }
        }
        assert!(
            std::time::Instant::now() < until,
            "the pipeline did not settle within {within:?}"
        );
    }
}
