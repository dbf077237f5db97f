//! Snowflake worker ids: fixed from config, or leased in Redis.
//!
//! A lease is the key `{prefix}snowflake:{datacenter}:{worker}` holding a random token,
//! set with `NX PX ttl`. A background task renews it every `ttl / 3` with a
//! compare-and-expire script. The generator issues ids only while the local lease
//! deadline (`acquired/renewed at + ttl - safety margin`, measured before the request
//! was sent, so it is conservative) is in the future: if renewals fail, or Redis says
//! the key is no longer ours, issuance stops by itself. Two live processes never hold
//! the same (datacenter, worker).
//!
//! Across holders, a high-water mark `{lease key}:hw` records the latest time a holder
//! may have issued ids at (raised to the deadline on acquire and every renewal, set to
//! the release time on release). A new holder whose clock is behind the mark waits if
//! the gap is ≤ 5 ms and refuses otherwise, so a restart after a clock step back never
//! re-issues an id. (A worker id fixed in config has no such memory: there, the clock
//! must not step back across a restart.)

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use deadpool_redis::redis::Script;
use rand::distr::{Alphanumeric, SampleString};
use tokio::task::JoinHandle;
use tracing::{info, warn};

use crate::error::RouterError;
use crate::snowflake::{
    Clock, LeaseClock, Snowflake, SnowflakeError, SystemClock, MAX_BACKWARD_MS, MAX_NODE,
};

/// Margin kept between the local deadline and the Redis expiry.
const SAFETY_MARGIN_MS: u64 = 500;

