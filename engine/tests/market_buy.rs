//! MARKET buys by base quantity (issue 14: what ccxt's `create_market_buy_order` and
//! python-binance's `order_market_buy(quantity=…)` send) through the real pipeline:
//! placement holds `quantity × reference × (1 + band)`, the matcher fills up to the
//! quantity without ever spending more than that hold, and settlement releases what
//! was not spent — exactly, on both shards:
//! * filled by quantity across two price levels, the unspent rest of the cap released;
//! * stopped by the cap (a stale, low reference): filled as far as the cap pays,
//!   expired, the rest released;
//! * the audits hold after each, with the matcher's books equal to the database's.

mod common;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use common::{all_audits_hold, deposit, req, settled, Harness};
use domain::{Amount, OrderType, Side};
use engine::metrics::Metrics;
use engine::service::SnapshotStore;
use tokio::sync::watch;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_market_buy_by_quantity_fills_within_its_hold_and_releases_the_rest() {
    let h = Harness::new("mktqty", 14).await;
    let env = &h.env;
    let (topics, bus, tag) = h.topics("mktqty").await;
    let _relays = h.spawn_relays(&bus, &topics);
    let (_stop, srx) = watch::channel(false);
    let _settlers = h.spawn_settlers(&bus, &topics, &tag, &srx);
    let store = SnapshotStore {
        pool: env.map.meta().clone(),
        every: 10_000,
        every_time: Duration::from_secs(1),
        keep: 2,
    };
    let metrics = Arc::new(Metrics::default());
    let (_stop_m, _m) = h.spawn_matching(
        &bus,
        &topics,
        &format!("g_mktqty_{tag}"),
        Some(store),
        metrics.clone(),
    );
    // orders from two shards race through two relays: wait for the matcher to have
    // the sells before a buy is sent
    let applied = |n: u64| {
        let metrics = metrics.clone();
        async move {
            let until = std::time::Instant::now() + Duration::from_secs(60);
            while metrics.inputs_applied.load(Ordering::Relaxed) < n {
                assert!(
                    std::time::Instant::now() < until,
                    "the matcher has not got {n} inputs"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    deposit(env, 1, "BTC", "2").await;
    deposit(env, 2, "USDT", "100000").await;
    let place = |r| {
        let placer = h.placer.clone();
        async move { placer.place(&r).await.expect("place").expect("accepted") }
    };
    let sell = |price, qty| {
        req(
            1,
            Side::Sell,
            OrderType::Limit,
            Some(price),
            Some(qty),
            None,
        )
    };
    let market_buy = |qty, reference: &str| {
        let mut r = req(2, Side::Buy, OrderType::Market, None, Some(qty), None);
        r.market_reference = Some(reference.parse().expect("reference"));
        r
    };
    place(sell("50000", "0.3")).await;
    place(sell("50100", "0.2")).await;
    applied(2).await;

    // 1. 0.4 BTC against 50000: holds 0.4 × 50000 × 1.05 = 21000; fills 0.3 at 50000
    //    and 0.1 at 50100 (20010), the other 990 come back
    let b = place(market_buy("0.4", "50000")).await;
    assert_eq!(b.frozen, common::amt("21000"));
    settled(env, 2, "USDT", ("79990", "0")).await;
    settled(env, 2, "BTC", ("0.3996", "0")).await; // 0.4 less the 0.1 % taker fee
    settled(env, 1, "BTC", ("1.5", "0.1")).await;
    testkit::settle_quiet(env, Duration::from_secs(60)).await;
    all_audits_hold(env).await;

    // 2. a stale reference: 0.3 BTC against 40000 holds 12600; at 50100 that pays for
    //    0.25149 BTC (12599.649): filled so far, expired, 0.351 USDT back
    place(sell("50100", "0.5")).await;
    applied(4).await;
    let b = place(market_buy("0.3", "40000")).await;
    assert_eq!(b.frozen, common::amt("12600"));
    settled(env, 2, "USDT", ("67390.351", "0")).await;
    // 0.3996 + 0.25149 less its 0.1 % fee (0.00025149)
    settled(env, 2, "BTC", ("0.65083851", "0")).await;
    let (status,): (String,) = sqlx::query_as(&format!(
        "SELECT CAST(status AS CHAR) FROM `{}` WHERE order_id = ?",
        h.router.orders_table(&b.symbol, b.order_id).expect("table")
    ))
    .bind(b.order_id.get())
    .fetch_one(env.map.pool_for(testkit::uid(2)))
    .await
    .expect("order");
    assert_eq!(status, "expired");
    testkit::settle_quiet(env, Duration::from_secs(60)).await;
    all_audits_hold(env).await;

    // 3. a market sell by quote amount: 2,000 USDT against 50,100 holds 2000 / (50,100
    //    × 0.95) → 0.04203 BTC; a bid of 0.1 at 50,000 pays it with 0.04 BTC, the order
    //    is FILLED and the other 0.00203 come back
    let (usdt0, _) = testkit::balance(env, 1, "USDT").await;
    let (btc0, locked0) = testkit::balance(env, 1, "BTC").await;
    place(req(
        2,
        Side::Buy,
        OrderType::Limit,
        Some("50000"),
        Some("0.1"),
        None,
    ))
    .await;
    applied(6).await;
    let mut by_quote = req(1, Side::Sell, OrderType::Market, None, None, Some("2000"));
    by_quote.market_reference = Some("50100".parse().expect("reference"));
    let q = place(by_quote).await;
    assert_eq!(q.frozen, common::amt("0.04203"));
    let want_usdt = usdt0.checked_add(common::amt("1998")).expect("sum"); // 2,000 less 0.1 %
    let want_btc = btc0.checked_sub(common::amt("0.04")).expect("diff");
    let until = std::time::Instant::now() + Duration::from_secs(60);
    while testkit::balance(env, 1, "USDT").await != (want_usdt, Amount::ZERO)
        || testkit::balance(env, 1, "BTC").await != (want_btc, locked0)
    {
        assert!(
            std::time::Instant::now() < until,
            "the sell by quote did not settle"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (status,): (String,) = sqlx::query_as(&format!(
        "SELECT CAST(status AS CHAR) FROM `{}` WHERE order_id = ?",
        h.router.orders_table(&q.symbol, q.order_id).expect("table")
    ))
    .bind(q.order_id.get())
    .fetch_one(env.map.pool_for(testkit::uid(1)))
    .await
    .expect("order");
    assert_eq!(status, "filled");
    testkit::settle_quiet(env, Duration::from_secs(60)).await;
    all_audits_hold(env).await;

    // the matcher's books (its idle snapshot) equal the database's open orders
    let until = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        if let Some((_, _, books)) = trading::books_audit::latest_snapshot(&env.map)
            .await
            .expect("snapshot")
        {
            let r = trading::books_audit::compare(&env.map, &books)
                .await
                .expect("compare");
            if r.covered() {
                assert!(r.holds(), "{r:#?}");
                assert_eq!(r.db_open, 2, "{r:#?}");
                break;
            }
        }
        assert!(std::time::Instant::now() < until, "no covering snapshot");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
