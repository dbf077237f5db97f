//! The `recovery` role of a real `engine run` process finishes TCC transfers that a
//! crashed coordinator left behind: a decided one (`confirming`) is confirmed, one
//! still `trying` past the Try timeout is cancelled, and the money ends exact.

mod common;

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{amt, balance, deposit};
use domain::{Amount, Asset, UserId};
use ledger::tcc::{Leg, Tcc};
use router::Snowflake;
use testkit::{global_status, TestEnv};

/// Writes a global in `status` and runs both Tries, as a coordinator that then died.
async fn stranded(env: &TestEnv, tcc: &Tcc, gid: u64, amount: &str, status: &str) -> Leg {
    let leg = Leg {
        gid,
        from: UserId::new(1).expect("u"),
        to: UserId::new(2).expect("u"),
        asset: Asset::new("USDT").expect("a"),
        amount: amt(amount),
    };
    let payload = serde_json::json!({"from": 1, "to": 2, "asset": "USDT", "amount": amount});
    sqlx::query(
        "INSERT INTO tcc_global (gid, kind, status, payload, created_at) \
         VALUES (?, 'transfer', ?, ?, CURRENT_TIMESTAMP(3) - INTERVAL 10 SECOND)",
    )
    .bind(gid)
    .bind(status)
    .bind(payload.to_string())
    .execute(env.map.meta())
    .await
    .expect("global");
    tcc.try_source(&leg).await.expect("try source");
    tcc.try_target(&leg).await.expect("try target");
    leg
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_recovery_role_finishes_what_a_crashed_coordinator_left() {
    let env = TestEnv::new("recoveryrole").await;
    let dir = env.directory();
    for i in 1..=2 {
        dir.register(
            &format!("r{i}@recovery.test"),
            router::directory::NO_PASSWORD,
        )
        .await
        .expect("register");
    }
    deposit(&env, 1, "USDT", "10").await;
    let ids = Arc::new(Snowflake::new(0, 26).expect("ids"));
    let tcc = Tcc::new(env.map.clone(), Arc::new(move || ids.next_id()));
    let decided = stranded(&env, &tcc, 9_001, "3", "confirming").await;
    let undecided = stranded(&env, &tcc, 9_002, "4", "trying").await;
    // 3 + 4 frozen by the two Tries
    assert_eq!(balance(&env, 1, "USDT").await, (amt("3"), amt("7")));

    let port = 19_400 + u16::from(rand::random::<u8>());
    let kafka = std::env::var("EXCHANGE_KAFKA_PORT").unwrap_or_else(|_| "9092".into());
    let mut child = Command::new(env!("CARGO_BIN_EXE_engine"))
        .args(["run", "--roles", "recovery"])
        .env("EXCHANGE_SHARD_URLS", env.settings.shards.join(","))
        .env("EXCHANGE_META", &env.settings.meta)
        .env("EXCHANGE_REDIS__URL", &env.settings.redis.url)
        .env("EXCHANGE_ENGINE__BROKERS", format!("127.0.0.1:{kafka}"))
        .env(
            "EXCHANGE_ENGINE__TOPIC_PREFIX",
            format!("t_recovery_{port}_"),
        )
        .env("EXCHANGE_ENGINE__HTTP_ADDR", format!("127.0.0.1:{port}"))
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn engine");
    let until = Instant::now() + Duration::from_secs(60);
    loop {
        let (a, b) = (
            global_status(&env, decided.gid).await,
            global_status(&env, undecided.gid).await,
        );
        if a == "confirmed" && b == "cancelled" {
            break;
        }
        assert!(Instant::now() < until, "recovery did not finish: {a} / {b}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    child.kill().expect("kill");
    child.wait().expect("reap");
    assert_eq!(balance(&env, 1, "USDT").await, (amt("7"), Amount::ZERO));
    assert_eq!(balance(&env, 2, "USDT").await, (amt("3"), Amount::ZERO));
    common::all_audits_hold(&env).await;
    env.drop_all().await;
}
