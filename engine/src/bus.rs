//! Kafka clients configured the way the pipeline relies on them.
//!
//! * producers are idempotent with `acks=all`: a retried send never duplicates or
//!   reorders within a partition;
//! * consumers never auto-commit: offsets are committed by the caller after its own
//!   durable write (they are a hint; the real checkpoint lives with the data);
//! * no Kafka transactions anywhere: the local broker (tansu) has none, and exactly-once
//!   effect comes from deterministic replay plus idempotent consumers instead;
//! * the logs whose loss loses money (`orders`, `fills`) are kept forever
//!   ([`require_retention`], checked and set at start), and their consumers never skip:
//!   [`assign_checked`] refuses a start position below the partition's first offset (its
//!   records were deleted) or past its end (the topic was recreated), and
//!   [`strict_consumer`] has `auto.offset.reset=error`, so a position that falls out of
//!   the log while running fails the role ([`position_lost`]) instead of jumping.

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, ResourceSpecifier, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::FutureProducer;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

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
    /// How long a producer keeps trying to deliver a message before it fails the send
    /// (`message.timeout.ms`): a broker down longer than this fails the relay's round or
    /// the matcher's publish, and the role shows down until it works again.
    #[serde(default = "default_message_timeout_ms")]
    pub message_timeout_ms: u64,
}

/// librdkafka's and Kafka's default message limit.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 1_000_000;

fn default_max_message_bytes() -> usize {
    DEFAULT_MAX_MESSAGE_BYTES
}

/// The producers' default `message.timeout.ms`.
pub const DEFAULT_MESSAGE_TIMEOUT_MS: u64 = 30_000;

fn default_message_timeout_ms() -> u64 {
    DEFAULT_MESSAGE_TIMEOUT_MS
}

impl Default for BusSettings {
    fn default() -> Self {
        Self {
            brokers: "127.0.0.1:9092".to_owned(),
            client_id: "exchange".to_owned(),
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            message_timeout_ms: DEFAULT_MESSAGE_TIMEOUT_MS,
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
            message_timeout_ms: DEFAULT_MESSAGE_TIMEOUT_MS,
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
    /// A consumer would start below the first offset the partition still has: the
    /// records in between were deleted (retention, delete-records) and would be skipped.
    #[error(
        "{topic}/{partition}: position {position} is below the log start {log_start}: \
         records {position}..{log_start} were deleted and would be skipped"
    )]
    BelowLogStart {
        /// The topic.
        topic: String,
        /// The partition.
        partition: i32,
        /// Where the consumer would start (committed offset or snapshot offset).
        position: i64,
        /// The partition's first offset.
        log_start: i64,
    },
    /// A consumer would start past the partition's end: the topic was recreated or lost
    /// records, and the next records written would fall below the position, unseen.
    #[error(
        "{topic}/{partition}: position {position} is past the log end {log_end} \
         (the topic was recreated or lost records)"
    )]
    BeyondLogEnd {
        /// The topic.
        topic: String,
        /// The partition.
        partition: i32,
        /// Where the consumer would start.
        position: i64,
        /// The partition's end (next offset to be written).
        log_end: i64,
    },
    /// A consumer with no position (no committed offset, no snapshot) meets a partition
    /// whose first records were deleted: starting at the log start would skip them.
    #[error(
        "{topic}/{partition}: no position to start from and the log starts at {log_start}: \
         records before it were deleted"
    )]
    NoPosition {
        /// The topic.
        topic: String,
        /// The partition.
        partition: i32,
        /// The partition's first offset.
        log_start: i64,
    },
    /// A topic's retention could delete records a consumer has not read, and could not be
    /// set to keep them.
    #[error("topic {topic}: {detail}")]
    Retention {
        /// The topic.
        topic: String,
        /// What is wrong and what to do.
        detail: String,
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
        .set(
            "message.timeout.ms",
            settings.message_timeout_ms.to_string(),
        )
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

/// A consumer for the logs that must not be skipped (`orders` by the matcher, `fills`
/// by the settlers): like [`consumer`], with `auto.offset.reset=error`. Assign it with
/// [`assign_checked`] (explicit positions, so the reset never decides where it starts);
/// a position that falls out of the log while it runs (records deleted under a lagging
/// consumer) is then a consumer error that [`position_lost`] recognises.
///
/// # Errors
/// [`BusError::Kafka`] if librdkafka rejects the configuration.
pub fn strict_consumer(settings: &BusSettings, group: &str) -> Result<StreamConsumer, BusError> {
    Ok(base(settings)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "error")
        .set("session.timeout.ms", "10000")
        .create()?)
}

