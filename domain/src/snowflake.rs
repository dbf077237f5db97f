//! The snowflake id layout: `0 | 41 bits ms since 2022-01-01T00:00:00Z | 5 bits
//! datacenter | 5 bits worker | 12 bits sequence`, and decoding.
//!
//! The generator (clock, lease, compare-and-swap state) lives in `router::snowflake`;
//! this module is the pure arithmetic every crate shares, so a reader of an id (table
//! routing, `shardctl locate`, the archiver) needs no I/O crate.

use chrono::{DateTime, Datelike, TimeZone, Utc};
use serde::Serialize;

/// An id that is not one of ours, or a time outside the id range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error, Serialize, serde::Deserialize)]
pub enum SnowflakeIdError {
    /// The sign bit is set.
    #[error("bad id {id}: top bit set: not a snowflake id")]
    NotSnowflake {
        /// The raw id.
        id: u64,
    },
    /// A time before the epoch or past the 41-bit range.
    #[error("bad id {unix_ms}: time outside the snowflake range")]
    TimeOutOfRange {
        /// The time asked for, ms since the Unix epoch.
        unix_ms: u64,
    },
}

/// 2022-01-01T00:00:00Z in Unix milliseconds.
pub const EPOCH_MS: u64 = 1_640_995_200_000;
/// Sequence bits per millisecond.
pub const SEQUENCE_BITS: u32 = 12;
/// Worker id bits.
pub const WORKER_BITS: u32 = 5;
/// Datacenter id bits.
pub const DATACENTER_BITS: u32 = 5;
/// Timestamp bits.
pub const TIMESTAMP_BITS: u32 = 41;
/// Largest worker / datacenter id.
pub const MAX_NODE: u8 = 31;

pub const SEQ_MASK: u64 = (1 << SEQUENCE_BITS) - 1;
pub const MAX_ELAPSED: u64 = (1 << TIMESTAMP_BITS) - 1;
pub const WORKER_SHIFT: u32 = SEQUENCE_BITS;
pub const DATACENTER_SHIFT: u32 = SEQUENCE_BITS + WORKER_BITS;
pub const TIMESTAMP_SHIFT: u32 = SEQUENCE_BITS + WORKER_BITS + DATACENTER_BITS;

/// The fields of a snowflake id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Decoded {
    /// The id.
    pub id: u64,
    /// Milliseconds since the Unix epoch.
    pub unix_ms: u64,
    /// Datacenter id.
    pub datacenter: u8,
    /// Worker id.
    pub worker: u8,
    /// Sequence within the millisecond.
    pub sequence: u16,
}

impl Decoded {
    /// The UTC time the id was issued.
    pub fn time(&self) -> DateTime<Utc> {
        let ms = i64::try_from(self.unix_ms).unwrap_or(i64::MAX);
        Utc.timestamp_millis_opt(ms)
            .single()
            .unwrap_or(DateTime::<Utc>::MAX_UTC)
    }

    /// The UTC month the id was issued in: the month of its order/trade table.
    pub fn month(&self) -> crate::Month {
        let t = self.time();
        crate::Month::new(t.year(), t.month()).unwrap_or(crate::Month::EPOCH)
    }
}

/// Splits an id into its fields.
///
/// # Errors
/// [`SnowflakeIdError`] if the sign bit is set (not a snowflake of ours).
pub fn decode(id: u64) -> Result<Decoded, SnowflakeIdError> {
    if id >> 63 != 0 {
        return Err(SnowflakeIdError::NotSnowflake { id });
    }
    let field = |shift: u32, bits: u32| (id >> shift) & ((1 << bits) - 1);
    Ok(Decoded {
        id,
        unix_ms: (id >> TIMESTAMP_SHIFT) + EPOCH_MS,
        datacenter: u8::try_from(field(DATACENTER_SHIFT, DATACENTER_BITS)).unwrap_or(u8::MAX),
        worker: u8::try_from(field(WORKER_SHIFT, WORKER_BITS)).unwrap_or(u8::MAX),
        sequence: u16::try_from(field(0, SEQUENCE_BITS)).unwrap_or(u16::MAX),
    })
}

/// The smallest id any generator can issue at `unix_ms` (sequence 0, node 0): the
/// lower bound for "ids issued at or after this time" range scans.
///
/// # Errors
/// [`SnowflakeIdError`] if the time is before the epoch or past the 41-bit range.
pub fn min_id_at(unix_ms: u64) -> Result<u64, SnowflakeIdError> {
    match unix_ms.checked_sub(EPOCH_MS) {
        Some(e) if e <= MAX_ELAPSED => Ok(e << TIMESTAMP_SHIFT),
        _ => Err(SnowflakeIdError::TimeOutOfRange { unix_ms }),
    }
}
