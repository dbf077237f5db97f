//! A retried placement (same client order id) answers the original ack, including what
//! it froze then — not what is still frozen after fills (issue 13, defect 10).

mod common;

use std::sync::Arc;

use common::{deposit, relay_all, req, settled, Harness};
use domain::{OrderType, Side};
use engine::metrics::Metrics;
use tokio::sync::watch;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_placement_after_a_fill_reports_the_original_freeze() {
    let h = Harness::new("retryack", 11).await;
    let (topics, bus, tag) = h.topics("retryack").await;
    let relays = h.relays(&bus, &topics);
    let (stop_settlers, srx) = watch::channel(false);
    let settlers = h.spawn_settlers(&bus, &topics, &tag, &srx);
    let (stop_m, m) = h.spawn_matching(
        &bus,
        &topics,
        &format!("g_retryack_{tag}"),
        None,
        Arc::new(Metrics::default()),
    );
    let env = &h.env;
    deposit(env, 1, "BTC", "1").await;
    deposit(env, 2, "USDT", "100000").await;
    let mut sell = req(
        1,
        Side::Sell,
        OrderType::Limit,
        Some("50000"),
        Some("0.5"),
        None,
    );
    sell.client_order_id = Some("keep-1".into());
    let first = h
        .placer
        .place(&sell)
        .await
        .expect("place")
        .expect("accepted");
    assert_eq!(
        (first.frozen, first.duplicate),
        (testkit::amt("0.5"), false)
    );
    relay_all(&relays).await;
    h.placer
        .place(&req(
            2,
            Side::Buy,
            OrderType::Limit,
            Some("50000"),
            Some("0.1"),
            None,
        ))
        .await
        .expect("place")
        .expect("accepted");
    relay_all(&relays).await;
    settled(env, 1, "BTC", ("0.5", "0.4")).await;
    // the retry, on both paths: the original order and its original freeze
    let again = h
        .placer
        .place(&sell)
        .await
        .expect("place")
        .expect("the original");
    assert_eq!(
        (again.order_id, again.frozen, again.duplicate),
        (first.order_id, testkit::amt("0.5"), true)
    );
    let writers: Vec<_> = env
        .map
        .iter()
        .map(|(s, _)| h.placer.group_writer(s, Default::default()))
        .collect();
    let grouped = h
        .placer
        .place_grouped(&writers, &sell)
        .await
        .expect("place")
        .expect("the original");
    assert_eq!(
        (grouped.order_id, grouped.frozen),
        (first.order_id, testkit::amt("0.5"))
    );
    // and nothing else was frozen or placed
    assert_eq!(
        testkit::balance(env, 1, "BTC").await,
        (testkit::amt("0.5"), testkit::amt("0.4"))
    );
    // the buyer's half settles on its own shard, on its own time
    settled(env, 2, "BTC", ("0.0999", "0")).await;
    common::all_audits_hold(env).await;
    stop_m.send(true).expect("stop");
    m.await.expect("matcher");
    stop_settlers.send(true).expect("stop");
    for s in settlers {
        s.await.expect("settler");
    }
    h.env.drop_all().await;
}
