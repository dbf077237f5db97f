//! The outbox relay of one shard (DESIGN.md "Order flow" 4).
//!
//! Each round:
//! 1. **stamp**: unsent rows without a `seq` get the next per-shard sequence numbers, in
//!    id order, in one statement. Rows of transactions that have not committed yet are
//!    invisible and get later numbers when they do, so `seq` follows the order in which
//!    rows became visible — which auto-increment ids do not (they are taken at insert);
//! 2. **publish** stamped, unsent rows in `seq` order with the idempotent producer,
//!    keyed by the row's key (the symbol), each framed as `source shard | seq | payload`;
//! 3. **mark** them sent once the broker acked every one.
//!
//! A crash anywhere re-publishes rows with the seq they already have; consumers drop
//! `(source, seq)` at or below what they applied (`Matcher::apply_sourced`). Nothing
//! is lost: a row is marked only after its ack. One relay per shard at a time (a
//! `GET_LOCK` guards it).

use std::time::Duration;

use domain::ShardId;
use rdkafka::producer::{FutureProducer, FutureRecord};
use router::RouterError;
use sqlx::MySqlPool;

/// Length of the frame header: source (u32 BE) + seq (u64 BE).
pub const FRAME_HEADER: usize = 12;

/// Frames a payload with its source shard and sequence.
pub fn frame(source: u32, seq: u64, payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(FRAME_HEADER + payload.len());
    v.extend_from_slice(&source.to_be_bytes());
    v.extend_from_slice(&seq.to_be_bytes());
    v.extend_from_slice(payload);
    v
}

/// Splits a frame into (source, seq, payload).
pub fn unframe(bytes: &[u8]) -> Option<(u32, u64, &[u8])> {
    if bytes.len() < FRAME_HEADER {
        return None;
    }
    let source = u32::from_be_bytes(bytes[..4].try_into().ok()?);
    let seq = u64::from_be_bytes(bytes[4..12].try_into().ok()?);
    Some((source, seq, &bytes[FRAME_HEADER..]))
}

/// Relay errors.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    /// Database.
    #[error(transparent)]
    Router(#[from] RouterError),
    /// The broker refused or timed out a send; nothing was marked.
    #[error("publish failed: {0}")]
    Publish(String),
    /// Another relay holds this shard.
    #[error("another relay is running for shard {0}")]
    Busy(u16),
}

/// One shard's relay.
#[derive(Clone)]
pub struct Relay {
    shard: ShardId,
    pool: MySqlPool,
    producer: FutureProducer,
    topic_prefix: String,
    batch: u32,
}

impl std::fmt::Debug for Relay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Relay")
            .field("shard", &self.shard)
            .finish_non_exhaustive()
    }
}

/// What one round did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Round {
    /// Rows that got a sequence number.
    pub stamped: u64,
    /// Rows published and marked sent.
    pub published: u64,
}

impl Relay {
    /// A relay for `shard` publishing to `{topic_prefix}{row.topic}`, `batch` rows a round.
    pub fn new(
        shard: ShardId,
        pool: MySqlPool,
        producer: FutureProducer,
        topic_prefix: impl Into<String>,
        batch: u32,
    ) -> Self {
        Self {
            shard,
            pool,
            producer,
            topic_prefix: topic_prefix.into(),
            batch: batch.max(1),
        }
    }

    fn db(&self, e: sqlx::Error) -> RelayError {
        RelayError::Router(RouterError::db_on_shard(self.shard.get(), e))
    }

