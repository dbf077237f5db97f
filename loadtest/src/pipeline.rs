//! The pipeline load generator (`loadtest bench`) and the demo (`loadtest demo`), over
//! the libraries: placement through group commit, relays, matcher and settlers hosted
//! in this process on their own topics and databases. The HTTP harness of the
//! load-test issue replaces them; until then they are the figures' source.

use std::collections::BTreeMap;
use std::num::NonZeroU16;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use domain::{Amount, Asset, OrderId, OrderType, Price, Qty, Side, Symbol, TimeInForce, UserId};
use engine::bus::{ensure_topic, producer};
use engine::config::EngineSettings;
use engine::metrics::Metrics;
use engine::relay::Relay;
use engine::service::{run_matching, run_settler, MatchingCore};
use engine::settle::Settler;
use ledger::audit::conservation;
use ledger::balances::credit_deposit;
use matcher::{StpMode, SymbolSpec};
use router::directory::{redis_pool, NO_PASSWORD};
use router::{Settings, ShardMap, TableRouter, UserDirectory, WorkerLease};
use tokio::sync::watch;
use trading::placement::{load_symbols, PlaceRequest, Placer};

pub async fn bench(
    seconds: u64,
    concurrency: usize,
    users: usize,
    rate: Option<u32>,
) -> Result<()> {
    use std::sync::atomic::Ordering;
    let es = EngineSettings::load()?;
    // its own databases on the same shard servers: a second matcher stream must never
    // settle into the databases of the running exchange
    let env = testkit::TestEnv::new("bench").await;
    let (settings, map) = (env.settings.clone(), env.map.clone());
    let count = NonZeroU16::new(map.count()).context("no shards")?;
    let router = TableRouter::new(&settings.symbols)?;
    map.ensure_tables(&router, chrono::Utc::now(), settings.months_ahead)
        .await?;
    let symbols = load_symbols(map.meta()).await?;
    let specs: BTreeMap<Symbol, SymbolSpec> =
        symbols.iter().map(|(s, c)| (*s, c.spec.clone())).collect();
    let run = chrono::Utc::now().timestamp_millis();
    let mut topics = es.topics();
    topics.prefix = format!("{}bench_{run}_", topics.prefix);
    let bus = es.bus("bench");
    ensure_topic(&bus, &topics.orders(), es.orders_partitions).await?;
    ensure_topic(&bus, &topics.fills(), i32::from(count.get())).await?;
    ensure_topic(&bus, &topics.market(), es.orders_partitions).await?;
    let metrics = Arc::new(Metrics::default());
    let (stop_tx, stop) = watch::channel(false);
    let mut services = Vec::new();
    let relay_producer = producer(&bus)?;
    for (shard, pool) in map.iter() {
        let relay = Relay::new(
            shard,
            pool.clone(),
            relay_producer.clone(),
            topics.prefix.clone(),
            es.relay_batch,
        );
        let (m, s, idle) = (
            metrics.clone(),
            stop.clone(),
            Duration::from_millis(es.relay_idle_ms),
        );
        services.push(tokio::spawn(async move { relay.run(idle, m, s).await }));
        let settler = Settler::new(shard, count, pool.clone(), router.clone(), specs.clone())
            .with_user_stream(engine::settle::UserStream::new(
                redis_pool(&settings.redis)?,
                settings.redis.key_prefix.clone(),
            ));
        let (b, t, m, s) = (bus.clone(), topics.clone(), metrics.clone(), stop.clone());
        let group = format!("{}settler-{}", topics.prefix, shard.get());
        services.push(tokio::spawn(async move {
            let _ = run_settler(&b, &t, &group, settler, shard, m, s).await;
        }));
    }
    {
        let core = MatchingCore::new(specs.values().cloned(), count);
        let (b, t, m, s) = (bus.clone(), topics.clone(), metrics.clone(), stop.clone());
        let group = format!("{}matcher", topics.prefix);
        services.push(tokio::spawn(async move {
            let _ = run_matching(&b, &t, &group, core, None, m, s).await;
        }));
    }
    let (redis, lease, placer) = leased_placer(&settings, &map, &router, symbols).await?;
    let writers: Arc<Vec<_>> = Arc::new(
        map.iter()
            .map(|(s, _)| placer.group_writer(s, Default::default()))
            .collect(),
    );
    let dir = UserDirectory::new(
        map.clone(),
        redis,
        settings.redis.key_prefix.clone(),
        settings.redis.cache_ttl_s,
    );
    let n_users = users.max(2);
    let mut users = Vec::with_capacity(n_users);
    for chunk in (1..=n_users).collect::<Vec<_>>().chunks(64) {
        let mut set = tokio::task::JoinSet::new();
        for &i in chunk {
            let (dir, map) = (dir.clone(), map.clone());
            set.spawn(async move {
                let u = dir
                    .register(&format!("bench{i}@bench.exchange"), NO_PASSWORD)
                    .await?
                    .user_id;
                for (asset, amount) in [("BTC", "1000"), ("USDT", "100000000")] {
                    credit_deposit(
                        &map,
                        u,
                        &Asset::new(asset)?,
                        Amount::from_str(amount)?,
                        &format!("bench-{run}-{i}-{asset}"),
                    )
                    .await?;
                }
                anyhow::Ok((i, u))
            });
        }
        while let Some(r) = set.join_next().await {
            users.push(r??);
        }
    }
    users.sort_unstable();
    let users: Vec<UserId> = users.into_iter().map(|(_, u)| u).collect();
    let mode = rate.map_or_else(
        || "closed loop".to_owned(),
        |r| format!("open loop at {r} placements/s"),
    );
    println!(
        "pipeline bench: {seconds} s, {concurrency} placing tasks, {} users, {mode}, {} shards, group commit",
        users.len(),
        map.count()
    );
    let cpu0 = own_cpu_seconds();
    let start = Instant::now();
    let deadline = start + Duration::from_secs(seconds);
    // open loop: task t sends its k-th placement at start + (k·concurrency + t) / rate
    let schedule = rate.filter(|r| *r > 0).map(|r| {
        let slot = Duration::from_secs(1) / r;
        (slot, slot * u32::try_from(concurrency).unwrap_or(u32::MAX))
    });
    let mut tasks = Vec::new();
    for t in 0..concurrency {
        let (placer, writers, users) = (placer.clone(), writers.clone(), users.clone());
        let side = if t % 2 == 0 { Side::Buy } else { Side::Sell };
        tasks.push(tokio::spawn(async move {
            let mut hist = hdrhistogram::Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)
                .expect("histogram");
            let mut placed = 0u64;
            let mut failed: Vec<String> = Vec::new();
            let mut k = 0u32;
            while Instant::now() < deadline {
                let scheduled = schedule.map(|(slot, period)| {
                    start + slot * u32::try_from(t).unwrap_or(0) + period * k
                });
                k += 1;
                if let Some(at) = scheduled {
                    if at >= deadline {
                        break;
                    }
                    tokio::time::sleep_until(at.into()).await;
                }
                // each task walks its own slice of the users: buyers and sellers meet
                // on every shard
                let user = users[(t + concurrency * k as usize) % users.len()];
                let req = PlaceRequest {
                    user_id: user,
                    symbol: "BTCUSDT".parse().expect("symbol"),
                    side,
                    order_type: OrderType::Limit,
                    tif: TimeInForce::Gtc,
                    price: Some(Price::from_str("50000").expect("price")),
                    qty: Some(Qty::from_str("0.001").expect("qty")),
                    quote_qty: None,
                    stop_price: None,
                    stp: StpMode::None,
                    client_order_id: None,
                    market_reference: None,
                };
                let t0 = scheduled.unwrap_or_else(Instant::now);
                match placer.place_grouped(&writers, &req).await {
                    Ok(Ok(_)) => {
                        let us = u64::try_from(t0.elapsed().as_micros()).unwrap_or(u64::MAX);
                        let _ = hist.record(us.max(1));
                        placed += 1;
                    }
                    Ok(Err(r)) => failed.push(format!("reject: {r}")),
                    Err(e) => failed.push(format!("error: {e}")),
                }
            }
            (placed, hist, failed)
        }));
    }
    let mut placed = 0u64;
    let mut hist = hdrhistogram::Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let mut failures: Vec<String> = Vec::new();
    for t in tasks {
        let (p, h, f) = t.await?;
        placed += p;
        hist.add(h)?;
        failures.extend(f);
    }
    if !failures.is_empty() {
        println!(
            "failed          {} placements; first: {}",
            failures.len(),
            failures[0]
        );
    }
    let load = start.elapsed();
    // drain: every input matched and every fill settled
    let mut last = (0, 0);
    let mut stable = Instant::now();
    loop {
        let now = (
            metrics.inputs_applied.load(Ordering::Relaxed),
            metrics.events_settled.load(Ordering::Relaxed),
        );
        if now != last {
            last = now;
            stable = Instant::now();
        } else if now.0 >= placed && stable.elapsed() > Duration::from_millis(500) {
            break;
        }
        if start.elapsed() > load + Duration::from_secs(120) {
            bail!(
                "the pipeline did not drain within 120 s: {placed} placed, {} relayed, {} inputs applied, {} duplicates, {} events settled, {} settle errors",
                metrics.relayed.load(Ordering::Relaxed),
                metrics.inputs_applied.load(Ordering::Relaxed),
                metrics.inputs_duplicate.load(Ordering::Relaxed),
                metrics.events_settled.load(Ordering::Relaxed),
                metrics.settle_errors.load(Ordering::Relaxed)
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let total = stable.duration_since(start);
    let table = router.orders_table(&router.symbol("BTCUSDT")?, OrderId::new(ids_of_now())?)?;
    let mut filled = 0i64;
    for (_, pool) in map.iter() {
        let (n,): (i64,) = sqlx::query_as(&format!(
            "SELECT COUNT(*) FROM `{table}` WHERE status = 'filled'"
        ))
        .fetch_one(pool)
        .await?;
        filled += n;
    }
    let secs = total.as_secs_f64();
    println!(
        "placed          {placed} orders in {:.1} s ({:.0}/s acked)",
        load.as_secs_f64(),
        placed as f64 / load.as_secs_f64()
    );
    println!("settled         {filled} orders filled and settled on both sides by {secs:.1} s: {:.0} settled orders/s", filled as f64 / secs);
    println!(
        "ack latency     p50 {:.2} ms  p99 {:.2} ms  p99.9 {:.2} ms",
        hist.value_at_quantile(0.5) as f64 / 1000.0,
        hist.value_at_quantile(0.99) as f64 / 1000.0,
        hist.value_at_quantile(0.999) as f64 / 1000.0
    );
    let cpu = own_cpu_seconds() - cpu0;
    let (b, n, us) = writers
        .iter()
        .map(|w| w.stats())
        .fold((0, 0, 0), |a, s| (a.0 + s.0, a.1 + s.1, a.2 + s.2));
    println!(
        "group commit    {b} batches, {:.1} placements each, {:.2} ms each (begin to commit)",
        n as f64 / b.max(1) as f64,
        us as f64 / 1000.0 / b.max(1) as f64
    );
    println!(
        "engine cpu      {cpu:.1} s (load generator, relays, matcher, settlers in this process)"
    );
    println!(
        "RESULT settled_orders_per_s={:.0} acked_per_s={:.0} ack_p50_ms={:.2} ack_p99_ms={:.2} ack_p999_ms={:.2} engine_cpu_s={cpu:.1}",
        filled as f64 / secs,
        placed as f64 / load.as_secs_f64(),
        hist.value_at_quantile(0.5) as f64 / 1000.0,
        hist.value_at_quantile(0.99) as f64 / 1000.0,
        hist.value_at_quantile(0.999) as f64 / 1000.0
    );
    let _ = stop_tx.send(true);
    for s in services {
        let _ = tokio::time::timeout(Duration::from_secs(10), s).await;
    }
    lease.release().await?;
    env.drop_all().await;
    Ok(())
}

/// A placer whose order ids come from a worker id leased in Redis (release the lease
/// when done), and the Redis pool.
async fn leased_placer(
    settings: &Settings,
    map: &ShardMap,
    router: &TableRouter,
    symbols: BTreeMap<Symbol, trading::placement::SymbolConfig>,
) -> Result<(deadpool_redis::Pool, WorkerLease, Placer)> {
    let redis = redis_pool(&settings.redis)?;
    let lease = WorkerLease::acquire(
        redis.clone(),
        &settings.redis.key_prefix,
        settings.snowflake.datacenter_id,
        Duration::from_millis(settings.snowflake.lease_ttl_ms),
    )
    .await?;
    let ids = Arc::new(lease.generator()?);
    let placer = Placer::new(
        map.clone(),
        router.clone(),
        symbols,
        Arc::new(move || ids.next_id()),
    );
    Ok((redis, lease, placer))
}

/// CPU seconds (user + system) this process has used, from `/proc/self/stat` (0 where
/// there is none).
fn own_cpu_seconds() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0.0;
    };
    // fields after the parenthesised command name; utime and stime are the 12th and
    // 13th of them, in clock ticks (100 per second on Linux)
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    (ticks(11) + ticks(12)) as f64 / 100.0
}

