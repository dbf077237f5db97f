//! A symbol's rules changed across a matcher restart with a snapshot present (issue 13,
//! defect 1), against the real shards and broker:
//! * a grid change (step size) while orders rest is **refused**: the matching service
//!   does not start (`ServiceError::Rules`, naming the symbol and the change) rather
//!   than count lots on two grids;
//! * a fee change is **applied** at the restart, on the restored book: the next trade
//!   charges the new fee (before, the snapshot's fee stayed for ever);
//! * a grid change on an emptied book is applied at the restart; the settlers, started
//!   before any change with the old rules, settle the new grid's fills exactly,
//!   because each fill batch carries the rules it was matched under; an order placed
//!   by a placer that still has the old rules and is off the new grid is refused by
//!   the matcher through the normal event path (its funds come back).
//!
//! After each step the money audits hold (conservation, frozen vs open orders, trade
//! halves, ledger replay).

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{all_audits_hold, deposit, req, settled, Harness};
use domain::{OrderType, Side};
use engine::metrics::Metrics;
use engine::service::{run_matching, MatchingCore, ServiceError, SnapshotStore};
use tokio::sync::watch;
use trading::placement::{load_symbols, CancelTarget};

/// The matching service over the rules meta holds now.
async fn matching(
    h: &Harness,
    bus: &engine::bus::BusSettings,
    topics: &engine::service::Topics,
    group: &str,
    store: &SnapshotStore,
    metrics: Arc<Metrics>,
) -> (
    watch::Sender<bool>,
    tokio::task::JoinHandle<Result<(), ServiceError>>,
) {
    let specs = load_symbols(h.env.map.meta()).await.expect("symbols");
    let core = MatchingCore::new(specs.into_values().map(|c| c.spec), h.count);
    let (tx, rx) = watch::channel(false);
    let (bus, topics, group, store) =
        (bus.clone(), topics.clone(), group.to_owned(), store.clone());
    let task = tokio::spawn(async move {
        run_matching(&bus, &topics, &group, core, Some(store), metrics, rx).await
    });
    (tx, task)
}

async fn stop(
    m: (
        watch::Sender<bool>,
        tokio::task::JoinHandle<Result<(), ServiceError>>,
    ),
) {
    m.0.send(true).expect("stop");
    m.1.await.expect("join").expect("matching service");
}

