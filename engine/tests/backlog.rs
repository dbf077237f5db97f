//! A matcher restarted in front of a large backlog catches up (issue 13, defect 0).
//!
//! The chaos run that found it: the engine was killed under ~2,400 orders/s and
//! restarted; the restored matcher read the whole backlog into one round and framed
//! one (shard, symbol)'s output into a single broker message, which the producer
//! refused (`MessageSizeTooLarge`) on every restart, so matching stopped for good.
//!
//! Here: a matcher takes a snapshot and stops; 100,000 orders are placed and relayed
//! while it is down (resting orders on both sides and crossing ones that trade); a new
//! matcher restores the snapshot and faces the whole backlog. Its producer runs with the
//! smallest message limit the engine accepts (16 KiB), so rounds that fit the default
//! 1 MB limit are still cut into many messages: every frame path is exercised. It must
//! apply every input, the settlers must settle everything (a marker order per shard,
//! placed after the backlog, is filled), and the money audits must hold.

mod common;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{deposit, req, Harness};
use domain::{OrderStatus, OrderType, Side, TimeInForce};
use engine::config::MIN_MESSAGE_BYTES;
use engine::metrics::Metrics;
use engine::service::SnapshotStore;
use tokio::sync::watch;

const BACKLOG: usize = 100_000;
const USERS: u64 = 8;
const TASKS: usize = 128;

