//! The outbox relay of one shard (DESIGN.md "Order flow" 4).
//!
//! Writers put rows in the outbox with [`insert_outbox`], which takes the rows' `seq`
//! from the one-row `outbox_seq` counter in the writer's transaction: the counter row
//! stays locked until that transaction ends, so seqs are handed out in commit order and
//! without gaps (auto-increment ids are neither: they are taken at insert, and a
//! rollback burns them). Every committed row with a seq ≤ S is visible once S is.
//!
//! Each round:
//! 1. **read** the rows after `outbox_relay.published_seq`, in `seq` order, and keep
//!    only the gap-free run from the mark: a missing seq is a committed row this read
//!    view does not show yet, never one to skip;
//! 2. make them **durable**: commit `outbox_relay.durable_seq` = the last seq read
//!    (InnoDB shows a commit to readers before its redo is flushed; this commit's
//!    flush covers every commit it could see), then
//!    **publish** them with the idempotent producer, keyed by the row's key (the
//!    symbol): the rows of one key go out as one message ([`frame_many`]: source shard,
//!    then `seq | payload` per row), at most [`ROWS_PER_MESSAGE`] rows each;
//! 3. **mark**: once the broker acked every one, move `published_seq` (one row);
//! 4. now and then, **prune** published rows beyond the newest `keep`.
//!
//! A crash anywhere re-publishes rows with the seq they already have; consumers drop
//! `(source, seq)` at or below what they applied (`Matcher::apply_sourced`). Nothing
//! is lost: the mark moves only after the acks. One relay per shard at a time (a
//! `GET_LOCK` guards it).

use std::sync::Arc;
use std::time::Duration;

use domain::ShardId;
use rdkafka::producer::{FutureProducer, FutureRecord};
use router::RouterError;
use sqlx::MySqlPool;

/// Published rows kept in the outbox (for inspection) before the relay prunes them.
pub const KEEP_PUBLISHED: u64 = 100_000;
/// The relay prunes once per this many published rows.
pub const PRUNE_EVERY: u64 = 10_000;

pub use trading::outbox::{insert_outbox, unsent, OutboxRow};

/// Length of the single-row frame header: source (u32 BE) + seq (u64 BE).
pub const FRAME_HEADER: usize = 12;

/// First byte of a multi-row frame (a single-row frame starts with the high byte of a
/// shard number, always 0).
pub const MULTI_FRAME: u8 = 1;

/// Most rows framed into one broker message.
pub const ROWS_PER_MESSAGE: usize = 512;
/// Default most bytes framed into one broker message (under the usual 1 MB limit); a
/// relay built from settings uses [`crate::bus::BusSettings::frame_budget`] instead.
pub const BYTES_PER_MESSAGE: usize = 512 * 1024;

/// Bytes a row adds to a multi-row frame besides its payload (seq + length).
const ROW_HEADER: usize = 12;
/// Bytes of a multi-row frame's own header (marker + source + count).
const MULTI_HEADER: usize = 9;

/// Frames one payload with its source shard and sequence (the original format, still
/// understood by [`unframe`]).
pub fn frame(source: u32, seq: u64, payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(FRAME_HEADER + payload.len());
    v.extend_from_slice(&source.to_be_bytes());
    v.extend_from_slice(&seq.to_be_bytes());
    v.extend_from_slice(payload);
    v
}

/// Frames several rows of one source, in seq order, into one message:
/// `1 | source u32 | count u32 | (seq u64 | len u32 | payload)*` (big-endian).
/// One message per round and key instead of one per row: the broker's cost is per
/// message far more than per byte.
pub fn frame_many(source: u32, rows: &[(u64, &[u8])]) -> Vec<u8> {
    let size: usize = rows.iter().map(|(_, p)| ROW_HEADER + p.len()).sum();
    let mut v = Vec::with_capacity(MULTI_HEADER + size);
    v.push(MULTI_FRAME);
    v.extend_from_slice(&source.to_be_bytes());
    v.extend_from_slice(&u32::try_from(rows.len()).unwrap_or(u32::MAX).to_be_bytes());
    for (seq, payload) in rows {
        v.extend_from_slice(&seq.to_be_bytes());
        v.extend_from_slice(
            &u32::try_from(payload.len())
                .unwrap_or(u32::MAX)
                .to_be_bytes(),
        );
        v.extend_from_slice(payload);
    }
    v
}

/// A framed message to be: topic, key, and its rows in seq order.
pub type Group<'a> = (&'a str, &'a [u8], Rows<'a>);

