//! The order pipeline through the real broker: placement → outbox relay → `orders` →
//! matching service → `fills` → four settlers. Users on all four shards trade; the
//! matching service is then killed and restarted (it rebuilds its books by replay and
//! re-emits everything), and nothing is applied twice.

use std::collections::BTreeMap;
use std::num::NonZeroU16;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use domain::{Amount, Asset, OrderType, Price, Qty, Side, Symbol, TimeInForce, UserId};
use engine::audit::conservation;
use engine::bus::{ensure_topic, producer, BusSettings};
use engine::matcher::{StpMode, SymbolSpec};
use engine::metrics::Metrics;
use engine::placement::{load_symbols, PlaceRequest, Placer};
use engine::relay::Relay;
use engine::service::{run_matching, run_settler, MatchingCore, SnapshotStore, Topics};
use engine::settle::Settler;
use rand::distr::{Alphanumeric, SampleString};
use router::accounts::credit_deposit;
use router::testing::TestEnv;
use router::{Snowflake, TableRouter};
use tokio::sync::watch;
use tokio::task::JoinHandle;

fn amt(s: &str) -> Amount {
    Amount::from_str(s).expect("amount")
}

fn req(
    user: u64,
    side: Side,
    ty: OrderType,
    price: Option<&str>,
    qty: Option<&str>,
    quote: Option<&str>,
) -> PlaceRequest {
    PlaceRequest {
        user_id: UserId::new(user).expect("user"),
        symbol: "BTCUSDT".into(),
        side,
        order_type: ty,
        tif: TimeInForce::Gtc,
        price: price.map(|p| Price::from_str(p).expect("price")),
        qty: qty.map(|q| Qty::from_str(q).expect("qty")),
        quote_qty: quote.map(amt),
        stop_price: None,
        stp: StpMode::None,
        client_order_id: None,
    }
}

async fn balance(env: &TestEnv, user: u64, asset: &str) -> (Amount, Amount) {
    let row: Option<(String, String)> = sqlx::query_as(
        "SELECT CAST(available AS CHAR), CAST(frozen AS CHAR) FROM account_balances WHERE user_id = ? AND currency = ?",
    )
    .bind(user)
    .bind(asset)
    .fetch_optional(env.map.pool_for(UserId::new(user).expect("u")))
    .await
    .expect("balance");
    row.map_or((Amount::ZERO, Amount::ZERO), |(a, f)| (amt(&a), amt(&f)))
}

