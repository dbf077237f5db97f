//! The outbox: rows written inside the business transaction that made them (an order,
//! a cancel request), published later by the relay in `engine`.
//!
//! Invariants: `seq` is taken in the writing transaction from the locked one-row
//! `outbox_seq`, so seqs follow commit order with no gaps; the relay publishes only the
//! gap-free run after its mark. This crate writes rows; it never publishes.

use sqlx::{MySqlConnection, MySqlPool};

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
