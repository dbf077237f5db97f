//! A real primary and replica pair (two fresh MariaDB servers this test starts in a
//! temporary directory, the same binaries as the stack): `router::replication` reads
//! the replica's state and lag, says "not a replica" for the primary, sees a stopped
//! SQL thread; `shardctl status` shows it in the shard's `replication_lag` column.

use std::time::{Duration, Instant};

mod common;

use router::replication::replica_status;
use testkit::mariadb::Server;
use testkit::TestEnv;

/// Polls until `f` is true (a real replica needs a moment).
async fn eventually<F, Fut>(what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(30);
    while !f().await {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn shardctl_status(env: &TestEnv, replicas: &str) -> (bool, String, String) {
    shardctl(env, replicas, &["status"])
}

fn shardctl(env: &TestEnv, replicas: &str, args: &[&str]) -> (bool, String, String) {
    let out = common::shardctl(env)
        .args(args)
        .env("EXCHANGE_REPLICA_URLS", replicas)
        .output()
        .expect("run shardctl");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The `replication_lag` cell of a shard's line in `shardctl status`.
fn lag_cell(stdout: &str, shard: &str) -> String {
    stdout
        .lines()
        .skip_while(|l| !l.contains("relay_backlog"))
        .find(|l| l.starts_with(shard))
        .map(|l| {
            // place, backlog, reviewing, then the lag (which may contain spaces), then
            // the parked fill batches
            let cells: Vec<&str> = l.split_whitespace().collect();
            cells[3..cells.len().saturating_sub(1).max(3)].join(" ")
        })
        .unwrap_or_else(|| panic!("no {shard} line:\n{stdout}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_replica_shows_its_lag_and_a_stopped_thread() {
    let primary = Server::start("primary", 91, "log-bin = bin\nbinlog_format = ROW");
    let replica = Server::start("replica", 92, "read_only = ON");
    primary
        .sql(
            "CREATE USER repl@'127.0.0.1' IDENTIFIED BY 'repl'; \
             GRANT REPLICATION SLAVE ON *.* TO repl@'127.0.0.1'; \
             CREATE USER mon@'127.0.0.1' IDENTIFIED BY 'mon'; \
             GRANT SLAVE MONITOR ON *.* TO mon@'127.0.0.1'",
        )
        .expect("users on the primary");
    replica
        .sql(&format!(
            "CHANGE MASTER TO MASTER_HOST = '127.0.0.1', MASTER_PORT = {}, \
             MASTER_USER = 'repl', MASTER_PASSWORD = 'repl', MASTER_USE_GTID = slave_pos; \
             START SLAVE",
            primary.port
        ))
        .expect("replica set up");
    let (p_url, r_url) = (primary.url("mon"), replica.url("mon"));
    let t = Duration::from_secs(5);

    // the monitoring user reaches the replica through replication itself
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let now = replica_status(&r_url, t).await;
        if matches!(&now, Ok(Some(s)) if s.replicating() && s.lag_s.is_some()) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the replica is not replicating: {now:?}; as root: {:?}",
            replica.sql("SHOW SLAVE STATUS\\G")
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let s = replica_status(&r_url, t)
        .await
        .expect("status")
        .expect("a replica");
    assert_eq!(s.primary, format!("127.0.0.1:{}", primary.port));
    assert_eq!(s.lag_s, Some(0));
    assert_eq!(s.describe(), "0 s");
    assert!(!s.url.contains(":mon@"), "password redacted: {}", s.url);
    assert_eq!(s.last_error, None);
    // the primary is not a replica
    assert_eq!(replica_status(&p_url, t).await.expect("primary"), None);
    // rows really travel
    primary
        .sql("CREATE DATABASE r; CREATE TABLE r.t (id INT PRIMARY KEY); INSERT INTO r.t VALUES (7)")
        .expect("write on the primary");
    eventually("the row on the replica", || async {
        replica
            .sql("SELECT id FROM r.t")
            .is_ok_and(|o| o.trim() == "7")
    })
    .await;

    // shardctl status: shard 3's replica is this one, the others have none
    let env = TestEnv::new("replica").await;
    let (ok, out, err) = shardctl_status(&env, &format!(",,,{r_url}"));
    assert!(ok, "status: {out}\n{err}");
    assert_eq!(lag_cell(&out, "shard3"), "0 s", "{out}");
    assert_eq!(lag_cell(&out, "shard0"), "no replica", "{out}");
    assert!(!out.contains(":mon@"), "password redacted: {out}");
    let (ok, out, err) = shardctl(&env, &format!(",,,{r_url}"), &["--json", "status"]);
    assert!(ok, "{out}\n{err}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("json");
    let s3 = &v["shards"][3];
    assert_eq!(s3["replication_lag"], "0 s", "{v}");
    assert_eq!(s3["replica"]["status"]["lag_s"], 0, "{v}");
    assert_eq!(s3["replica"]["status"]["sql_running"], true, "{v}");
    assert_eq!(v["shards"][0]["replica"], serde_json::Value::Null, "{v}");

    // a stopped SQL thread: no lag to show, and status fails
    replica
        .sql("STOP SLAVE SQL_THREAD")
        .expect("stop sql thread");
    let s = replica_status(&r_url, t)
        .await
        .expect("status")
        .expect("a replica");
    assert!(s.io_running && !s.sql_running, "{s:?}");
    assert_eq!(s.lag_s, None);
    assert_eq!(s.describe(), "stopped (sql)");
    let (ok, out, _) = shardctl_status(&env, &format!(",,,{r_url}"));
    assert!(!ok, "a stopped replica fails status: {out}");
    assert_eq!(lag_cell(&out, "shard3"), "stopped (sql)", "{out}");

    // an unreachable replica is an error in the cell, not a crash
    drop(replica);
    assert!(replica_status(&r_url, t).await.is_err());
    let (ok, out, _) = shardctl_status(&env, &format!(",,,{r_url}"));
    assert!(!ok, "{out}");
    assert!(lag_cell(&out, "shard3").starts_with("down"), "{out}");

    // more replica urls than shards: a configuration error naming the problem
    let (ok, _, err) = shardctl_status(&env, ",,,,mysql://x@127.0.0.1:1/y");
    assert!(!ok);
    assert!(err.contains("5 replica urls for 4 shards"), "{err}");
    env.drop_all().await;
}