/// Groups `(seq, topic, key, payload)` rows (in seq order) into messages: one per
/// (topic, key) run, each at most [`ROWS_PER_MESSAGE`] rows and `frame_bytes` framed
/// bytes (a single row larger than that still gets a message of its own, which the
/// producer then refuses loudly). Seq order is kept within each key.
pub fn group_rows<'a>(
    rows: impl IntoIterator<Item = (u64, &'a str, &'a [u8], &'a [u8])>,
    frame_bytes: usize,
) -> Vec<Group<'a>> {
    // (topic, key, rows, framed bytes)
    let mut groups: Vec<(&str, &[u8], Rows<'_>, usize)> = Vec::new();
    let mut open: std::collections::HashMap<(&str, &[u8]), usize> =
        std::collections::HashMap::new();
    for (seq, topic, key, payload) in rows {
        let slot = open.get(&(topic, key)).copied().filter(|&i| {
            let g = &groups[i];
            g.2.len() < ROWS_PER_MESSAGE && g.3 + ROW_HEADER + payload.len() <= frame_bytes
        });
        let i = slot.unwrap_or_else(|| {
            groups.push((topic, key, Vec::new(), MULTI_HEADER));
            open.insert((topic, key), groups.len() - 1);
            groups.len() - 1
        });
        groups[i].2.push((seq, payload));
        groups[i].3 += ROW_HEADER + payload.len();
    }
    groups.into_iter().map(|(t, k, r, _)| (t, k, r)).collect()
}

/// `(seq, payload)` rows of one source.
pub type Rows<'a> = Vec<(u64, &'a [u8])>;

