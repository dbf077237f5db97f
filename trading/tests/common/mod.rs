//! Set-up of the trading tests: fresh databases with month tables and the symbol
//! config, and a placer. Everything panics on failure (test support).

#![allow(dead_code)]

use std::sync::Arc;

use chrono::Utc;
use router::{Snowflake, TableRouter};
use testkit::TestEnv;
use trading::placement::{load_symbols, Placer};

#[allow(unused_imports)] // each test binary uses its own subset
pub use testkit::{amt, balance};

/// Credits a completed deposit of `amount` `asset` to `user` (txid `d-{user}-{asset}`).
pub async fn deposit(env: &TestEnv, user: u64, asset: &str, amount: &str) {
    ledger::balances::credit_deposit(
        &env.map,
        testkit::uid(user),
        &domain::Asset::new(asset).expect("asset"),
        amt(amount),
        &format!("d-{user}-{asset}"),
    )
    .await
    .expect("deposit");
}

/// Databases, config and a placer for one test.
pub struct Harness {
    pub env: TestEnv,
    pub router: TableRouter,
    pub placer: Placer,
}

impl Harness {
    /// Fresh databases named after `name`; order ids from snowflake worker `worker`.
    pub async fn new(name: &str, worker: u8) -> Self {
        let env = TestEnv::new(name).await;
        let router = TableRouter::new(&["BTCUSDT", "ETHUSDT", "ETHBTC"]).expect("router");
        env.map
            .ensure_tables(&router, Utc::now(), 1)
            .await
            .expect("tables");
        let symbols = load_symbols(env.map.meta()).await.expect("symbols");
        let ids = Arc::new(Snowflake::new(0, worker).expect("ids"));
        let placer = Placer::new(
            env.map.clone(),
            router.clone(),
            symbols,
            Arc::new(move || ids.next_id()),
        );
        Self {
            env,
            router,
            placer,
        }
    }
}
