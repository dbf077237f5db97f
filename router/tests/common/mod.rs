//! Test support shared by the money tests (transfers, funding).
#![allow(dead_code)] // each test binary uses its own subset

use std::str::FromStr;

use domain::{Amount, Asset, UserId};
use router::testing::TestEnv;
#[allow(unused_imports)] // each test binary uses its own subset
pub use router::testing::{audits_hold, balance};

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
