//! The roles `engine run` hosts: outbox relays, the matching service, per-shard
//! settlers, market data and the TCC recovery loop. One process hosts every role for
//! every shard by default; `roles` and `shards` pick a subset, so a cluster can run each
//! role (per shard) as its own process. SIGTERM / Ctrl-C stop intake, finish the batch
//! in flight and return.

use std::collections::BTreeMap;
use std::future::Future;
use std::num::NonZeroU16;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use domain::{ShardId, Symbol};
use matcher::SymbolSpec;
use router::directory::redis_pool;
use router::{Settings, ShardMap, TableRouter};
use tokio::sync::watch;
use tracing::{error, info};
use trading::placement::load_symbols;

use crate::bus::{
    ensure_topic, ensure_topic_with, producer, require_retention, BusSettings, KEEP_FOREVER,
};
use crate::config::EngineSettings;
use crate::metrics::{serve, Metrics};
use crate::parking::ParkPolicy;
use crate::relay::Relay;
use crate::service::{run_matching, run_settler_with, MatchingCore, SnapshotStore, Topics};
use crate::settle::Settler;

/// A role of the engine process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Role {
    /// The per-shard outbox relay.
    Relay,
    /// The matching service (every symbol).
    Matcher,
    /// The per-shard settler.
    Settler,
    /// Market data into Redis.
    Market,
    /// The TCC recovery loop: finishes transfers a crash or a failure left unfinished.
    Recovery,
}

/// Every role, the default of `engine run`.
pub const ALL_ROLES: [Role; 5] = [
    Role::Relay,
    Role::Matcher,
    Role::Settler,
    Role::Market,
    Role::Recovery,
];

/// One attempt of a role: given the stop signal, a future that runs until stop (`Ok`)
/// or fails (`Err` with the reason).
pub type RoleFn = Box<
    dyn FnMut(watch::Receiver<bool>) -> Pin<Box<dyn Future<Output = Result<(), String>> + Send>>
        + Send,
>;

/// After a failure, a new attempt counts as up once it has run this long.
pub const HEALTHY_AFTER: Duration = Duration::from_secs(5);
/// First pause before a restart; it doubles up to [`MAX_BACKOFF`].
pub const FIRST_BACKOFF: Duration = Duration::from_secs(1);
/// Longest pause before a restart.
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// An attempt that ran this long resets the backoff.
const BACKOFF_RESET: Duration = Duration::from_secs(60);

