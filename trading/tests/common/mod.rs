//! Set-up of the trading tests: fresh databases with month tables and the symbol
//! config, and a placer. Everything panics on failure (test support).

#![allow(dead_code)]

use domain::{OrderType, Side};
use router::TableRouter;
use testkit::TestEnv;
use trading::placement::{PlaceRequest, Placer};

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
        let p = testkit::placement(name, worker).await;
        Self {
            env: p.env,
            router: p.router,
            placer: p.placer,
        }
    }
}

/// A BTCUSDT GTC limit request.
pub fn limit(user: u64, side: Side, price: &str, qty: &str) -> PlaceRequest {
    testkit::order_request(user, side, OrderType::Limit, Some(price), Some(qty), None)
}