/// Whether a consumer error means the consumer's position left the log (the broker
/// answered "offset out of range" and `auto.offset.reset=error` refused to jump): the
/// role must stop, not log and go on (it would wait forever, or skip).
pub fn position_lost(e: &KafkaError) -> bool {
    matches!(
        e,
        KafkaError::MessageConsumption(
            RDKafkaErrorCode::AutoOffsetReset | RDKafkaErrorCode::OffsetOutOfRange
        )
    )
}

/// Where a consumer starts in `topic`/`partition`, given the position it wants (`None`:
/// it has none, i.e. from the beginning) and the partition's watermarks (`low` = first
/// offset still there, `high` = next offset to be written).
///
/// # Errors
/// [`BusError::BelowLogStart`], [`BusError::BeyondLogEnd`] or [`BusError::NoPosition`]:
/// any start that would skip records.
pub fn start_offset(
    topic: &str,
    partition: i32,
    wanted: Option<i64>,
    (low, high): (i64, i64),
) -> Result<Offset, BusError> {
    match wanted {
        Some(position) if position < low => Err(BusError::BelowLogStart {
            topic: topic.to_owned(),
            partition,
            position,
            log_start: low,
        }),
        Some(position) if position > high => Err(BusError::BeyondLogEnd {
            topic: topic.to_owned(),
            partition,
            position,
            log_end: high,
        }),
        Some(position) => Ok(Offset::Offset(position)),
        None if low > 0 => Err(BusError::NoPosition {
            topic: topic.to_owned(),
            partition,
            log_start: low,
        }),
        None => Ok(Offset::Offset(0)),
    }
}

/// Assigns `consumer` to `topic` at `starts` (partition, position; `None` = from the
/// beginning), each checked by [`start_offset`] against the partition's watermarks as
/// the broker answers them now.
///
/// # Errors
/// A position that would skip records ([`start_offset`]), or the broker unreachable.
pub fn assign_checked(
    consumer: &StreamConsumer,
    topic: &str,
    starts: &[(i32, Option<i64>)],
) -> Result<(), BusError> {
    let mut tpl = TopicPartitionList::new();
    for &(partition, wanted) in starts {
        let marks = consumer.fetch_watermarks(topic, partition, Duration::from_secs(10))?;
        let start = start_offset(topic, partition, wanted, marks)?;
        tpl.add_partition_offset(topic, partition, start)?;
    }
    consumer.assign(&tpl)?;
    Ok(())
}

/// The group's committed offset of `topic`/`partition`, if it has one.
///
/// # Errors
/// The broker did not answer (a missing offset is `Ok(None)`, an unanswered fetch is
/// never taken for "none": that would start from the beginning).
pub fn committed_offset(
    consumer: &StreamConsumer,
    topic: &str,
    partition: i32,
) -> Result<Option<i64>, BusError> {
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition(topic, partition);
    let got = consumer.committed_offsets(tpl, Duration::from_secs(10))?;
    Ok(got
        .find_partition(topic, partition)
        .and_then(|p| match p.offset() {
            Offset::Offset(o) => Some(o),
            _ => None,
        }))
}

/// The topic configs under which a log keeps every record: no deletion by time or size.
pub const KEEP_FOREVER: [(&str, &str); 2] = [("retention.ms", "-1"), ("retention.bytes", "-1")];