/// KEYS: lease, high-water. ARGV: token, ttl, hw. Takes the lease if free; raises the
/// high-water mark to `hw`; returns the previous mark (or `false` if taken).
const ACQUIRE: &str = r"
if not redis.call('set', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return false end
local prev = tonumber(redis.call('get', KEYS[2]) or '0')
redis.call('set', KEYS[2], tostring(math.max(prev, tonumber(ARGV[3]))))
return tostring(prev)";
/// KEYS: lease, high-water. ARGV: token, ttl, hw.
const RENEW: &str = r"
if redis.call('get', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('pexpire', KEYS[1], ARGV[2])
local prev = tonumber(redis.call('get', KEYS[2]) or '0')
redis.call('set', KEYS[2], tostring(math.max(prev, tonumber(ARGV[3]))))
return 1";
/// KEYS: lease, high-water. ARGV: token, now (issuance has stopped: no id is later).
const RELEASE: &str = r"
if redis.call('get', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('set', KEYS[2], ARGV[2])
return redis.call('del', KEYS[1])";

/// A held worker-id lease. Dropping it stops renewal; [`WorkerLease::release`] also
/// deletes the key so the id is free at once.
#[derive(Debug)]
pub struct WorkerLease {
    datacenter: u8,
    worker: u8,
    key: String,
    token: String,
    deadline_ms: Arc<AtomicU64>,
    renewer: Option<JoinHandle<()>>,
    pool: deadpool_redis::Pool,
}

impl WorkerLease {
    /// Leases the lowest free worker id of `datacenter` and starts renewing it.
    ///
    /// # Errors
    /// [`RouterError::Redis`] if Redis fails, or all 32 worker ids are taken.
    pub async fn acquire(
        pool: deadpool_redis::Pool,
        prefix: &str,
        datacenter: u8,
        ttl: Duration,
    ) -> Result<Self, RouterError> {
        if datacenter > MAX_NODE {
            return Err(RouterError::Config(format!(
                "datacenter {datacenter} > {MAX_NODE}"
            )));
        }
        let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
        if ttl_ms <= SAFETY_MARGIN_MS * 2 {
            return Err(RouterError::Config(format!(
                "lease ttl must exceed {} ms",
                SAFETY_MARGIN_MS * 2
            )));
        }
        let token = Alphanumeric.sample_string(&mut rand::rng(), 32);
        let acquire = Script::new(ACQUIRE);
        let mut conn = pool.get().await?;
        for worker in 0..=MAX_NODE {
            let key = format!("{prefix}snowflake:{datacenter}:{worker}");
            let hw_key = format!("{key}:hw");
            let sent_at = now_ms();
            let prev: Option<String> = acquire
                .key(&key)
                .key(&hw_key)
                .arg(&token)
                .arg(ttl_ms)
                .arg(sent_at + ttl_ms)
                .invoke_async(&mut *conn)
                .await?;
            let Some(prev) = prev else { continue };
            let prev_hw: u64 = prev.parse().unwrap_or(0);
            if let Err(e) = wait_past(prev_hw).await {
                // do not squat on the id we cannot use
                let _: i64 = Script::new(RELEASE)
                    .key(&key)
                    .key(&hw_key)
                    .arg(&token)
                    .arg(prev_hw)
                    .invoke_async(&mut *conn)
                    .await?;
                return Err(e.into());
            }
            drop(conn);
            let deadline_ms = Arc::new(AtomicU64::new(sent_at + ttl_ms - SAFETY_MARGIN_MS));
            let renewer = tokio::spawn(renew_loop(
                pool.clone(),
                key.clone(),
                token.clone(),
                ttl_ms,
                deadline_ms.clone(),
            ));
            info!(datacenter, worker, ttl_ms, "leased snowflake worker id");
            return Ok(Self {
                datacenter,
                worker,
                key,
                token,
                deadline_ms,
                renewer: Some(renewer),
                pool,
            });
        }
        Err(RouterError::Redis(format!(
            "all {} worker ids of datacenter {datacenter} are leased",
            u16::from(MAX_NODE) + 1
        )))
    }

    /// The leased worker id.
    pub fn worker(&self) -> u8 {
        self.worker
    }

    /// The datacenter id.
    pub fn datacenter(&self) -> u8 {
        self.datacenter
    }

    /// Whether the lease is still valid locally.
    pub fn is_valid(&self) -> bool {
        now_ms() < self.deadline_ms.load(Ordering::Acquire)
    }

    /// A generator that issues ids only while this lease holds.
    ///
    /// # Errors
    /// Never for a lease (its ids are in range); kept fallible for symmetry.
    pub fn generator(&self) -> Result<Snowflake<LeaseClock<SystemClock>>, RouterError> {
        self.generator_with_clock(SystemClock)
    }

    /// Like [`WorkerLease::generator`] over another clock.
    ///
    /// # Errors
    /// See [`WorkerLease::generator`].
    pub fn generator_with_clock<C: Clock>(
        &self,
        clock: C,
    ) -> Result<Snowflake<LeaseClock<C>>, RouterError> {
        Ok(Snowflake::with_clock(
            self.datacenter,
            self.worker,
            LeaseClock::new(clock, self.deadline_ms.clone()),
        )?)
    }

    /// Stops renewing and deletes the key (if still ours). Ids stop at once.
    ///
    /// # Errors
    /// [`RouterError::Redis`].
    pub async fn release(mut self) -> Result<(), RouterError> {
        self.stop();
        let mut conn = self.pool.get().await?;
        let _: i64 = Script::new(RELEASE)
            .key(&self.key)
            .key(format!("{}:hw", self.key))
            .arg(&self.token)
            .arg(now_ms())
            .invoke_async(&mut *conn)
            .await?;
        Ok(())
    }

    fn stop(&mut self) {
        self.deadline_ms.store(0, Ordering::Release);
        if let Some(h) = self.renewer.take() {
            h.abort();
        }
    }
}

impl Drop for WorkerLease {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn renew_loop(
    pool: deadpool_redis::Pool,
    key: String,
    token: String,
    ttl_ms: u64,
    deadline: Arc<AtomicU64>,
) {
    let script = Script::new(RENEW);
    let period = Duration::from_millis(ttl_ms / 3);
    loop {
        tokio::time::sleep(period).await;
        let sent_at = now_ms();
        let res: Result<i64, RouterError> = async {
            let mut conn = pool.get().await?;
            Ok(script
                .key(&key)
                .key(format!("{key}:hw"))
                .arg(&token)
                .arg(ttl_ms)
                .arg(sent_at + ttl_ms)
                .invoke_async(&mut *conn)
                .await?)
        }
        .await;
        match res {
            Ok(1) => deadline.store(sent_at + ttl_ms - SAFETY_MARGIN_MS, Ordering::Release),
            Ok(_) => {
                deadline.store(0, Ordering::Release);
                warn!(
                    key,
                    "snowflake lease lost: key no longer ours; id issuance stopped"
                );
                return;
            }
            // transient: keep the old deadline; issuance stops by itself when it passes
            Err(e) => warn!(key, error = %e, "snowflake lease renewal failed"),
        }
    }
}

/// Waits until the clock is past `mark` if that is at most [`MAX_BACKWARD_MS`] away.
async fn wait_past(mark: u64) -> Result<(), SnowflakeError> {
    let now = now_ms();
    if now > mark {
        return Ok(());
    }
    let behind_ms = mark - now + 1;
    if behind_ms > MAX_BACKWARD_MS {
        return Err(SnowflakeError::ClockMovedBackwards { behind_ms });
    }
    tokio::time::sleep(Duration::from_millis(behind_ms)).await;
    while now_ms() <= mark {
        tokio::task::yield_now().await;
    }
    Ok(())
}

fn now_ms() -> u64 {
    SystemClock.now_ms().unwrap_or(0)
}
