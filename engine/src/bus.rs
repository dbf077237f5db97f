//! Kafka clients configured the way the pipeline relies on them.
//!
//! * producers are idempotent with `acks=all`: a retried send never duplicates or
//!   reorders within a partition;
//! * consumers never auto-commit: offsets are committed by the caller after its own
//!   durable write (they are a hint; the real checkpoint lives with the data);
//! * no Kafka transactions anywhere: the local broker (tansu) has none, and exactly-once
//!   effect comes from deterministic replay plus idempotent consumers instead.

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::StreamConsumer;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::FutureProducer;
use rdkafka::ClientConfig;
use serde::{Deserialize, Serialize};

/// Where the brokers are and how this process names itself.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct BusSettings {
    /// `host:port[,host:port]`.
    pub brokers: String,
    /// `client.id` shown in broker logs.
    pub client_id: String,
    /// Largest message a producer sends (`message.max.bytes`; keep it at or below the
    /// broker's own limit). Everything that frames several records into one message
    /// sizes its frames from this ([`BusSettings::frame_budget`]).
    #[serde(default = "default_max_message_bytes")]
    pub max_message_bytes: usize,
}

/// librdkafka's and Kafka's default message limit.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 1_000_000;

fn default_max_message_bytes() -> usize {
    DEFAULT_MAX_MESSAGE_BYTES
}

impl Default for BusSettings {
    fn default() -> Self {
        Self {
            brokers: "127.0.0.1:9092".to_owned(),
            client_id: "exchange".to_owned(),
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
        }
    }
}

impl BusSettings {
    /// Settings for `brokers` with the default message limit.
    pub fn new(brokers: impl Into<String>, client_id: impl Into<String>) -> Self {
        Self {
            brokers: brokers.into(),
            client_id: client_id.into(),
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
        }
    }

    /// Most payload bytes one framed message may carry: the message limit less an
    /// eighth for the key, the record and batch headers and the protocol framing.
    pub fn frame_budget(&self) -> usize {
        frame_budget(self.max_message_bytes)
    }
}

/// [`BusSettings::frame_budget`] of a message limit (at least 4 KiB).
pub fn frame_budget(max_message_bytes: usize) -> usize {
    (max_message_bytes - max_message_bytes / 8).max(4096)
}

/// Errors of the bus layer.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    /// librdkafka refused a config or an operation.
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
    /// A topic could not be created.
    #[error("create topic {topic}: {code}")]
    CreateTopic {
        /// The topic.
        topic: String,
        /// The broker's answer.
        code: RDKafkaErrorCode,
    },
}

fn base(settings: &BusSettings) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &settings.brokers)
        .set("client.id", &settings.client_id)
        .set("broker.address.family", "v4");
    c
}

/// An idempotent, `acks=all` producer.
///
/// # Errors
/// [`BusError::Kafka`] if librdkafka rejects the configuration.
pub fn producer(settings: &BusSettings) -> Result<FutureProducer, BusError> {
    Ok(base(settings)
        .set("enable.idempotence", "true")
        .set("message.max.bytes", settings.max_message_bytes.to_string())
        .set("acks", "all")
        .set("linger.ms", "2")
        .set("message.timeout.ms", "30000")
        .create()?)
}

/// A group consumer with auto-commit off, starting from the earliest offset when the
/// group has none.
///
/// # Errors
/// [`BusError::Kafka`] if librdkafka rejects the configuration.
pub fn consumer(settings: &BusSettings, group: &str) -> Result<StreamConsumer, BusError> {
    Ok(base(settings)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "10000")
        .create()?)
}

/// Creates `topic` with `partitions` partitions; an existing topic is fine.
///
/// # Errors
/// [`BusError::CreateTopic`] with the broker's error code.
pub async fn ensure_topic(
    settings: &BusSettings,
    topic: &str,
    partitions: i32,
) -> Result<(), BusError> {
    ensure_topic_with(settings, topic, partitions, &[]).await
}

/// Like [`ensure_topic`] with topic configs for a new topic (e.g. `retention.ms=-1`
/// for a log that is replayed from the start).
///
/// # Errors
/// [`BusError::CreateTopic`] with the broker's error code.
pub async fn ensure_topic_with(
    settings: &BusSettings,
    topic: &str,
    partitions: i32,
    configs: &[(&str, &str)],
) -> Result<(), BusError> {
    let admin: AdminClient<DefaultClientContext> = base(settings).create()?;
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    let mut new = NewTopic::new(topic, partitions, TopicReplication::Fixed(1));
    for (k, v) in configs {
        new = new.set(k, v);
    }
    for res in admin.create_topics([&new], &opts).await? {
        match res {
            Ok(_) => {}
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((t, code)) => return Err(BusError::CreateTopic { topic: t, code }),
        }
    }
    Ok(())
}
