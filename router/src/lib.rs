//! The router layer: where data lives.
//!
//! * [`config`] — typed layered settings (defaults → file → env);
//! * [`shards`] — one pool per shard + meta, `shard_of(user_id)`, migrations,
//!   month tables and ledger partitions created ahead of time;
//! * [`tables`] — `(symbol, order_id)` → `orders_{SYMBOL}_{YYYYMM}`, ranges, whitelist;
//! * [`snowflake`] — lock-free 64-bit ids, decoding; [`lease`] — worker ids in Redis;
//! * [`directory`] — dense user ids, email / API key lookups cached in Redis;
//! * [`sqltext`] — multi-statement SQL text with exact literals; [`batch`] — per-shard
//!   group commit of independent calls; [`replication`] — replica status;
//! * [`keys`], [`marketdata`] — the Redis layout of market data, its value formats and
//!   the reader;
//! * [`telemetry`] — tracing set-up; [`shutdown`] — SIGTERM / Ctrl-C.
//!
//! Balances, funding, transfers and audits live in `ledger`; the operator's CLI is
//! `shardctl`.

pub mod batch;
pub mod config;
pub mod directory;
pub mod error;
pub mod keys;
pub mod lease;
pub mod marketdata;
pub mod replication;
pub mod shards;
pub mod shutdown;
pub mod snowflake;
pub mod sqltext;
pub mod status;
pub mod tables;
pub mod telemetry;

pub use config::Settings;
pub use directory::{Registered, UserDirectory};
pub use error::RouterError;
pub use lease::WorkerLease;
pub use shards::{get_amount, EnsureReport, ShardMap};
pub use snowflake::{decode, Decoded, Snowflake, SnowflakeError};
pub use tables::{Month, TableKind, TableName, TableRouter};