async fn set(h: &Harness, assignment: &str) {
    sqlx::query(&format!(
        "UPDATE symbols SET {assignment} WHERE symbol = 'BTCUSDT'"
    ))
    .execute(h.env.map.meta())
    .await
    .expect("update rules");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rules_change_across_a_restart_is_refused_or_applied_at_a_boundary() {
    let h = Harness::new("rules", 11).await;
    let env = &h.env;
    let (topics, bus, tag) = h.topics("rules").await;
    let (_stop_settlers, srx) = watch::channel(false);
    // settlers with the rules of the start (step 0.00001, fees 0.1 %), never restarted
    let _settlers = h.spawn_settlers(&bus, &topics, &tag, &srx);
    let _relays = h.spawn_relays(&bus, &topics);
    let store = SnapshotStore {
        pool: env.map.meta().clone(),
        every: 1,
        every_time: Duration::from_secs(60),
        keep: 2,
    };
    let group = format!("g_rules_{tag}");
    deposit(env, 1, "BTC", "1").await;
    deposit(env, 2, "USDT", "100000").await;
    let place = |r| {
        let placer = h.placer.clone();
        async move { placer.place(&r).await.expect("place").expect("accepted") }
    };
    let limit = |user, side, qty| req(user, side, OrderType::Limit, Some("50000"), Some(qty), None);

    // 1. a trade and a resting remainder under the first rules; snapshotted
    let m = matching(&h, &bus, &topics, &group, &store, Arc::default()).await;
    let sell = place(limit(1, Side::Sell, "0.5")).await;
    place(limit(2, Side::Buy, "0.1")).await;
    settled(env, 2, "BTC", ("0.0999", "0")).await;
    settled(env, 1, "BTC", ("0.5", "0.4")).await;
    stop(m).await;
    all_audits_hold(env).await;

    // 2. a finer step while 0.4 BTC rests on the old grid: the service refuses to start
    set(&h, "step_size = 0.000001, min_qty = 0.000001").await;
    let refused = matching(&h, &bus, &topics, &group, &store, Arc::default()).await;
    let err = tokio::time::timeout(Duration::from_secs(30), refused.1)
        .await
        .expect("refused at once")
        .expect("join")
        .expect_err("a grid change under open orders must not start");
    let text = err.to_string();
    assert!(
        matches!(err, ServiceError::Rules { .. })
            && text.contains("BTCUSDT")
            && text.contains("step_size 0.00001 → 0.000001")
            && text.contains("1 orders are open"),
        "{text}"
    );
    set(&h, "step_size = 0.00001, min_qty = 0.00001").await;

    // 3. a fee change applies at the restart, on the restored book
    set(&h, "taker_fee_ppm = 5000").await;
    let m = matching(&h, &bus, &topics, &group, &store, Arc::default()).await;
    place(limit(2, Side::Buy, "0.1")).await;
    // 0.1 BTC less 0.5 %: 0.0995 more
    settled(env, 2, "BTC", ("0.1994", "0")).await;
    settled(env, 1, "BTC", ("0.5", "0.3")).await;
    // the book empties: the rest of the sell is cancelled
    h.placer
        .cancel(
            testkit::uid(1),
            sell.symbol,
            CancelTarget::Order(sell.order_id),
        )
        .await
        .expect("cancel")
        .expect("accepted");
    settled(env, 1, "BTC", ("0.8", "0")).await;
    stop(m).await;
    all_audits_hold(env).await;

    // 4. a coarser step on the empty book: applied at the restart
    set(&h, "step_size = 0.001, min_qty = 0.001").await;
    let metrics = Arc::new(Metrics::default());
    let m = matching(&h, &bus, &topics, &group, &store, metrics.clone()).await;
    // a placer still on the old rules: 0.00015 BTC is off the new grid, the matcher
    // refuses it and the funds come back
    let stale = place(limit(1, Side::Sell, "0.00015")).await;
    settled(env, 1, "BTC", ("0.8", "0")).await;
    let (status,): (String,) = sqlx::query_as(&format!(
        "SELECT CAST(status AS CHAR) FROM `{}` WHERE order_id = ?",
        h.router
            .orders_table(&stale.symbol, stale.order_id)
            .expect("table")
    ))
    .bind(stale.order_id.get())
    .fetch_one(env.map.pool_for(testkit::uid(1)))
    .await
    .expect("stale order");
    assert_eq!(status, "rejected");
    // the placer takes the new rules; a trade on the new grid settles exactly with
    // the settlers' old rules loaded at their start
    let changed = h
        .placer
        .reload_symbols(env.map.meta())
        .await
        .expect("reload");
    assert_eq!(
        changed,
        vec!["BTCUSDT".parse::<domain::Symbol>().expect("symbol")]
    );
    place(limit(1, Side::Sell, "0.2")).await;
    // two shards race through two relays: the sell must rest before the buy comes,
    // or the buy rests and pays the maker fee
    let until = std::time::Instant::now() + Duration::from_secs(60);
    while metrics
        .inputs_applied
        .load(std::sync::atomic::Ordering::Relaxed)
        < 2
    {
        assert!(
            std::time::Instant::now() < until,
            "the sell never reached the matcher"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    place(limit(2, Side::Buy, "0.2")).await;
    settled(env, 2, "BTC", ("0.3984", "0")).await;
    settled(env, 1, "BTC", ("0.6", "0")).await;
    stop(m).await;
    all_audits_hold(env).await;
}
