//! A same-shard transfer whose COMMIT reply is lost (issue 13, defect 4), produced by a
//! real TCP proxy between the coordinator and the shard server that forwards the
//! COMMIT and cuts the connection before its reply: the coordinator looks the transfer
//! up (after the payer's row lock) and answers it confirmed, moved once; when the look
//! fails too (the server unreachable), the caller gets `OutcomeUnknown` with the
//! transfer's id, and `Tcc::local_outcome` with that id tells, without a second
//! transfer.

mod common;

use std::sync::Arc;

use common::{amt, audits_hold, balance, deposit, uid, users};
use ledger::tcc::{Tcc, TransferError};
use router::{ShardMap, Snowflake};
use testkit::proxy::CommitCutter;
use testkit::TestEnv;

/// A coordinator whose connections to shard 1 go through `proxy`.
fn through(env: &TestEnv, proxy: &CommitCutter, worker: u8) -> Tcc {
    let mut settings = env.settings.clone();
    let url = &settings.shards[1];
    let (head, rest) = url.split_once('@').expect("user@host");
    let (_, db) = rest.split_once('/').expect("host/db");
    settings.shards[1] = format!("{head}@127.0.0.1:{}/{db}", proxy.port);
    let map = ShardMap::connect_lazy(&settings).expect("map");
    let ids = Arc::new(Snowflake::new(0, worker).expect("ids"));
    Tcc::new(map, Arc::new(move || ids.next_id()))
}

fn upstream(env: &TestEnv) -> String {
    let url = &env.settings.shards[1];
    let (_, rest) = url.split_once('@').expect("user@host");
    rest.split_once('/').expect("host/db").0.to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_commit_reply_of_a_local_transfer_is_resolved_or_reported_with_its_id() {
    let env = TestEnv::new("tcclost").await;
    users(&env, 5).await; // users 1 and 5 share shard 1
    deposit(&env, 1, "USDT", "100").await;

    // the reply is lost once: the coordinator's look finds the transfer committed
    let proxy = CommitCutter::start(upstream(&env), 1, false).await;
    let t = through(&env, &proxy, 5);
    let done = t
        .transfer(uid(1), uid(5), "USDT", "10")
        .await
        .expect("confirmed after the look");
    assert!(done.local);
    assert_eq!(proxy.cut(), 1, "the COMMIT reply was really lost");
    assert_eq!(balance(&env, 1, "USDT").await, (amt("90"), amt("0")));
    assert_eq!(balance(&env, 5, "USDT").await, (amt("10"), amt("0")));

    // lost, and the server unreachable after it: unknown, with the id
    let proxy = CommitCutter::start(upstream(&env), 1, true).await;
    let t = through(&env, &proxy, 6);
    let e = t
        .transfer(uid(1), uid(5), "USDT", "7")
        .await
        .expect_err("nobody can tell yet");
    let TransferError::OutcomeUnknown { gid, .. } = e else {
        panic!("expected OutcomeUnknown, got {e}");
    };
    // it did commit, once; the id says so once the shard is back
    proxy.heal();
    assert!(
        t.local_outcome(gid, uid(1)).await.expect("look"),
        "committed"
    );
    assert_eq!(balance(&env, 1, "USDT").await, (amt("83"), amt("0")));
    assert_eq!(balance(&env, 5, "USDT").await, (amt("17"), amt("0")));
    // an id that never committed is not found
    assert!(!t.local_outcome(gid + 1, uid(1)).await.expect("look"));
    audits_hold(&env).await;
    env.drop_all().await;
}
