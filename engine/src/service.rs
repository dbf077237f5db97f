//! The Kafka loops around the pure parts: the matching service and the per-shard
//! settlers (DESIGN.md "Order flow" 5–6).
//!
//! **Matching**: consumes `orders` (framed `source | seq | OrderInput`), feeds each
//! symbol's [`Matcher`] through `apply_sourced` (redeliveries are dropped), and
//! publishes, per input batch, one [`FillBatch`] per (shard, symbol) to `fills`
//! (partition = shard) and the book deltas and trades to `market`. The broker offers no
//! transactions, so exactly-once *effect* comes from determinism: this version owns all
//! partitions of `orders` (assigned, no consumer-group rebalances), never commits input
//! offsets, and rebuilds its books on start by replaying `orders` from the beginning;
//! the replay re-emits identical batches, which the settlers skip by their
//! `applied_seq` marks. With a [`SnapshotStore`], it saves every book plus the input
//! offsets they reflect (after the outputs they cover were acked) and, on start,
//! restores the latest snapshot and replays only what follows.
//!
//! One matching process per set of symbols at a time: the settlers' marks assume one
//! writer per symbol (a zombie matcher publishing late would have its events skipped).
//!
//! **Settling**: one consumer per shard, assigned to its `fills` partition; each batch is
//! applied in one DB transaction ([`Settler::apply`]), then the offset is committed as a
//! hint (the real checkpoint is `applied_seq`, written with the money). A batch that
//! keeps failing is parked, with its symbol's later batches behind it
//! ([`crate::parking`]).

use std::collections::BTreeMap;
use std::num::NonZeroU16;
use std::sync::Arc;
use std::time::Duration;

use domain::{ShardId, Symbol};
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::Message;
use sqlx::MySqlPool;
use tokio::sync::watch;
use tracing::{debug, error, info, warn};

use crate::bus::{
    assign_checked, committed_offset, consumer, position_lost, producer, strict_consumer, BusError,
    BusSettings,
};
use crate::metrics::Metrics;
use crate::parking::{seq_range, ParkPolicy, Parking};
use crate::relay::unframe;
use crate::settle::{shards_of, Applied, FillBatch, SettleError, Settler, FILLS_TOPIC};
use matcher::wire::{OrderInput, ORDERS_TOPIC};
use matcher::{Command, Event, Matcher, RespecError, SymbolSpec};
use trading::parked::ParkState;

/// Topic of market events (trades and book deltas), keyed by symbol.
pub const MARKET_TOPIC: &str = "market";

