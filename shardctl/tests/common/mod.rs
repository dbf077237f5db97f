//! Test support (from testkit).
#[allow(unused_imports)] // each test binary uses its own subset
pub use testkit::{amt, audits_hold, balance, deposit, shardctl, uid, users};
