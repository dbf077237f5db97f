//! Snowflake worker-id leases in the real Redis.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::TestEnv;
use deadpool_redis::redis::AsyncCommands;
use router::{SnowflakeError, WorkerLease};

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
