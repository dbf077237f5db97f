//! A poison fill batch is parked, not retried forever (issue 13, defect 6). One shard's
//! BTCUSDT trades tables are renamed away, so settling a BTCUSDT trade there fails for
//! real. After N failures the batch is parked; every later BTCUSDT batch of that shard
//! is parked behind it (a later one applied first would move the `applied_seq` mark
//! past the parked events, which would then be skipped as duplicates), while ETHUSDT on
//! that shard and BTCUSDT on the other shards keep settling; readiness and the metrics
//! say so. A restarted settler reading the whole partition again parks nothing twice
//! and applies nothing out of order. A retry while the cause is still there changes
//! nothing; once the tables are back, the retry applies every parked batch in order,
//! the shard settles BTCUSDT directly again, and every money audit holds.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{amt, deposit, relay_all, req, settled, Harness};
use domain::{OrderType, ShardId, Side, Symbol, TimeInForce, UserId};
use engine::bus::BusSettings;
use engine::metrics::Metrics;
use engine::parking::ParkPolicy;
use engine::service::{run_settler_with, Topics};
use engine::settle::Settler;
use sqlx::MySqlPool;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use trading::parked::{self, ParkState, ParkedBatch};
use trading::placement::PlaceRequest;

/// Failures before a batch is parked, in this test.
const PARK_AFTER: u32 = 3;

