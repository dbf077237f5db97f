//! Test support shared by the money tests (transfers, funding).
#![allow(dead_code)] // each test binary uses its own subset

use std::str::FromStr;

use domain::{Amount, Asset, UserId};
use router::testing::TestEnv;

/// An exact amount from text.
pub fn amt(s: &str) -> Amount {
    Amount::from_str(s).expect("amount")
}

/// A user id.
pub fn uid(u: u64) -> UserId {
    UserId::new(u).expect("user")
}

/// Registers `n` users (dense ids 1..=n: user u lives on shard u % 4).
pub async fn users(env: &TestEnv, n: u64) {
    let dir = env.directory();
    for i in 1..=n {
        let r = dir
            .register(&format!("u{i}@money.test"), router::directory::NO_PASSWORD)
            .await
            .expect("register");
        assert_eq!(r.user_id.get(), i);
    }
}

/// (available, frozen) of a spot balance (zero when there is no row).
pub async fn balance(env: &TestEnv, user: u64, asset: &str) -> (Amount, Amount) {
    let row: Option<(String, String)> = sqlx::query_as(
        "SELECT CAST(available AS CHAR), CAST(frozen AS CHAR) FROM account_balances \
         WHERE user_id = ? AND currency = ? AND account_type = 'spot'",
    )
    .bind(user)
    .bind(asset)
    .fetch_optional(env.map.pool_for(uid(user)))
    .await
    .expect("balance");
    row.map_or((Amount::ZERO, Amount::ZERO), |(a, f)| (amt(&a), amt(&f)))
}

/// An internal deposit (deposit row, balance and ledger together).
pub async fn deposit(env: &TestEnv, user: u64, asset: &str, amount: &str) {
    router::accounts::credit_deposit(
        &env.map,
        uid(user),
        &Asset::new(asset).expect("asset"),
        amt(amount),
        &format!("dep-{user}-{asset}-{amount}"),
    )
    .await
    .expect("deposit");
}

/// The conservation and frozen-vs-holds audits hold.
pub async fn audits_hold(env: &TestEnv) {
    for (asset, t) in router::audit::conservation(&env.map).await.expect("audit") {
        assert!(t.holds(), "{asset}: {t:?}");
    }
    let frozen = router::audit::frozen_vs_open_orders(&env.map)
        .await
        .expect("frozen audit");
    assert!(frozen.holds(), "{frozen:?}");
}

/// `shardctl` pointed at `env`'s databases and Redis prefix, with quiet logs: add
/// arguments (and environment), then run it.
pub fn shardctl(env: &TestEnv) -> std::process::Command {
    let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_shardctl"));
    c.env("EXCHANGE_SHARD_URLS", env.settings.shards.join(","))
        .env("EXCHANGE_META", &env.settings.meta)
        .env("EXCHANGE_REDIS__KEY_PREFIX", &env.prefix)
        .env("RUST_LOG", "warn");
    c
}
