//! The engine: the Kafka services around the matcher.
//!
//! * [`matcher`] — the deterministic matching state machine of one symbol (pure: no
//!   I/O, no clock, no randomness);
//! * [`bus`] — the Kafka clients configured as the pipeline relies on them
//!   (idempotent `acks=all` producers, manual-commit group consumers, topic creation).
//!
//! * [`placement`] — order placement on the user's shard: validate, freeze, order row,
//!   ledger and outbox row in one local transaction (idempotent by client order id);
//! * [`relay`] — the per-shard outbox relay (stamp a visible-order sequence, publish,
//!   mark sent after the acks);
//! * [`wire`] — the messages on the `orders` topic.
//!
//! The matcher service, settlers and the TCC coordinator arrive with their issues.

pub mod bus;
pub mod matcher;
pub mod placement;
pub mod relay;
pub mod wire;
