//! A role that fails is restarted by its process, and `/ready` says so meanwhile
//! (issue 13, defect 3).
//!
//! One `engine run --roles relay,matcher,settler` process. The matcher's snapshot
//! table is renamed away under it: its next snapshot save fails, which used to end the
//! matching service for good while `/ready` stayed green. Now `/ready` must turn 503
//! naming the matcher, orders placed meanwhile wait, and once the table is back the
//! matcher restarts by itself from its last snapshot, `/ready` is 200 again, every order
//! is settled exactly once and the audits hold.

mod common;

use std::time::{Duration, Instant};

use common::{deposit, engine_env, req, settled, EngineProcess};
use domain::{OrderType, Side};
use rand::distr::{Alphanumeric, SampleString};
use rand::Rng;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_matcher_turns_ready_red_and_comes_back_by_itself() {
    let p = testkit::placement("superv", 23).await;
    let (env, placer) = (&p.env, &p.placer);
    let tag = Alphanumeric.sample_string(&mut rand::rng(), 8);
    let mut child_env = engine_env(env, &format!("t_superv_{tag}_"));
    child_env.push(("EXCHANGE_ENGINE__SNAPSHOT_EVERY".into(), "1".into()));
    let logs = std::env::temp_dir().join(format!("superv-{tag}"));
    std::fs::create_dir_all(&logs).expect("log dir");
    let port = 19_000 + u16::from(rand::rng().random::<u8>());
    let mut engine = EngineProcess::new(
        "relay,matcher,settler",
        port,
        child_env,
        logs.join("engine.log"),
    );
    engine.start();
    engine.ready().await;

    deposit(env, 1, "BTC", "1").await;
    deposit(env, 2, "USDT", "100000").await;
    let place = |side, qty: &str| {
        let r = req(
            if side == Side::Sell { 1 } else { 2 },
            side,
            OrderType::Limit,
            Some("50000"),
            Some(qty),
            None,
        );
        async move { placer.place(&r).await.expect("place").expect("accepted") }
    };
    place(Side::Sell, "0.5").await;
    place(Side::Buy, "0.1").await;
    settled(env, 2, "BTC", ("0.0999", "0")).await;

    // the snapshot table goes away: the next save fails, and so does every restart's
    // restore, until it is back
    let meta = env.map.meta();
    sqlx::query("RENAME TABLE matcher_snapshots TO matcher_snapshots_away")
        .execute(meta)
        .await
        .expect("rename away");
    place(Side::Buy, "0.1").await;
    let until = Instant::now() + Duration::from_secs(60);
    let down = loop {
        match engine.readiness().await {
            Some((503, body)) => break body,
            other => assert!(
                Instant::now() < until,
                "/ready stayed {other:?} after the matcher failed; log {}",
                engine.log.display()
            ),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        down.contains("down: matcher") && down.contains("snapshot"),
        "/ready names the role and why: {down:?}"
    );
    // still down a while later: a role failing in a loop is not reported healthy
    place(Side::Buy, "0.1").await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(engine.readiness().await.map(|r| r.0), Some(503));
    let metrics = common::http_get(port, "/metrics").await.expect("metrics").1;
    assert!(
        metrics.contains("exchange_role_up{role=\"matcher\"} 0")
            && metrics.contains("exchange_role_up{role=\"settler-0\"} 1")
            && metrics.contains("exchange_ready 0"),
        "{metrics}"
    );

    // back: the matcher restarts by itself from the last snapshot it saved
    sqlx::query("RENAME TABLE matcher_snapshots_away TO matcher_snapshots")
        .execute(meta)
        .await
        .expect("rename back");
    let until = Instant::now() + Duration::from_secs(90);
    while engine.readiness().await.map(|r| r.0) != Some(200) {
        assert!(
            Instant::now() < until,
            "the matcher did not come back; log {}",
            engine.log.display()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // the order placed while it was down is matched; the one before the failure, whose
    // output was published but not snapshotted, is replayed and not settled twice
    settled(env, 2, "BTC", ("0.2997", "0")).await;
    settled(env, 1, "BTC", ("0.5", "0.2")).await;
    let metrics = common::http_get(port, "/metrics").await.expect("metrics").1;
    let restarts = metrics
        .lines()
        .find_map(|l| l.strip_prefix("exchange_role_restarts_total{role=\"matcher\"} "))
        .and_then(|n| n.parse::<u64>().ok())
        .expect("restart counter");
    assert!(
        restarts >= 2,
        "restarted (and failed again) {restarts} times"
    );
    testkit::all_audits_hold(env).await;
    drop(engine);
    p.env.drop_all().await;
}

/// The TCC recovery role: a pass that fails (here its `tcc_global` table renamed away
/// in meta) shows the role down on `/ready`, naming it and why, instead of a warning in
/// a log while `/ready` stays green; once the table is back, the role is up again by
/// itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_recovery_pass_turns_ready_red_until_it_works() {
    let env = testkit::TestEnv::new("superv_rec").await;
    let tag = Alphanumeric.sample_string(&mut rand::rng(), 8);
    let logs = std::env::temp_dir().join(format!("superv-rec-{tag}"));
    std::fs::create_dir_all(&logs).expect("log dir");
    let port = 19_300 + u16::from(rand::rng().random::<u8>());
    let mut engine = EngineProcess::new(
        "recovery",
        port,
        engine_env(&env, &format!("t_supervrec_{tag}_")),
        logs.join("engine.log"),
    );
    engine.start();
    engine.ready().await;
    let meta = env.map.meta();
    sqlx::query("RENAME TABLE tcc_global TO tcc_global_away")
        .execute(meta)
        .await
        .expect("rename away");
    let wait = |want: u16| {
        let engine = &engine;
        async move {
            let until = Instant::now() + Duration::from_secs(60);
            loop {
                if let Some((code, body)) = engine.readiness().await {
                    if code == want {
                        return body;
                    }
                }
                assert!(Instant::now() < until, "/ready never answered {want}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    let down = wait(503).await;
    assert!(
        down.contains("down: recovery") && down.contains("recovery pass failed"),
        "/ready names the role and why: {down:?}"
    );
    sqlx::query("RENAME TABLE tcc_global_away TO tcc_global")
        .execute(meta)
        .await
        .expect("rename back");
    wait(200).await;
    drop(engine);
    env.drop_all().await;
}