/// Errors of the service loops.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// Kafka.
    #[error(transparent)]
    Bus(#[from] BusError),
    /// A publish was not acknowledged.
    #[error("publish: {0}")]
    Publish(String),
    /// Settlement failed (the batch is retried, then parked), or the shard's parked
    /// batches could not be read or written (the role restarts).
    #[error(transparent)]
    Settle(#[from] SettleError),
    /// A snapshot could not be read, restored or written.
    #[error("snapshot: {0}")]
    Snapshot(String),
    /// A symbol's rules changed in meta on a grid (tick, step, precisions) that its
    /// restored book still counts orders on: the service refuses to start rather than
    /// match or settle on two grids. Halt the symbol and let its book empty (see the
    /// README, "Changing a symbol's rules"), or put the old rules back.
    #[error("symbol {symbol}: {detail}")]
    Rules {
        /// The symbol.
        symbol: Symbol,
        /// What changed and why it cannot apply.
        detail: String,
    },
    /// An input the matcher cannot apply (no book for its symbol, undecodable): the
    /// service stops rather than skip it, since its funds stay frozen until it is
    /// matched or refused. A restart reloads the symbols, so a symbol added to the
    /// config after the matcher started is picked up.
    #[error("input at offset {offset} of partition {partition}: {reason}")]
    Input {
        /// Partition of the orders topic.
        partition: i32,
        /// Offset of the message.
        offset: i64,
        /// What is wrong with it.
        reason: String,
    },
}

/// The books of every symbol this matcher owns, and the routing of their events.
#[derive(Debug)]
pub struct MatchingCore {
    count: NonZeroU16,
    books: BTreeMap<Symbol, Matcher>,
}

/// What a batch of inputs produced.
#[derive(Debug, Default)]
pub struct Output {
    /// Events to settle, per (shard, symbol), in seq order.
    pub fills: BTreeMap<(ShardId, Symbol), Vec<Event>>,
    /// Trades and book deltas, per symbol.
    pub market: BTreeMap<Symbol, Vec<Event>>,
}

impl MatchingCore {
    /// Books for `specs`, routing to `count` shards.
    pub fn new(specs: impl IntoIterator<Item = SymbolSpec>, count: NonZeroU16) -> Self {
        Self {
            count,
            books: specs
                .into_iter()
                .map(|s| (s.symbol, Matcher::new(s)))
                .collect(),
        }
    }

    /// Every book's snapshot, by symbol.
    pub fn snapshot(&self) -> BTreeMap<Symbol, Vec<u8>> {
        self.books.iter().map(|(s, m)| (*s, m.snapshot())).collect()
    }

    /// Replaces the books found in `books` with their restored state (symbols without
    /// a snapshot keep their fresh book: a symbol added since). A symbol whose rules in
    /// meta differ from its snapshot's gets the new rules at this boundary when that is
    /// safe ([`Matcher::respec`]: fees and band at once, a grid change on an empty
    /// book); returns the symbols whose rules changed.
    ///
    /// # Errors
    /// A snapshot that does not restore; [`ServiceError::Rules`] for a grid change
    /// under open orders (nothing is changed then).
    pub fn restore(
        &mut self,
        books: &BTreeMap<Symbol, Vec<u8>>,
    ) -> Result<Vec<Symbol>, ServiceError> {
        let mut restored = BTreeMap::new();
        let mut changed = Vec::new();
        for (symbol, bytes) in books {
            let mut m =
                Matcher::restore(bytes).map_err(|e| ServiceError::Snapshot(e.to_string()))?;
            if let Some(fresh) = self.books.get(symbol).map(Matcher::spec) {
                if fresh != m.spec() {
                    let what = m.spec().changes(fresh).join(", ");
                    m.respec(fresh.clone())
                        .map_err(|e: RespecError| ServiceError::Rules {
                            symbol: *symbol,
                            detail: format!("rules changed ({what}), but {e}"),
                        })?;
                    info!(%symbol, changes = %what, "symbol rules changed since the snapshot: new rules in force");
                    changed.push(*symbol);
                }
            }
            restored.insert(*symbol, m);
        }
        self.books.extend(restored);
        Ok(changed)
    }

    /// The rules `symbol`'s book matches under.
    ///
    /// # Errors
    /// [`ServiceError::Rules`] for a symbol without a book here.
    pub fn rules(&self, symbol: &Symbol) -> Result<&SymbolSpec, ServiceError> {
        self.books
            .get(symbol)
            .map(Matcher::spec)
            .ok_or_else(|| ServiceError::Rules {
                symbol: *symbol,
                detail: "no book".into(),
            })
    }

    /// Applies one framed input; `Ok(false)` if it was a redelivery.
    ///
    /// # Errors
    /// The symbol has no book here (the input is not skipped: see
    /// [`ServiceError::Input`]).
    pub fn apply(
        &mut self,
        source: u32,
        seq: u64,
        input: &OrderInput,
        out: &mut Output,
    ) -> Result<bool, String> {
        let symbol = *input.symbol();
        let Some(book) = self.books.get_mut(&symbol) else {
            return Err(format!(
                "no book for symbol {symbol} (not in this matcher's config)"
            ));
        };
        let cmd = match input {
            OrderInput::Place { order, .. } => Command::Place(order.clone()),
            OrderInput::Cancel {
                order_id, user_id, ..
            } => Command::Cancel {
                order_id: *order_id,
                user_id: *user_id,
            },
        };
        let mut events = Vec::new();
        if !book.apply_sourced(source, seq, &cmd, &mut events) {
            return Ok(false);
        }
        for e in events {
            if matches!(e, Event::Trade { .. } | Event::BookDelta { .. }) {
                out.market.entry(symbol).or_default().push(e.clone());
            }
            for shard in shards_of(&e, self.count) {
                out.fills
                    .entry((shard, symbol))
                    .or_default()
                    .push(e.clone());
            }
        }
        Ok(true)
    }
}

/// A matcher with unsnapshotted inputs and nothing new for this long saves a snapshot.
const IDLE_SNAPSHOT: Duration = Duration::from_secs(5);

/// The state written to `matcher_snapshots`: input offsets and the books they reflect.
type Snapshot = matcher::wire::ServiceSnapshot;

/// Where the matching service keeps its snapshots (the meta schema), and how often.
#[derive(Debug, Clone)]
pub struct SnapshotStore {
    /// Meta pool.
    pub pool: MySqlPool,
    /// Take a snapshot after this many applied inputs...
    pub every: u64,
    /// ... or this long after the last one, if anything was applied since.
    pub every_time: Duration,
    /// Snapshots kept per stream.
    pub keep: u32,
}

impl SnapshotStore {
    async fn latest(&self, stream: &str) -> Result<Option<Snapshot>, ServiceError> {
        let row: Option<(Vec<u8>,)> = sqlx::query_as(
            "SELECT state FROM matcher_snapshots WHERE stream = ? ORDER BY id DESC LIMIT 1",
        )
        .bind(stream)
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| ServiceError::Snapshot(e.to_string()))?;
        row.map(|(b,)| postcard::from_bytes(&b).map_err(|e| ServiceError::Snapshot(e.to_string())))
            .transpose()
    }

    /// Saves `core`'s books at `offsets` (the next offset to read per partition).
    async fn take(
        &self,
        stream: &str,
        offsets: &BTreeMap<i32, i64>,
        core: &MatchingCore,
        inputs: u64,
    ) -> Result<(), ServiceError> {
        let snap = Snapshot {
            offsets: offsets.clone(),
            books: core.snapshot(),
        };
        self.save(stream, &snap, inputs).await?;
        debug!(offsets = ?snap.offsets, "matcher snapshot saved");
        Ok(())
    }

    async fn save(&self, stream: &str, snap: &Snapshot, inputs: u64) -> Result<(), ServiceError> {
        let bytes = postcard::to_stdvec(snap).map_err(|e| ServiceError::Snapshot(e.to_string()))?;
        let err = |e: sqlx::Error| ServiceError::Snapshot(e.to_string());
        sqlx::query("INSERT INTO matcher_snapshots (stream, state, inputs) VALUES (?, ?, ?)")
            .bind(stream)
            .bind(&bytes)
            .bind(inputs)
            .execute(&self.pool)
            .await
            .map_err(err)?;
        // keep the newest few
        sqlx::query(
            "DELETE FROM matcher_snapshots WHERE stream = ? AND id < \
             (SELECT id FROM (SELECT id FROM matcher_snapshots WHERE stream = ? ORDER BY id DESC LIMIT 1 OFFSET ?) t)",
        )
        .bind(stream)
        .bind(stream)
        .bind(self.keep.saturating_sub(1))
        .execute(&self.pool)
        .await
        .map_err(err)?;
        Ok(())
    }
}

