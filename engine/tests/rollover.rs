//! Trading across a month boundary (issue 13, "month rollover while trading"): orders
//! whose snowflake ids fall in the last and the first milliseconds of two months land
//! in their own month's order tables, each trade in its taker's month's trades table,
//! the resting order of the old month is filled in place, and the cursor readers read
//! across the boundary (newest first, nothing skipped or repeated); audits hold.

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use chrono::TimeZone;
use common::{deposit, relay_all, req, settled, Harness};
use domain::{Month, OrderType, Side};
use engine::metrics::Metrics;
use router::{TableKind, TableRouter};
use tokio::sync::watch;
use trading::placement::Placer;
use trading::readers::{self, Page, TradePage};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orders_and_trades_on_both_sides_of_a_month_boundary_land_and_read_right() {
    let h = Harness::new("rollover", 10).await;
    let env = &h.env;
    // November's tables too (the harness made this month's)
    let last_ms = chrono::Utc
        .with_ymd_and_hms(2026, 11, 30, 23, 59, 59)
        .single()
        .expect("time")
        .timestamp_millis()
        + 999;
    let nov = Month::new(2026, 11).expect("month");
    let dec = nov.next();
    env.map
        .ensure_tables(&h.router, nov.start(), 1)
        .await
        .expect("november tables");
    // ids: the first three in the last millisecond of November, then December's first
    let n = Arc::new(AtomicU64::new(0));
    let at = |ms: i64| router::snowflake::min_id_at(u64::try_from(ms).expect("ms")).expect("id");
    let (late_nov, early_dec) = (at(last_ms), at(last_ms + 1));
    let placer = Placer::new(
        env.map.clone(),
        h.router.clone(),
        trading::placement::load_symbols(env.map.meta())
            .await
            .expect("symbols"),
        Arc::new(move || {
            let i = n.fetch_add(1, Ordering::SeqCst);
            Ok(if i < 2 { late_nov + i } else { early_dec + i })
        }),
    );
    let (topics, bus, tag) = h.topics("rollover").await;
    let relays = h.relays(&bus, &topics);
    let (stop_s, srx) = watch::channel(false);
    let settlers = h.spawn_settlers(&bus, &topics, &tag, &srx);
    let (stop_m, m) = h.spawn_matching(
        &bus,
        &topics,
        &format!("g_rollover_{tag}"),
        None,
        Arc::new(Metrics::default()),
    );
    deposit(env, 1, "BTC", "1").await;
    deposit(env, 2, "USDT", "100000").await;
    let place = |r| {
        let placer = placer.clone();
        async move { placer.place(&r).await.expect("place").expect("accepted") }
    };
    let sell = place(req(
        1,
        Side::Sell,
        OrderType::Limit,
        Some("50000"),
        Some("0.5"),
        None,
    ))
    .await;
    relay_all(&relays).await;
    let buy_nov = place(req(
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
    let buy_dec = place(req(
        2,
        Side::Buy,
        OrderType::Limit,
        Some("50000"),
        Some("0.2"),
        None,
    ))
    .await;
    relay_all(&relays).await;
    settled(env, 2, "BTC", ("0.2997", "0")).await;
    settled(env, 1, "BTC", ("0.5", "0.2")).await;

    // each order in its own month's table, each trade in its taker's month
    let btc: domain::Symbol = "BTCUSDT".parse().expect("symbol");
    let router = TableRouter::new(&["BTCUSDT", "ETHUSDT", "ETHBTC"]).expect("router");
    for (ack, month) in [(&sell, nov), (&buy_nov, nov), (&buy_dec, dec)] {
        assert_eq!(Month::of_id(ack.order_id.get()).expect("month"), month);
        let table = router.orders_table(&btc, ack.order_id).expect("table");
        assert_eq!(table.month(), month, "{table}");
    }
    let count = |kind: TableKind, month: Month, user: u64| {
        let table = router.table(kind, &btc, month).expect("table");
        let pool = env.map.pool_for(testkit::uid(user)).clone();
        async move {
            let (n,): (i64,) =
                sqlx::query_as(&format!("SELECT COUNT(*) FROM `{table}` WHERE user_id = ?"))
                    .bind(user)
                    .fetch_one(&pool)
                    .await
                    .expect("count");
            n
        }
    };
    assert_eq!(count(TableKind::Orders, nov, 1).await, 1);
    assert_eq!(count(TableKind::Orders, nov, 2).await, 1);
    assert_eq!(count(TableKind::Orders, dec, 2).await, 1);
    assert_eq!(
        count(TableKind::Trades, nov, 2).await,
        1,
        "the November taker's trade"
    );
    assert_eq!(
        count(TableKind::Trades, dec, 2).await,
        1,
        "the December taker's trade"
    );
    assert_eq!(
        count(TableKind::Trades, nov, 1).await,
        1,
        "the maker's half sits with its taker's month"
    );
    assert_eq!(count(TableKind::Trades, dec, 1).await, 1);
    // the November order was filled in place
    let (_, o) = readers::order(&env.map, &router, btc, sell.order_id, Some(testkit::uid(1)))
        .await
        .expect("order")
        .pop()
        .expect("found");
    assert_eq!(o.filled_qty, testkit::amt("0.3"));

    // the cursors read across the boundary, newest first, one page at a time
    let now = chrono::Utc::now();
    let page = |before| Page {
        before,
        limit: 1,
        since: nov,
    };
    let first = readers::orders_of_user(
        &env.map,
        &router,
        testkit::uid(2),
        btc,
        page(None),
        false,
        now,
    )
    .await
    .expect("page 1");
    assert_eq!(
        first.iter().map(|o| o.order_id).collect::<Vec<_>>(),
        [buy_dec.order_id]
    );
    let second = readers::orders_of_user(
        &env.map,
        &router,
        testkit::uid(2),
        btc,
        page(Some(buy_dec.order_id)),
        false,
        now,
    )
    .await
    .expect("page 2");
    assert_eq!(
        second.iter().map(|o| o.order_id).collect::<Vec<_>>(),
        [buy_nov.order_id]
    );
    let trades = readers::trades_of_user(
        &env.map,
        &router,
        testkit::uid(2),
        btc,
        TradePage {
            after: None,
            limit: 10,
            since: nov,
        },
        now,
    )
    .await
    .expect("trades");
    assert_eq!(trades.len(), 2, "{trades:?}");
    assert!(
        trades[0].trade_id < trades[1].trade_id,
        "oldest first by trade id"
    );
    assert_eq!(
        trades.iter().map(|t| t.order_id).collect::<Vec<_>>(),
        [buy_nov.order_id, buy_dec.order_id]
    );
    common::all_audits_hold(env).await;
    stop_m.send(true).expect("stop");
    m.await.expect("matcher");
    stop_s.send(true).expect("stop");
    for s in settlers {
        s.await.expect("settler");
    }
    h.env.drop_all().await;
}
