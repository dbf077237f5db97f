//! The router layer: where data lives.
//!
//! * [`config`] — typed layered settings (defaults → file → env);
//! * [`shards`] — one pool per shard + meta, `shard_of(user_id)`, migrations,
//!   month tables and ledger partitions created ahead of time;
//! * [`tables`] — `(symbol, order_id)` → `orders_{SYMBOL}_{YYYYMM}`, ranges, whitelist;
//! * [`snowflake`] — lock-free 64-bit ids, decoding; [`lease`] — worker ids in Redis;
//! * [`accounts`] — optimistic-lock balance changes; [`audit`] — the money audits;
//! * [`directory`] — dense user ids, email / API key lookups cached in Redis;
//! * [`tcc`] — internal transfers, across shards by TCC, with recovery;
//! * [`funding`] — deposits (confirmations, credited once) and withdrawals with review.
//!
//! The `shardctl` binary is the operator's view of all of it.

pub mod accounts;
pub mod audit;
pub mod batch;
pub mod config;
pub mod directory;
pub mod error;
pub mod funding;
pub mod lease;
pub mod replication;
pub mod shards;
pub mod snowflake;
pub mod sqltext;
pub mod tables;
pub mod tcc;
pub mod telemetry;
pub mod testing;

pub use config::Settings;
pub use directory::{Registered, UserDirectory};
pub use error::RouterError;
pub use lease::WorkerLease;
pub use shards::{get_amount, EnsureReport, ShardMap};
pub use snowflake::{decode, Decoded, Snowflake, SnowflakeError};
pub use tables::{Month, TableKind, TableName, TableRouter};
