//! `shardctl status`, `fills parked` and `fills retry` over parked fill batches (issue
//! 13, defect 6), as a real process against the real shards. The batches are parked
//! here through `trading::parked` (what the engine's settler calls) and the settler's
//! answers to a retry are played by the test; the settler itself parking and retrying
//! real batches is `engine/tests/parked.rs`.

mod common;

use std::process::{Command, Output};
use std::time::{Duration, Instant};

use domain::ShardId;
use serde_json::Value;
use testkit::TestEnv;
use trading::parked::{self, NewParked, ParkState};

fn run(mut c: Command, args: &[&str]) -> (Option<i32>, String, String) {
    let out = c.args(args).output().expect("run shardctl");
    text(&out)
}

fn text(out: &Output) -> (Option<i32>, String, String) {
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn lines(stdout: &str) -> Vec<Value> {
    stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("JSON line ({e}): {l}")))
        .collect()
}

async fn park(pool: &sqlx::MySqlPool, state: ParkState, first: u64, last: u64) -> u64 {
    parked::park(
        pool,
        &NewParked {
            symbol: "BTCUSDT",
            stream: "orders",
            first_seq: first,
            last_seq: last,
            events: 2,
            batch: b"not decoded by shardctl",
            fills_offset: Some(7),
            state,
            attempts: if state == ParkState::Failed { 10 } else { 0 },
            last_error: if state == ParkState::Failed {
                "table trades_BTCUSDT_202612 does not exist on shard 1"
            } else {
                "queued behind parked batch 1 of BTCUSDT"
            },
        },
    )
    .await
    .expect("park")
}