/// Names of the topics, with a prefix (tests isolate themselves with one).
#[derive(Debug, Clone)]
pub struct Topics {
    /// Prefix of every topic name.
    pub prefix: String,
}

impl Topics {
    /// `{prefix}orders`.
    pub fn orders(&self) -> String {
        format!("{}{ORDERS_TOPIC}", self.prefix)
    }
    /// `{prefix}fills`.
    pub fn fills(&self) -> String {
        format!("{}{FILLS_TOPIC}", self.prefix)
    }
    /// `{prefix}market`.
    pub fn market(&self) -> String {
        format!("{}{MARKET_TOPIC}", self.prefix)
    }
}

/// A message to publish: topic, partition (None = by key), key, payload.
type Send = (String, Option<i32>, Vec<u8>, Vec<u8>);

/// Most inputs the matching service applies before it publishes what they produced: a
/// backlog (a restart, a burst) is worked off in rounds of this size, so one round's
/// output, the settlers' transactions and memory stay bounded.
pub const MAX_INPUTS_PER_ROUND: usize = 4_096;

/// Encodes `events` as consecutive messages of at most `budget` bytes each, in order
/// (`encode` turns a run of events into one message). Runs are cut evenly by the size
/// the whole run measured, and any part still too large is cut again.
///
/// # Errors
/// A single event whose encoding alone exceeds `budget`.
pub fn encode_within(
    events: &[Event],
    budget: usize,
    encode: &impl Fn(&[Event]) -> Vec<u8>,
    out: &mut Vec<Vec<u8>>,
) -> Result<(), ServiceError> {
    if events.is_empty() {
        return Ok(());
    }
    let bytes = encode(events);
    if bytes.len() <= budget {
        out.push(bytes);
        return Ok(());
    }
    if events.len() == 1 {
        return Err(ServiceError::Publish(format!(
            "one event encodes to {} bytes, above the frame budget of {budget} bytes",
            bytes.len()
        )));
    }
    // aim at 90 % of the budget so uneven events rarely need a second cut
    let target = (budget - budget / 10).max(1);
    let parts = bytes.len().div_ceil(target).clamp(2, events.len());
    let per = events.len().div_ceil(parts);
    for run in events.chunks(per) {
        encode_within(run, budget, encode, out)?;
    }
    Ok(())
}

