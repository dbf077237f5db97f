//! Snowflake ids: `0 | 41 bits ms since 2022-01-01T00:00:00Z | 5 bits datacenter |
//! 5 bits worker | 12 bits sequence`.
//!
//! Invariants:
//! * ids from one [`Snowflake`] are unique and strictly increasing, across threads;
//! * at most 4,096 ids per millisecond per worker: when the sequence is spent the
//!   generator spins to the next millisecond, it never borrows from the future, so an
//!   id's timestamp is never ahead of the clock (the month in it names the order's
//!   table);
//! * the clock moving back by ≤ [`MAX_BACKWARD_MS`] is waited out; more is
//!   [`SnowflakeError::ClockMovedBackwards`], never a duplicate;
//! * with a lease ([`LeaseClock`]), no id is issued once the lease deadline has passed.
//!
//! The generator is lock-free: its whole state is one `AtomicU64`
//! (`elapsed_ms << 12 | sequence`) advanced by compare-and-swap.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;
use thiserror::Error;

pub use domain::snowflake::{
    decode, min_id_at, Decoded, DATACENTER_BITS, DATACENTER_SHIFT, EPOCH_MS, MAX_ELAPSED, MAX_NODE,
    SEQUENCE_BITS, SEQ_MASK, TIMESTAMP_BITS, TIMESTAMP_SHIFT, WORKER_BITS, WORKER_SHIFT,
};

/// Clock rollback tolerated by waiting.
pub const MAX_BACKWARD_MS: u64 = 5;

/// Where a writer gets its ids (order ids for placement, transfer ids for TCC): a
/// snowflake generator behind a lease, or a source that refuses (`LeaseLost`) for a
/// role that must issue none. One type for every caller.
pub type IdSource = std::sync::Arc<dyn Fn() -> Result<u64, SnowflakeError> + Send + Sync>;

/// Why no id was issued.
#[derive(Debug, Error, Clone, PartialEq, Eq, Serialize)]
pub enum SnowflakeError {
    /// The clock is behind the last issued id by more than the tolerance.
    #[error("clock moved backwards by {behind_ms} ms (tolerance {MAX_BACKWARD_MS} ms): refusing to issue ids")]
    ClockMovedBackwards {
        /// How far behind.
        behind_ms: u64,
    },
    /// The clock is before the epoch or past the 41-bit range.
    #[error("clock out of the id range: {now_ms} ms since unix epoch")]
    ClockOutOfRange {
        /// The clock reading.
        now_ms: u64,
    },
    /// The worker-id lease has expired or was lost: this process must not issue ids.
    #[error("worker id lease lost or expired: no ids may be issued")]
    LeaseLost,
    /// Datacenter or worker id above 31.
    #[error("node id out of range: datacenter {datacenter}, worker {worker} (max 31)")]
    BadNode {
        /// Datacenter id.
        datacenter: u8,
        /// Worker id.
        worker: u8,
    },
}

/// A source of Unix-epoch milliseconds; injected so tests can drive the clock.
pub trait Clock: Send + Sync {
    /// Current time in milliseconds since the Unix epoch.
    ///
    /// # Errors
    /// A clock may refuse to give time (see [`LeaseClock`]).
    fn now_ms(&self) -> Result<u64, SnowflakeError>;
}

/// The system's real-time clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    #[inline]
    fn now_ms(&self) -> Result<u64, SnowflakeError> {
        let d = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_err(|_| SnowflakeError::ClockOutOfRange { now_ms: 0 })?;
        u64::try_from(d.as_millis())
            .map_err(|_| SnowflakeError::ClockOutOfRange { now_ms: u64::MAX })
    }
}

impl<C: Clock + ?Sized> Clock for Arc<C> {
    #[inline]
    fn now_ms(&self) -> Result<u64, SnowflakeError> {
        (**self).now_ms()
    }
}

