//! Test support (used by the integration tests of this and other crates). Every
//! function panics on failure: a test with a broken environment should stop loudly.
//!
//! Test isolation against the real services: every test gets its own databases
//! (`t_<name>_<random>` on each shard server and for meta) and its own Redis key
//! prefix; [`TestEnv::drop_all`] removes them. The servers come from the normal
//! settings (defaults / `EXCHANGE_*` env), i.e. the stack `scripts/stack.sh` started.

use crate::directory::redis_pool;
use crate::{Settings, ShardMap, UserDirectory};
use rand::distr::{Alphanumeric, SampleString};

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

/// The conservation and frozen-vs-holds audits hold.
pub async fn audits_hold(env: &TestEnv) {
    for (asset, t) in crate::audit::conservation(&env.map).await.expect("audit") {
        assert!(t.holds(), "{asset}: {t:?}");
    }
    let frozen = crate::audit::frozen_vs_open_orders(&env.map)
        .await
        .expect("frozen audit");
    assert!(frozen.holds(), "{frozen:?}");
}

/// The three money audits hold (conservation, frozen vs holds, trade halves); returns
/// (buy halves, sell halves) for the caller's own count checks.
pub async fn all_audits_hold(env: &TestEnv) -> (u64, u64) {
    audits_hold(env).await;
    let halves = crate::audit::trade_halves(&env.map)
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