async fn publish_all(producer: &FutureProducer, sends: Vec<Send>) -> Result<(), ServiceError> {
    let mut acks = Vec::with_capacity(sends.len());
    for (topic, partition, key, payload) in &sends {
        let mut rec = FutureRecord::to(topic).key(key).payload(payload);
        if let Some(p) = partition {
            rec = rec.partition(*p);
        }
        acks.push(
            producer
                .send_result(rec)
                .map_err(|(e, _)| ServiceError::Publish(e.to_string()))?,
        );
    }
    for ack in acks {
        match tokio::time::timeout(Duration::from_secs(60), ack).await {
            Ok(Ok(Ok(_))) => {}
            Ok(Ok(Err((e, _)))) => return Err(ServiceError::Publish(e.to_string())),
            _ => return Err(ServiceError::Publish("no ack".into())),
        }
    }
    Ok(())
}

/// Runs the matching service until `stop` turns true.
///
/// # Errors
/// Kafka failures (the caller restarts; the replay makes that safe).
pub async fn run_matching(
    bus: &BusSettings,
    topics: &Topics,
    group: &str,
    mut core: MatchingCore,
    store: Option<SnapshotStore>,
    metrics: Arc<Metrics>,
    mut stop: watch::Receiver<bool>,
) -> Result<(), ServiceError> {
    // no consumer group coordination: this process owns every partition of `orders`
    // and replays them from the beginning (a restart never waits for a rebalance)
    let c = strict_consumer(bus, group)?;
    let topic = topics.orders();
    let meta = c
        .fetch_metadata(Some(&topic), Duration::from_secs(10))
        .map_err(BusError::from)?;
    let partitions = meta
        .topics()
        .iter()
        .find(|t| t.name() == topic)
        .map_or(0, |t| t.partitions().len());
    // resume from the latest snapshot of this stream, if any
    let mut offsets: BTreeMap<i32, i64> = BTreeMap::new();
    if let Some(store) = &store {
        if let Some(snap) = store.latest(&topic).await? {
            core.restore(&snap.books)?;
            info!(offsets = ?snap.offsets, books = snap.books.len(), "restored matcher snapshot");
            offsets = snap.offsets;
        }
    }
    // the snapshot's offsets (or the beginning) must still be in the log: a replay
    // from a later offset would skip inputs (refused, the role stays down)
    let starts: Vec<(i32, Option<i64>)> = (0..partitions)
        .map(|p| {
            let p = i32::try_from(p).unwrap_or(0);
            (p, offsets.get(&p).copied())
        })
        .collect();
    assign_checked(&c, &topic, &starts)?;
    let mut applied_since_snapshot = 0u64;
    let mut last_snapshot = std::time::Instant::now();
    let mut applied_total = 0u64;
    let p = producer(bus)?;
    loop {
        // idle with inputs not yet snapshotted: save after `IDLE_SNAPSHOT` (or
        // `every_time` if shorter) without input, so a quiet matcher's latest snapshot
        // is its whole state (a restart replays nothing; the matcher-vs-database audit
        // reads it)
        let idle_snapshot = store
            .as_ref()
            .filter(|_| applied_since_snapshot > 0)
            .map(|s| s.every_time.min(IDLE_SNAPSHOT));
        let first = tokio::select! {
            m = c.recv() => m,
            () = tokio::time::sleep(idle_snapshot.unwrap_or(Duration::MAX)), if idle_snapshot.is_some() => {
                if let Some(store) = &store {
                    store.take(&topic, &offsets, &core, applied_total).await?;
                    applied_since_snapshot = 0;
                    last_snapshot = std::time::Instant::now();
                }
                continue;
            }
            _ = stop.changed() => return Ok(()),
        };
        let mut out = Output::default();
        let mut applied = 0u64;
        let mut taken = 0usize;
        // applies one message's inputs; returns how many it held. An input that cannot
        // be applied stops the service (nothing of this round is published or
        // snapshotted, so a restart meets it again)
        let mut handle =
            |m: &rdkafka::message::BorrowedMessage<'_>| -> Result<usize, ServiceError> {
                let bad = |reason: String| ServiceError::Input {
                    partition: m.partition(),
                    offset: m.offset(),
                    reason,
                };
                let (source, rows) = m
                    .payload()
                    .and_then(unframe)
                    .ok_or_else(|| bad("not a framed outbox message".into()))?;
                let held = rows.len();
                for (seq, payload) in rows {
                    let input = OrderInput::decode(payload).map_err(|e| {
                        bad(format!("seq {seq} of shard {source}: undecodable: {e}"))
                    })?;
                    let fresh = core
                        .apply(source, seq, &input, &mut out)
                        .map_err(|r| bad(format!("seq {seq} of shard {source}: {r}")))?;
                    let counter = if fresh {
                        applied += 1;
                        &metrics.inputs_applied
                    } else {
                        &metrics.inputs_duplicate
                    };
                    Metrics::add(counter, 1);
                }
                offsets.insert(m.partition(), m.offset() + 1);
                Ok(held)
            };
        match first {
            Ok(m) => taken += handle(&m)?,
            Err(e) if position_lost(&e) => return Err(BusError::from(e).into()),
            Err(e) => {
                warn!(error = %e, "orders consumer");
                continue;
            }
        }
        // take what else is already there (a round), without waiting, up to the cap
        while taken < MAX_INPUTS_PER_ROUND {
            match tokio::time::timeout(Duration::from_millis(1), c.recv()).await {
                Ok(Ok(m)) => taken += handle(&m)?,
                _ => break,
            }
        }
        // every message within the producer's limit: a long run of one (shard, symbol)
        // becomes several consecutive batches (settlers skip by seq, so a cut anywhere
        // is safe)
        let budget = bus.frame_budget();
        let mut sends = Vec::new();
        for ((shard, symbol), events) in out.fills {
            let mut parts = Vec::new();
            let rules = core.rules(&symbol)?;
            let encode = |run: &[Event]| FillBatch::encode_parts(&topic, rules, run);
            encode_within(&events, budget, &encode, &mut parts)?;
            for bytes in parts {
                sends.push((
                    topics.fills(),
                    Some(i32::from(shard.get())),
                    symbol.as_str().as_bytes().to_vec(),
                    bytes,
                ));
            }
        }
        for (symbol, events) in out.market {
            let mut parts = Vec::new();
            // (rules, events): the market writer renders on the matcher's grid
            let rules = core.rules(&symbol)?;
            let encode = |run: &[Event]| postcard::to_stdvec(&(rules, run)).unwrap_or_default();
            encode_within(&events, budget, &encode, &mut parts)?;
            for bytes in parts {
                sends.push((
                    topics.market(),
                    None,
                    symbol.as_str().as_bytes().to_vec(),
                    bytes,
                ));
            }
        }
        debug!(messages = sends.len(), "publishing matcher output");
        publish_all(&p, sends).await?;
        // a snapshot only after the outputs it covers are acked
        applied_since_snapshot += applied;
        applied_total += applied;
        if let Some(store) = &store {
            let due = applied_since_snapshot >= store.every.max(1)
                || (applied_since_snapshot > 0 && last_snapshot.elapsed() >= store.every_time);
            if due {
                store.take(&topic, &offsets, &core, applied_total).await?;
                applied_since_snapshot = 0;
                last_snapshot = std::time::Instant::now();
            }
        }
    }
}