/// Makes `topic` keep every record ([`KEEP_FOREVER`]): describes its configs and sets
/// (IncrementalAlterConfigs) each one that differs or is not set, then checks again. A
/// compacted topic is refused, not changed (compaction drops records by key; turning it
/// off is an operator's decision).
///
/// # Errors
/// [`BusError::Retention`] naming the topic, the config and how to fix it by hand when
/// the broker refuses the change; [`BusError::Kafka`] when it cannot be described.
pub async fn require_retention(settings: &BusSettings, topic: &str) -> Result<(), BusError> {
    let configs = describe_topic(settings, topic).await?;
    let get = |name: &str| {
        configs
            .iter()
            .find(|(n, _)| n == name)
            .and_then(|(_, v)| v.clone())
    };
    if let Some(policy) = get("cleanup.policy").filter(|p| p.contains("compact")) {
        return Err(BusError::Retention {
            topic: topic.to_owned(),
            detail: format!(
                "cleanup.policy is {policy}: compaction drops records a consumer has not \
                 read; set cleanup.policy=delete with retention.ms=-1 and retention.bytes=-1"
            ),
        });
    }
    let wrong: Vec<(&str, &str, Option<String>)> = KEEP_FOREVER
        .iter()
        .filter_map(|&(k, v)| {
            let have = get(k);
            (have.as_deref() != Some(v)).then_some((k, v, have))
        })
        .collect();
    if wrong.is_empty() {
        return Ok(());
    }
    let changes: Vec<(&str, &str)> = wrong.iter().map(|(k, v, _)| (*k, *v)).collect();
    let was = wrong
        .iter()
        .map(|(k, _, have)| format!("{k}={}", have.as_deref().unwrap_or("(broker default)")))
        .collect::<Vec<_>>()
        .join(", ");
    let by_hand = || {
        format!(
            "{was}; set {} by hand (kafka-configs.sh --alter --entity-type topics \
             --entity-name {topic} --add-config ...)",
            changes
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(",")
        )
    };
    if let Err(e) = incremental_alter_topic(settings, topic, &changes).await {
        return Err(BusError::Retention {
            topic: topic.to_owned(),
            detail: format!("the broker refused the change ({e}): {}", by_hand()),
        });
    }
    let now = describe_topic(settings, topic).await?;
    for (k, v) in &changes {
        let have = now
            .iter()
            .find(|(n, _)| n == k)
            .and_then(|(_, v)| v.clone());
        if have.as_deref() != Some(*v) {
            return Err(BusError::Retention {
                topic: topic.to_owned(),
                detail: format!("the change did not take: {}", by_hand()),
            });
        }
    }
    tracing::warn!(%topic, was, "topic retention set to keep every record");
    Ok(())
}

/// `topic`'s configs as the broker describes them (name, value).
async fn describe_topic(
    settings: &BusSettings,
    topic: &str,
) -> Result<Vec<(String, Option<String>)>, BusError> {
    let admin: AdminClient<DefaultClientContext> = base(settings).create()?;
    let opts = AdminOptions::new().request_timeout(Some(Duration::from_secs(10)));
    let mut out = Vec::new();
    for res in admin
        .describe_configs([&ResourceSpecifier::Topic(topic)], &opts)
        .await?
    {
        let res = res.map_err(|code| BusError::Retention {
            topic: topic.to_owned(),
            detail: format!("describe configs: {code}"),
        })?;
        out.extend(res.entries.into_iter().map(|e| (e.name, e.value)));
    }
    Ok(out)
}