/// Order `i` of the backlog: resting bids and asks on a 1,000-tick ladder each, and
/// every 50th a sell crossing the bids (trades to settle).
fn backlog_order(i: usize) -> trading::placement::PlaceRequest {
    let user = 1 + (i as u64 % USERS);
    let step = i % 1_000;
    if i % 50 == 49 {
        req(
            user,
            Side::Sell,
            OrderType::Limit,
            Some("40000"),
            Some("0.002"),
            None,
        )
    } else if i % 2 == 0 {
        let price = format!("{}", 40_000 + step);
        req(
            user,
            Side::Buy,
            OrderType::Limit,
            Some(&price),
            Some("0.001"),
            None,
        )
    } else {
        let price = format!("{}", 60_000 + step);
        req(
            user,
            Side::Sell,
            OrderType::Limit,
            Some(&price),
            Some("0.001"),
            None,
        )
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_matcher_restarted_in_front_of_100k_inputs_catches_up_and_settles_them() {
    let h = Harness::new("backlog", 22).await;
    let (topics, mut bus, tag) = h.topics("backlog").await;
    bus.max_message_bytes = MIN_MESSAGE_BYTES;
    let relays: Vec<_> = h
        .relays(&bus, &topics)
        .into_iter()
        .map(|r| r.with_frame_budget(bus.frame_budget()))
        .collect();
    let (stop_tx, stop) = watch::channel(false);
    let settlers = h.spawn_settlers(&bus, &topics, &tag, &stop);
    let relayed = Arc::new(Metrics::default());
    let relay_tasks: Vec<_> = relays
        .iter()
        .cloned()
        .map(|r| {
            let (m, s) = (relayed.clone(), stop.clone());
            tokio::spawn(async move { r.run(Duration::from_millis(5), m, s).await })
        })
        .collect();
    let env = &h.env;
    for u in 1..=USERS {
        deposit(env, u, "USDT", "100000000").await;
        deposit(env, u, "BTC", "10000").await;
    }
    let store = SnapshotStore {
        pool: env.map.meta().clone(),
        every: 1,
        every_time: Duration::from_secs(60),
        keep: 2,
    };
    let group = format!("g_backlog_{tag}");

    // 1. a first matcher sees one order and snapshots
    let first = Arc::new(Metrics::default());
    let (stop1, m1) = h.spawn_matching(&bus, &topics, &group, Some(store.clone()), first.clone());
    let placer = h.placer.clone();
    placer
        .place(&backlog_order(0))
        .await
        .expect("place")
        .expect("accepted");
    let until = Instant::now() + Duration::from_secs(60);
    while first.inputs_applied.load(Ordering::Relaxed) < 1 {
        assert!(Instant::now() < until, "first matcher applied nothing");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop1.send(true).expect("stop");
    m1.await.expect("first matcher");

    // 2. the backlog, placed (group commit, as the gateway will) and relayed while no
    //    matcher runs
    let started = Instant::now();
    let writers: Arc<Vec<_>> = Arc::new(
        env.map
            .iter()
            .map(|(s, _)| placer.group_writer(s, Default::default()))
            .collect(),
    );
    let mut placing = Vec::new();
    for t in 0..TASKS {
        let (placer, writers) = (placer.clone(), writers.clone());
        placing.push(tokio::spawn(async move {
            for i in (1..BACKLOG).filter(|i| i % TASKS == t) {
                placer
                    .place_grouped(&writers, &backlog_order(i))
                    .await
                    .expect("place")
                    .expect("accepted");
            }
        }));
    }
    for p in placing {
        p.await.expect("placing task");
    }
    let until = Instant::now() + Duration::from_secs(120);
    while relayed.relayed.load(Ordering::Relaxed) < BACKLOG as u64 {
        assert!(
            Instant::now() < until,
            "relayed {} of {BACKLOG}",
            relayed.relayed.load(Ordering::Relaxed)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!(
        "backlog of {BACKLOG} placed and relayed in {:?}",
        started.elapsed()
    );
    // one marker per shard after the backlog: a buy crossing the asks, so its taker's
    // shard gets a fill batch after every backlog event of that shard
    let mut markers = Vec::new();
    for u in 1..=4u64 {
        let mut r = req(
            u,
            Side::Buy,
            OrderType::Limit,
            Some("70000"),
            Some("0.001"),
            None,
        );
        r.tif = TimeInForce::Ioc;
        let ack = placer.place(&r).await.expect("place").expect("accepted");
        markers.push((u, ack.order_id));
    }

    // 3. the restored matcher faces it all
    let second = Arc::new(Metrics::default());
    let started = Instant::now();
    let (stop2, m2) = h.spawn_matching(&bus, &topics, &group, Some(store), second.clone());
    let until = Instant::now() + Duration::from_secs(300);
    let want = (BACKLOG - 1 + markers.len()) as u64;
    while second.inputs_applied.load(Ordering::Relaxed) < want {
        assert!(
            !m2.is_finished(),
            "the restored matcher died; applied {}",
            second.inputs_applied.load(Ordering::Relaxed)
        );
        assert!(
            Instant::now() < until,
            "matcher applied {} of {want}",
            second.inputs_applied.load(Ordering::Relaxed)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!("matcher caught up in {:?}", started.elapsed());
    let until = Instant::now() + Duration::from_secs(300);
    for (user, order_id) in &markers {
        loop {
            let found = trading::readers::order(
                &env.map,
                &h.router,
                "BTCUSDT".parse().expect("symbol"),
                *order_id,
                Some(testkit::uid(*user)),
            )
            .await
            .expect("read order");
            if found.first().map(|(_, o)| o.status) == Some(OrderStatus::Filled) {
                break;
            }
            assert!(!m2.is_finished(), "the restored matcher died");
            assert!(
                Instant::now() < until,
                "marker of user {user} not settled: {found:?}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    eprintln!("settled in {:?}", started.elapsed());
    assert_eq!(
        second.inputs_applied.load(Ordering::Relaxed),
        want,
        "every input once, only what followed the snapshot"
    );
    // the makers' halves settle on their own shards, on their own time
    testkit::settle_quiet(env, Duration::from_secs(120)).await;
    common::all_audits_hold(env).await;
    stop2.send(true).expect("stop");
    m2.await.expect("second matcher");
    stop_tx.send(true).expect("stop");
    for t in settlers.into_iter().chain(relay_tasks) {
        t.await.expect("task");
    }
    h.env.drop_all().await;
}
