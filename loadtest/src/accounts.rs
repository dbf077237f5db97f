//! `loadtest accounts`: traders for a load test through the gateway
//! (`scripts/bench-gateway.sh`), in the databases the settings name. Registers
//! `{prefix}{i}@bench.exchange` for `i` in `1..=users` (dense ids, so they spread over
//! every shard), credits each with the same deposits as `loadtest bench` (1,000 BTC and
//! 100,000,000 USDT, by `ledger::balances::credit_deposit`, so the audits count them),
//! creates one API key per user and prints `user_id api_key secret` lines on stdout,
//! in `i` order. Registration and deposits are idempotent (a deposit's txid is
//! `{prefix}-{i}-{asset}`); every run creates new keys.

use std::str::FromStr;

use anyhow::Result;
use domain::{Amount, Asset};
use ledger::balances::credit_deposit;
use router::directory::{redis_pool, NO_PASSWORD};
use router::{Settings, ShardMap, UserDirectory};

/// Registers, funds and keys `users` traders; prints one line per trader.
///
/// # Errors
/// Settings, the shards, meta or Redis.
pub async fn run(users: usize, prefix: &str) -> Result<()> {
    let settings = Settings::load()?;
    let map = ShardMap::connect_lazy(&settings)?;
    let dir = UserDirectory::new(
        map.clone(),
        redis_pool(&settings.redis)?,
        settings.redis.key_prefix.clone(),
        settings.redis.cache_ttl_s,
    );
    let (btc, usdt) = (Asset::new("BTC")?, Asset::new("USDT")?);
    let mut traders = Vec::with_capacity(users);
    for chunk in (1..=users).collect::<Vec<_>>().chunks(64) {
        let mut set = tokio::task::JoinSet::new();
        for &i in chunk {
            let (dir, map, prefix) = (dir.clone(), map.clone(), prefix.to_owned());
            set.spawn(async move {
                let u = dir
                    .register(&format!("{prefix}{i}@bench.exchange"), NO_PASSWORD)
                    .await?
                    .user_id;
                for (asset, amount) in [(btc, "1000"), (usdt, "100000000")] {
                    credit_deposit(
                        &map,
                        u,
                        &asset,
                        Amount::from_str(amount)?,
                        &format!("{prefix}-{i}-{asset}"),
                    )
                    .await?;
                }
                anyhow::Ok((i, u))
            });
        }
        while let Some(r) = set.join_next().await {
            traders.push(r??);
        }
    }
    traders.sort_unstable();
    // one at a time: key creation holds a thread-local RNG across its insert (not Send)
    for (_, u) in traders {
        let key = dir.create_api_key(u, "bench").await?;
        println!("{u} {} {}", key.key, key.secret.expose());
    }
    Ok(())
}