/// Sets `configs` on `topic` with IncrementalAlterConfigs (API key 44, version 0),
/// spoken directly to the first bootstrap broker: the Rust wrapper of librdkafka only
/// has the legacy AlterConfigs, which replaces *every* override of the topic (and tansu
/// does not serve it), and this workspace forbids the `unsafe` a C call would need.
/// Plaintext only, like every client of [`BusSettings`]. Topic configs may be altered
/// on any broker (Kafka forwards to the controller).
async fn incremental_alter_topic(
    settings: &BusSettings,
    topic: &str,
    configs: &[(&str, &str)],
) -> Result<(), String> {
    fn string(buf: &mut Vec<u8>, s: &str) -> Result<(), String> {
        let len = i16::try_from(s.len()).map_err(|_| format!("{s:.20}…: too long"))?;
        buf.extend_from_slice(&len.to_be_bytes());
        buf.extend_from_slice(s.as_bytes());
        Ok(())
    }
    const TOPIC: i8 = 2;
    const SET: i8 = 0;
    let mut body = Vec::new();
    body.extend_from_slice(&44i16.to_be_bytes()); // api key
    body.extend_from_slice(&0i16.to_be_bytes()); // api version
    body.extend_from_slice(&1i32.to_be_bytes()); // correlation id
    string(&mut body, &settings.client_id)?;
    body.extend_from_slice(&1i32.to_be_bytes()); // one resource
    body.extend_from_slice(&TOPIC.to_be_bytes());
    string(&mut body, topic)?;
    let n = i32::try_from(configs.len()).map_err(|e| e.to_string())?;
    body.extend_from_slice(&n.to_be_bytes());
    for (k, v) in configs {
        string(&mut body, k)?;
        body.extend_from_slice(&SET.to_be_bytes());
        string(&mut body, v)?;
    }
    body.push(0); // validate only: false
    let addr = settings
        .brokers
        .split(',')
        .next()
        .map(str::trim)
        .unwrap_or_default();
    let talk = async {
        let mut conn = tokio::net::TcpStream::connect(addr).await?;
        let len = i32::try_from(body.len()).unwrap_or(i32::MAX);
        conn.write_all(&len.to_be_bytes()).await?;
        conn.write_all(&body).await?;
        let len = conn.read_i32().await?;
        let mut reply = vec![0u8; usize::try_from(len).unwrap_or(0)];
        conn.read_exact(&mut reply).await?;
        Ok::<_, std::io::Error>(reply)
    };
    let reply = tokio::time::timeout(Duration::from_secs(10), talk)
        .await
        .map_err(|_| format!("no answer from {addr}"))?
        .map_err(|e| format!("{addr}: {e}"))?;
    // correlation id (4) | throttle ms (4) | responses: count (4) | error code (2) |
    // error message (nullable string) | resource type | resource name
    let code = reply
        .get(12..14)
        .map(|b| i16::from_be_bytes([b[0], b[1]]))
        .ok_or("short answer")?;
    if code == 0 {
        return Ok(());
    }
    let message = reply
        .get(14..16)
        .map(|b| i16::from_be_bytes([b[0], b[1]]))
        .and_then(|n| usize::try_from(n).ok())
        .and_then(|n| reply.get(16..16 + n))
        .map(|m| String::from_utf8_lossy(m).into_owned())
        .unwrap_or_default();
    Err(format!("error code {code} {message}"))
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

/// Like [`ensure_topic`] with topic configs for a new topic (an existing topic keeps
/// its own: [`require_retention`] checks those that matter).
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

#[cfg(test)]
mod tests {
    use super::*;

    fn start(wanted: Option<i64>, marks: (i64, i64)) -> Result<Offset, BusError> {
        start_offset("t", 3, wanted, marks)
    }

    #[test]
    fn a_start_inside_the_log_is_taken_as_is() {
        assert_eq!(start(Some(5), (2, 9)).ok(), Some(Offset::Offset(5)));
        assert_eq!(start(Some(2), (2, 9)).ok(), Some(Offset::Offset(2)));
        // at the end: waits for the next record
        assert_eq!(start(Some(9), (2, 9)).ok(), Some(Offset::Offset(9)));
        // no position on an untouched log: from its first record
        assert_eq!(start(None, (0, 9)).ok(), Some(Offset::Offset(0)));
        assert_eq!(start(None, (0, 0)).ok(), Some(Offset::Offset(0)));
    }

    #[test]
    fn a_start_that_would_skip_records_is_refused() {
        assert!(matches!(
            start(Some(1), (2, 9)),
            Err(BusError::BelowLogStart {
                partition: 3,
                position: 1,
                log_start: 2,
                ..
            })
        ));
        assert!(matches!(
            start(Some(10), (2, 9)),
            Err(BusError::BeyondLogEnd {
                position: 10,
                log_end: 9,
                ..
            })
        ));
        assert!(matches!(
            start(None, (2, 9)),
            Err(BusError::NoPosition { log_start: 2, .. })
        ));
    }

    #[test]
    fn only_an_out_of_range_position_is_a_lost_position() {
        assert!(position_lost(&KafkaError::MessageConsumption(
            RDKafkaErrorCode::AutoOffsetReset
        )));
        assert!(position_lost(&KafkaError::MessageConsumption(
            RDKafkaErrorCode::OffsetOutOfRange
        )));
        assert!(!position_lost(&KafkaError::MessageConsumption(
            RDKafkaErrorCode::BrokerTransportFailure
        )));
    }
}