/// Splits a message into its source and `(seq, payload)` rows; `None` if malformed.
pub fn unframe(bytes: &[u8]) -> Option<(u32, Rows<'_>)> {
    let u32_at = |i: usize| -> Option<u32> {
        Some(u32::from_be_bytes(bytes.get(i..i + 4)?.try_into().ok()?))
    };
    let u64_at = |i: usize| -> Option<u64> {
        Some(u64::from_be_bytes(bytes.get(i..i + 8)?.try_into().ok()?))
    };
    if bytes.first() != Some(&MULTI_FRAME) {
        let source = u32_at(0)?;
        let seq = u64_at(4)?;
        return Some((source, vec![(seq, bytes.get(FRAME_HEADER..)?)]));
    }
    let source = u32_at(1)?;
    let count = usize::try_from(u32_at(5)?).ok()?;
    let mut rows = Vec::with_capacity(count.min(ROWS_PER_MESSAGE));
    let mut at = 9;
    for _ in 0..count {
        let seq = u64_at(at)?;
        let len = usize::try_from(u32_at(at + 8)?).ok()?;
        let payload = bytes.get(at + 12..at + 12 + len)?;
        rows.push((seq, payload));
        at += 12 + len;
    }
    (at == bytes.len()).then_some((source, rows))
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
    /// Most bytes of one framed message.
    frame_bytes: usize,
    /// The connection holding this shard's relay lock, kept across rounds (detached
    /// from the pool: dropping it closes it, which releases the lock).
    held: Arc<tokio::sync::Mutex<Option<sqlx::MySqlConnection>>>,
    /// Since when the row after the mark has been missing while later ones exist.
    gap: Arc<std::sync::Mutex<Option<(u64, std::time::Instant)>>>,
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
            frame_bytes: BYTES_PER_MESSAGE,
            held: Arc::default(),
            gap: Arc::default(),
        }
    }

    /// Frames of at most `bytes` (the producer's message limit less headroom:
    /// [`crate::bus::BusSettings::frame_budget`]).
    #[must_use]
    pub fn with_frame_budget(mut self, bytes: usize) -> Self {
        self.frame_bytes = bytes.max(MULTI_HEADER + ROW_HEADER + 1);
        self
    }

    /// Tracks a gap after the mark `published`; one lasting 10 s is logged as an
    /// error (seqs are never skipped: an operator must look).
    fn note_gap(&self, gap: bool, published: u64) {
        let mut g = self
            .gap
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if !gap {
            *g = None;
            return;
        }
        match *g {
            Some((at, since)) if at == published => {
                if since.elapsed() > Duration::from_secs(10) {
                    tracing::error!(
                        shard = self.shard.get(),
                        missing = published + 1,
                        "outbox seq missing for 10 s while later rows exist; the relay waits for it"
                    );
                    *g = Some((published, std::time::Instant::now()));
                }
            }
            _ => *g = Some((published, std::time::Instant::now())),
        }
    }

    /// Runs rounds until `stop` turns true, retrying a failed round itself after
    /// 500 ms ([`Relay::run_until_failure`] in a loop): for hosts without a supervisor
    /// (tests, `loadtest`).
    pub async fn run(
        &self,
        max_idle: Duration,
        metrics: Arc<crate::metrics::Metrics>,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) {
        while let Err(e) = self
            .run_until_failure(max_idle, metrics.clone(), stop.clone())
            .await
        {
            tracing::error!(shard = self.shard.get(), error = %e, "relay round");
            tokio::select! {
                () = tokio::time::sleep(Duration::from_millis(500)) => {}
                _ = stop.changed() => {
                    self.release().await;
                    return;
                }
            }
        }
    }

    /// Runs rounds until `stop` turns true (`Ok`) or a round fails (`Err`: the shard
    /// or the broker cannot be reached, a publish was not acked): back to back while
    /// there is work; when idle, waits 1 ms, doubling up to `max_idle` (a quiet shard
    /// costs a few queries a second, a busy one publishes without pause). Under
    /// `engine run` the supervisor then shows the relay down on `/ready` and starts it
    /// again after a backoff; nothing was marked, so the rows are published then.
    /// Another relay holding the shard ([`RelayError::Busy`]) is no failure: this one
    /// waits as a standby, trying every 500 ms.
    ///
    /// # Errors
    /// The failed round's error.
    pub async fn run_until_failure(
        &self,
        max_idle: Duration,
        metrics: Arc<crate::metrics::Metrics>,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) -> Result<(), RelayError> {
        let floor = Duration::from_millis(1).min(max_idle);
        let mut idle = floor;
        loop {
            let pause = match self.round().await {
                Ok(r) if r.published > 0 => {
                    crate::metrics::Metrics::add(&metrics.relayed, r.published);
                    idle = floor;
                    Duration::ZERO
                }
                Ok(_) => {
                    let p = idle;
                    idle = (idle * 2).min(max_idle);
                    p
                }
                Err(e @ RelayError::Busy(_)) => {
                    tracing::debug!(shard = self.shard.get(), error = %e, "relay standby");
                    Duration::from_millis(500)
                }
                Err(e) => {
                    crate::metrics::Metrics::add(&metrics.relay_errors, 1);
                    return Err(e);
                }
            };
            tokio::select! {
                () = tokio::time::sleep(pause) => {}
                _ = stop.changed() => {
                    self.release().await;
                    return Ok(());
                }
            }
        }
    }

    /// Gives up the shard's relay lock (another relay may take over).
    pub async fn release(&self) {
        if let Some(conn) = self.held.lock().await.take() {
            let _ = sqlx::Connection::close(conn).await;
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
        let mut held = self.held.lock().await;
        if held.is_none() {
            let mut conn = self.pool.acquire().await.map_err(|e| self.db(e))?.detach();
            // lock names are server-wide: qualify with the database (one server may
            // host several shards' or tests' databases)
            let lock = format!("exchange.relay.{}", self.shard.get());
            let (got,): (Option<i64>,) =
                sqlx::query_as("SELECT GET_LOCK(CONCAT(?, '.', DATABASE()), 0)")
                    .bind(&lock)
                    .fetch_one(&mut conn)
                    .await
                    .map_err(|e| self.db(e))?;
            if got != Some(1) {
                return Err(RelayError::Busy(self.shard.get()));
            }
            // the durability barrier (see `round_locked`) holds only if a commit waits
            // for its flush: say so when the server is set up otherwise
            let settings: Result<(i64, i64, i64), _> = sqlx::query_as(
                "SELECT CAST(@@innodb_flush_log_at_trx_commit AS SIGNED), \
                        CAST(@@log_bin AS SIGNED), CAST(@@sync_binlog AS SIGNED)",
            )
            .fetch_one(&mut conn)
            .await;
            match settings {
                Ok((flush, binlog, sync_binlog))
                    if flush != 1 || (binlog == 1 && sync_binlog != 1) =>
                {
                    tracing::warn!(
                        shard = self.shard.get(),
                        innodb_flush_log_at_trx_commit = flush,
                        log_bin = binlog,
                        sync_binlog,
                        "commits are not flushed before they return: a server crash can lose orders the matcher already has (set innodb_flush_log_at_trx_commit = 1, and sync_binlog = 1 with a binlog)"
                    );
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(shard = self.shard.get(), error = %e, "could not read the shard's flush settings")
                }
            }
            *held = Some(conn);
        }
        let Some(conn) = held.as_mut() else {
            return Err(RelayError::Busy(self.shard.get()));
        };
        let result = self.round_locked(conn, true).await;
        if result.is_err() {
            // a broken connection may have lost the lock with it: start afresh
            if let Some(conn) = held.take() {
                let _ = sqlx::Connection::close(conn).await;
            }
        }
        result
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
        // (seq, topic, key, payload, published_seq)
        type Row = (u64, String, Vec<u8>, Vec<u8>, u64);
        let rows: Vec<Row> = sqlx::query_as(
            "SELECT o.seq, o.topic, o.msg_key, o.payload, r.published_seq FROM outbox_relay r \
             JOIN outbox o ON o.seq > r.published_seq WHERE r.id = 1 ORDER BY o.seq LIMIT ?",
        )
        .bind(self.batch)
        .fetch_all(&mut *conn)
        .await
        .map_err(|e| self.db(e))?;
        let published = rows.first().map_or(0, |r| r.4);
        // only the gap-free run right after the mark: seqs are handed out without gaps,
        // so a missing one belongs to a committed transaction this read does not see
        // yet (InnoDB read views are not taken atomically: a later commit can be
        // visible before an earlier one for a moment). Skipping past it would lose it
        // for good; it is read again next round.
        let contiguous = rows
            .iter()
            .zip(published + 1..)
            .take_while(|(r, want)| r.0 == *want)
            .count();
        self.note_gap(rows.len() > contiguous, published);
        let mut rows = rows;
        rows.truncate(contiguous);
        let Some(&(first, ..)) = rows.first() else {
            return Ok(round);
        };
        let last = rows.last().map_or(first, |r| r.0);
        // 2a. durability barrier: InnoDB makes a commit visible before its redo is
        //     flushed, so these rows may not be on disk yet. A commit of our own flushes
        //     the redo up to it, which covers every commit we could see; without it, a
        //     shard server crashing now could lose an order the matcher already has.
        //     (No change when an earlier round already covered `last`: nothing to wait.)
        sqlx::query("UPDATE outbox_relay SET durable_seq = ? WHERE id = 1 AND durable_seq < ?")
            .bind(last)
            .bind(last)
            .execute(&mut *conn)
            .await
            .map_err(|e| self.db(e))?;
        let source = u32::from(self.shard.get());
        let groups = group_rows(
            rows.iter().map(|(seq, topic, key, payload, _)| {
                (*seq, topic.as_str(), &key[..], &payload[..])
            }),
            self.frame_bytes,
        );
        let mut acks = Vec::with_capacity(groups.len());
        for (topic, key, rows) in &groups {
            let topic = format!("{}{topic}", self.topic_prefix);
            let bytes = frame_many(source, rows);
            let ack = self
                .producer
                .send_result(FutureRecord::to(&topic).key(*key).payload(&bytes))
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
        assert_eq!(unframe(&f), Some((3, vec![(42, &b"abc"[..])])));
        assert_eq!(unframe(&f[..11]), None);
        let rows: [(u64, &[u8]); 3] = [(7, b"x"), (9, b""), (12, b"yz")];
        let m = frame_many(2, &rows);
        assert_eq!(unframe(&m), Some((2, rows.to_vec())));
        for cut in 1..m.len() {
            assert_eq!(unframe(&m[..cut]), None, "truncated at {cut}");
        }
        let mut longer = m.clone();
        longer.push(0);
        assert_eq!(unframe(&longer), None, "trailing bytes");
    }

    #[test]
    fn groups_fit_the_frame_budget_and_keep_seq_order_per_key() {
        let payload = [7u8; 100];
        let rows: Vec<(u64, &str, &[u8], &[u8])> = (1..=1_000u64)
            .map(|seq| {
                let key: &[u8] = if seq % 3 == 0 { b"ETHUSDT" } else { b"BTCUSDT" };
                (seq, "orders", key, &payload[..])
            })
            .collect();
        let budget = 4_096;
        let groups = group_rows(rows.iter().copied(), budget);
        let mut seen = 0;
        for (_, key, rows) in &groups {
            let framed = frame_many(0, rows);
            assert!(framed.len() <= budget, "{} > {budget}", framed.len());
            assert!(rows.windows(2).all(|w| w[0].0 < w[1].0), "seq order");
            assert!(rows
                .iter()
                .all(|(seq, _)| (seq % 3 == 0) == (*key == b"ETHUSDT")));
            seen += rows.len();
        }
        assert_eq!(seen, 1_000, "every row in exactly one frame");
        // 100-byte rows frame at 112 bytes: 36 to a 4 KiB frame
        assert!(groups.iter().all(|g| g.2.len() <= 36));
        // the row cap applies to tiny rows
        let tiny: Vec<(u64, &str, &[u8], &[u8])> = (1..=2_000u64)
            .map(|s| (s, "orders", &b"k"[..], &b""[..]))
            .collect();
        let g = group_rows(tiny.iter().copied(), usize::MAX);
        assert_eq!(g.len(), 2_000usize.div_ceil(ROWS_PER_MESSAGE));
    }
}
