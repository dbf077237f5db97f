//! An input the matcher cannot apply is never skipped (issue 13, defect 9). Its funds
//! are frozen on the user's shard; dropping it with a warning left them frozen for
//! good with no audit seeing it. Now the matching service stops with an error naming
//! the input (the supervisor restarts it with the symbols reloaded, and `/ready` is red
//! meanwhile: `engine/tests/supervision.rs`), and a matcher that has the book applies
//! it: the order trades and settles.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{deposit, relay_all, settled, Harness};
use domain::{OrderType, Side, Symbol, TimeInForce};
use engine::metrics::Metrics;
use engine::service::{run_matching, MatchingCore, ServiceError};
use tokio::sync::watch;
use trading::placement::PlaceRequest;

fn eth(user: u64, side: Side, qty: &str) -> PlaceRequest {
    let mut r = common::req(user, side, OrderType::Limit, Some("3000"), Some(qty), None);
    r.symbol = "ETHUSDT".parse().expect("symbol");
    r.tif = TimeInForce::Gtc;
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_input_without_a_book_stops_the_matcher_and_a_matcher_with_it_settles_it() {
    let h = Harness::new("inputs", 12).await;
    let (topics, bus, tag) = h.topics("inputs").await;
    let relays = h.relays(&bus, &topics);
    let (stop_settlers, srx) = watch::channel(false);
    let settlers = h.spawn_settlers(&bus, &topics, &tag, &srx);
    let env = &h.env;
    deposit(env, 1, "ETH", "1").await;
    deposit(env, 2, "USDT", "10000").await;
    let group = format!("g_inputs_{tag}");
    let ethusdt: Symbol = "ETHUSDT".parse().expect("symbol");

    // a matcher started before ETHUSDT was configured
    let partial = MatchingCore::new(
        h.specs.values().filter(|s| s.symbol != ethusdt).cloned(),
        h.count,
    );
    let (_stop1, rx1) = watch::channel(false);
    let (b, t, g) = (bus.clone(), topics.clone(), group.clone());
    let first = tokio::spawn(async move {
        run_matching(&b, &t, &g, partial, None, Arc::new(Metrics::default()), rx1).await
    });
    h.placer
        .place(&eth(1, Side::Sell, "0.5"))
        .await
        .expect("place")
        .expect("accepted");
    relay_all(&relays).await;
    let ended = tokio::time::timeout(Duration::from_secs(60), first)
        .await
        .expect("the matcher must stop, not skip the input")
        .expect("task");
    match ended {
        Err(ServiceError::Input { reason, .. }) => {
            assert!(reason.contains("no book for symbol ETHUSDT"), "{reason}");
        }
        other => panic!("expected an input error, got {other:?}"),
    }
    // nothing was settled for it: the sell still holds its 0.5 ETH
    assert_eq!(
        testkit::balance(env, 1, "ETH").await,
        (testkit::amt("0.5"), testkit::amt("0.5"))
    );

    // a matcher with the book (what the restart with reloaded symbols is) applies it
    let metrics = Arc::new(Metrics::default());
    let (stop2, m2) = h.spawn_matching(&bus, &topics, &group, None, metrics);
    h.placer
        .place(&eth(2, Side::Buy, "0.1"))
        .await
        .expect("place")
        .expect("accepted");
    relay_all(&relays).await;
    settled(env, 2, "ETH", ("0.0999", "0")).await;
    settled(env, 1, "ETH", ("0.5", "0.4")).await;
    common::all_audits_hold(env).await;
    stop2.send(true).expect("stop");
    m2.await.expect("matcher");
    stop_settlers.send(true).expect("stop");
    for s in settlers {
        s.await.expect("settler");
    }
    h.env.drop_all().await;
}