/// A clock that stops giving time once a lease deadline has passed, so a generator
/// built on it issues no ids after its worker-id lease is lost or has expired.
/// The deadline is an atomic that the lease renewer moves forward (or to 0 on loss).
#[derive(Debug)]
pub struct LeaseClock<C> {
    inner: C,
    deadline_ms: Arc<AtomicU64>,
}

impl<C: Clock> LeaseClock<C> {
    /// Wraps `inner`; `deadline_ms` is shared with whoever renews the lease.
    pub fn new(inner: C, deadline_ms: Arc<AtomicU64>) -> Self {
        Self { inner, deadline_ms }
    }
}

impl<C: Clock> Clock for LeaseClock<C> {
    #[inline]
    fn now_ms(&self) -> Result<u64, SnowflakeError> {
        let now = self.inner.now_ms()?;
        if now >= self.deadline_ms.load(Ordering::Acquire) {
            return Err(SnowflakeError::LeaseLost);
        }
        Ok(now)
    }
}

/// A lock-free snowflake generator for one (datacenter, worker).
#[derive(Debug)]
pub struct Snowflake<C = SystemClock> {
    /// `elapsed_ms << 12 | sequence` of the last issued id.
    state: AtomicU64,
    node_bits: u64,
    clock: C,
}

impl Snowflake<SystemClock> {
    /// A generator on the system clock.
    ///
    /// # Errors
    /// [`SnowflakeError::BadNode`] if an id is above 31.
    pub fn new(datacenter: u8, worker: u8) -> Result<Self, SnowflakeError> {
        Self::with_clock(datacenter, worker, SystemClock)
    }
}

impl<C: Clock> Snowflake<C> {
    /// A generator on the given clock.
    ///
    /// # Errors
    /// [`SnowflakeError::BadNode`] if an id is above 31.
    pub fn with_clock(datacenter: u8, worker: u8, clock: C) -> Result<Self, SnowflakeError> {
        if datacenter > MAX_NODE || worker > MAX_NODE {
            return Err(SnowflakeError::BadNode { datacenter, worker });
        }
        let node_bits =
            (u64::from(datacenter) << DATACENTER_SHIFT) | (u64::from(worker) << WORKER_SHIFT);
        Ok(Self {
            state: AtomicU64::new(0),
            node_bits,
            clock,
        })
    }

    /// Issues the next id.
    ///
    /// # Errors
    /// [`SnowflakeError::ClockMovedBackwards`] if the clock went back more than
    /// [`MAX_BACKWARD_MS`]; [`SnowflakeError::ClockOutOfRange`] before 2022 or after the
    /// 41-bit range; [`SnowflakeError::LeaseLost`] from a [`LeaseClock`].
    #[inline]
    pub fn next_id(&self) -> Result<u64, SnowflakeError> {
        let mut cur = self.state.load(Ordering::Relaxed);
        loop {
            let now = self.elapsed_now()?;
            let last = cur >> SEQUENCE_BITS;
            let next = if now > last {
                now << SEQUENCE_BITS
            } else if now == last {
                if cur & SEQ_MASK == SEQ_MASK {
                    // sequence spent for this millisecond: spin to the next one
                    std::hint::spin_loop();
                    cur = self.state.load(Ordering::Relaxed);
                    continue;
                }
                cur + 1
            } else {
                let behind_ms = last - now;
                if behind_ms > MAX_BACKWARD_MS {
                    return Err(SnowflakeError::ClockMovedBackwards { behind_ms });
                }
                // small rollback: wait until the clock catches up
                std::hint::spin_loop();
                cur = self.state.load(Ordering::Relaxed);
                continue;
            };
            match self
                .state
                .compare_exchange_weak(cur, next, Ordering::AcqRel, Ordering::Relaxed)
            {
                Ok(_) => {
                    return Ok(((next >> SEQUENCE_BITS) << TIMESTAMP_SHIFT)
                        | self.node_bits
                        | (next & SEQ_MASK))
                }
                Err(actual) => cur = actual,
            }
        }
    }

