//! The matcher-vs-database audit (issue 13, defect 9): per symbol, the matcher's open
//! orders (resting and waiting stops) against the order tables' open orders on every
//! shard — same ids, same owners and sides, same remaining quantity. An order open in
//! the database but not in the matcher holds frozen funds nobody will ever release (a
//! dropped input); one open in the matcher but final in the database can trade money
//! that is not frozen any more.
//!
//! Exact only for a quiescent pipeline and books that reflect every input written: the
//! report says whether the books cover each shard's last outbox seq ([`Coverage`]),
//! and [`BooksReport::holds`] is true only then. The books come either from a live
//! [`Matcher`] (tests, in-process services) or from the matching service's latest
//! snapshot in meta ([`latest_snapshot`]), which a quiet matcher saves within seconds.

use std::collections::BTreeMap;

use domain::{Amount, ShardId, Symbol};
use matcher::wire::ServiceSnapshot;
use matcher::Matcher;
use router::{RouterError, ShardMap};
use serde::Serialize;

/// One order the two sides disagree on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BookDiff {
    /// Symbol.
    pub symbol: String,
    /// Order.
    pub order_id: u64,
    /// Owner (as the side that has it says).
    pub user_id: u64,
    /// What the matcher says remains (`None`: not open there, or by quote amount).
    pub matcher_remaining: Option<Amount>,
    /// What the database says remains (`None`: not open there, or by quote amount).
    pub db_remaining: Option<Amount>,
    /// Why it is reported.
    pub what: &'static str,
}

/// How far the books reach into each shard's input sequence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Coverage {
    /// The shard.
    pub shard: ShardId,
    /// Highest seq of this shard any book applied.
    pub applied: u64,
    /// The shard's last outbox seq handed out (`outbox_seq.last_seq`).
    pub written: u64,
}

/// Result of [`compare`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct BooksReport {
    /// Symbols compared.
    pub symbols: usize,
    /// Open orders in the books.
    pub matcher_open: usize,
    /// Open orders in the order tables.
    pub db_open: usize,
    /// Per shard: applied vs written input seqs.
    pub coverage: Vec<Coverage>,
    /// Disagreements, by symbol then order id.
    pub diffs: Vec<BookDiff>,
}

impl BooksReport {
    /// Whether the books cover every input written (else the comparison means nothing).
    pub fn covered(&self) -> bool {
        self.coverage.iter().all(|c| c.applied >= c.written)
    }

    /// Covered and no disagreement.
    pub fn holds(&self) -> bool {
        self.covered() && self.diffs.is_empty()
    }
}

/// Compares `books` with the open orders of their symbols on every shard.
///
/// # Errors
/// Database errors naming the shard.
pub async fn compare(
    shards: &ShardMap,
    books: &BTreeMap<Symbol, Matcher>,
) -> Result<BooksReport, RouterError> {
    let mut report = BooksReport {
        symbols: books.len(),
        ..BooksReport::default()
    };
    for (shard, pool) in shards.iter() {
        let (written,): (u64,) = sqlx::query_as("SELECT last_seq FROM outbox_seq WHERE id = 1")
            .fetch_one(pool)
            .await
            .map_err(|e| RouterError::db_on_shard(shard.get(), e))?;
        let applied = books
            .values()
            .filter_map(|m| m.source_marks().get(&u32::from(shard.get())).copied())
            .max()
            .unwrap_or(0);
        report.coverage.push(Coverage {
            shard,
            applied,
            written,
        });
    }
    for (symbol, m) in books {
        let mine: BTreeMap<u64, (u64, Option<Amount>)> = m
            .open_order_list()
            .into_iter()
            .map(|(id, user, _, qty)| (id.get(), (user.get(), qty.map(Amount::from))))
            .collect();
        let db: BTreeMap<u64, (u64, Option<Amount>)> =
            ledger::audit::open_orders_of(shards, symbol)
                .await?
                .into_iter()
                .map(|o| (o.order_id, (o.user_id, o.remaining)))
                .collect();
        report.matcher_open += mine.len();
        report.db_open += db.len();
        let diff = |id: u64, user: u64, m: Option<Amount>, d: Option<Amount>, what| BookDiff {
            symbol: symbol.to_string(),
            order_id: id,
            user_id: user,
            matcher_remaining: m,
            db_remaining: d,
            what,
        };
        for (id, (user, rem)) in &db {
            match mine.get(id) {
                None => report.diffs.push(diff(
                    *id,
                    *user,
                    None,
                    *rem,
                    "open in the database, not in the matcher",
                )),
                Some((u, _)) if u != user => {
                    report
                        .diffs
                        .push(diff(*id, *user, None, *rem, "another owner in the matcher"))
                }
                Some((_, r)) if r != rem => {
                    report
                        .diffs
                        .push(diff(*id, *user, *r, *rem, "remaining quantity differs"))
                }
                Some(_) => {}
            }
        }
        for (id, (user, rem)) in &mine {
            if !db.contains_key(id) {
                report.diffs.push(diff(
                    *id,
                    *user,
                    *rem,
                    None,
                    "open in the matcher, not in the database",
                ));
            }
        }
    }
    Ok(report)
}

/// The latest snapshot the matching service saved in meta (of the stream that saved
/// last): its id, when, and its books restored.
///
/// # Errors
/// Meta unreachable; a snapshot that does not decode or restore.
pub async fn latest_snapshot(
    shards: &ShardMap,
) -> Result<Option<(u64, String, BTreeMap<Symbol, Matcher>)>, RouterError> {
    let row: Option<(u64, String, Vec<u8>)> = sqlx::query_as(
        "SELECT id, CAST(created_at AS CHAR), state FROM matcher_snapshots ORDER BY id DESC LIMIT 1",
    )
    .fetch_optional(shards.meta())
    .await
    .map_err(|e| RouterError::db("meta", e))?;
    let Some((id, at, state)) = row else {
        return Ok(None);
    };
    let bad = |e: String| RouterError::Config(format!("matcher snapshot {id}: {e}"));
    let snap = ServiceSnapshot::decode(&state).map_err(|e| bad(e.to_string()))?;
    let mut books = BTreeMap::new();
    for (symbol, bytes) in &snap.books {
        books.insert(
            *symbol,
            Matcher::restore(bytes).map_err(|e| bad(e.to_string()))?,
        );
    }
    Ok(Some((id, at, books)))
}
