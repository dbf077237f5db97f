//! A shard's MariaDB server is killed with SIGKILL in the middle of a load and
//! restarted on the same data directory (issue 13: "kill -9 of a MariaDB shard server
//! mid-load"). Shard 1 lives on a server of this test's own (`innodb_flush_log_at_trx_commit
//! = 1`), so the kill disturbs no other test; meta and shards 0, 2, 3 stay on the
//! stack. The relays, the matching service and the settlers (with market data) run as
//! three real `engine run` processes the test never restarts.
//!
//! While the server is down: placements of shard 1's users fail with errors naming
//! the shard (or, for one caught in its COMMIT, "outcome unknown" with its id), the
//! other shards keep placing and trading, and `/ready` of the relay and the settler
//! processes turns 503 naming `relay-1` / `settler-1` (the matcher's stays 200). Once it
//! is back every role recovers by itself. Then: every acked order is in its shard's
//! table, every order there reached the matcher exactly once (after a final sweep
//! order, every order is filled to its quantity, holding nothing), every balance is
//! what its filled orders say, to the unit, and the four audits hold with one trade
//! half per side per trade.
//!
//! It found that `/ready` stayed 200 while the shard was down: the relay logged each
//! failed round and tried again, and the settler retried its batch in place, counting
//! the outage toward parking. Both now end the role's attempt (the supervisor shows
//! it down and restarts it). Run with `innodb_flush_log_at_trx_commit = 0` instead the
//! kill loses acked orders the matcher already had, and the test fails (settler-1
//! parks "order … not found on shard 1" and never becomes ready).

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use common::load::{self, limit};
use common::{balance, EngineProcess};
use domain::{Amount, Side, Symbol, UserId};
use rand::distr::{Alphanumeric, SampleString};
use rand::Rng;
use router::{Month, Snowflake, TableKind, TableRouter};
use testkit::mariadb::Server;
use testkit::TestEnv;
use trading::placement::{load_symbols, Placer};