/// Waits until `user`'s balance of `asset` is `want` (the pipeline is asynchronous).
async fn settled(env: &TestEnv, user: u64, asset: &str, want: (&str, &str)) {
    let want = (amt(want.0), amt(want.1));
    let until = Instant::now() + Duration::from_secs(90);
    loop {
        let got = balance(env, user, asset).await;
        if got == want {
            return;
        }
        assert!(
            Instant::now() < until,
            "user {user} {asset}: {got:?}, want {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn spawn_matching(
    bus: &BusSettings,
    topics: &Topics,
    group: &str,
    specs: &BTreeMap<Symbol, SymbolSpec>,
    count: NonZeroU16,
) -> (watch::Sender<bool>, JoinHandle<()>) {
    spawn_matching_with(bus, topics, group, specs, count, None, Default::default())
}

fn spawn_matching_with(
    bus: &BusSettings,
    topics: &Topics,
    group: &str,
    specs: &BTreeMap<Symbol, SymbolSpec>,
    count: NonZeroU16,
    store: Option<SnapshotStore>,
    metrics: Arc<Metrics>,
) -> (watch::Sender<bool>, JoinHandle<()>) {
    let (tx, rx) = watch::channel(false);
    let (bus, topics, group) = (bus.clone(), topics.clone(), group.to_owned());
    let core = MatchingCore::new(specs.values().cloned(), count);
    let h = tokio::spawn(async move {
        run_matching(&bus, &topics, &group, core, store, metrics, rx)
            .await
            .expect("matching service");
    });
    (tx, h)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orders_flow_through_the_broker_and_a_restarted_matcher_applies_nothing_twice() {
    let env = TestEnv::new("pipeline").await;
    let router = TableRouter::new(&["BTCUSDT"]).expect("router");
    env.map
        .ensure_tables(&router, Utc::now(), 1)
        .await
        .expect("tables");
    let symbols = load_symbols(env.map.meta()).await.expect("symbols");
    let specs: BTreeMap<Symbol, SymbolSpec> =
        symbols.iter().map(|(s, c)| (*s, c.spec.clone())).collect();
    let ids = Arc::new(Snowflake::new(0, 13).expect("ids"));
    let placer = Placer::new(
        env.map.clone(),
        router.clone(),
        symbols,
        Arc::new(move || ids.next_id()),
    );
    let count = NonZeroU16::new(env.map.count()).expect("count");

    let tag = Alphanumeric.sample_string(&mut rand::rng(), 8);
    let topics = Topics {
        prefix: format!("t_pipe_{tag}_"),
    };
    let port = std::env::var("EXCHANGE_KAFKA_PORT").unwrap_or_else(|_| "9092".into());
    let bus = BusSettings {
        brokers: format!("127.0.0.1:{port}"),
        client_id: "pipeline-test".into(),
    };
    ensure_topic(&bus, &topics.orders(), 2)
        .await
        .expect("orders topic");
    ensure_topic(&bus, &topics.fills(), i32::from(count.get()))
        .await
        .expect("fills topic");
    ensure_topic(&bus, &topics.market(), 1)
        .await
        .expect("market topic");

    let relays: Vec<Relay> = env
        .map
        .iter()
        .map(|(shard, pool)| {
            Relay::new(
                shard,
                pool.clone(),
                producer(&bus).expect("producer"),
                topics.prefix.clone(),
                500,
            )
        })
        .collect();
    let relay_all = || async {
        for r in &relays {
            r.round().await.expect("relay");
        }
    };
    let group = format!("g_match_{tag}");
    let (stop_matching, matching) = spawn_matching(&bus, &topics, &group, &specs, count);
    let (stop_settlers, settlers_rx) = watch::channel(false);
    let mut settlers = Vec::new();
    for (shard, pool) in env.map.iter() {
        let s = Settler::new(shard, count, pool.clone(), router.clone(), specs.clone());
        let (bus, topics, rx) = (bus.clone(), topics.clone(), settlers_rx.clone());
        let group = format!("g_settle_{tag}_{}", shard.get());
        settlers.push(tokio::spawn(async move {
            run_settler(&bus, &topics, &group, s, shard, Default::default(), rx)
                .await
                .expect("settler");
        }));
    }

    let (btc, usdt) = (
        Asset::new("BTC").expect("a"),
        Asset::new("USDT").expect("a"),
    );
    for (user, asset, amount) in [
        (1u64, btc, "1"),
        (4, btc, "0.5"),
        (2, usdt, "10000"),
        (3, usdt, "5000"),
    ] {
        credit_deposit(
            &env.map,
            UserId::new(user).expect("u"),
            &asset,
            amt(amount),
            &format!("dep-{user}"),
        )
        .await
        .expect("deposit");
    }
    let place = |r: PlaceRequest| {
        let placer = placer.clone();
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
    relay_all().await;
    place(req(
        2,
        Side::Buy,
        OrderType::Limit,
        Some("50200"),
        Some("0.15"),
        None,
    ))
    .await;
    relay_all().await;
    place(req(
        3,
        Side::Buy,
        OrderType::Market,
        None,
        None,
        Some("5000"),
    ))
    .await;
    relay_all().await;
    settled(&env, 3, "BTC", ("0.0999", "0")).await;
    placer
        .cancel(UserId::new(1).expect("u"), "BTCUSDT", sell1)
        .await
        .expect("cancel")
        .expect("ok");
    relay_all().await;

    settled(&env, 1, "BTC", ("0.75", "0")).await;
    settled(&env, 1, "USDT", ("12487.5", "0")).await;
    settled(&env, 2, "USDT", ("2500", "0")).await;
    settled(&env, 2, "BTC", ("0.14985", "0")).await;
    settled(&env, 3, "USDT", ("0", "0")).await;
    settled(&env, 4, "BTC", ("0.3", "0.2")).await;

    // the matching service dies; its replacement replays `orders` from the start and
    // re-emits every batch, which the settlers recognise and skip
    stop_matching.send(true).expect("stop");
    matching.await.expect("matching stopped");
    let (stop_matching, matching) = spawn_matching(&bus, &topics, &group, &specs, count);
    placer
        .cancel(UserId::new(4).expect("u"), "BTCUSDT", sell4)
        .await
        .expect("cancel")
        .expect("ok");
    relay_all().await;
    settled(&env, 4, "BTC", ("0.5", "0")).await;
    // a little longer for any duplicate to land, then everything is as before
    tokio::time::sleep(Duration::from_secs(2)).await;
    settled(&env, 1, "USDT", ("12487.5", "0")).await;
    settled(&env, 2, "BTC", ("0.14985", "0")).await;
    settled(&env, 3, "BTC", ("0.0999", "0")).await;
    for (asset, t) in conservation(&env.map).await.expect("audit") {
        assert!(t.holds(), "{asset}: {t:?}");
    }
    stop_matching.send(true).expect("stop");
    stop_settlers.send(true).expect("stop");
    matching.await.expect("matching");
    for s in settlers {
        s.await.expect("settler");
    }
    env.drop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_four_tasks_placing_and_cancelling_leave_nothing_frozen() {
    let env = TestEnv::new("race").await;
    let router = TableRouter::new(&["BTCUSDT"]).expect("router");
    env.map
        .ensure_tables(&router, Utc::now(), 1)
        .await
        .expect("tables");
    let symbols = load_symbols(env.map.meta()).await.expect("symbols");
    let specs: BTreeMap<Symbol, SymbolSpec> =
        symbols.iter().map(|(s, c)| (*s, c.spec.clone())).collect();
    let ids = Arc::new(Snowflake::new(0, 15).expect("ids"));
    let placer = Placer::new(
        env.map.clone(),
        router.clone(),
        symbols,
        Arc::new(move || ids.next_id()),
    );
    let count = NonZeroU16::new(env.map.count()).expect("count");
    let tag = Alphanumeric.sample_string(&mut rand::rng(), 8);
    let topics = Topics {
        prefix: format!("t_race_{tag}_"),
    };
    let port = std::env::var("EXCHANGE_KAFKA_PORT").unwrap_or_else(|_| "9092".into());
    let bus = BusSettings {
        brokers: format!("127.0.0.1:{port}"),
        client_id: "race-test".into(),
    };
    ensure_topic(&bus, &topics.orders(), 2)
        .await
        .expect("orders topic");
    ensure_topic(&bus, &topics.fills(), i32::from(count.get()))
        .await
        .expect("fills topic");
    ensure_topic(&bus, &topics.market(), 1)
        .await
        .expect("market topic");
    let (stop, stop_rx) = watch::channel(false);
    let mut tasks = Vec::new();
    // relays, polling
    for (shard, pool) in env.map.iter() {
        let relay = Relay::new(
            shard,
            pool.clone(),
            producer(&bus).expect("producer"),
            topics.prefix.clone(),
            500,
        );
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
    {
        let (bus, topics, rx) = (bus.clone(), topics.clone(), stop_rx.clone());
        let core = MatchingCore::new(specs.values().cloned(), count);
        let group = format!("g_race_{tag}");
        tasks.push(tokio::spawn(async move {
            run_matching(&bus, &topics, &group, core, None, Default::default(), rx)
                .await
                .expect("matching");
        }));
    }
    for (shard, pool) in env.map.iter() {
        let s = Settler::new(shard, count, pool.clone(), router.clone(), specs.clone());
        let (bus, topics, rx) = (bus.clone(), topics.clone(), stop_rx.clone());
        let group = format!("g_race_{tag}_{}", shard.get());
        tasks.push(tokio::spawn(async move {
            run_settler(&bus, &topics, &group, s, shard, Default::default(), rx)
                .await
                .expect("settler");
        }));
    }
    let users: Vec<UserId> = (1..=4).map(|u| UserId::new(u).expect("u")).collect();
    for u in &users {
        for (asset, a) in [("BTC", "10"), ("USDT", "1000000")] {
            credit_deposit(
                &env.map,
                *u,
                &Asset::new(asset).expect("a"),
                amt(a),
                &format!("d-{u}-{asset}"),
            )
            .await
            .expect("deposit");
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
                            .cancel(user, "BTCUSDT", ack.order_id)
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
            placer.cancel(u, "BTCUSDT", id).await.expect("cancel").ok();
        }
        assert!(Instant::now() < until, "orders stayed open");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // every order is final and settled: nothing may stay frozen
    for u in &users {
        for asset in ["BTC", "USDT"] {
            assert_eq!(
                balance(&env, u.get(), asset).await.1,
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
    for (asset, t) in conservation(&env.map).await.expect("audit") {
        assert!(t.holds(), "{asset}: {t:?}");
    }
    stop.send(true).expect("stop");
    for t in tasks {
        t.await.expect("task");
    }
    env.drop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_matcher_resumes_from_its_snapshot() {
    let env = TestEnv::new("snap").await;
    let router = TableRouter::new(&["BTCUSDT"]).expect("router");
    env.map
        .ensure_tables(&router, Utc::now(), 1)
        .await
        .expect("tables");
    let symbols = load_symbols(env.map.meta()).await.expect("symbols");
    let specs: BTreeMap<Symbol, SymbolSpec> =
        symbols.iter().map(|(s, c)| (*s, c.spec.clone())).collect();
    let ids = Arc::new(Snowflake::new(0, 16).expect("ids"));
    let placer = Placer::new(
        env.map.clone(),
        router.clone(),
        symbols,
        Arc::new(move || ids.next_id()),
    );
    let count = NonZeroU16::new(env.map.count()).expect("count");
    let tag = Alphanumeric.sample_string(&mut rand::rng(), 8);
    let topics = Topics {
        prefix: format!("t_snap_{tag}_"),
    };
    let port = std::env::var("EXCHANGE_KAFKA_PORT").unwrap_or_else(|_| "9092".into());
    let bus = BusSettings {
        brokers: format!("127.0.0.1:{port}"),
        client_id: "snapshot-test".into(),
    };
    ensure_topic(&bus, &topics.orders(), 2)
        .await
        .expect("orders topic");
    ensure_topic(&bus, &topics.fills(), i32::from(count.get()))
        .await
        .expect("fills topic");
    ensure_topic(&bus, &topics.market(), 1)
        .await
        .expect("market topic");
    let relays: Vec<Relay> = env
        .map
        .iter()
        .map(|(shard, pool)| {
            Relay::new(
                shard,
                pool.clone(),
                producer(&bus).expect("producer"),
                topics.prefix.clone(),
                500,
            )
        })
        .collect();
    let relay_all = || async {
        for r in &relays {
            r.round().await.expect("relay");
        }
    };
    let (stop_settlers, settlers_rx) = watch::channel(false);
    let mut settlers = Vec::new();
    for (shard, pool) in env.map.iter() {
        let s = Settler::new(shard, count, pool.clone(), router.clone(), specs.clone());
        let (bus, topics, rx) = (bus.clone(), topics.clone(), settlers_rx.clone());
        let group = format!("g_snap_{tag}_{}", shard.get());
        settlers.push(tokio::spawn(async move {
            run_settler(&bus, &topics, &group, s, shard, Default::default(), rx)
                .await
                .expect("settler");
        }));
    }
    let store = SnapshotStore {
        pool: env.map.meta().clone(),
        every: 1,
        keep: 2,
    };
    let group = format!("g_snapm_{tag}");
    let first = Arc::new(Metrics::default());
    let (stop1, m1) = spawn_matching_with(
        &bus,
        &topics,
        &group,
        &specs,
        count,
        Some(store.clone()),
        first.clone(),
    );

    let (btc, usdt) = (
        Asset::new("BTC").expect("a"),
        Asset::new("USDT").expect("a"),
    );
    credit_deposit(&env.map, UserId::new(1).expect("u"), &btc, amt("1"), "d1")
        .await
        .expect("deposit");
    credit_deposit(
        &env.map,
        UserId::new(2).expect("u"),
        &usdt,
        amt("100000"),
        "d2",
    )
    .await
    .expect("deposit");
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
    relay_all().await;
    place(req(
        2,
        Side::Buy,
        OrderType::Limit,
        Some("50000"),
        Some("0.1"),
        None,
    ))
    .await;
    relay_all().await;
    settled(&env, 2, "BTC", ("0.0999", "0")).await;
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
    let (stop2, m2) = spawn_matching_with(
        &bus,
        &topics,
        &group,
        &specs,
        count,
        Some(store),
        second.clone(),
    );
    place(req(
        2,
        Side::Buy,
        OrderType::Limit,
        Some("50000"),
        Some("0.1"),
        None,
    ))
    .await;
    relay_all().await;
    settled(&env, 2, "BTC", ("0.1998", "0")).await;
    settled(&env, 1, "BTC", ("0.5", "0.3")).await;
    let applied = second
        .inputs_applied
        .load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(applied, 1, "only the new input is read after the snapshot");
    assert_eq!(
        first
            .inputs_applied
            .load(std::sync::atomic::Ordering::Relaxed),
        2
    );
    for (asset, t) in conservation(&env.map).await.expect("audit") {
        assert!(t.holds(), "{asset}: {t:?}");
    }
    stop2.send(true).expect("stop");
    m2.await.expect("second matcher");
    stop_settlers.send(true).expect("stop");
    for s in settlers {
        s.await.expect("settler");
    }
    env.drop_all().await;
}