/// Runs `fills retry --shard 1` in the background and, once its request is in the
/// table, answers it with `answer`; returns what the command printed.
async fn retry_answered_by<F, Fut>(env: &TestEnv, pool: &sqlx::MySqlPool, answer: F) -> Output
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let child = common::shardctl(env)
        .args(["--json", "fills", "retry", "--shard", "1", "--wait-s", "60"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    let until = Instant::now() + Duration::from_secs(30);
    while !parked::list(pool)
        .await
        .expect("list")
        .iter()
        .all(|b| b.retry_requested)
    {
        assert!(Instant::now() < until, "the retry was never asked for");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    answer().await;
    tokio::task::spawn_blocking(move || child.wait_with_output().expect("wait"))
        .await
        .expect("join")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_lists_and_retries_parked_fill_batches() {
    let env = TestEnv::new("ctlfills").await;
    let shard1 = ShardId::new(1);
    let pool = env.map.pool(shard1).expect("pool").clone();
    let head = park(&pool, ParkState::Failed, 5, 9).await;
    let queued = park(&pool, ParkState::Queued, 12, 15).await;

    // status: the shard's parked batches, and not ok (exit 1)
    let (code, out, err) = run(common::shardctl(&env), &["--json", "status"]);
    assert_eq!(code, Some(1), "{out}{err}");
    let s: Value = serde_json::from_str(&out).expect("json");
    assert_eq!(s["ok"], false, "{s:#}");
    assert_eq!(s["shards"][0]["parked_fills"], serde_json::json!([]));
    let p = s["shards"][1]["parked_fills"].as_array().expect("parked");
    assert_eq!(p.len(), 2, "{s:#}");
    assert_eq!(
        (
            &p[0]["id"],
            &p[0]["state"],
            &p[0]["attempts"],
            &p[0]["first_seq"],
            &p[0]["last_seq"]
        ),
        (
            &Value::from(head),
            &Value::from("failed"),
            &Value::from(10),
            &Value::from(5),
            &Value::from(9)
        )
    );
    assert_eq!(
        (&p[1]["id"], &p[1]["state"]),
        (&Value::from(queued), &Value::from("queued"))
    );
    let (code, out, _) = run(common::shardctl(&env), &["status"]);
    assert_eq!(code, Some(1));
    assert!(out.contains("parked_fills"), "{out}");
    assert!(
        out.contains("PARKED shard1: 2 fill batches of BTCUSDT held back")
            && out.contains("oldest failure: BTCUSDT seqs 5..9, 10 attempts: table trades_BTCUSDT_202612 does not exist"),
        "{out}"
    );

    // fills parked: one object per batch, with its shard
    let (code, out, err) = run(common::shardctl(&env), &["fills", "parked", "--json"]);
    assert_eq!(code, Some(0), "{err}");
    let l = lines(&out);
    assert_eq!(l.len(), 2, "{out}");
    assert_eq!(
        (&l[0]["shard"], &l[0]["id"], &l[0]["symbol"]),
        (&Value::from(1), &Value::from(head), &Value::from("BTCUSDT"))
    );
    assert_eq!(
        (&l[1]["id"], &l[1]["fills_offset"]),
        (&Value::from(queued), &Value::from(7))
    );
    let (code, out, _) = run(common::shardctl(&env), &["fills", "parked"]);
    assert_eq!(code, Some(0));
    assert!(
        out.contains("last error") && out.contains("5..9") && out.contains("2 parked"),
        "{out}"
    );

    // no settler answers: exit 1, the request stays
    let (code, out, err) = run(
        common::shardctl(&env),
        &["--json", "fills", "retry", "--shard", "1", "--wait-s", "1"],
    );
    assert_eq!(code, Some(1), "{out}{err}");
    let r = &lines(&out)[0];
    assert_eq!(
        (&r["answered"], &r["remaining"], &r["requested"]),
        (&Value::from(false), &Value::from(2), &Value::from(2)),
        "{r}"
    );
    assert!(parked::list(&pool)
        .await
        .expect("list")
        .iter()
        .all(|b| b.retry_requested));
    let (code, out, _) = run(
        common::shardctl(&env),
        &["fills", "retry", "--shard", "1", "--wait-s", "0"],
    );
    assert_eq!(code, Some(1));
    assert!(
        out.contains("no answer within 0 s")
            && out.contains("is the engine's settler for shard 1 running?"),
        "{out}"
    );

    // a settler that starts answers the standing request (here: it failed again)
    parked::failed_again(&pool, head, "BTCUSDT", "still broken")
        .await
        .expect("answer");
    assert!(parked::list(&pool)
        .await
        .expect("list")
        .iter()
        .all(|b| !b.retry_requested));

    // the settler answers a new request with a failure: exit 1, what is still parked
    // and why
    let out = retry_answered_by(&env, &pool, || async {
        parked::failed_again(&pool, head, "BTCUSDT", "broken again")
            .await
            .expect("answer");
    })
    .await;
    let (code, out, err) = text(&out);
    assert_eq!(code, Some(1), "{out}{err}");
    let r = &lines(&out)[0];
    assert_eq!(
        (&r["answered"], &r["remaining"]),
        (&Value::from(true), &Value::from(2)),
        "{r}"
    );
    assert_eq!(
        (&r["batches"][0]["attempts"], &r["batches"][0]["last_error"]),
        (&Value::from(12), &Value::from("broken again"))
    );
    assert_eq!(
        r["batches"][1]["attempts"], 0,
        "only the batch that failed again counts"
    );

    // the settler applies them (removing each): exit 0
    let out = retry_answered_by(&env, &pool, || async {
        for id in [head, queued] {
            parked::remove(&pool, id).await.expect("remove");
        }
    })
    .await;
    let (code, out, err) = text(&out);
    assert_eq!(code, Some(0), "{out}{err}");
    let r = &lines(&out)[0];
    assert_eq!(
        (&r["answered"], &r["remaining"], &r["requested"]),
        (&Value::from(true), &Value::from(0), &Value::from(2)),
        "{r}"
    );

    // nothing parked anywhere: every shard says so; status is ok again
    let (code, out, _) = run(common::shardctl(&env), &["fills", "retry"]);
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(
        out.matches("nothing parked").count(),
        usize::from(env.map.count()),
        "{out}"
    );
    let (code, out, _) = run(common::shardctl(&env), &["--json", "status"]);
    assert_eq!(code, Some(0), "{out}");
    let (code, _, err) = run(common::shardctl(&env), &["fills", "retry", "--shard", "99"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("error"), "{err}");
    env.drop_all().await;
}