/// An order id issued now (names the current month's table).
fn ids_of_now() -> u64 {
    let ms = u64::try_from(chrono::Utc::now().timestamp_millis()).unwrap_or(0);
    router::snowflake::min_id_at(ms).unwrap_or(1).max(1)
}

/// Waits until the relay of `user`'s shard has published everything (30 s at most).
async fn wait_published(map: &ShardMap, user: UserId) -> Result<()> {
    let until = Instant::now() + Duration::from_secs(30);
    loop {
        let (unsent,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM outbox o JOIN outbox_relay r ON r.id = 1 WHERE o.seq > r.published_seq")
            .fetch_one(map.pool_for(user))
            .await?;
        if unsent == 0 {
            return Ok(());
        }
        if Instant::now() > until {
            bail!(
                "shard {} did not publish within 30 s: is `engine run` running?",
                map.shard_of(user)
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub async fn demo() -> Result<()> {
    let settings = Settings::load()?;
    let map = ShardMap::connect_lazy(&settings)?;
    let router = TableRouter::new(&settings.symbols)?;
    let symbols = load_symbols(map.meta()).await?;
    let (redis, lease, placer) = leased_placer(&settings, &map, &router, symbols).await?;
    let dir = UserDirectory::new(
        map.clone(),
        redis,
        settings.redis.key_prefix.clone(),
        settings.redis.cache_ttl_s,
    );
    let run = chrono::Utc::now().timestamp_millis();

    // four traders, one per shard (dense ids: four in a row cover every shard)
    let mut traders = Vec::new();
    for i in 1..=4 {
        let r = dir
            .register(&format!("demo{i}@demo.exchange"), NO_PASSWORD)
            .await?;
        traders.push(r.user_id);
    }
    let (btc, usdt) = (Asset::new("BTC")?, Asset::new("USDT")?);
    let a = |s: &str| Amount::from_str(s).map_err(anyhow::Error::from);
    credit_deposit(&map, traders[0], &btc, a("0.02")?, &format!("demo-{run}-0")).await?;
    credit_deposit(&map, traders[1], &btc, a("0.02")?, &format!("demo-{run}-1")).await?;
    credit_deposit(
        &map,
        traders[2],
        &usdt,
        a("2000")?,
        &format!("demo-{run}-2"),
    )
    .await?;
    credit_deposit(&map, traders[3], &usdt, a("600")?, &format!("demo-{run}-3")).await?;
    let order = |u: UserId,
                 side,
                 ty,
                 price: Option<&str>,
                 qty: Option<&str>,
                 quote: Option<&str>|
     -> Result<PlaceRequest> {
        Ok(PlaceRequest {
            user_id: u,
            symbol: "BTCUSDT".parse().expect("symbol"),
            side,
            order_type: ty,
            tif: TimeInForce::Gtc,
            price: price.map(Price::from_str).transpose()?,
            qty: qty.map(Qty::from_str).transpose()?,
            quote_qty: quote.map(Amount::from_str).transpose()?,
            stop_price: None,
            stp: StpMode::None,
            client_order_id: None,
            market_reference: None,
        })
    };
    let plan = [
        (
            "sells 0.01 BTC at 50000",
            order(
                traders[0],
                Side::Sell,
                OrderType::Limit,
                Some("50000"),
                Some("0.01"),
                None,
            )?,
        ),
        (
            "sells 0.01 BTC at 50010",
            order(
                traders[1],
                Side::Sell,
                OrderType::Limit,
                Some("50010"),
                Some("0.01"),
                None,
            )?,
        ),
        (
            "buys 0.015 BTC up to 50010",
            order(
                traders[2],
                Side::Buy,
                OrderType::Limit,
                Some("50010"),
                Some("0.015"),
                None,
            )?,
        ),
        (
            "buys for 250 USDT at market",
            order(
                traders[3],
                Side::Buy,
                OrderType::Market,
                None,
                None,
                Some("250"),
            )?,
        ),
    ];
    println!(
        "{:<8} {:>5} {:<30} {:>20}",
        "user", "shard", "order", "order id"
    );
    let mut placed = Vec::new();
    for (what, req) in &plan {
        match placer.place(req).await? {
            Ok(ack) => {
                println!(
                    "{:<8} {:>5} {:<30} {:>20}",
                    req.user_id,
                    map.shard_of(req.user_id),
                    what,
                    ack.order_id
                );
                placed.push((req.user_id, ack.order_id));
            }
            Err(r) => bail!("demo order refused: {r}"),
        }
        // orders from different shards race through different relays; for a demo whose
        // outcome is stated in advance, wait until this one is on the topic
        wait_published(&map, req.user_id).await?;
    }
    // wait until the pipeline settled the demo: first the market order, the last one
    // placed (it always ends: filled or expired); then until no trade has only one half
    // applied and the money adds up (the shards' settlers run independently, so the
    // last order can be settled before an earlier trade's halves are). If that takes
    // long, go on: the audit below says what does not hold.
    let sym = router.symbol("BTCUSDT")?;
    let (last_user, last_id) = *placed.last().context("no orders")?;
    let table = router.orders_table(&sym, last_id)?;
    let until = Instant::now() + Duration::from_secs(30);
    loop {
        let (status,): (String,) = sqlx::query_as(&format!(
            "SELECT CAST(status AS CHAR) FROM `{table}` WHERE order_id = ?"
        ))
        .bind(last_id.get())
        .fetch_one(map.pool_for(last_user))
        .await?;
        if status != "new" {
            break;
        }
        if Instant::now() > until {
            bail!("the market order was not settled within 30 s: is `engine run` running?");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let until = Instant::now() + Duration::from_secs(10);
    while Instant::now() < until {
        let halves = ledger::audit::trade_halves(&map).await?;
        let money = ledger::audit::conservation(&map).await?;
        if halves.holds() && money.values().all(ledger::audit::AssetTotals::holds) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!("\nbalances after settlement");
    println!(
        "{:<8} {:>5} {:<5} {:>26} {:>26}",
        "user", "shard", "asset", "available", "frozen"
    );
    for u in &traders {
        for asset in ["BTC", "USDT"] {
            let row: Option<(String, String)> = sqlx::query_as(
                "SELECT CAST(available AS CHAR), CAST(frozen AS CHAR) FROM account_balances WHERE user_id = ? AND currency = ?",
            )
            .bind(u.get())
            .bind(asset)
            .fetch_optional(map.pool_for(*u))
            .await?;
            if let Some((av, fr)) = row {
                println!(
                    "{:<8} {:>5} {:<5} {:>26} {:>26}",
                    u,
                    map.shard_of(*u),
                    asset,
                    av,
                    fr
                );
            }
        }
    }
    println!("\norders");
    for (u, id) in &placed {
        let t = router.orders_table(&sym, *id)?;
        let (status, filled): (String, String) = sqlx::query_as(&format!(
            "SELECT CAST(status AS CHAR), CAST(filled_quantity AS CHAR) FROM `{t}` WHERE order_id = ?"
        ))
        .bind(id.get())
        .fetch_one(map.pool_for(*u))
        .await?;
        println!("{:>20} user {:<4} {:<18} filled {}", id, u, status, filled);
    }
    println!("\nmoney audit: Σ(available + frozen) over all shards = Σ deposits − Σ withdrawals");
    let mut ok = true;
    for (asset, t) in conservation(&map).await? {
        println!(
            "{:<6} balances {:>28}  deposits {:>28}  {}",
            asset,
            t.balances.to_string(),
            t.deposits.to_string(),
            if t.holds() { "holds" } else { "BROKEN" }
        );
        ok &= t.holds();
    }
    lease.release().await?;
    if !ok {
        bail!("the money audit does not hold");
    }
    Ok(())
}
