//! [`Month`]: a UTC calendar month, the unit of month tables and ledger partitions.
//!
//! Invariants: the month is 1..=12 and the year 2000..=9999; months are UTC; the month
//! of a snowflake id is the month of its timestamp ([`Month::of_id`]).

use std::fmt;

use chrono::{DateTime, Datelike, NaiveDate, TimeZone, Utc};
use serde::Serialize;

use crate::snowflake::SnowflakeIdError;

/// A month that does not exist or text that is not `YYYYMM`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, serde::Deserialize)]
#[error("{0}")]
pub struct MonthError(pub String);

/// A UTC calendar month, e.g. 2026-11.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Month {
    year: i32,
    month: u32,
}

impl Month {
    /// The month of the snowflake epoch, 2022-01.
    pub const EPOCH: Month = Month {
        year: 2022,
        month: 1,
    };

    /// A month; `month` is 1..=12 and the year 2000..=9999.
    ///
    /// # Errors
    /// [`MonthError`] for anything else.
    pub fn new(year: i32, month: u32) -> Result<Self, MonthError> {
        if !(1..=12).contains(&month) || !(2000..=9999).contains(&year) {
            return Err(MonthError(format!("no such month {year}-{month:02}")));
        }
        Ok(Self { year, month })
    }

    /// The month containing `t` (UTC).
    pub fn of(t: DateTime<Utc>) -> Self {
        Self {
            year: t.year(),
            month: t.month(),
        }
    }

    /// The month an order/trade id was issued in.
    ///
    /// # Errors
    /// [`SnowflakeIdError`] if `id` is not a snowflake.
    pub fn of_id(id: u64) -> Result<Self, SnowflakeIdError> {
        Ok(crate::snowflake::decode(id)?.month())
    }

    /// Parses `YYYYMM`.
    ///
    /// # Errors
    /// [`MonthError`] if malformed.
    pub fn parse_yyyymm(s: &str) -> Result<Self, MonthError> {
        if s.len() != 6 || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(MonthError(format!("{s:?} is not YYYYMM")));
        }
        let year = s[..4].parse().map_err(|_| MonthError(s.into()))?;
        let month = s[4..].parse().map_err(|_| MonthError(s.into()))?;
        Self::new(year, month)
    }

    /// The following month.
    pub fn next(self) -> Self {
        if self.month == 12 {
            Self {
                year: self.year + 1,
                month: 1,
            }
        } else {
            Self {
                year: self.year,
                month: self.month + 1,
            }
        }
    }

    /// The month `n` months later.
    pub fn plus(self, n: u32) -> Self {
        (0..n).fold(self, |m, _| m.next())
    }

    /// First instant of the month, UTC.
    pub fn start(self) -> DateTime<Utc> {
        let d = NaiveDate::from_ymd_opt(self.year, self.month, 1).unwrap_or(NaiveDate::MIN);
        Utc.from_utc_datetime(&d.and_hms_opt(0, 0, 0).unwrap_or_default())
    }

    /// `YYYYMM`.
    pub fn yyyymm(self) -> String {
        format!("{:04}{:02}", self.year, self.month)
    }

    /// `YYYY-MM-01`, the literal used in partition bounds.
    pub fn first_day(self) -> String {
        format!("{:04}-{:02}-01", self.year, self.month)
    }
}

impl fmt::Display for Month {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}-{:02}", self.year, self.month)
    }
}
