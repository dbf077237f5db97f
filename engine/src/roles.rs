//! The roles `engine run` hosts: outbox relays, the matching service, per-shard
//! settlers, market data and the TCC recovery loop. One process hosts every role for
//! every shard by default; `roles` and `shards` pick a subset, so a cluster can run each
//! role (per shard) as its own process. SIGTERM / Ctrl-C stop intake, finish the batch
//! in flight and return.

use std::collections::BTreeMap;
use std::num::NonZeroU16;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use domain::{ShardId, Symbol};
use matcher::SymbolSpec;
use router::directory::redis_pool;
use router::{Settings, ShardMap, TableRouter};
use tokio::sync::watch;
use tracing::{error, info, warn};
use trading::placement::load_symbols;

use crate::bus::{ensure_topic, ensure_topic_with, producer};
use crate::config::EngineSettings;
use crate::metrics::{serve, Metrics};
use crate::relay::Relay;
use crate::service::{run_matching, run_settler, MatchingCore, SnapshotStore};
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
    // the matching service rebuilds its books by replaying `orders` from the start:
    // the log must be kept (until snapshots bound the replay)
    ensure_topic_with(
        &bus,
        &topics.orders(),
        es.orders_partitions,
        &[("retention.ms", "-1")],
    )
    .await?;
    ensure_topic(&bus, &topics.fills(), i32::from(count.get())).await?;
    ensure_topic(&bus, &topics.market(), es.orders_partitions).await?;

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
    if roles.contains(&Role::Relay) {
        // one producer (one librdkafka client, one poll thread) for every shard's relay
        let relay_producer = producer(&es.bus("relay"))?;
        for &shard in &shards {
            let relay = Relay::new(
                shard,
                map.pool(shard)?.clone(),
                relay_producer.clone(),
                topics.prefix.clone(),
                es.relay_batch,
            );
            let (m, s, idle) = (
                metrics.clone(),
                stop.clone(),
                Duration::from_millis(es.relay_idle_ms),
            );
            tasks.push(tokio::spawn(async move { relay.run(idle, m, s).await }));
        }
    }
    if roles.contains(&Role::Matcher) {
        let core = MatchingCore::new(specs.values().cloned(), count);
        let store = SnapshotStore {
            pool: map.meta().clone(),
            every: es.snapshot_every,
            every_time: Duration::from_secs(es.snapshot_every_s.max(1)),
            keep: 3,
        };
        let (b, t, m, s) = (
            es.bus("matcher"),
            topics.clone(),
            metrics.clone(),
            stop.clone(),
        );
        let group = format!("{}matcher", topics.prefix);
        tasks.push(tokio::spawn(async move {
            if let Err(e) = run_matching(&b, &t, &group, core, Some(store), m, s).await {
                error!(error = %e, "matching service stopped");
            }
        }));
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
            let (b, t, m, s) = (
                es.bus("settler"),
                topics.clone(),
                metrics.clone(),
                stop.clone(),
            );
            let group = format!("{}settler-{}", topics.prefix, shard.get());
            tasks.push(tokio::spawn(async move {
                if let Err(e) = run_settler(&b, &t, &group, settler, shard, m, s).await {
                    error!(error = %e, shard = shard.get(), "settler stopped");
                }
            }));
        }
    }
    if roles.contains(&Role::Market) {
        let md = crate::market::MarketData::new(
            redis_pool(&settings.redis)?,
            settings.redis.key_prefix.clone(),
            specs.clone(),
        );
        let (b, t, s) = (es.bus("market-data"), topics.clone(), stop.clone());
        let group = format!("{}market-data", topics.prefix);
        tasks.push(tokio::spawn(async move {
            if let Err(e) = crate::service::run_market_data(&b, &t, &group, md, s).await {
                error!(error = %e, "market data stopped");
            }
        }));
    }
    if roles.contains(&Role::Recovery) {
        // issues no ids: it only finishes globals that exist
        let tcc = ledger::tcc::Tcc::new(
            map.clone(),
            Arc::new(|| Err(router::SnowflakeError::LeaseLost)),
        );
        let (m, mut s) = (metrics.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                match tcc.recover().await {
                    Ok(r) => Metrics::add(&m.transfers_recovered, r.confirmed + r.cancelled),
                    Err(e) => warn!(error = %e, "transfer recovery pass failed"),
                }
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = s.changed() => return,
                }
            }
        }));
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