/// The shard whose server is killed.
const DEAD: u16 = 1;
/// How long the load runs; the server is killed at `KILL_AT` and restarted `DOWN` later.
const LOAD: Duration = Duration::from_secs(20);
const KILL_AT: Duration = Duration::from_secs(4);
const DOWN: Duration = Duration::from_secs(8);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_a_shard_server_mid_load_loses_no_acked_order_and_settles_nothing_twice() {
    let mut server = Server::start(
        "shardcrash",
        97,
        "innodb_flush_log_at_trx_commit = 1\ncharacter-set-server = utf8mb4\n\
         collation-server = utf8mb4_unicode_ci\nmax_connections = 500",
    );
    server
        .sql(
            "CREATE USER exchange@'127.0.0.1' IDENTIFIED BY 'exchange'; \
             GRANT ALL ON *.* TO exchange@'127.0.0.1'",
        )
        .expect("user");
    let env = TestEnv::with_shard_on("shardcrash", DEAD, &server.url("exchange")).await;
    let router = TableRouter::new(&["BTCUSDT", "ETHUSDT", "ETHBTC"]).expect("router");
    env.map
        .ensure_tables(&router, Utc::now(), 1)
        .await
        .expect("tables");
    let symbols = load_symbols(env.map.meta()).await.expect("symbols");
    let ids = Arc::new(Snowflake::new(0, 31).expect("ids"));
    // the placer's pools wait 1 s for a connection (a front end's budget): with three
    // attempts a placement to the dead shard fails in about 3 s
    let mut quick = env.settings.clone();
    quick.pool.acquire_timeout_ms = 1_000;
    let placer = Placer::new(
        router::ShardMap::connect_lazy(&quick).expect("pools"),
        router.clone(),
        symbols,
        Arc::new(move || ids.next_id()),
    );

    let tag = Alphanumeric.sample_string(&mut rand::rng(), 8);
    let child_env = common::engine_env(&env, &format!("t_shardcrash_{tag}_"));
    let logs = std::env::temp_dir().join(format!("shardcrash-{tag}"));
    std::fs::create_dir_all(&logs).expect("log dir");
    let base_port = 21_000 + u16::from(rand::rng().random::<u8>()) * 3;
    let mut procs: Vec<EngineProcess> = ["relay", "matcher", "settler,market"]
        .into_iter()
        .enumerate()
        .map(|(i, roles)| {
            EngineProcess::new(
                roles,
                base_port + u16::try_from(i).expect("i"),
                child_env.clone(),
                logs.join(format!("{}.log", roles.replace(',', "-"))),
            )
        })
        .collect();
    for p in &mut procs {
        p.start();
    }
    for p in &procs {
        p.ready().await;
    }
    let (relay, matching, settler) = (&procs[0], &procs[1], &procs[2]);

    load::fund(&env).await;
    common::deposit(&env, 5, "ETH", "1").await;
    // a resting ETHUSDT sell of shard 1's seller: taken during the outage by a buyer
    // of shard 2, so shard 1's settler has a batch it cannot apply while its server is
    // down
    let probe_sell = placer
        .place(&limit(5, "ETHUSDT", Side::Sell, "3000", "0.1"))
        .await
        .expect("place")
        .expect("accepted")
        .order_id;

    let start = Instant::now();
    let load = load::crossing_load(&placer, start, LOAD, Duration::from_millis(25));
    tokio::time::sleep(KILL_AT).await;
    server.kill9();
    let killed_at = Instant::now();
    // shard 2's buyer takes the probe sell while shard 1 is down
    tokio::time::sleep(Duration::from_millis(500)).await;
    let probe_buy = placer
        .place(&limit(2, "ETHUSDT", Side::Buy, "3000", "0.1"))
        .await
        .expect("place on a live shard")
        .expect("accepted")
        .order_id;
    // /ready while it is down: the relay and the settler processes name their shard-1
    // roles; the matcher (meta and the broker only) stays ready
    let mut red: BTreeMap<&str, String> = BTreeMap::new();
    while killed_at.elapsed() < DOWN {
        for (name, p) in [("relay", relay), ("settler", settler)] {
            if let Some((503, body)) = p.readiness().await {
                red.entry(name).or_insert(body);
            }
        }
        let m = matching.readiness().await;
        assert_eq!(
            m.as_ref().map(|r| r.0),
            Some(200),
            "the matcher does not need shard 1: {m:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let restarting = Instant::now();
    tokio::task::block_in_place(|| server.restart());
    let back_at = Instant::now();
    let placed = load::placed(load).await;
    println!(
        "down {:?}; /ready while down: {red:#?}",
        back_at - killed_at
    );
    let relay_red = red
        .get("relay")
        .expect("relay /ready red while shard 1 was down");
    assert!(
        relay_red.contains("relay-1") && relay_red.contains("shard 1"),
        "{relay_red}"
    );
    let settler_red = red
        .get("settler")
        .expect("settler /ready red while shard 1 was down");
    assert!(
        settler_red.contains("settler-1") && settler_red.contains("shard 1"),
        "{settler_red}"
    );
    for (u, p) in &placed {
        println!(
            "user {u}: {} acked, {} failed, first failure {:?}",
            p.acked.len(),
            p.failed.len(),
            p.failed.first().map(|f| (&f.1, f.2 - killed_at))
        );
    }
    for (u, p) in &placed {
        let during = |t: &Instant| *t > killed_at + Duration::from_millis(200) && *t < restarting;
        if *u % 4 == u64::from(DEAD) {
            assert!(
                !p.failed.is_empty(),
                "user {u} on the dead shard: no failure"
            );
            for (kind, text, _) in &p.failed {
                let clear = match kind {
                    domain::ErrorKind::Unavailable => text.contains("shard 1"),
                    domain::ErrorKind::OutcomeUnknown => text.contains("outcome unknown"),
                    _ => false,
                };
                assert!(clear, "user {u}: unclear failure ({kind:?}) {text}");
            }
            assert!(
                !p.acked.iter().any(|(_, t)| during(t)),
                "user {u}: acked while its shard was down?"
            );
            assert!(
                p.acked.iter().any(|(_, t)| *t > back_at),
                "user {u}: nothing placed after the shard came back: {:?}",
                p.failed.last()
            );
        } else {
            assert!(p.failed.is_empty(), "user {u}: {:?}", p.failed);
            assert!(
                p.acked.iter().any(|(_, t)| during(t)),
                "user {u} kept placing while shard 1 was down"
            );
        }
    }

    // every role comes back by itself: the test restarts no engine process
    for p in &procs {
        load::green(p, Duration::from_secs(60)).await;
    }
    // by their supervisors: shard 1's roles were restarted, the others never failed
    for (p, role, failed) in [
        (relay, "relay-1", true),
        (relay, "relay-0", false),
        (relay, "relay-2", false),
        (settler, "settler-1", true),
        (settler, "settler-3", false),
    ] {
        let n = load::restarts(p, role).await;
        assert_eq!(n > 0, failed, "{role} restarted {n} times");
    }
    let trades = load::all_filled_once(&env, &router, &placer, &placed, &[(2, 300)]).await;
    let eth_orders = router
        .table(
            TableKind::Orders,
            &Symbol::new("ETHUSDT").expect("s"),
            Month::of(Utc::now()),
        )
        .expect("t");
    for (probe, user) in [(probe_sell, 5u64), (probe_buy, 2)] {
        let (status,): (String,) = sqlx::query_as(&format!(
            "SELECT CAST(status AS CHAR) FROM `{eth_orders}` WHERE order_id = ?"
        ))
        .bind(probe.get())
        .fetch_one(env.map.pool_for(UserId::new(user).expect("u")))
        .await
        .expect("probe");
        assert_eq!(status, "filled", "ETHUSDT probe of user {user}");
    }
    assert_eq!(
        balance(&env, 5, "ETH").await,
        (common::amt("0.9"), Amount::ZERO)
    );
    assert_eq!(
        testkit::all_audits_hold(&env).await,
        (trades + 1, trades + 1),
        "one trade per 0.01 BTC sold plus the ETHUSDT probe, each settled once per side"
    );
    println!("took {:?}", start.elapsed());
    drop(procs);
    env.drop_all().await;
    drop(server);
}