    #[inline]
    fn elapsed_now(&self) -> Result<u64, SnowflakeError> {
        let now_ms = self.clock.now_ms()?;
        match now_ms.checked_sub(EPOCH_MS) {
            Some(e) if e <= MAX_ELAPSED => Ok(e),
            _ => Err(SnowflakeError::ClockOutOfRange { now_ms }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;
    use std::sync::Mutex;

    /// A clock that returns scripted readings, then repeats the last one + 1 each call.
    struct ScriptClock(Mutex<(Vec<u64>, u64)>);

    impl ScriptClock {
        fn new(readings: &[u64]) -> Self {
            let mut v = readings.to_vec();
            v.reverse();
            Self(Mutex::new((v, 0)))
        }
    }

    impl Clock for ScriptClock {
        fn now_ms(&self) -> Result<u64, SnowflakeError> {
            let mut g = self.0.lock().expect("lock");
            let next = match g.0.pop() {
                Some(v) => v,
                None => g.1 + 1,
            };
            g.1 = next;
            Ok(next)
        }
    }

    const T0: u64 = EPOCH_MS + 1_000_000;

    #[test]
    fn layout_round_trips() {
        let g = Snowflake::with_clock(7, 19, ScriptClock::new(&[T0])).expect("gen");
        let id = g.next_id().expect("id");
        let d = decode(id).expect("decode");
        assert_eq!(d.unix_ms, T0);
        assert_eq!((d.datacenter, d.worker, d.sequence), (7, 19, 0));
        assert_eq!(id, (1_000_000 << 22) | (7 << 17) | (19 << 12));
    }

    #[test]
    fn bad_nodes_are_rejected() {
        assert!(Snowflake::new(32, 0).is_err());
        assert!(Snowflake::new(0, 32).is_err());
        assert!(decode(1 << 63).is_err());
    }

    #[test]
    fn sequence_exhaustion_moves_to_next_ms() {
        // 4097 calls in the same ms: the 4097th must wait for T0+1
        let mut script = vec![T0; 4097 + 10];
        script.push(T0 + 1);
        let g = Snowflake::with_clock(0, 0, ScriptClock::new(&script)).expect("gen");
        let ids: Vec<u64> = (0..4097).map(|_| g.next_id().expect("id")).collect();
        let last = decode(ids[4096]).expect("d");
        assert_eq!(last.unix_ms, T0 + 1);
        assert_eq!(last.sequence, 0);
        assert_eq!(decode(ids[4095]).expect("d").sequence, 4095);
        assert!(ids.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn small_rollback_waits_large_rollback_errors() {
        // issue at T0+10, clock goes back 5 ms then recovers: waits, no error
        let g = Snowflake::with_clock(
            0,
            0,
            ScriptClock::new(&[T0 + 10, T0 + 5, T0 + 7, T0 + 10, T0 + 11]),
        )
        .expect("gen");
        let a = g.next_id().expect("a");
        let b = g.next_id().expect("b waits out a 5 ms rollback");
        assert!(b > a);
        assert_eq!(decode(b).expect("d").unix_ms, T0 + 10);

        // clock goes back 6 ms: refused
        let g = Snowflake::with_clock(0, 0, ScriptClock::new(&[T0 + 10, T0 + 4])).expect("gen");
        g.next_id().expect("a");
        assert_eq!(
            g.next_id(),
            Err(SnowflakeError::ClockMovedBackwards { behind_ms: 6 })
        );
    }

    #[test]
    fn out_of_range_clock_is_an_error() {
        let g = Snowflake::with_clock(0, 0, ScriptClock::new(&[EPOCH_MS - 1])).expect("gen");
        assert!(matches!(
            g.next_id(),
            Err(SnowflakeError::ClockOutOfRange { .. })
        ));
        let g = Snowflake::with_clock(0, 0, ScriptClock::new(&[EPOCH_MS + MAX_ELAPSED + 1]))
            .expect("gen");
        assert!(matches!(
            g.next_id(),
            Err(SnowflakeError::ClockOutOfRange { .. })
        ));
    }

    #[test]
    fn lease_clock_stops_issuance_at_deadline() {
        let deadline = Arc::new(AtomicU64::new(T0 + 3));
        let clock = LeaseClock::new(
            ScriptClock::new(&[T0, T0 + 1, T0 + 2, T0 + 3]),
            deadline.clone(),
        );
        let g = Snowflake::with_clock(0, 1, clock).expect("gen");
        assert!(g.next_id().is_ok());
        assert!(g.next_id().is_ok());
        deadline.store(0, Ordering::Release); // lease lost
        assert_eq!(g.next_id(), Err(SnowflakeError::LeaseLost));
    }

    #[test]
    fn threads_never_collide_and_each_sees_increasing_ids() {
        let g = Arc::new(Snowflake::new(1, 2).expect("gen"));
        let per_thread = 50_000;
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let g = g.clone();
                std::thread::spawn(move || {
                    let v: Vec<u64> = (0..per_thread).map(|_| g.next_id().expect("id")).collect();
                    assert!(v.windows(2).all(|w| w[0] < w[1]), "per-thread order");
                    v
                })
            })
            .collect();
        let mut all = HashSet::new();
        for h in handles {
            for id in h.join().expect("join") {
                assert!(all.insert(id), "duplicate id {id}");
            }
        }
        assert_eq!(all.len(), 4 * per_thread);
    }

    #[test]
    fn two_workers_never_collide() {
        let a = Snowflake::new(0, 1).expect("a");
        let b = Snowflake::new(0, 2).expect("b");
        let mut seen = HashSet::new();
        for _ in 0..20_000 {
            assert!(seen.insert(a.next_id().expect("a")));
            assert!(seen.insert(b.next_id().expect("b")));
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 24, ..Default::default() })]
        #[test]
        fn real_threads_on_one_worker_get_unique_increasing_ids(threads in 2usize..6, per_thread in 1usize..20_000,
                                                                dc in 0u8..32, w in 0u8..32) {
            let g = Arc::new(Snowflake::new(dc, w).expect("gen"));
            let handles: Vec<_> = (0..threads)
                .map(|_| {
                    let g = g.clone();
                    std::thread::spawn(move || (0..per_thread).map(|_| g.next_id().expect("id")).collect::<Vec<u64>>())
                })
                .collect();
            let mut all = HashSet::new();
            for h in handles {
                let ids = h.join().expect("join");
                proptest::prop_assert!(ids.windows(2).all(|p| p[0] < p[1]), "per-thread order");
                for id in ids {
                    proptest::prop_assert!(all.insert(id), "duplicate {}", id);
                    let d = decode(id).expect("decode");
                    proptest::prop_assert_eq!((d.datacenter, d.worker), (dc, w));
                }
            }
            proptest::prop_assert_eq!(all.len(), threads * per_thread);
        }
    }

    proptest::proptest! {
        #[test]
        fn ids_increase_for_any_monotone_clock(steps in proptest::collection::vec(0u64..3, 1..3000),
                                                dc in 0u8..32, w in 0u8..32) {
            let mut t = T0;
            let readings: Vec<u64> = steps.iter().map(|s| { t += s; t }).collect();
            let g = Snowflake::with_clock(dc, w, ScriptClock::new(&readings)).expect("gen");
            let mut prev = 0;
            for _ in 0..readings.len() {
                let id = g.next_id().expect("id");
                proptest::prop_assert!(id > prev);
                let d = decode(id).expect("decode");
                proptest::prop_assert_eq!((d.datacenter, d.worker), (dc, w));
                prev = id;
            }
        }
    }
}
