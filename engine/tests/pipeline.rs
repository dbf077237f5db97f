//! The order pipeline through the real broker: placement → outbox relay → `orders` →
//! matching service → `fills` → four settlers. Users on all four shards trade; the
//! matching service is killed and restarted (it rebuilds its books by replay and
//! re-emits everything, or resumes from a snapshot), and nothing is applied twice.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use common::{amt, balance, deposit, relay_all, req, settled, Harness};
use domain::{Amount, OrderType, Side, Symbol, UserId};
use engine::metrics::Metrics;
use engine::service::SnapshotStore;
use ledger::audit::conservation;
use testkit::TestEnv;
use tokio::sync::watch;
use trading::placement::PlaceRequest;

async fn audit_holds(env: &TestEnv) {
    for (asset, t) in conservation(&env.map).await.expect("audit") {
        assert!(t.holds(), "{asset}: {t:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orders_flow_through_the_broker_and_a_restarted_matcher_applies_nothing_twice() {
    let h = Harness::new("pipeline", 13).await;
    let (topics, bus, tag) = h.topics("pipe").await;
    let relays = h.relays(&bus, &topics);
    let group = format!("g_match_{tag}");
    let (stop_matching, matching) =
        h.spawn_matching(&bus, &topics, &group, None, Default::default());
    let (stop_settlers, settlers_rx) = watch::channel(false);
    let settlers = h.spawn_settlers(&bus, &topics, &tag, &settlers_rx);
    let env = &h.env;
    let mut user2 = common::user_messages(env, 2).await;
    for (user, asset, amount) in [
        (1u64, "BTC", "1"),
        (4, "BTC", "0.5"),
        (2, "USDT", "10000"),
        (3, "USDT", "5000"),
    ] {
        deposit(env, user, asset, amount).await;
    }
    let place = |r: PlaceRequest| {
        let placer = h.placer.clone();
        async move {
            placer
                .place(&r)
                .await
                .expect("place")
                .expect("accepted")
                .order_id
        }
    };
    let sell1 = place(req(
        1,
        Side::Sell,
        OrderType::Limit,
        Some("50000"),
        Some("0.5"),
        None,
    ))
    .await;
    let sell4 = place(req(
        4,
        Side::Sell,
        OrderType::Limit,
        Some("50100"),
        Some("0.2"),
        None,
    ))
    .await;
    relay_all(&relays).await;
    place(req(
        2,
        Side::Buy,
        OrderType::Limit,
        Some("50200"),
        Some("0.15"),
        None,
    ))
    .await;
    relay_all(&relays).await;
    place(req(
        3,
        Side::Buy,
        OrderType::Market,
        None,
        None,
        Some("5000"),
    ))
    .await;
    relay_all(&relays).await;
    settled(env, 3, "BTC", ("0.0999", "0")).await;
    h.placer
        .cancel(
            UserId::new(1).expect("u"),
            "BTCUSDT".parse().expect("symbol"),
            sell1,
        )
        .await
        .expect("cancel")
        .expect("ok");
    relay_all(&relays).await;

    settled(env, 1, "BTC", ("0.75", "0")).await;
    settled(env, 1, "USDT", ("12487.5", "0")).await;
    settled(env, 2, "USDT", ("2500", "0")).await;
    settled(env, 2, "BTC", ("0.14985", "0")).await;
    settled(env, 3, "USDT", ("0", "0")).await;
    settled(env, 4, "BTC", ("0.3", "0.2")).await;
    // user 2's stream: its buy's execution report (filled at 50000, maker sell1) and its
    // balances after the fill
    let mut got = Vec::new();
    while got.len() < 3 {
        let m = tokio::time::timeout(Duration::from_secs(30), user2.recv())
            .await
            .expect("user 2's private events")
            .expect("open");
        got.push(m);
    }
    let report = got
        .iter()
        .find(|m| m["e"] == "executionReport")
        .expect("execution report");
    assert_eq!(report["X"], "FILLED", "{report}");
    assert_eq!(report["s"], "BTCUSDT");
    assert_eq!(amt(report["z"].as_str().expect("z")), amt("0.15"));
    assert_eq!(
        amt(report["fills"][0]["L"].as_str().expect("L")),
        amt("50000")
    );
    let position = |asset: &str| {
        got.iter()
            .find(|m| m["e"] == "outboundAccountPosition" && m["a"] == asset)
            .map(|m| {
                (
                    amt(m["f"].as_str().expect("f")),
                    amt(m["l"].as_str().expect("l")),
                )
            })
    };
    assert_eq!(position("USDT"), Some((amt("2500"), amt("0"))));
    assert_eq!(position("BTC"), Some((amt("0.14985"), amt("0"))));

    // the matching service dies; its replacement replays `orders` from the start and
    // re-emits every batch, which the settlers recognise and skip
    stop_matching.send(true).expect("stop");
    matching.await.expect("matching stopped");
    let (stop_matching, matching) =
        h.spawn_matching(&bus, &topics, &group, None, Default::default());
    h.placer
        .cancel(
            UserId::new(4).expect("u"),
            "BTCUSDT".parse().expect("symbol"),
            sell4,
        )
        .await
        .expect("cancel")
        .expect("ok");
    relay_all(&relays).await;
    settled(env, 4, "BTC", ("0.5", "0")).await;
    // a little longer for any duplicate to land, then everything is as before
    tokio::time::sleep(Duration::from_secs(2)).await;
    settled(env, 1, "USDT", ("12487.5", "0")).await;
    settled(env, 2, "BTC", ("0.14985", "0")).await;
    settled(env, 3, "BTC", ("0.0999", "0")).await;
    audit_holds(env).await;
    stop_matching.send(true).expect("stop");
    stop_settlers.send(true).expect("stop");
    matching.await.expect("matching");
    for s in settlers {
        s.await.expect("settler");
    }
    h.env.drop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_four_tasks_placing_and_cancelling_leave_nothing_frozen() {
    let h = Harness::new("race", 15).await;
    let (topics, bus, tag) = h.topics("race").await;
    let (stop, stop_rx) = watch::channel(false);
    let mut tasks = Vec::new();
    // relays, polling
    for relay in h.relays(&bus, &topics) {
        let mut rx = stop_rx.clone();
        tasks.push(tokio::spawn(async move {
            loop {
                relay.round().await.expect("relay");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(5)) => {}
                    _ = rx.changed() => return,
                }
            }
        }));
    }
    let (stop_matching, matching) = h.spawn_matching(
        &bus,
        &topics,
        &format!("g_race_{tag}"),
        None,
        Default::default(),
    );
    tasks.extend(h.spawn_settlers(&bus, &topics, &tag, &stop_rx));
    let (env, placer, router) = (&h.env, &h.placer, &h.router);
    let users: Vec<UserId> = (1..=4).map(|u| UserId::new(u).expect("u")).collect();
    for u in &users {
        for (asset, a) in [("BTC", "10"), ("USDT", "1000000")] {
            deposit(env, u.get(), asset, a).await;
        }
    }
    // 64 tasks place and cancel on the same four users at once; cancels race fills
    let workers: Vec<_> = (0..64u64)
        .map(|t| {
            let placer = placer.clone();
            let user = users[usize::try_from(t % 4).expect("i")];
            tokio::spawn(async move {
                for i in 0..8u64 {
                    let side = if (t + i) % 2 == 0 {
                        Side::Buy
                    } else {
                        Side::Sell
                    };
                    let price = format!("{}.{:02}", 50_000 + (t * 7 + i * 3) % 5, (t + i) % 100);
                    let qty = format!("0.00{}", 1 + (t + i) % 9);
                    let r = req(
                        user.get(),
                        side,
                        OrderType::Limit,
                        Some(&price),
                        Some(&qty),
                        None,
                    );
                    let ack = placer.place(&r).await.expect("place").expect("accepted");
                    if (t + i) % 2 == 1 {
                        // may already be filled: then it is a clean reject
                        placer
                            .cancel(user, "BTCUSDT".parse().expect("symbol"), ack.order_id)
                            .await
                            .expect("cancel")
                            .ok();
                    }
                }
            })
        })
        .collect();
    for w in workers {
        w.await.expect("worker");
    }
    // cancel whatever is still open until nothing is; then nothing may stay frozen
    let orders = router
        .table(
            router::TableKind::Orders,
            &Symbol::new("BTCUSDT").expect("s"),
            router::Month::of(Utc::now()),
        )
        .expect("t");
    let until = Instant::now() + Duration::from_secs(120);
    loop {
        let mut open = Vec::new();
        for (_, pool) in env.map.iter() {
            let rows: Vec<(u64, u64)> = sqlx::query_as(&format!(
                "SELECT user_id, order_id FROM `{orders}` WHERE status IN ('new', 'partially_filled')"
            ))
            .fetch_all(pool)
            .await
            .expect("open orders");
            open.extend(rows);
        }
        if open.is_empty() {
            break;
        }
        for (u, id) in open {
            let (u, id) = (
                UserId::new(u).expect("u"),
                domain::OrderId::new(id).expect("id"),
            );
            placer
                .cancel(u, "BTCUSDT".parse().expect("symbol"), id)
                .await
                .expect("cancel")
                .ok();
        }
        assert!(Instant::now() < until, "orders stayed open");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // every order is final and settled: nothing may stay frozen
    for u in &users {
        for asset in ["BTC", "USDT"] {
            assert_eq!(
                balance(env, u.get(), asset).await.1,
                Amount::ZERO,
                "user {u} {asset} still frozen"
            );
        }
    }
    let mut halves = BTreeMap::new();
    for (_, pool) in env.map.iter() {
        let rows: Vec<(String, String, String, String)> = sqlx::query_as(&format!(
            "SELECT CAST(status AS CHAR), CAST(quantity AS CHAR), CAST(filled_quantity AS CHAR), CAST(frozen_amount AS CHAR) FROM `{orders}`"
        ))
        .fetch_all(pool)
        .await
        .expect("orders");
        for (status, qty, filled, frozen) in rows {
            let (qty, filled) = (amt(&qty), amt(&filled));
            assert_eq!(
                amt(&frozen),
                Amount::ZERO,
                "{status} order still holds funds"
            );
            match status.as_str() {
                "filled" => assert_eq!(filled, qty),
                "canceled" => assert!(filled.get() < qty.get(), "cancelled after a complete fill"),
                other => panic!("unexpected final status {other}"),
            }
        }
        let trades = router
            .table(
                router::TableKind::Trades,
                &Symbol::new("BTCUSDT").expect("s"),
                router::Month::of(Utc::now()),
            )
            .expect("t");
        let rows: Vec<(String, i64)> = sqlx::query_as(&format!(
            "SELECT CAST(side AS CHAR), COUNT(*) FROM `{trades}` GROUP BY side"
        ))
        .fetch_all(pool)
        .await
        .expect("trades");
        for (side, n) in rows {
            *halves.entry(side).or_insert(0) += n;
        }
    }
    assert!(
        halves.get("buy").copied().unwrap_or(0) > 0,
        "the race should trade"
    );
    assert_eq!(halves.get("buy"), halves.get("sell"));
    audit_holds(env).await;
    stop.send(true).expect("stop");
    stop_matching.send(true).expect("stop");
    matching.await.expect("matching");
    for t in tasks {
        t.await.expect("task");
    }
    h.env.drop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_matcher_resumes_from_its_snapshot() {
    let h = Harness::new("snap", 16).await;
    let (topics, bus, tag) = h.topics("snap").await;
    let relays = h.relays(&bus, &topics);
    let (stop_settlers, settlers_rx) = watch::channel(false);
    let settlers = h.spawn_settlers(&bus, &topics, &tag, &settlers_rx);
    let (env, placer) = (&h.env, &h.placer);
    let store = SnapshotStore {
        pool: env.map.meta().clone(),
        every: 1,
        every_time: Duration::from_secs(60),
        keep: 2,
    };
    let group = format!("g_snapm_{tag}");
    let first = Arc::new(Metrics::default());
    let (stop1, m1) = h.spawn_matching(&bus, &topics, &group, Some(store.clone()), first.clone());

    deposit(env, 1, "BTC", "1").await;
    deposit(env, 2, "USDT", "100000").await;
    let place = |r: PlaceRequest| {
        let placer = placer.clone();
        async move { placer.place(&r).await.expect("place").expect("accepted") }
    };
    place(req(
        1,
        Side::Sell,
        OrderType::Limit,
        Some("50000"),
        Some("0.5"),
        None,
    ))
    .await;
    relay_all(&relays).await;
    place(req(
        2,
        Side::Buy,
        OrderType::Limit,
        Some("50000"),
        Some("0.1"),
        None,
    ))
    .await;
    relay_all(&relays).await;
    settled(env, 2, "BTC", ("0.0999", "0")).await;
    stop1.send(true).expect("stop");
    m1.await.expect("first matcher");
    let (snapshots,): (i64,) =
        sqlx::query_as("SELECT COUNT(*) FROM matcher_snapshots WHERE stream = ?")
            .bind(topics.orders())
            .fetch_one(env.map.meta())
            .await
            .expect("snapshots");
    // one per poll batch with an applied input (the two may share a batch), newest two kept
    assert!((1..=2).contains(&snapshots), "{snapshots} snapshots");

    // the second matcher restores the book (user 1's resting 0.4) and reads only what follows
    let second = Arc::new(Metrics::default());
    let (stop2, m2) = h.spawn_matching(&bus, &topics, &group, Some(store), second.clone());
    place(req(
        2,
        Side::Buy,
        OrderType::Limit,
        Some("50000"),
        Some("0.1"),
        None,
    ))
    .await;
    relay_all(&relays).await;
    settled(env, 2, "BTC", ("0.1998", "0")).await;
    settled(env, 1, "BTC", ("0.5", "0.3")).await;
    let applied = second.inputs_applied.load(Ordering::Relaxed);
    assert_eq!(applied, 1, "only the new input is read after the snapshot");
    assert_eq!(first.inputs_applied.load(Ordering::Relaxed), 2);
    audit_holds(env).await;
    stop2.send(true).expect("stop");
    m2.await.expect("second matcher");
    stop_settlers.send(true).expect("stop");
    for s in settlers {
        s.await.expect("settler");
    }
    h.env.drop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_on_four_shards_trade_three_symbols_and_every_unit_is_where_it_should_be() {
    let h = Harness::new("threesym", 19).await;
    let (topics, bus, tag) = h.topics("threesym").await;
    let relays = h.relays(&bus, &topics);
    let (stop_matching, matching) = h.spawn_matching(
        &bus,
        &topics,
        &format!("g_match_{tag}"),
        None,
        Default::default(),
    );
    let (stop_settlers, settlers_rx) = watch::channel(false);
    let settlers = h.spawn_settlers(&bus, &topics, &tag, &settlers_rx);
    let env = &h.env;
    // users 1, 2, 3, 4 live on shards 1, 2, 3, 0
    for (user, asset, amount) in [
        (1u64, "BTC", "2"),
        (2, "USDT", "10000"),
        (3, "ETH", "10"),
        (4, "BTC", "1"),
        (4, "USDT", "5000"),
    ] {
        deposit(env, user, asset, amount).await;
    }
    let order = |user: u64, symbol: &str, side: Side, price: &str, qty: &str| {
        let mut r = req(user, side, OrderType::Limit, Some(price), Some(qty), None);
        r.symbol = symbol.parse().expect("symbol");
        r
    };
    // makers first, each relayed before its taker is placed
    for (maker, taker) in [
        (
            order(1, "BTCUSDT", Side::Sell, "50000", "0.1"),
            order(2, "BTCUSDT", Side::Buy, "50000", "0.1"),
        ),
        (
            order(3, "ETHUSDT", Side::Sell, "2000", "2"),
            order(4, "ETHUSDT", Side::Buy, "2000", "2"),
        ),
        (
            order(3, "ETHBTC", Side::Sell, "0.05", "1"),
            order(4, "ETHBTC", Side::Buy, "0.05", "1"),
        ),
    ] {
        h.placer.place(&maker).await.expect("place").expect("maker");
        relay_all(&relays).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        h.placer.place(&taker).await.expect("place").expect("taker");
        relay_all(&relays).await;
    }
    // by hand; fees 0.1 % of what each side receives
    for (user, asset, want) in [
        (1u64, "BTC", "1.9"),
        (1, "USDT", "4995"),
        (2, "USDT", "5000"),
        (2, "BTC", "0.0999"),
        (3, "ETH", "7"),
        (3, "USDT", "3996"),
        (3, "BTC", "0.04995"),
        (4, "USDT", "1000"),
        (4, "BTC", "0.95"),
        (4, "ETH", "2.997"),
    ] {
        settled(env, user, asset, (want, "0")).await;
    }
    // the fee accounts (user 0) of each shard
    for (shard, asset, want) in [
        (1u16, "USDT", "5"),
        (2, "BTC", "0.0001"),
        (3, "USDT", "4"),
        (3, "BTC", "0.00005"),
        (0, "ETH", "0.003"),
    ] {
        let (fee,): (String,) = sqlx::query_as(
            "SELECT CAST(available AS CHAR) FROM account_balances WHERE user_id = 0 AND currency = ?",
        )
        .bind(asset)
        .fetch_one(env.map.pool(domain::ShardId::new(shard)).expect("pool"))
        .await
        .expect("fee account");
        assert_eq!(
            amt(&fee),
            amt(want),
            "fee account of shard {shard} in {asset}"
        );
    }
    stop_matching.send(true).expect("stop");
    stop_settlers.send(true).expect("stop");
    matching.await.expect("matching");
    for s in settlers {
        s.await.expect("settler");
    }
    assert_eq!(common::all_audits_hold(env).await, (3, 3));
    h.env.drop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quiet_matcher_still_snapshots_on_time() {
    let h = Harness::new("snaptime", 20).await;
    let (topics, bus, tag) = h.topics("snaptime").await;
    let relays = h.relays(&bus, &topics);
    let store = SnapshotStore {
        pool: h.env.map.meta().clone(),
        every: 1_000_000,
        every_time: Duration::from_millis(300),
        keep: 3,
    };
    let (stop_matching, matching) = h.spawn_matching(
        &bus,
        &topics,
        &format!("g_snapt_{tag}"),
        Some(store),
        Default::default(),
    );
    deposit(&h.env, 1, "BTC", "1").await;
    let snapshots = || async {
        let (n,): (i64,) =
            sqlx::query_as("SELECT COUNT(*) FROM matcher_snapshots WHERE stream = ?")
                .bind(topics.orders())
                .fetch_one(h.env.map.meta())
                .await
                .expect("count");
        n
    };
    // far fewer inputs than `every`: only the clock can trigger a snapshot
    for i in 0..4 {
        h.placer
            .place(&req(
                1,
                Side::Sell,
                OrderType::Limit,
                Some(&format!("5000{i}")),
                Some("0.01"),
                None,
            ))
            .await
            .expect("place")
            .expect("accepted");
        relay_all(&relays).await;
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    let n = snapshots().await;
    assert!(n >= 2, "snapshots taken on time: {n}");
    stop_matching.send(true).expect("stop");
    matching.await.expect("matching");
    h.env.drop_all().await;
}
