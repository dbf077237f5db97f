//! Trading on the user's shard: what the gateway calls to place and cancel orders.
//!
//! * [`placement`] — validate, freeze, order row, client-id row, ledger and outbox row
//!   in one local transaction (idempotent by client order id), grouped per shard;
//!   cancel requests; the symbol configuration read from meta;
//! * [`readers`] — orders by id, by client order id, and a user's orders by cursor;
//! * [`books_audit`] — the matcher's open orders against the order tables';
//! * [`outbox`] — the outbox insert (commit-ordered seqs), published by the relay;
//! * [`parked`] — fill batches held back from settlement (`parked_fills`): what the
//!   engine's settlers park and apply again, what `shardctl` lists and retries.
//!
//! Balances and ledger rows are written through `ledger`; this crate never links a
//! Kafka client.

pub mod books_audit;
pub mod outbox;
pub mod parked;
pub mod placement;
pub mod readers;