    /// Stamp, publish, mark — one round.
    ///
    /// # Errors
    /// Database or broker errors; rows stay unsent and the next round retries them.
    pub async fn round(&self) -> Result<Round, RelayError> {
        let mut conn = self.pool.acquire().await.map_err(|e| self.db(e))?;
        // lock names are server-wide: qualify with the database (one server may host
        // several shards' or tests' databases)
        let lock = format!("exchange.relay.{}", self.shard.get());
        let (got,): (Option<i64>,) =
            sqlx::query_as("SELECT GET_LOCK(CONCAT(?, '.', DATABASE()), 0)")
                .bind(&lock)
                .fetch_one(&mut *conn)
                .await
                .map_err(|e| self.db(e))?;
        if got != Some(1) {
            return Err(RelayError::Busy(self.shard.get()));
        }
        let result = self.round_locked(&mut conn, true).await;
        let released = sqlx::query("DO RELEASE_LOCK(CONCAT(?, '.', DATABASE()))")
            .bind(&lock)
            .execute(&mut *conn)
            .await;
        let r = result?;
        released.map_err(|e| self.db(e))?;
        Ok(r)
    }

    /// A round that publishes but "crashes" before marking (for crash tests).
    #[doc(hidden)]
    pub async fn round_without_mark(&self) -> Result<Round, RelayError> {
        let mut conn = self.pool.acquire().await.map_err(|e| self.db(e))?;
        self.round_locked(&mut conn, false).await
    }

    async fn round_locked(
        &self,
        conn: &mut sqlx::MySqlConnection,
        mark: bool,
    ) -> Result<Round, RelayError> {
        let mut round = Round::default();
        // 1. stamp
        sqlx::query("SET @relay_seq = (SELECT COALESCE(MAX(seq), 0) FROM outbox)")
            .execute(&mut *conn)
            .await
            .map_err(|e| self.db(e))?;
        round.stamped = sqlx::query(
            "UPDATE outbox SET seq = (@relay_seq := @relay_seq + 1) WHERE seq IS NULL AND sent_at IS NULL ORDER BY id LIMIT ?",
        )
        .bind(self.batch)
        .execute(&mut *conn)
        .await
        .map_err(|e| self.db(e))?
        .rows_affected();
        // 2. publish in seq order
        let rows: Vec<(u64, String, Vec<u8>, Vec<u8>)> = sqlx::query_as(
            "SELECT seq, topic, msg_key, payload FROM outbox WHERE sent_at IS NULL AND seq IS NOT NULL ORDER BY seq LIMIT ?",
        )
        .bind(self.batch)
        .fetch_all(&mut *conn)
        .await
        .map_err(|e| self.db(e))?;
        let Some(&(first, ..)) = rows.first() else {
            return Ok(round);
        };
        let last = rows.last().map_or(first, |r| r.0);
        let source = u32::from(self.shard.get());
        let mut acks = Vec::with_capacity(rows.len());
        for (seq, topic, key, payload) in &rows {
            let topic = format!("{}{topic}", self.topic_prefix);
            let bytes = frame(source, *seq, payload);
            let ack = self
                .producer
                .send_result(FutureRecord::to(&topic).key(key).payload(&bytes))
                .map_err(|(e, _)| RelayError::Publish(e.to_string()))?;
            acks.push(ack);
        }
        for ack in acks {
            match tokio::time::timeout(Duration::from_secs(60), ack).await {
                Ok(Ok(Ok(_))) => {}
                Ok(Ok(Err((e, _)))) => return Err(RelayError::Publish(e.to_string())),
                Ok(Err(_)) => {
                    return Err(RelayError::Publish("producer dropped the delivery".into()))
                }
                Err(_) => return Err(RelayError::Publish("no ack within 60 s".into())),
            }
        }
        // 3. mark, only after every ack
        if mark {
            sqlx::query("UPDATE outbox SET sent_at = CURRENT_TIMESTAMP(3) WHERE seq BETWEEN ? AND ? AND sent_at IS NULL")
                .bind(first)
                .bind(last)
                .execute(&mut *conn)
                .await
                .map_err(|e| self.db(e))?;
        }
        round.published = u64::try_from(rows.len()).unwrap_or(u64::MAX);
        Ok(round)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip() {
        let f = frame(3, 42, b"abc");
        assert_eq!(unframe(&f), Some((3, 42, &b"abc"[..])));
        assert_eq!(unframe(&f[..11]), None);
    }
}
