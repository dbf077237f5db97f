//! The broker is down for longer than the producers' message timeout, then back
//! (issue 13: "broker down for longer than the producer's message timeout"). The relays,
//! the matching service and the settlers (with market data) run as three real
//! `engine run` processes with `message.timeout.ms` at 3 s
//! (`EXCHANGE_ENGINE__MESSAGE_TIMEOUT_MS`), under a load of crossing orders that never
//! stops: placement needs no broker, so every placement is acked throughout. The
//! broker is `kill -9`ed and started again 12 s later.
//!
//! While it is down the relays' sends time out: `/ready` of the relay process turns
//! 503 naming the relay roles and the failed publish (the matcher and the settlers,
//! which only wait for input meanwhile, may stay ready: their consumers reconnect by
//! themselves). After it is back every role recovers by itself (the test restarts no
//! engine process) and `/ready` is 200 again;
//! every acked order is then matched and settled exactly once (after a final sweep
//! every order is filled, each balance is what its filled orders say to the unit, one
//! trade half per side per trade) and the four audits hold. Its own test binary: no
//! other test shares the outage, and the broker is started again even if it fails.
//!
//! It found two defects: the relay logged a failed round and tried again, so `/ready`
//! stayed 200 through any outage; and the relays shared one producer for the life of
//! the process, which after its sends timed out bumped its idempotent epoch by itself
//! (librdkafka does for an idempotent producer), a produce the broker (tansu 0.6)
//! panics on — its storage then failed every request until restarted, and the relays
//! never recovered. Each relay attempt now has a producer of its own.

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use common::load;
use common::EngineProcess;
use rand::distr::{Alphanumeric, SampleString};
use rand::Rng;
use router::{Snowflake, TableRouter};
use testkit::TestEnv;
use trading::placement::{load_symbols, Placer};

/// The producers' message timeout in this test.
const MESSAGE_TIMEOUT_MS: u64 = 3_000;
/// How long the load runs; the broker is killed at `KILL_AT` and started `DOWN` later.
const LOAD: Duration = Duration::from_secs(22);
const KILL_AT: Duration = Duration::from_secs(3);
const DOWN: Duration = Duration::from_secs(12);

fn stack(args: &[&str]) -> bool {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/stack.sh");
    Command::new("bash")
        .arg(script)
        .args(args)
        .status()
        .is_ok_and(|s| s.success())
}

/// Whether `scripts/stack.sh status` shows the broker up.
fn broker_up() -> bool {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/stack.sh");
    Command::new("bash")
        .arg(script)
        .arg("status")
        .output()
        .is_ok_and(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .any(|l| l.split_whitespace().take(2).eq(["kafka", "up"]))
        })
}

/// Starts the broker again when dropped: a failing test must not leave it down, nor
/// broken (a broker that answers but whose storage failed looks up: on a panic it is
/// restarted whatever its state).
struct BrokerBack;