/// Runs one shard's settler until `stop` turns true, parking a batch after the default
/// number of failures ([`run_settler_with`], [`ParkPolicy::default`]).
///
/// # Errors
/// Kafka failures, or the parked batches cannot be read at start.
pub async fn run_settler(
    bus: &BusSettings,
    topics: &Topics,
    group: &str,
    settler: Settler,
    shard: ShardId,
    metrics: Arc<Metrics>,
    stop: watch::Receiver<bool>,
) -> Result<(), ServiceError> {
    run_settler_with(
        bus,
        topics,
        group,
        settler,
        shard,
        metrics,
        ParkPolicy::default(),
        stop,
    )
    .await
}

/// Runs one shard's settler until `stop` turns true. Each batch is applied in one
/// transaction and then the offset is committed (a hint). A batch that fails is
/// retried with backoff; after `policy.after` failures in a row it is parked, and while
/// its symbol has a parked batch every later batch of that symbol is parked behind it
/// ([`crate::parking`]); retries asked for with `shardctl fills retry` are served
/// between batches.
///
/// # Errors
/// Kafka failures, or the parked batches cannot be read or written (the supervisor
/// restarts the role, which loads them again before it applies anything).
#[allow(clippy::too_many_arguments)]
pub async fn run_settler_with(
    bus: &BusSettings,
    topics: &Topics,
    group: &str,
    settler: Settler,
    shard: ShardId,
    metrics: Arc<Metrics>,
    policy: ParkPolicy,
    mut stop: watch::Receiver<bool>,
) -> Result<(), ServiceError> {
    // what is parked first: a batch of a held symbol must never be applied
    let mut parking = Parking::load(&settler, metrics.clone()).await?;
    // the committed offset (or the beginning) must still be in the log: starting later
    // would skip fill batches (halves never settled, funds frozen)
    let c: StreamConsumer = strict_consumer(bus, group)?;
    let partition = i32::from(shard.get());
    let committed = committed_offset(&c, &topics.fills(), partition)?;
    assign_checked(&c, &topics.fills(), &[(partition, committed)])?;
    let mut poll = tokio::time::interval(policy.poll);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let m = tokio::select! {
            m = c.recv() => m,
            _ = poll.tick(), if !parking.is_empty() => {
                parking.serve_retries(&settler).await?;
                continue;
            }
            _ = stop.changed() => return Ok(()),
        };
        let m = match m {
            Ok(m) => m,
            Err(e) if position_lost(&e) => return Err(BusError::from(e).into()),
            Err(e) => {
                warn!(error = %e, "fills consumer");
                continue;
            }
        };
        let bytes = m.payload().unwrap_or_default();
        let Ok(batch) = FillBatch::decode(bytes) else {
            warn!(offset = m.offset(), "undecodable fill batch");
            continue;
        };
        let done = settle_or_park(
            &settler,
            &mut parking,
            &metrics,
            policy,
            &batch,
            bytes,
            m.offset(),
            &mut stop,
        )
        .await?;
        if !done {
            // asked to stop before the batch was applied or parked: it is redelivered
            return Ok(());
        }
        if let Err(e) = c.commit_message(&m, CommitMode::Async) {
            debug!(error = %e, "offset commit (a hint) failed");
        }
    }
}

