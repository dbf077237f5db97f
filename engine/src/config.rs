//! The engine's own settings (the shards, Redis and ids come from `router::Settings`):
//! built-in defaults → environment `EXCHANGE_ENGINE__*` (e.g.
//! `EXCHANGE_ENGINE__BROKERS=10.0.0.5:9092`). The scripts export the broker address
//! from their `EXCHANGE_KAFKA_PORT`.

use figment::providers::{Env, Serialized};
use figment::Figment;
use router::RouterError;
use serde::{Deserialize, Serialize};

use crate::bus::BusSettings;
use crate::service::Topics;

/// Smallest `max_message_bytes` accepted: a frame must hold the largest single input or
/// event with room to spare.
pub const MIN_MESSAGE_BYTES: usize = 16 * 1024;

/// Engine settings.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct EngineSettings {
    /// Kafka bootstrap servers.
    pub brokers: String,
    /// Prefix of every topic name.
    pub topic_prefix: String,
    /// Address of `/metrics`, `/health`, `/ready`.
    pub http_addr: String,
    /// Longest pause of an idle relay between rounds (it starts at 1 ms and doubles).
    pub relay_idle_ms: u64,
    /// Outbox rows per relay round.
    pub relay_batch: u32,
    /// Partitions of the `orders` topic (symbols are spread over them by key).
    pub orders_partitions: i32,
    /// The matching service saves a snapshot after this many applied inputs...
    pub snapshot_every: u64,
    /// ... or when this many seconds passed since the last one and something was
    /// applied since.
    pub snapshot_every_s: u64,
    /// Largest broker message the engine's producers send (`message.max.bytes`, at or
    /// below the broker's limit); matcher outputs and relay frames are split to fit.
    pub max_message_bytes: usize,
    /// How long the producers try to deliver a message before the send fails
    /// (`message.timeout.ms`; the relay's round or the matcher's publish then fails and
    /// the role is restarted by its supervisor).
    pub message_timeout_ms: u64,
    /// A fill batch that fails this many times in a row is parked (`parked_fills`)
    /// instead of stopping its shard's settlement; later batches of its symbol on that
    /// shard are parked behind it (see [`crate::parking`]).
    pub park_after: u32,
}

impl Default for EngineSettings {
    fn default() -> Self {
        Self {
            brokers: "127.0.0.1:9092".into(),
            topic_prefix: String::new(),
            http_addr: "127.0.0.1:9464".into(),
            relay_idle_ms: 10,
            relay_batch: 1_000,
            orders_partitions: 4,
            snapshot_every: 10_000,
            snapshot_every_s: 60,
            max_message_bytes: crate::bus::DEFAULT_MAX_MESSAGE_BYTES,
            message_timeout_ms: crate::bus::DEFAULT_MESSAGE_TIMEOUT_MS,
            park_after: crate::parking::DEFAULT_PARK_AFTER,
        }
    }
}

impl EngineSettings {
    /// Defaults → `EXCHANGE_ENGINE__*`.
    ///
    /// # Errors
    /// [`RouterError::Config`] for a malformed or out-of-range value.
    pub fn load() -> Result<Self, RouterError> {
        let s: Self = Figment::from(Serialized::defaults(Self::default()))
            .merge(Env::prefixed("EXCHANGE_ENGINE__"))
            .extract()
            .map_err(|e| RouterError::Config(format!("engine settings: {e}")))?;
        if s.relay_batch == 0
            || s.orders_partitions < 1
            || s.snapshot_every == 0
            || s.park_after == 0
            || s.message_timeout_ms == 0
        {
            return Err(RouterError::Config(
                "relay_batch, orders_partitions, snapshot_every, park_after and message_timeout_ms must be positive"
                    .into(),
            ));
        }
        if !(MIN_MESSAGE_BYTES..=1_000_000_000).contains(&s.max_message_bytes) {
            return Err(RouterError::Config(format!(
                "max_message_bytes must be between {MIN_MESSAGE_BYTES} and 1000000000, not {}",
                s.max_message_bytes
            )));
        }
        Ok(s)
    }

    /// Kafka client settings for a role.
    pub fn bus(&self, client_id: &str) -> BusSettings {
        BusSettings {
            brokers: self.brokers.clone(),
            client_id: client_id.to_owned(),
            max_message_bytes: self.max_message_bytes,
            message_timeout_ms: self.message_timeout_ms,
        }
    }

    /// Topic names.
    pub fn topics(&self) -> Topics {
        Topics {
            prefix: self.topic_prefix.clone(),
        }
    }
}
