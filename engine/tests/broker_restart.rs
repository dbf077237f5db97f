//! The broker dies (kill -9) in the middle of a load and comes back: the relays, the
//! matching service and the settlers keep running in-process, reconnect, and every
//! order placed before, during and after the outage ends up matched and settled on both
//! shards exactly once; the money audits hold. (Its own test binary: no other test
//! shares the broker outage.)

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use common::{deposit, req, Harness};
use domain::{OrderType, Side, Symbol};
use engine::metrics::Metrics;
use router::{Month, TableKind};
use tokio::sync::watch;

fn stack(args: &[&str]) {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/stack.sh");
    let status = Command::new("bash")
        .arg(script)
        .args(args)
        .status()
        .expect("run stack.sh");
    assert!(status.success(), "stack.sh {args:?} failed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_crash_mid_load_loses_nothing_and_doubles_nothing() {
    let h = Harness::new("brokerrestart", 21).await;
    let (topics, bus, tag) = h.topics("brokerrestart").await;
    let metrics = Arc::new(Metrics::default());
    let (stop, stop_rx) = watch::channel(false);
    let mut tasks = Vec::new();
    for relay in h.relays(&bus, &topics) {
        let (m, s) = (metrics.clone(), stop_rx.clone());
        tasks.push(tokio::spawn(async move {
            relay.run(Duration::from_millis(5), m, s).await;
        }));
    }
    let (stop_matching, matching) = h.spawn_matching(
        &bus,
        &topics,
        &format!("g_match_{tag}"),
        None,
        metrics.clone(),
    );
    let settlers = h.spawn_settlers(&bus, &topics, &tag, &stop_rx);
    // buyers 1..=4 and sellers 5..=8: two of each on every shard
    for u in 1..=4u64 {
        deposit(&h.env, u, "USDT", "1000000").await;
        deposit(&h.env, u + 4, "BTC", "100").await;
    }

    // place crossing pairs for 6 s; the broker is killed at 2 s and back at 4 s
    let placer = h.placer.clone();
    let load = tokio::spawn(async move {
        let start = Instant::now();
        let mut pairs = 0u64;
        while start.elapsed() < Duration::from_secs(6) {
            let i = pairs % 4;
            for r in [
                req(
                    1 + i,
                    Side::Buy,
                    OrderType::Limit,
                    Some("50000"),
                    Some("0.01"),
                    None,
                ),
                req(
                    5 + i,
                    Side::Sell,
                    OrderType::Limit,
                    Some("50000"),
                    Some("0.01"),
                    None,
                ),
            ] {
                placer.place(&r).await.expect("place").expect("accepted");
            }
            pairs += 1;
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        pairs
    });
    tokio::time::sleep(Duration::from_secs(2)).await;
    let relayed_before = metrics.relayed.load(std::sync::atomic::Ordering::Relaxed);
    tokio::task::spawn_blocking(|| stack(&["kill", "kafka"]))
        .await
        .expect("kill");
    tokio::time::sleep(Duration::from_secs(2)).await;
    tokio::task::spawn_blocking(|| stack(&["start", "kafka"]))
        .await
        .expect("start");
    let pairs = load.await.expect("load");
    assert!(relayed_before > 0, "orders flowed before the crash");
    assert!(pairs > 100, "the load kept placing: {pairs} pairs");

    // every order fills and settles: each buyer spent exactly pairs/4 × 500 USDT
    let sym = Symbol::new("BTCUSDT").expect("s");
    let orders = h
        .router
        .table(TableKind::Orders, &sym, Month::of(Utc::now()))
        .expect("t");
    let until = Instant::now() + Duration::from_secs(120);
    loop {
        let mut filled = 0i64;
        for (_, pool) in h.env.map.iter() {
            let (n,): (i64,) = sqlx::query_as(&format!(
                "SELECT COUNT(*) FROM `{orders}` WHERE status = 'filled'"
            ))
            .fetch_one(pool)
            .await
            .expect("count");
            filled += n;
        }
        if filled == i64::try_from(2 * pairs).expect("n") {
            break;
        }
        assert!(
            Instant::now() < until,
            "{filled} of {} orders filled 120 s after the broker came back",
            2 * pairs
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // a little longer for any duplicate to land, then stop and audit
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.send(true).expect("stop");
    stop_matching.send(true).expect("stop matching");
    matching.await.expect("matching");
    for t in tasks.into_iter().chain(settlers) {
        t.await.expect("task");
    }
    // by hand: buyer 1 + i placed n buys of 0.01 BTC at 50000 (500 USDT each), seller
    // 5 + i n sells; fees are charged in the asset received
    for i in 0..4u64 {
        let n = pairs / 4 + u64::from(i < pairs % 4);
        assert_eq!(
            common::balance(&h.env, 1 + i, "USDT").await,
            (
                common::amt(&(1_000_000 - 500 * n).to_string()),
                domain::Amount::ZERO
            ),
            "buyer {}",
            1 + i
        );
        let left = domain::Amount::from_db_str(&format!(
            "{}.{:02}",
            (10_000 - n) / 100,
            (10_000 - n) % 100
        ))
        .expect("btc");
        assert_eq!(
            common::balance(&h.env, 5 + i, "BTC").await,
            (left, domain::Amount::ZERO),
            "seller {}",
            5 + i
        );
    }
    assert_eq!(
        common::all_audits_hold(&h.env).await,
        (pairs, pairs),
        "one trade per pair, each settled once on each side"
    );
    h.env.drop_all().await;
}
