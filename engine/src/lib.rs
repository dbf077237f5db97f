//! The engine: the Kafka services around the matcher.
//!
//! So far: [`bus`], the Kafka clients configured as the pipeline relies on them
//! (idempotent `acks=all` producers, manual-commit group consumers, topic creation).
//! The matcher, order intake, settlers and TCC coordinator arrive with their issues.

pub mod bus;