struct SettlerTask {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl SettlerTask {
    async fn stop(self) {
        self.stop.send(true).expect("stop");
        self.task.await.expect("settler");
    }
}

fn spawn_settler(
    h: &Harness,
    bus: &BusSettings,
    topics: &Topics,
    group: String,
    shard: ShardId,
    metrics: Arc<Metrics>,
) -> SettlerTask {
    let settler = Settler::new(
        shard,
        h.count,
        h.env.map.pool(shard).expect("pool").clone(),
        h.router.clone(),
        h.specs.clone(),
    );
    let policy = ParkPolicy {
        after: PARK_AFTER,
        poll: Duration::from_millis(100),
    };
    let (stop, rx) = watch::channel(false);
    let (bus, topics) = (bus.clone(), topics.clone());
    let task = tokio::spawn(async move {
        run_settler_with(&bus, &topics, &group, settler, shard, metrics, policy, rx)
            .await
            .expect("settler");
    });
    SettlerTask { stop, task }
}

/// Waits until `pool` has `n` parked batches; returns them.
async fn parked_count(pool: &MySqlPool, n: usize) -> Vec<ParkedBatch> {
    let until = Instant::now() + Duration::from_secs(90);
    loop {
        let got = parked::list(pool).await.expect("list");
        if got.len() == n {
            return got;
        }
        assert!(
            Instant::now() < until,
            "want {n} parked batches, have {got:#?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The shard's BTCUSDT trades tables (this month's and the next).
async fn btc_trade_tables(pool: &MySqlPool) -> Vec<String> {
    let rows: Vec<(String,)> = sqlx::query_as(
        "SELECT CAST(table_name AS CHAR) FROM information_schema.tables \
         WHERE table_schema = DATABASE() AND table_name LIKE ? ORDER BY 1",
    )
    .bind("trades\\_BTCUSDT\\_%")
    .fetch_all(pool)
    .await
    .expect("tables");
    rows.into_iter().map(|(t,)| t).collect()
}

async fn rename(pool: &MySqlPool, tables: &[String], from: &str, to: &str) {
    let pairs: Vec<String> = tables
        .iter()
        .map(|t| format!("`{from}{t}` TO `{to}{t}`"))
        .collect();
    sqlx::query(&format!("RENAME TABLE {}", pairs.join(", ")))
        .execute(pool)
        .await
        .expect("rename");
}

/// The shard's `applied_seq` mark of `symbol` (0 before its first batch).
async fn mark(pool: &MySqlPool, symbol: &str) -> u64 {
    let row: Option<(u64,)> = sqlx::query_as("SELECT seq FROM applied_seq WHERE symbol = ?")
        .bind(symbol)
        .fetch_optional(pool)
        .await
        .expect("applied_seq");
    row.map_or(0, |(s,)| s)
}

fn eth(user: u64, side: Side, qty: &str) -> PlaceRequest {
    let mut r = req(user, side, OrderType::Limit, Some("3000"), Some(qty), None);
    r.symbol = "ETHUSDT".parse().expect("symbol");
    r.tif = TimeInForce::Gtc;
    r
}

fn btc(user: u64, side: Side, qty: &str) -> PlaceRequest {
    req(user, side, OrderType::Limit, Some("50000"), Some(qty), None)
}

async fn place(h: &Harness, r: &PlaceRequest) -> domain::OrderId {
    h.placer
        .place(r)
        .await
        .expect("place")
        .expect("accepted")
        .order_id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_batch_is_parked_its_symbol_held_behind_it_and_a_retry_applies_all_in_order() {
    let h = Harness::new("parked", 8).await;
    let (topics, bus, tag) = h.topics("parked").await;
    let relays = h.relays(&bus, &topics);
    let env = &h.env;
    let uid = |u: u64| UserId::new(u).expect("user");
    // users 1 and 5 share the poisoned shard; 2 and 3 are elsewhere
    let poisoned = env.map.shard_of(uid(1));
    assert_eq!(env.map.shard_of(uid(5)), poisoned);
    assert_ne!(env.map.shard_of(uid(2)), poisoned);
    assert_ne!(env.map.shard_of(uid(3)), poisoned);
    let pool = env.map.pool(poisoned).expect("pool").clone();
    deposit(env, 1, "BTC", "1").await;
    deposit(env, 1, "ETH", "2").await;
    deposit(env, 5, "USDT", "100000").await;
    deposit(env, 2, "USDT", "100000").await;
    deposit(env, 2, "BTC", "1").await;
    deposit(env, 3, "USDT", "100000").await;

    // one engine's metrics for every settler; the matcher and relays as usual
    let metrics = Arc::new(Metrics::default());
    Metrics::add(&metrics.ready, 1);
    let mut settlers = Vec::new();
    let mut poisoned_settler = None;
    for (shard, _) in env.map.iter() {
        let t = spawn_settler(
            &h,
            &bus,
            &topics,
            format!("g_parked_{tag}_{}", shard.get()),
            shard,
            metrics.clone(),
        );
        if shard == poisoned {
            poisoned_settler = Some(t);
        } else {
            settlers.push(t);
        }
    }
    let (stop_m, m) = h.spawn_matching(
        &bus,
        &topics,
        &format!("g_parked_m_{tag}"),
        None,
        Arc::new(Metrics::default()),
    );
    let mut wait_ready = Instant::now() + Duration::from_secs(30);
    while metrics.readiness().is_err() {
        assert!(Instant::now() < wait_ready, "{:?}", metrics.readiness());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // the poison: BTCUSDT trades cannot be written on user 1's shard
    let tables = btc_trade_tables(&pool).await;
    assert!(!tables.is_empty(), "month tables exist");
    rename(&pool, &tables, "", "away_").await;

    // 1. a BTCUSDT trade between user 1 (maker, poisoned shard) and user 2
    let sell = place(&h, &btc(1, Side::Sell, "0.5")).await;
    relay_all(&relays).await;
    settled(env, 1, "BTC", ("0.5", "0.5")).await;
    place(&h, &btc(2, Side::Buy, "0.1")).await;
    relay_all(&relays).await;
    // the same symbol on another shard settles: user 2 has its BTC
    settled(env, 2, "BTC", ("1.0999", "0")).await;
    settled(env, 2, "USDT", ("95000", "0")).await;
    // on the poisoned shard the batch is parked after exactly N attempts
    let p = parked_count(&pool, 1).await;
    let head = &p[0];
    assert_eq!(
        (head.symbol.as_str(), head.state, head.attempts),
        ("BTCUSDT", ParkState::Failed, PARK_AFTER),
        "{head:?}"
    );
    assert!(
        head.last_error.contains("trades_BTCUSDT_") && head.last_error.contains("does not exist"),
        "{head:?}"
    );
    assert_eq!(head.stream, topics.orders());
    assert!(head.first_seq <= head.last_seq && head.events >= 1);
    let btc_mark = mark(&pool, "BTCUSDT").await;
    assert!(
        btc_mark < head.first_seq,
        "the mark stays before the parked events"
    );
    // visible: /ready says which shard and why, /metrics counts it
    let why = metrics
        .readiness()
        .expect_err("not ready while a batch is parked");
    assert!(
        why.contains(&format!("parked: settler-{}", poisoned.get()))
            && why.contains("BTCUSDT")
            && why.contains("does not exist")
            && why.contains("shardctl fills retry"),
        "{why}"
    );
    let text = metrics.render();
    assert!(
        text.contains(&format!(
            "exchange_settler_parked_batches{{shard=\"{}\"}} 1",
            poisoned.get()
        )) && text.contains("exchange_ready 0")
            && text.contains("exchange_settler_parked_total 1"),
        "{text}"
    );

    // 2. later BTCUSDT batches of that shard queue behind it: another trade with user 1
    // (user 3 settles on its own shard) and the cancel of the rest of user 1's order
    place(&h, &btc(3, Side::Buy, "0.1")).await;
    relay_all(&relays).await;
    settled(env, 3, "BTC", ("0.0999", "0")).await;
    parked_count(&pool, 2).await;
    let btcusdt: Symbol = "BTCUSDT".parse().expect("symbol");
    h.placer
        .cancel(uid(1), btcusdt, sell)
        .await
        .expect("cancel")
        .expect("accepted");
    relay_all(&relays).await;
    let p = parked_count(&pool, 3).await;
    for q in &p[1..] {
        assert_eq!(
            (q.symbol.as_str(), q.state, q.attempts),
            ("BTCUSDT", ParkState::Queued, 0)
        );
        assert!(
            q.last_error
                .contains(&format!("queued behind parked batch {}", p[0].id)),
            "{q:?}"
        );
        assert!(q.first_seq > p[0].last_seq, "in seq order: {p:#?}");
    }
    assert!(p[1].last_seq < p[2].first_seq, "in seq order: {p:#?}");

    // 3. ETHUSDT on the poisoned shard keeps settling (users 1 and 5, both halves there)
    place(&h, &eth(1, Side::Sell, "1")).await;
    relay_all(&relays).await;
    place(&h, &eth(5, Side::Buy, "1")).await;
    relay_all(&relays).await;
    settled(env, 5, "ETH", ("0.999", "0")).await;
    settled(env, 1, "USDT", ("2997", "0")).await;
    // ... and nothing of BTCUSDT moved there: user 1's sell still holds 0.5 BTC
    assert_eq!(
        testkit::balance(env, 1, "BTC").await,
        (amt("0.5"), amt("0.5"))
    );
    assert_eq!(mark(&pool, "BTCUSDT").await, btc_mark);

    // 4. a restarted settler that reads the whole partition again (a new consumer group:
    // no committed offset) parks nothing twice and applies nothing of BTCUSDT
    poisoned_settler.take().expect("settler").stop().await;
    let restarted = spawn_settler(
        &h,
        &bus,
        &topics,
        format!("g_parked_{tag}_again"),
        poisoned,
        metrics.clone(),
    );
    place(&h, &eth(1, Side::Sell, "0.5")).await;
    relay_all(&relays).await;
    place(&h, &eth(5, Side::Buy, "0.5")).await;
    relay_all(&relays).await;
    // this trade comes after every redelivered batch in the partition
    settled(env, 5, "ETH", ("1.4985", "0")).await;
    settled(env, 1, "USDT", ("4495.5", "0")).await;
    assert_eq!(
        parked::list(&pool).await.expect("list"),
        p,
        "nothing parked twice"
    );
    assert_eq!(
        testkit::balance(env, 1, "BTC").await,
        (amt("0.5"), amt("0.5"))
    );
    assert!(
        metrics.readiness().is_err(),
        "still not ready after the restart"
    );

    // 5. a retry while the cause is still there: the head fails again, nothing moves
    let out = parked::retry(&pool, Duration::from_secs(60))
        .await
        .expect("retry");
    assert!(out.answered && !out.applied_all(), "{out:?}");
    assert_eq!(out.remaining.len(), 3, "{out:?}");
    assert_eq!(out.remaining[0].attempts, PARK_AFTER + 1);
    assert!(out.remaining.iter().all(|b| !b.retry_requested), "{out:?}");
    assert_eq!(
        testkit::balance(env, 1, "BTC").await,
        (amt("0.5"), amt("0.5"))
    );
    assert_eq!(mark(&pool, "BTCUSDT").await, btc_mark);

    // 6. the cause fixed, the retry applies all three in order, oldest first
    rename(&pool, &tables, "away_", "").await;
    let out = parked::retry(&pool, Duration::from_secs(60))
        .await
        .expect("retry");
    assert!(out.applied_all(), "{out:?}");
    assert_eq!(out.requested, 3);
    assert!(parked::list(&pool).await.expect("list").is_empty());
    // the trades and the cancel, each exactly once: 2 × (5000 − 5 fee) + the ETH sales
    assert_eq!(
        testkit::balance(env, 1, "BTC").await,
        (amt("0.8"), amt("0"))
    );
    assert_eq!(
        testkit::balance(env, 1, "USDT").await,
        (amt("14485.5"), amt("0"))
    );
    assert_eq!(mark(&pool, "BTCUSDT").await, p[2].last_seq);
    let mut halves = 0;
    for t in &tables {
        let (n,): (i64,) = sqlx::query_as(&format!("SELECT COUNT(*) FROM `{t}` WHERE user_id = 1"))
            .fetch_one(&pool)
            .await
            .expect("trades");
        halves += n;
    }
    assert_eq!(halves, 2, "user 1's two trade halves, once each");
    wait_ready = Instant::now() + Duration::from_secs(10);
    while metrics.readiness().is_err() {
        assert!(Instant::now() < wait_ready, "{:?}", metrics.readiness());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let text = metrics.render();
    assert!(
        text.contains(&format!(
            "exchange_settler_parked_batches{{shard=\"{}\"}} 0",
            poisoned.get()
        )) && text.contains("exchange_settler_parked_applied_total 3")
            && text.contains("exchange_ready 1"),
        "{text}"
    );

    // 7. BTCUSDT settles directly on that shard again (user 5 buys from user 2)
    place(&h, &btc(2, Side::Sell, "0.1")).await;
    relay_all(&relays).await;
    place(&h, &btc(5, Side::Buy, "0.1")).await;
    relay_all(&relays).await;
    settled(env, 5, "BTC", ("0.0999", "0")).await;
    settled(env, 5, "USDT", ("90500", "0")).await;
    // (and its other half, on user 2's shard, before the audits: the pipeline quiet)
    settled(env, 2, "BTC", ("0.9999", "0")).await;
    settled(env, 2, "USDT", ("99995", "0")).await;
    assert!(parked::list(&pool).await.expect("list").is_empty());

    common::all_audits_hold(env).await;
    stop_m.send(true).expect("stop");
    m.await.expect("matcher");
    restarted.stop().await;
    for s in settlers {
        s.stop().await;
    }
    h.env.drop_all().await;
}
