//! The outbox relay of one shard (DESIGN.md "Order flow" 4).
//!
//! Writers put rows in the outbox with [`insert_outbox`], which takes the rows' `seq`
//! from the one-row `outbox_seq` counter in the writer's transaction: the counter row
//! stays locked until that transaction ends, so seqs are handed out in commit order and
//! without gaps (auto-increment ids are neither: they are taken at insert, and a
//! rollback burns them). Every committed row with a seq ≤ S is visible once S is.
//!
//! Each round:
//! 1. **read** the rows after `outbox_relay.published_seq`, in `seq` order;
//! 2. **publish** them with the idempotent producer, keyed by the row's key (the
//!    symbol), each framed as `source shard | seq | payload`;
//! 3. **mark**: once the broker acked every one, move `published_seq` (one row);
//! 4. now and then, **prune** published rows beyond the newest `keep`.
//!
//! A crash anywhere re-publishes rows with the seq they already have; consumers drop
//! `(source, seq)` at or below what they applied (`Matcher::apply_sourced`). Nothing
//! is lost: the mark moves only after the acks. One relay per shard at a time (a
//! `GET_LOCK` guards it).

use std::time::Duration;

use domain::ShardId;
use rdkafka::producer::{FutureProducer, FutureRecord};
use router::RouterError;
use sqlx::{MySqlConnection, MySqlPool};

/// Published rows kept in the outbox (for inspection) before the relay prunes them.
pub const KEEP_PUBLISHED: u64 = 100_000;
/// The relay prunes once per this many published rows.
pub const PRUNE_EVERY: u64 = 10_000;

/// An outbox row to write: topic (without prefix), key, payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxRow {
    /// Topic name without the deployment prefix (`orders`).
    pub topic: &'static str,
    /// Message key (the symbol).
    pub key: Vec<u8>,
    /// Payload.
    pub payload: Vec<u8>,
}

/// Writes `rows` to the outbox inside the caller's transaction, with the next
/// consecutive seqs (in the order given); returns the first seq. Call it last in the
/// transaction: the `outbox_seq` row it locks serialises the shard's outbox writers
/// until the commit.
///
/// # Errors
/// Database errors (the transaction must then be rolled back).
pub async fn insert_outbox(
    conn: &mut MySqlConnection,
    rows: &[OutboxRow],
) -> Result<u64, sqlx::Error> {
    let n = u64::try_from(rows.len()).unwrap_or(u64::MAX);
    if n == 0 {
        return Ok(0);
    }
    let bumped =
        sqlx::query("UPDATE outbox_seq SET last_seq = LAST_INSERT_ID(last_seq + ?) WHERE id = 1")
            .bind(n)
            .execute(&mut *conn)
            .await?;
    if bumped.rows_affected() != 1 {
        return Err(sqlx::Error::Protocol(
            "outbox_seq has no row 1 (migration 0007 missing?)".into(),
        ));
    }
    let first = bumped.last_insert_id() + 1 - n;
    for (c, chunk) in rows.chunks(1_000).enumerate() {
        let base = first + (c as u64) * 1_000;
        let mut q = sqlx::QueryBuilder::<sqlx::MySql>::new(
            "INSERT INTO outbox (seq, topic, msg_key, payload) ",
        );
        q.push_values(chunk.iter().enumerate(), |mut b, (i, r)| {
            b.push_bind(base + i as u64)
                .push_bind(r.topic)
                .push_bind(r.key.as_slice())
                .push_bind(r.payload.as_slice());
        });
        q.build().execute(&mut *conn).await?;
    }
    Ok(first)
}

/// Outbox rows not yet published (acked) on this shard.
///
/// # Errors
/// Database errors.
pub async fn unsent(pool: &MySqlPool) -> Result<u64, sqlx::Error> {
    let (n,): (i64,) = sqlx::query_as(
        "SELECT COUNT(*) FROM outbox o JOIN outbox_relay r ON r.id = 1 WHERE o.seq > r.published_seq",
    )
    .fetch_one(pool)
    .await?;
    Ok(u64::try_from(n).unwrap_or(0))
}

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
    /// Rows published and marked.
    pub published: u64,
    /// Published rows pruned.
    pub pruned: u64,
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

    /// Read, publish, mark (and maybe prune) — one round.
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
        // 1. read what follows the mark, in seq order
        let (published,): (u64,) =
            sqlx::query_as("SELECT published_seq FROM outbox_relay WHERE id = 1")
                .fetch_one(&mut *conn)
                .await
                .map_err(|e| self.db(e))?;
        let rows: Vec<(u64, String, Vec<u8>, Vec<u8>)> = sqlx::query_as(
            "SELECT seq, topic, msg_key, payload FROM outbox WHERE seq > ? ORDER BY seq LIMIT ?",
        )
        .bind(published)
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
            sqlx::query(
                "UPDATE outbox_relay SET published_seq = ? WHERE id = 1 AND published_seq < ?",
            )
            .bind(last)
            .bind(last)
            .execute(&mut *conn)
            .await
            .map_err(|e| self.db(e))?;
            // 4. prune each time the mark crosses a multiple of PRUNE_EVERY (twice that
            //    many at most, so a backlog left by a crash drains too)
            if last / PRUNE_EVERY != published / PRUNE_EVERY && last > KEEP_PUBLISHED {
                round.pruned =
                    sqlx::query("DELETE FROM outbox WHERE seq <= ? ORDER BY seq LIMIT 20000")
                        .bind(last - KEEP_PUBLISHED)
                        .execute(&mut *conn)
                        .await
                        .map_err(|e| self.db(e))?
                        .rows_affected();
            }
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