/// Runs a role until `stop`, starting it again whenever it ends early: an error or a
/// panic marks it down in `metrics` (so `/ready` says which role and why), then after a
/// backoff (1 s doubling to 30 s) a new attempt starts from scratch — the matcher from
/// its snapshot and the replay after it, a settler from its `applied_seq` marks. After a
/// failure the role counts as up again only once an attempt has run [`HEALTHY_AFTER`],
/// so a role failing in a loop stays down.
pub async fn supervise(
    name: String,
    metrics: Arc<Metrics>,
    mut stop: watch::Receiver<bool>,
    mut run: RoleFn,
) {
    let mut backoff = FIRST_BACKOFF;
    let mut failed = false;
    loop {
        if !failed {
            metrics.role_up(&name);
        }
        let started = std::time::Instant::now();
        let mut attempt = tokio::spawn(run(stop.clone()));
        let ended = if failed {
            tokio::select! {
                r = &mut attempt => Some(r),
                () = tokio::time::sleep(HEALTHY_AFTER) => {
                    info!(role = %name, "role healthy again");
                    metrics.role_up(&name);
                    None
                }
            }
        } else {
            None
        };
        let ended = match ended {
            Some(r) => r,
            None => attempt.await,
        };
        let why = match ended {
            Ok(Ok(())) if *stop.borrow() => return,
            Ok(Ok(())) => "returned without being asked to stop".to_owned(),
            Ok(Err(e)) => e,
            Err(e) if e.is_panic() => format!("panicked: {e}"),
            Err(e) => e.to_string(),
        };
        if *stop.borrow() {
            return;
        }
        if started.elapsed() >= BACKOFF_RESET {
            backoff = FIRST_BACKOFF;
        }
        error!(role = %name, error = %why, restart_in = ?backoff, "role failed; restarting");
        metrics.role_down(&name, &why);
        failed = true;
        tokio::select! {
            () = tokio::time::sleep(backoff) => {}
            _ = stop.changed() => return,
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
        metrics.role_restarted(&name);
    }
}

/// The symbols' matcher specs from meta.
///
/// # Errors
/// Meta unreachable or a symbol row that does not parse.
pub async fn specs(map: &ShardMap) -> Result<BTreeMap<Symbol, SymbolSpec>> {
    Ok(load_symbols(map.meta())
        .await
        .context("loading symbols")?
        .into_iter()
        .map(|(s, c)| (s, c.spec))
        .collect())
}

/// Creates the topics, and makes `orders` and `fills` keep every record
/// ([`crate::bus::require_retention`]), a topic that already exists too: the matcher
/// replays `orders` from its snapshot's offsets and a settler reads `fills` from its
/// committed offset, so a record deleted before they read it would be skipped (they now
/// refuse to start instead; this keeps them from having to).
///
/// # Errors
/// The broker unreachable, or a topic whose retention cannot be set (the error says
/// which and how to fix it by hand).
pub async fn ensure_topics(
    bus: &BusSettings,
    topics: &Topics,
    orders_partitions: i32,
    shards: NonZeroU16,
) -> Result<()> {
    ensure_topic_with(bus, &topics.orders(), orders_partitions, &KEEP_FOREVER).await?;
    ensure_topic_with(bus, &topics.fills(), i32::from(shards.get()), &KEEP_FOREVER).await?;
    for topic in [topics.orders(), topics.fills()] {
        require_retention(bus, &topic).await?;
    }
    ensure_topic(bus, &topics.market(), orders_partitions).await?;
    Ok(())
}

/// Runs `roles` (all when empty) for `shards` (all when empty) until SIGTERM / Ctrl-C.
///
/// # Errors
/// Settings, the shards, the broker or the tables unreachable at start.
pub async fn run(mut roles: Vec<Role>, shards: Vec<u16>) -> Result<()> {
    let settings = Settings::load().context("router settings")?;
    let es = EngineSettings::load().context("engine settings")?;
    info!(settings = ?settings.redacted(), engine = ?es, "starting");
    if roles.is_empty() {
        roles = ALL_ROLES.to_vec();
    }
    let map = ShardMap::connect_lazy(&settings)?;
    let count = NonZeroU16::new(map.count()).context("no shards")?;
    let shards: Vec<ShardId> = if shards.is_empty() {
        map.iter().map(|(s, _)| s).collect()
    } else {
        shards.into_iter().map(ShardId::new).collect()
    };
    let router = TableRouter::new(&settings.symbols)?;
    map.ensure_tables(&router, chrono::Utc::now(), settings.months_ahead)
        .await?;
    let specs = specs(&map).await?;
    let topics = es.topics();
    let bus = es.bus("engine");
    ensure_topics(&bus, &topics, es.orders_partitions, count).await?;

    let metrics = Arc::new(Metrics::default());
    let (stop_tx, stop) = watch::channel(false);
    let mut tasks = Vec::new();
    {
        let (m, s, addr) = (metrics.clone(), stop.clone(), es.http_addr.clone());
        tasks.push(tokio::spawn(async move {
            if let Err(e) = serve(&addr, m, s).await {
                error!(error = %e, "metrics endpoint");
            }
        }));
    }
    let sup = |name: String, run: RoleFn| {
        tokio::spawn(supervise(name, metrics.clone(), stop.clone(), run))
    };
    if roles.contains(&Role::Relay) {
        let relay_bus = es.bus("relay");
        for &shard in &shards {
            let pool = map.pool(shard)?.clone();
            let (m, idle) = (metrics.clone(), Duration::from_millis(es.relay_idle_ms));
            let (prefix, batch) = (topics.prefix.clone(), es.relay_batch);
            let bus = relay_bus.clone();
            tasks.push(sup(
                format!("relay-{}", shard.get()),
                Box::new(move |s| {
                    let (pool, m, prefix, bus) =
                        (pool.clone(), m.clone(), prefix.clone(), bus.clone());
                    Box::pin(async move {
                        // a producer of its own for each attempt: once a send timed
                        // out, librdkafka bumps the idempotent producer's epoch by
                        // itself, and the local broker (tansu 0.6) cannot take a
                        // produce with an epoch it never issued (its storage panics and
                        // every later request fails); a new producer gets a new id
                        let producer = producer(&bus).map_err(|e| e.to_string())?;
                        let relay = Relay::new(shard, pool, producer, prefix, batch)
                            .with_frame_budget(bus.frame_budget());
                        // a failed round ends the attempt: `/ready` shows the relay
                        // down while its shard or the broker cannot be reached
                        relay
                            .run_until_failure(idle, m, s)
                            .await
                            .map_err(|e| e.to_string())
                    })
                }),
            ));
        }
    }
    if roles.contains(&Role::Matcher) {
        let store = SnapshotStore {
            pool: map.meta().clone(),
            every: es.snapshot_every,
            every_time: Duration::from_secs(es.snapshot_every_s.max(1)),
            keep: 3,
        };
        let (b, t, m) = (es.bus("matcher"), topics.clone(), metrics.clone());
        let group = format!("{}matcher", topics.prefix);
        let map = map.clone();
        tasks.push(sup(
            "matcher".into(),
            Box::new(move |s| {
                let (b, t, m, g, store, map) = (
                    b.clone(),
                    t.clone(),
                    m.clone(),
                    group.clone(),
                    store.clone(),
                    map.clone(),
                );
                Box::pin(async move {
                    // a fresh core each time, from the symbols as meta has them now (a
                    // symbol added since the start gets its book); the books come back
                    // from the snapshot and the replay that follows it
                    let now = self::specs(&map).await.map_err(|e| format!("{e:#}"))?;
                    let core = MatchingCore::new(now.into_values(), count);
                    run_matching(&b, &t, &g, core, Some(store), m, s)
                        .await
                        .map_err(|e| e.to_string())
                })
            }),
        ));
    }
    if roles.contains(&Role::Settler) {
        let user_stream = crate::settle::UserStream::new(
            redis_pool(&settings.redis)?,
            settings.redis.key_prefix.clone(),
        );
        for &shard in &shards {
            let settler = Settler::new(
                shard,
                count,
                map.pool(shard)?.clone(),
                router.clone(),
                specs.clone(),
            )
            .with_user_stream(user_stream.clone());
            let (b, t, m) = (es.bus("settler"), topics.clone(), metrics.clone());
            let policy = ParkPolicy::after(es.park_after);
            let group = format!("{}settler-{}", topics.prefix, shard.get());
            tasks.push(sup(
                format!("settler-{}", shard.get()),
                Box::new(move |s| {
                    let (b, t, m, g, settler) = (
                        b.clone(),
                        t.clone(),
                        m.clone(),
                        group.clone(),
                        settler.clone(),
                    );
                    Box::pin(async move {
                        run_settler_with(&b, &t, &g, settler, shard, m, policy, s)
                            .await
                            .map_err(|e| e.to_string())
                    })
                }),
            ));
        }
    }
    if roles.contains(&Role::Market) {
        let md = crate::market::MarketData::new(
            redis_pool(&settings.redis)?,
            settings.redis.key_prefix.clone(),
            specs.clone(),
        );
        let (b, t) = (es.bus("market-data"), topics.clone());
        let group = format!("{}market-data", topics.prefix);
        tasks.push(sup(
            "market-data".into(),
            Box::new(move |s| {
                let (b, t, g, md) = (b.clone(), t.clone(), group.clone(), md.clone());
                Box::pin(async move {
                    crate::service::run_market_data(&b, &t, &g, md, s)
                        .await
                        .map_err(|e| e.to_string())
                })
            }),
        ));
    }
    if roles.contains(&Role::Recovery) {
        // issues no ids: it only finishes globals that exist
        let tcc = ledger::tcc::Tcc::new(
            map.clone(),
            Arc::new(|| Err(router::SnowflakeError::LeaseLost)),
        );
        let m = metrics.clone();
        tasks.push(sup(
            "recovery".into(),
            Box::new(move |mut s| {
                let (tcc, m) = (tcc.clone(), m.clone());
                Box::pin(async move {
                    loop {
                        match tcc.recover().await {
                            Ok(r) => {
                                Metrics::add(&m.transfers_recovered, r.confirmed + r.cancelled);
                            }
                            // a pass that fails (a shard or meta unreachable) ends the
                            // attempt: the role shows down on /ready until a pass works
                            Err(e) => return Err(format!("transfer recovery pass failed: {e}")),
                        }
                        tokio::select! {
                            () = tokio::time::sleep(Duration::from_secs(1)) => {}
                            _ = s.changed() => return Ok(()),
                        }
                    }
                })
            }),
        ));
    }
    Metrics::add(&metrics.ready, 1);
    info!(?roles, shards = ?shards.iter().map(|s| s.get()).collect::<Vec<_>>(), "engine running");
    router::shutdown::signal().await;
    info!("stopping: finishing the work in flight");
    let _ = stop_tx.send(true);
    for t in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(30), t).await;
    }
    map.meta().close().await;
    for (_, p) in map.iter() {
        p.close().await;
    }
    info!("stopped");
    Ok(())
}