/// What follows a committed batch: its private events on the user stream (best
/// effort) and the counters.
pub(crate) async fn after_settled(settler: &Settler, metrics: &Metrics, a: &Applied) {
    if let Some(us) = settler.user_stream() {
        if let Err(e) = us.publish(&a.user_events).await {
            Metrics::add(&metrics.publish_errors, 1);
            warn!(error = %e, "user stream publish failed");
        }
    }
    Metrics::add(&metrics.batches_settled, 1);
    Metrics::add(
        &metrics.events_settled,
        u64::try_from(a.applied).unwrap_or(0),
    );
    Metrics::add(
        &metrics.events_skipped,
        u64::try_from(a.skipped).unwrap_or(0),
    );
}

/// Applies `batch`, or parks it: behind a parked batch of its symbol at once, or after
/// `policy.after` failures in a row. Never moves on before one of them is durable.
/// `false` when `stop` came first (nothing of it was done).
///
/// # Errors
/// The shard cannot be reached ([`SettleError::unreachable`]): not the batch's
/// fault, so it does not count toward parking; the settler stops (its role shows down
/// on `/ready`) and its restart meets the batch again.
#[allow(clippy::too_many_arguments)]
async fn settle_or_park(
    settler: &Settler,
    parking: &mut Parking,
    metrics: &Metrics,
    policy: ParkPolicy,
    batch: &FillBatch,
    bytes: &[u8],
    offset: i64,
    stop: &mut watch::Receiver<bool>,
) -> Result<bool, ServiceError> {
    let shard = settler.shard().get();
    let symbol = batch.symbol;
    let mut delay = Duration::from_millis(10);
    let mut failures = 0u32;
    loop {
        if parking.holds(symbol.as_str()) {
            if parking.covers(batch) {
                debug!(shard, %symbol, "redelivery of a parked fill batch: already parked");
                return Ok(true);
            }
            let why = parking.behind(symbol.as_str());
            match parking
                .park(batch, bytes, Some(offset), ParkState::Queued, 0, &why)
                .await
            {
                Ok(id) => {
                    let (first, last) = seq_range(batch);
                    warn!(shard, %symbol, id, seqs = %format!("{first}..{last}"), "fill batch parked: {why}");
                    return Ok(true);
                }
                Err(e) if e.unreachable() => return Err(e.into()),
                Err(e) => {
                    warn!(shard, %symbol, error = %e, "parking a fill batch failed; retrying")
                }
            }
        } else {
            match settler.apply(batch).await {
                Ok(a) => {
                    after_settled(settler, metrics, &a).await;
                    return Ok(true);
                }
                Err(e) if e.unreachable() => {
                    Metrics::add(&metrics.settle_errors, 1);
                    return Err(e.into());
                }
                Err(e) => {
                    failures = failures.saturating_add(1);
                    Metrics::add(&metrics.settle_errors, 1);
                    if failures < policy.after {
                        warn!(error = %e, shard, %symbol, failures, park_after = policy.after, "settlement failed; retrying");
                    } else {
                        let why = e.to_string();
                        match parking
                            .park(
                                batch,
                                bytes,
                                Some(offset),
                                ParkState::Failed,
                                failures,
                                &why,
                            )
                            .await
                        {
                            Ok(id) => {
                                let (first, last) = seq_range(batch);
                                error!(
                                    shard, %symbol, id, failures, error = %why,
                                    seqs = %format!("{first}..{last}"),
                                    "fill batch parked: its symbol's later batches on this shard are held behind it \
                                     (shardctl fills parked; fix the cause, then shardctl fills retry)"
                                );
                                return Ok(true);
                            }
                            Err(pe) => {
                                warn!(error = %e, park_error = %pe, shard, %symbol, "settlement failed and parking failed too; retrying")
                            }
                        }
                    }
                }
            }
        }
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            _ = stop.changed() => return Ok(false),
        }
        delay = (delay * 2).min(Duration::from_secs(5));
    }
}

