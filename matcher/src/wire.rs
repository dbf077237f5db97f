//! Messages on the `orders` topic: what the outbox relay publishes and the matcher
//! service consumes. Encoded with postcard; the Kafka key is the symbol, so one
//! symbol's inputs stay in one partition, in order.

use std::collections::BTreeMap;

use domain::{OrderId, Symbol, UserId};
use serde::{Deserialize, Serialize};

use crate::NewOrder;

/// Topic of matcher inputs.
pub const ORDERS_TOPIC: &str = "orders";

/// One matcher input.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum OrderInput {
    /// A placement that froze its funds on `shard`.
    Place {
        /// Symbol (also the message key).
        symbol: Symbol,
        /// The order as the matcher takes it.
        order: NewOrder,
    },
    /// A cancel request.
    Cancel {
        /// Symbol.
        symbol: Symbol,
        /// Order to cancel.
        order_id: OrderId,
        /// Who asks (must own it).
        user_id: UserId,
    },
}

impl OrderInput {
    /// The symbol this input is for.
    pub fn symbol(&self) -> &Symbol {
        match self {
            OrderInput::Place { symbol, .. } | OrderInput::Cancel { symbol, .. } => symbol,
        }
    }

    /// Bytes for the outbox / topic.
    pub fn encode(&self) -> Vec<u8> {
        postcard::to_stdvec(self).unwrap_or_default()
    }

    /// Parses bytes from the topic.
    ///
    /// # Errors
    /// The postcard error for bytes that are not an `OrderInput`.
    pub fn decode(bytes: &[u8]) -> Result<Self, postcard::Error> {
        postcard::from_bytes(bytes)
    }
}

/// What the matching service saves in meta `matcher_snapshots.state` (postcard): the
/// next offset to read per partition of its orders topic, and every book's
/// [`crate::Matcher::snapshot`]. Read back by the service on start and by the
/// matcher-vs-database audit.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceSnapshot {
    /// Next offset to read, per partition of the orders topic.
    pub offsets: BTreeMap<i32, i64>,
    /// One snapshot per book.
    pub books: BTreeMap<Symbol, Vec<u8>>,
}

impl ServiceSnapshot {
    /// Bytes for `matcher_snapshots.state`.
    pub fn encode(&self) -> Vec<u8> {
        postcard::to_stdvec(self).unwrap_or_default()
    }

    /// Parses `matcher_snapshots.state`.
    ///
    /// # Errors
    /// The postcard error.
    pub fn decode(bytes: &[u8]) -> Result<Self, postcard::Error> {
        postcard::from_bytes(bytes)
    }
}
