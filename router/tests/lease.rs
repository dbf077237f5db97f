//! Snowflake worker-id leases in the real Redis.

use std::collections::HashSet;
use std::time::Duration;

use deadpool_redis::redis::AsyncCommands;
use router::{SnowflakeError, WorkerLease};
use testkit::TestEnv;

#[tokio::test]
async fn leases_are_exclusive_and_loss_stops_issuance() {
    let env = TestEnv::unmigrated("lease").await;
    let ttl = Duration::from_millis(1_500);
    let a = WorkerLease::acquire(env.redis(), &env.prefix, 3, ttl)
        .await
        .expect("lease a");
    let b = WorkerLease::acquire(env.redis(), &env.prefix, 3, ttl)
        .await
        .expect("lease b");
    assert_ne!(
        a.worker(),
        b.worker(),
        "two live leases never share a worker id"
    );
    let (ga, gb) = (a.generator().expect("gen a"), b.generator().expect("gen b"));
    let mut seen = HashSet::new();
    for _ in 0..10_000 {
        assert!(seen.insert(ga.next_id().expect("a")));
        assert!(seen.insert(gb.next_id().expect("b")));
    }

    // renewals keep a lease alive well past its ttl
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    assert!(a.is_valid());
    ga.next_id().expect("still leased after renewals");

    // someone else takes a's key (e.g. after a long pause): the next renewal notices
    let key = format!("{}snowflake:3:{}", env.prefix, a.worker());
    let mut redis = env.redis().get().await.expect("redis");
    let _: () = redis.set(&key, "intruder").await.expect("steal");
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    assert!(!a.is_valid());
    assert_eq!(ga.next_id(), Err(SnowflakeError::LeaseLost));
    gb.next_id().expect("b unaffected");

    // release frees the id at once for the next process
    let freed = b.worker();
    b.release().await.expect("release");
    assert_eq!(
        gb.next_id(),
        Err(SnowflakeError::LeaseLost),
        "released lease issues nothing"
    );
    let c = WorkerLease::acquire(env.redis(), &env.prefix, 3, ttl)
        .await
        .expect("lease c");
    assert_eq!(c.worker(), freed);
    drop(c);
    drop(a);
    env.drop_all().await;
}

#[tokio::test]
async fn a_new_holder_never_issues_before_the_previous_holders_high_water_mark() {
    let env = TestEnv::unmigrated("leasehw").await;
    let ttl = Duration::from_millis(2_000);
    let now = || u64::try_from(chrono::Utc::now().timestamp_millis()).expect("ms");
    let mut redis = env.redis().get().await.expect("redis");
    let hw_key = format!("{}snowflake:4:0:hw", env.prefix);

    // a previous holder may have issued ids up to 1 minute ahead of our clock (the
    // clock stepped back across the restart): refuse, and leave the id free
    let _: () = redis.set(&hw_key, now() + 60_000).await.expect("set hw");
    match WorkerLease::acquire(env.redis(), &env.prefix, 4, ttl).await {
        Err(router::RouterError::Snowflake(SnowflakeError::ClockMovedBackwards { behind_ms })) => {
            assert!(behind_ms > 59_000, "{behind_ms}");
        }
        other => panic!("expected ClockMovedBackwards, got {other:?}"),
    }
    let held: Option<String> = redis
        .get(format!("{}snowflake:4:0", env.prefix))
        .await
        .expect("get");
    assert_eq!(held, None, "a refused acquire does not keep the lease");

    // 3 ms ahead: waited out; the first id is later than the mark
    let mark = now() + 3;
    let _: () = redis.set(&hw_key, mark).await.expect("set hw");
    let lease = WorkerLease::acquire(env.redis(), &env.prefix, 4, ttl)
        .await
        .expect("lease");
    assert_eq!(lease.worker(), 0);
    let id = lease.generator().expect("gen").next_id().expect("id");
    assert!(router::decode(id).expect("decode").unix_ms > mark);
    // holding raises the mark to the lease deadline; release lowers it to "now"
    let held_hw: u64 = redis.get(&hw_key).await.expect("hw");
    assert!(held_hw >= now() + 1_000, "mark covers the lease period");
    lease.release().await.expect("release");
    let released_hw: u64 = redis.get(&hw_key).await.expect("hw");
    assert!(released_hw <= now());
    let again = WorkerLease::acquire(env.redis(), &env.prefix, 4, ttl)
        .await
        .expect("re-lease at once");
    drop(again);
    env.drop_all().await;
}
