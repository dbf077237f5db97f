//! The engine: the Kafka services around the matcher.
//!
//! * [`config`] — the engine's settings (brokers, topics, endpoint);
//! * [`market`] — market data in Redis (depth, recent trades, last price, 1m klines);
//! * [`matcher`] — the deterministic matching state machine of one symbol (pure: no
//!   I/O, no clock, no randomness);
//! * [`bus`] — the Kafka clients configured as the pipeline relies on them
//!   (idempotent `acks=all` producers, manual-commit group consumers, topic creation).
//!
//! * [`metrics`] — counters and the `/metrics`, `/health`, `/ready` endpoint;
//! * [`placement`] — order placement on the user's shard: validate, freeze, order row,
//!   ledger and outbox row in one local transaction (idempotent by client order id);
//! * [`relay`] — the per-shard outbox relay (stamp a visible-order sequence, publish,
//!   mark sent after the acks);
//! * [`service`] — the Kafka loops: matching service and per-shard settlers;
//! * [`settle`] — settlement of matcher events on one shard (netted, idempotent by a
//!   per-symbol `seq` mark in the same transaction);
//! * [`wire`] — the messages on the `orders` topic.
//!
//! Snapshots, market data, the `engine` binary's roles and the TCC coordinator come next.

/// The money invariant (lives in `router`, next to the balances it reads).
pub use router::audit;
pub mod bus;
pub mod config;
pub mod market;
pub mod matcher;
pub mod metrics;
pub mod placement;
pub mod relay;
pub mod service;
pub mod settle;
pub use router::sqltext;
pub mod wire;