/// Runs the market-data writer until `stop` turns true: consumes `market`, writes Redis
/// ([`crate::market`]), commits offsets after the writes (redeliveries are skipped by
/// the per-symbol seq kept in Redis), and refreshes the 24 h tickers once a second.
///
/// # Errors
/// Kafka failures.
pub async fn run_market_data(
    bus: &BusSettings,
    topics: &Topics,
    group: &str,
    md: crate::market::MarketData,
    mut stop: watch::Receiver<bool>,
) -> Result<(), ServiceError> {
    let c = consumer(bus, group)?;
    c.subscribe(&[&topics.market()]).map_err(BusError::from)?;
    let now = || u64::try_from(chrono::Utc::now().timestamp_millis()).unwrap_or(0);
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let m = tokio::select! {
            m = c.recv() => m,
            _ = tick.tick() => {
                // trades older than 24 h leave the tickers even when nothing trades
                if let Err(e) = md.refresh_tickers(now()).await {
                    warn!(error = %e, "ticker refresh failed");
                }
                continue;
            }
            _ = stop.changed() => return Ok(()),
        };
        let m = match m {
            Ok(m) => m,
            Err(e) => {
                warn!(error = %e, "market consumer");
                continue;
            }
        };
        let symbol = m
            .key()
            .and_then(|k| std::str::from_utf8(k).ok())
            .and_then(|k| Symbol::new(k).ok());
        let batch: Option<(SymbolSpec, Vec<Event>)> =
            m.payload().and_then(|p| postcard::from_bytes(p).ok());
        let (Some(symbol), Some((rules, events))) = (symbol, batch) else {
            warn!(offset = m.offset(), "undecodable market message");
            continue;
        };
        if rules.symbol != symbol {
            warn!(offset = m.offset(), %symbol, "market message with another symbol's rules");
            continue;
        }
        let now = now();
        let mut delay = Duration::from_millis(10);
        while let Err(e) = md.apply_with(&rules, &events, now).await {
            warn!(error = %e, %symbol, "market data write failed; retrying");
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(5));
        }
        if let Err(e) = c.commit_message(&m, CommitMode::Async) {
            debug!(error = %e, "offset commit (a hint) failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use domain::{OrderId, UserId};

    fn accepted(seq: u64) -> Event {
        Event::Accepted {
            seq,
            // ids of growing width: events of uneven size
            order_id: OrderId::new(seq * seq * 1_000_003).expect("id"),
            user_id: UserId::new(seq).expect("user"),
        }
    }

    #[test]
    fn a_long_run_is_cut_into_messages_within_the_budget_in_order() {
        let symbol: Symbol = "BTCUSDT".parse().expect("symbol");
        let rules = SymbolSpec::new(
            symbol,
            "BTC".parse().expect("base"),
            "USDT".parse().expect("quote"),
            "0.01".parse().expect("tick"),
            "0.00001".parse().expect("step"),
            8,
            8,
            1_000,
            1_000,
            500,
        )
        .expect("rules");
        let events: Vec<Event> = (1..=50_000).map(accepted).collect();
        let encode = |run: &[Event]| FillBatch::encode_parts("orders", &rules, run);
        let whole = encode(&events);
        let budget = 64 * 1024;
        assert!(
            whole.len() > 4 * budget,
            "the run must need several messages"
        );
        let mut parts = Vec::new();
        encode_within(&events, budget, &encode, &mut parts).expect("fits");
        let mut back = Vec::new();
        for p in &parts {
            assert!(p.len() <= budget, "{} > {budget}", p.len());
            let b = FillBatch::decode(p).expect("decodes");
            assert_eq!((b.stream.as_str(), b.symbol), ("orders", symbol));
            assert_eq!(b.rules, rules);
            back.extend(b.events);
        }
        assert_eq!(back, events, "every event once, in order");
        // near-full messages, not a halving cascade
        assert!(
            parts.len() <= whole.len().div_ceil(budget) + 2,
            "{} parts",
            parts.len()
        );
        // a run that fits is one message, byte for byte what encode gives
        let mut one = Vec::new();
        encode_within(&events[..10], budget, &encode, &mut one).expect("fits");
        assert_eq!(one, vec![encode(&events[..10])]);
        // one event over the budget is an error, not a message the broker refuses
        let err = encode_within(&events[..1], 8, &encode, &mut Vec::new());
        assert!(matches!(err, Err(ServiceError::Publish(_))), "{err:?}");
    }
}
