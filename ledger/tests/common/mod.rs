//! Test support shared by the money tests (transfers, funding, audits).
#[allow(unused_imports)] // each test binary uses its own subset
pub use testkit::{amt, audits_hold, balance, deposit, shardctl, uid, users};
