//! The user directory against real MariaDB + Redis: spread, idempotence, crash/retry,
//! cached lookups.

use std::sync::Arc;

use deadpool_redis::redis::AsyncCommands;
use router::directory::NO_PASSWORD;
use router::RouterError;
use testkit::TestEnv;

#[tokio::test]
async fn ten_thousand_users_spread_evenly_over_the_shards() {
    let env = TestEnv::new("spread").await;
    let dir = Arc::new(env.directory());
    let n = 10_000u32;
    let workers = 32u32;
    let tasks: Vec<_> = (0..workers)
        .map(|w| {
            let dir = dir.clone();
            tokio::spawn(async move {
                for i in (w..n).step_by(workers as usize) {
                    dir.register(&format!("user{i}@spread.test"), NO_PASSWORD)
                        .await
                        .expect("register");
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("task");
    }
    let mut total = 0;
    for (id, pool) in env.map.iter() {
        let (count,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM users")
            .fetch_one(pool)
            .await
            .expect("count");
        let (misplaced,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM users WHERE id % ? <> ?")
            .bind(env.map.count())
            .bind(id.get())
            .fetch_one(pool)
            .await
            .expect("misplaced");
        assert_eq!(misplaced, 0, "shard {id} holds users of other shards");
        let share = f64::from(u32::try_from(count).expect("count")) / f64::from(n);
        let fair = 1.0 / f64::from(env.map.count());
        assert!(
            (share - fair).abs() <= 0.02,
            "shard {id} holds {share:.4} of users, fair share {fair:.4}"
        );
        total += count;
    }
    assert_eq!(total, i64::from(n));
    let (max_id,): (u64,) = sqlx::query_as("SELECT MAX(id) FROM user_directory")
        .fetch_one(env.map.meta())
        .await
        .expect("max");
    assert_eq!(max_id, u64::from(n), "ids are dense");
    env.drop_all().await;
}

#[tokio::test]
async fn registration_is_idempotent_and_repairs_after_a_crash() {
    let env = TestEnv::new("retry").await;
    let dir = env.directory();
    let first = dir
        .register("Alice@Example.com", NO_PASSWORD)
        .await
        .expect("register");
    assert!(first.created);
    let again = dir
        .register("alice@example.com", NO_PASSWORD)
        .await
        .expect("again");
    assert_eq!((again.user_id, again.created), (first.user_id, false));

    // crash between the meta insert and the shard insert: the shard row is missing
    let pool = env.map.pool_for(first.user_id);
    sqlx::query("DELETE FROM users WHERE id = ?")
        .bind(first.user_id.get())
        .execute(pool)
        .await
        .expect("delete");
    assert!(!dir.exists_on_shard(first.user_id).await.expect("exists"));
    let retry = dir
        .register("alice@example.com", NO_PASSWORD)
        .await
        .expect("retry");
    assert_eq!(retry.user_id, first.user_id);
    assert!(
        dir.exists_on_shard(first.user_id).await.expect("exists"),
        "retry completed the shard row"
    );
    let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM user_directory")
        .fetch_one(env.map.meta())
        .await
        .expect("n");
    assert_eq!(n, 1, "no second directory row");

    // bad input is refused before anything is written
    for bad in ["", "no-at-sign", "a b@c.d", "x@y"] {
        assert!(
            matches!(
                dir.register(bad, NO_PASSWORD).await,
                Err(RouterError::InvalidInput(_))
            ),
            "{bad:?}"
        );
    }
    assert!(matches!(
        dir.register("ok@ok.io", "").await,
        Err(RouterError::InvalidInput(_))
    ));
    let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM user_directory")
        .fetch_one(env.map.meta())
        .await
        .expect("n");
    assert_eq!(n, 1);
    env.drop_all().await;
}

#[tokio::test]
async fn lookups_are_cached_in_redis_and_revocation_drops_the_cache() {
    let env = TestEnv::new("lookup").await;
    let dir = env.directory();
    let bob = dir
        .register("bob@example.com", NO_PASSWORD)
        .await
        .expect("register")
        .user_id;
    let mut redis = env.redis().get().await.expect("redis");
    let email_key = format!("{}dir:email:bob@example.com", env.prefix);
    let cached: Option<u64> = redis.get(&email_key).await.expect("get");
    assert_eq!(cached, Some(bob.get()));

    // the cache answers even when meta no longer would (proves it is used), ...
    sqlx::query("UPDATE user_directory SET email = 'moved@example.com' WHERE id = ?")
        .bind(bob.get())
        .execute(env.map.meta())
        .await
        .expect("update");
    assert_eq!(
        dir.lookup_email("BOB@example.com").await.expect("lookup"),
        Some(bob)
    );
    // ... and a miss falls back to meta and fills the cache
    let _: () = redis.del(&email_key).await.expect("del");
    assert_eq!(
        dir.lookup_email("bob@example.com").await.expect("lookup"),
        None
    );
    assert_eq!(
        dir.lookup_email("moved@example.com").await.expect("lookup"),
        Some(bob)
    );

    // emails are compared byte for byte (after lower-casing): no accent folding
    let jose = dir
        .register("jose@example.com", NO_PASSWORD)
        .await
        .expect("jose");
    let jose2 = dir
        .register("josé@example.com", NO_PASSWORD)
        .await
        .expect("josé");
    assert!(jose.created && jose2.created);
    assert_ne!(jose.user_id, jose2.user_id);
    let strasse = dir
        .register("strasse@example.com", NO_PASSWORD)
        .await
        .expect("ss");
    let strasse2 = dir
        .register("straße@example.com", NO_PASSWORD)
        .await
        .expect("ß");
    assert_ne!(strasse.user_id, strasse2.user_id);

    let key = dir.create_api_key(bob, "test").await.expect("api key");
    assert_eq!(key.key.len(), 64);
    assert_eq!(
        dir.lookup_api_key(&key.key).await.expect("lookup"),
        Some(bob)
    );
    // keys are case-sensitive in the table and in the cache alike
    let flipped: String = key
        .key
        .chars()
        .map(|c| {
            if c.is_ascii_uppercase() {
                c.to_ascii_lowercase()
            } else {
                c.to_ascii_uppercase()
            }
        })
        .collect();
    assert_eq!(dir.lookup_api_key(&flipped).await.expect("lookup"), None);
    // what signature verification needs: the owner and the secret created with it
    let auth = dir
        .key_auth(&key.key)
        .await
        .expect("key auth")
        .expect("active key");
    assert_eq!((auth.user_id, &auth.secret), (bob, &key.secret));
    assert_eq!(dir.key_auth(&flipped).await.expect("key auth"), None);
    assert!(dir.revoke_api_key(&key.key).await.expect("revoke"));
    assert_eq!(
        dir.key_auth(&key.key).await.expect("key auth"),
        None,
        "revoked"
    );
    assert_eq!(
        dir.lookup_api_key(&key.key).await.expect("lookup"),
        None,
        "revoked key must not live on in the cache"
    );
    assert_eq!(dir.lookup_api_key("short").await.expect("lookup"), None);
    let nobody = domain::UserId::new(999_999).expect("id");
    assert!(dir.create_api_key(nobody, "x").await.is_err());
    env.drop_all().await;
}
