//! The engine: the Kafka services around the matcher. The only crate that links a
//! Kafka client.
//!
//! * [`bus`] — the Kafka clients configured as the pipeline relies on them
//!   (idempotent `acks=all` producers, manual-commit group consumers, topic creation);
//! * [`config`] — the engine's settings (brokers, topics, endpoint);
//! * [`relay`] — the per-shard outbox relay (publish the gap-free run after the mark,
//!   durability barrier, mark sent after the acks);
//! * [`service`] — the Kafka loops: matching service, per-shard settlers, market data;
//! * [`settle`] — settlement of matcher events on one shard (netted, idempotent by a
//!   per-symbol `seq` mark in the same transaction);
//! * [`parking`] — fill batches that keep failing parked per shard, their symbol held
//!   behind them, retried on request;
//! * [`market`] — market data in Redis (depth, recent trades, last price, klines, ticker);
//! * [`metrics`] — counters and the `/metrics`, `/health`, `/ready` endpoint;
//! * [`roles`] — what `engine run` starts, one task per role.
//!
//! The matcher itself is the `matcher` crate; placement is `trading`; balances are
//! written through `ledger`.

pub mod bus;
pub mod config;
pub mod market;
pub mod metrics;
pub mod parking;
pub mod relay;
pub mod roles;
pub mod service;
pub mod settle;
