//! Cross-shard transfer throughput and latency on the local shards (own databases):
//! `USERS` users, `CONCURRENCY` tasks each transferring between two users of different
//! shards for `SECONDS`; prints transfers/s and p50/p99/p99.9 latency, then a `RESULT`
//! line. `scripts/bench-transfers.sh` runs it next to the sysbench reference.
//!
//! Usage: `loadtest transfers [--seconds 20] [--concurrency 64] [--users 1000]`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use domain::{Amount, Asset, UserId};
use ledger::tcc::{Outcome, Tcc};
use router::Snowflake;
use testkit::TestEnv;

/// Runs the transfer benchmark.
///
/// # Errors
/// Set-up failures, a transfer that errs, or a broken money audit at the end.
pub async fn bench(seconds: u64, concurrency: u64, users: u64) -> anyhow::Result<()> {
    let n_users = (users.max(8) / 4) * 4;
    let env = TestEnv::new("benchtcc").await;
    eprintln!("[bench] registering and funding {n_users} users");
    let dir = env.directory();
    let usdt = Asset::new("USDT")?;
    for i in 1..=n_users {
        let u = dir
            .register(&format!("b{i}@bench.tcc"), router::directory::NO_PASSWORD)
            .await?
            .user_id;
        ledger::balances::credit_deposit(
            &env.map,
            u,
            &usdt,
            "1000000".parse::<Amount>()?,
            &format!("bench-{i}"),
        )
        .await?;
    }
    let ids = Arc::new(Snowflake::new(0, 27)?);
    let tcc = Tcc::new(env.map.clone(), Arc::new(move || ids.next_id()));
    println!("transfer bench: {seconds} s, {concurrency} tasks, {n_users} users, every transfer across two shards");
    let start = Instant::now();
    let deadline = start + Duration::from_secs(seconds);
    let tasks: Vec<_> = (0..concurrency)
        .map(|t| {
            let tcc = tcc.clone();
            tokio::spawn(async move {
                let mut lat = Vec::new();
                let mut pending = 0u64;
                let mut k = 0u64;
                while Instant::now() < deadline {
                    let from = 1 + (t * 7919 + k * 104_729) % n_users;
                    // to = from + 1..=3 (mod n, a multiple of 4): another shard
                    let to = 1 + (from + (k % 3)) % n_users;
                    k += 1;
                    let t0 = Instant::now();
                    match tcc
                        .transfer(UserId::new(from)?, UserId::new(to)?, "USDT", "0.01")
                        .await
                    {
                        Ok(r) => {
                            if r.outcome == Outcome::Confirming {
                                pending += 1;
                            }
                            lat.push(u32::try_from(t0.elapsed().as_micros()).unwrap_or(u32::MAX));
                        }
                        Err(e) => anyhow::bail!("{from}->{to}: {e}"),
                    }
                }
                anyhow::Ok((lat, pending))
            })
        })
        .collect();
    let mut lat = Vec::new();
    let mut pending = 0;
    for t in tasks {
        let (l, p) = t.await??;
        lat.extend(l);
        pending += p;
    }
    let secs = start.elapsed().as_secs_f64();
    lat.sort_unstable();
    let q = |p: f64| {
        let i = ((lat.len() as f64 * p) as usize).min(lat.len().saturating_sub(1));
        f64::from(lat.get(i).copied().unwrap_or(0)) / 1000.0
    };
    let rate = lat.len() as f64 / secs;
    println!(
        "transfers       {} in {secs:.1} s: {rate:.0} transfers/s ({pending} left to recovery)",
        lat.len()
    );
    println!(
        "latency         p50 {:.2} ms  p99 {:.2} ms  p99.9 {:.2} ms",
        q(0.5),
        q(0.99),
        q(0.999)
    );
    let (batches, calls) = tcc.batch_stats();
    println!(
        "group commit    {calls} branch calls in {batches} shard transactions ({:.1} per transaction)",
        calls as f64 / batches.max(1) as f64
    );
    // every unit still there
    let totals = ledger::audit::conservation(&env.map).await?;
    let ok = totals.values().all(|t| t.holds());
    println!("audit           {}", if ok { "holds" } else { "BROKEN" });
    println!(
        "RESULT transfers_per_s={rate:.0} p50_ms={:.2} p99_ms={:.2} p999_ms={:.2}",
        q(0.5),
        q(0.99),
        q(0.999)
    );
    env.drop_all().await;
    anyhow::ensure!(ok, "the money audit failed");
    Ok(())
}