impl Drop for BrokerBack {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let _ = stack(&["restart", "kafka"]);
        } else if !broker_up() {
            assert!(stack(&["start", "kafka"]), "stack.sh start kafka failed");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_down_past_the_message_timeout_turns_ready_red_and_every_role_recovers() {
    // another test may have the broker down for its own outage: wait for it
    let until = Instant::now() + Duration::from_secs(300);
    while !tokio::task::block_in_place(broker_up) {
        assert!(Instant::now() < until, "the broker is not up");
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    let env = TestEnv::new("brokerout").await;
    let router = TableRouter::new(&["BTCUSDT", "ETHUSDT", "ETHBTC"]).expect("router");
    env.map
        .ensure_tables(&router, Utc::now(), 1)
        .await
        .expect("tables");
    let symbols = load_symbols(env.map.meta()).await.expect("symbols");
    let ids = Arc::new(Snowflake::new(0, 30).expect("ids"));
    let placer = Placer::new(
        env.map.clone(),
        router.clone(),
        symbols,
        Arc::new(move || ids.next_id()),
    );

    let tag = Alphanumeric.sample_string(&mut rand::rng(), 8);
    let mut child_env = common::engine_env(&env, &format!("t_brokerout_{tag}_"));
    child_env.push((
        "EXCHANGE_ENGINE__MESSAGE_TIMEOUT_MS".into(),
        MESSAGE_TIMEOUT_MS.to_string(),
    ));
    // snapshots every 200 inputs: a restarted matcher resumes from one
    child_env.push(("EXCHANGE_ENGINE__SNAPSHOT_EVERY".into(), "200".into()));
    let logs = std::env::temp_dir().join(format!("brokerout-{tag}"));
    std::fs::create_dir_all(&logs).expect("log dir");
    let base_port = 22_000 + u16::from(rand::rng().random::<u8>()) * 3;
    let mut procs: Vec<EngineProcess> = ["relay", "matcher", "settler,market"]
        .into_iter()
        .enumerate()
        .map(|(i, roles)| {
            EngineProcess::new(
                roles,
                base_port + u16::try_from(i).expect("i"),
                child_env.clone(),
                logs.join(format!("{}.log", roles.replace(',', "-"))),
            )
        })
        .collect();
    for p in &mut procs {
        p.start();
    }
    for p in &procs {
        p.ready().await;
    }
    load::fund(&env).await;

    let start = Instant::now();
    let load = load::crossing_load(&placer, start, LOAD, Duration::from_millis(25));
    tokio::time::sleep(KILL_AT).await;
    let back = BrokerBack;
    assert!(
        tokio::task::block_in_place(|| stack(&["kill", "kafka"])),
        "stack.sh kill kafka"
    );
    let killed_at = Instant::now();
    // /ready of every process while the broker is down: the first 503 of each
    let mut red: BTreeMap<&str, (Duration, String)> = BTreeMap::new();
    while killed_at.elapsed() < DOWN {
        for (name, p) in ["relay", "matcher", "settler"].iter().zip(&procs) {
            if let Some((503, body)) = p.readiness().await {
                red.entry(name).or_insert((killed_at.elapsed(), body));
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        tokio::task::block_in_place(|| stack(&["start", "kafka"])),
        "stack.sh start kafka"
    );
    let back_at = Instant::now();
    let placed = load::placed(load).await;
    println!(
        "broker down {:?}; first /ready 503 while down: {red:#?}",
        back_at - killed_at
    );
    // the relays cannot publish: they show down once their sends time out
    let (after, relay_red) = red
        .get("relay")
        .expect("relay /ready red while the broker was down");
    assert!(
        relay_red.contains("relay-") && relay_red.contains("publish"),
        "{relay_red}"
    );
    assert!(
        *after >= Duration::from_millis(MESSAGE_TIMEOUT_MS - 500),
        "red after {after:?}: sooner than the message timeout?"
    );
    // placement needs no broker: nothing failed, and orders were acked throughout
    for (u, p) in &placed {
        assert!(p.failed.is_empty(), "user {u}: {:?}", p.failed);
        assert!(
            p.acked.iter().any(|(_, t)| *t > killed_at && *t < back_at),
            "user {u} placed while the broker was down"
        );
    }

    // every role comes back by itself: the test restarts no engine process
    for p in &procs {
        load::green(p, Duration::from_secs(90)).await;
    }
    println!(
        "every process ready {:?} after the broker came back",
        back_at.elapsed()
    );
    // by their supervisors: a relay with sends in flight failed and was restarted
    let mut relays_restarted = 0;
    for shard in 0..4 {
        relays_restarted += load::restarts(&procs[0], &format!("relay-{shard}")).await;
    }
    assert!(relays_restarted > 0, "no relay was restarted");
    let trades = load::all_filled_once(&env, &router, &placer, &placed, &[]).await;
    assert_eq!(
        testkit::all_audits_hold(&env).await,
        (trades, trades),
        "one trade per 0.01 BTC sold, each settled once per side"
    );
    println!("took {:?}", start.elapsed());
    drop(back);
    drop(procs);
    env.drop_all().await;
}
