//! Identifiers: [`UserId`], [`OrderId`], [`TradeId`], [`TransferId`],
//! [`WithdrawalId`] and [`ShardId`].
//!
//! Invariants:
//!
//! - [`UserId`], [`OrderId`], [`TradeId`], [`TransferId`] and [`WithdrawalId`] wrap a `u64` that is `> 0`
//!   (MySQL `BIGINT UNSIGNED`; `AUTO_INCREMENT` and snowflake ids never
//!   produce 0, so 0 is never a valid id).
//! - [`ShardId`] is any `u16`; whether it is below the configured shard
//!   count is checked with [`ShardId::check`].
//! - The shard of a user is `user_id % shard_count` ([`UserId::shard`]);
//!   the shard count is a [`NonZeroU16`], so there is no division by zero.
//!
//! Text form ([`FromStr`] / `Display`) is plain ASCII decimal digits: no
//! sign, no spaces, no `0x`.
//!
//! Serde: all ids serialize as JSON numbers. The `u64` ids deserialize from
//! a number *or* a decimal string (`123` or `"123"`), because JavaScript
//! clients lose precision above 2^53 and send large ids as strings.
//! [`ShardId`] deserializes from a number only.

use std::fmt;
use std::num::NonZeroU16;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Which identifier an [`IdError`] is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum IdKind {
    /// [`UserId`].
    User,
    /// [`OrderId`].
    Order,
    /// [`TradeId`].
    Trade,
    /// [`ShardId`].
    Shard,
    /// [`TransferId`].
    Transfer,
    /// [`WithdrawalId`].
    Withdrawal,
}

impl fmt::Display for IdKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::User => "user id",
            Self::Order => "order id",
            Self::Trade => "trade id",
            Self::Shard => "shard id",
            Self::Transfer => "transfer id",
            Self::Withdrawal => "withdrawal id",
        })
    }
}

/// Why an identifier was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum IdError {
    /// The id was 0.
    #[error("{kind} must be greater than zero")]
    Zero {
        /// Which id.
        kind: IdKind,
    },
    /// The text is not a decimal number in range.
    #[error("invalid {kind}: expected decimal digits")]
    Invalid {
        /// Which id.
        kind: IdKind,
    },
    /// A shard id is not below the shard count.
    #[error("shard id {shard} out of range for {shard_count} shards")]
    ShardOutOfRange {
        /// The shard id.
        shard: u16,
        /// The configured shard count.
        shard_count: u16,
    },
}

/// Strict decimal parse: ASCII digits only (no sign, no whitespace).
fn parse_digits<T: FromStr>(text: &str, kind: IdKind) -> Result<T, IdError> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(IdError::Invalid { kind });
    }
    text.parse().map_err(|_| IdError::Invalid { kind })
}

/// Deserializes a `u64` from a number or (in human-readable formats) a
/// decimal string.
fn deserialize_u64_or_string<'de, D: Deserializer<'de>>(
    deserializer: D,
    kind: IdKind,
) -> Result<u64, D::Error> {
    struct Visitor(IdKind);

    impl serde::de::Visitor<'_> for Visitor {
        type Value = u64;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "a {} as a number or a decimal string", self.0)
        }

        fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<u64, E> {
            Ok(v)
        }

        fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<u64, E> {
            u64::try_from(v).map_err(|_| E::custom(IdError::Invalid { kind: self.0 }))
        }

        fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<u64, E> {
            parse_digits(v, self.0).map_err(E::custom)
        }
    }

    if deserializer.is_human_readable() {
        deserializer.deserialize_any(Visitor(kind))
    } else {
        deserializer.deserialize_u64(Visitor(kind))
    }
}

macro_rules! u64_id {
    ($(#[$meta:meta])* $name:ident, $kind:expr) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(u64);

        impl $name {
            /// Validates a raw id.
            ///
            /// # Errors
            ///
            /// [`IdError::Zero`] if `raw == 0`.
            pub const fn new(raw: u64) -> Result<Self, IdError> {
                if raw == 0 {
                    Err(IdError::Zero { kind: $kind })
                } else {
                    Ok(Self(raw))
                }
            }

            /// The raw value (always `> 0`).
            #[must_use]
            pub const fn get(self) -> u64 {
                self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0, f)
            }
        }

        impl FromStr for $name {
            type Err = IdError;

            /// # Errors
            ///
            /// [`IdError::Invalid`] unless the text is ASCII digits fitting a
            /// `u64`; [`IdError::Zero`] for 0.
            fn from_str(text: &str) -> Result<Self, IdError> {
                Self::new(parse_digits(text, $kind)?)
            }
        }

        impl TryFrom<u64> for $name {
            type Error = IdError;

            fn try_from(raw: u64) -> Result<Self, IdError> {
                Self::new(raw)
            }
        }

        impl From<$name> for u64 {
            fn from(id: $name) -> u64 {
                id.0
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_u64(self.0)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let raw = deserialize_u64_or_string(deserializer, $kind)?;
                Self::new(raw).map_err(serde::de::Error::custom)
            }
        }
    };
}

u64_id!(
    /// A user (account). Dense, `> 0`; decides the user's shard.
    UserId,
    IdKind::User
);

u64_id!(
    /// An order, `> 0` (snowflake). Accepted from JSON as number or string.
    OrderId,
    IdKind::Order
);

u64_id!(
    /// A trade, `> 0` (snowflake). Accepted from JSON as number or string.
    TradeId,
    IdKind::Trade
);

u64_id!(
    /// A transfer between two users (the TCC global id), `> 0` (snowflake).
    TransferId,
    IdKind::Transfer
);

u64_id!(
    /// A withdrawal request, `> 0` (snowflake).
    WithdrawalId,
    IdKind::Withdrawal
);

impl UserId {
    /// The shard holding this user: `user_id % shard_count`.
    #[must_use]
    pub const fn shard(self, shard_count: NonZeroU16) -> ShardId {
        // The remainder is < shard_count <= u16::MAX, so the cast is lossless.
        ShardId((self.0 % shard_count.get() as u64) as u16)
    }
}

/// A database shard, numbered from 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct ShardId(u16);

impl ShardId {
    /// Wraps a raw shard number. Every `u16` is a well-formed shard id; use
    /// [`ShardId::check`] against the configured shard count.
    #[must_use]
    pub const fn new(raw: u16) -> Self {
        Self(raw)
    }

    /// The raw value.
    #[must_use]
    pub const fn get(self) -> u16 {
        self.0
    }

    /// Returns `self` if it is below `shard_count`.
    ///
    /// # Errors
    ///
    /// [`IdError::ShardOutOfRange`] if `self >= shard_count`.
    pub const fn check(self, shard_count: NonZeroU16) -> Result<Self, IdError> {
        if self.0 < shard_count.get() {
            Ok(self)
        } else {
            Err(IdError::ShardOutOfRange {
                shard: self.0,
                shard_count: shard_count.get(),
            })
        }
    }

    /// All shards `0..shard_count`.
    pub fn all(shard_count: NonZeroU16) -> impl Iterator<Item = Self> {
        (0..shard_count.get()).map(Self)
    }
}

impl fmt::Display for ShardId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl FromStr for ShardId {
    type Err = IdError;

    /// # Errors
    ///
    /// [`IdError::Invalid`] unless the text is ASCII digits fitting a `u16`.
    fn from_str(text: &str) -> Result<Self, IdError> {
        parse_digits(text, IdKind::Shard).map(Self)
    }
}

impl From<u16> for ShardId {
    fn from(raw: u16) -> Self {
        Self(raw)
    }
}

impl From<ShardId> for u16 {
    fn from(id: ShardId) -> u16 {
        id.0
    }
}

impl Serialize for ShardId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_u16(self.0)
    }
}

impl<'de> Deserialize<'de> for ShardId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        u16::deserialize(deserializer).map(Self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn count(n: u16) -> NonZeroU16 {
        NonZeroU16::new(n).unwrap()
    }

    #[test]
    fn constructors() {
        assert_eq!(UserId::new(1).unwrap().get(), 1);
        assert_eq!(UserId::new(0), Err(IdError::Zero { kind: IdKind::User }));
        assert_eq!(
            OrderId::new(0),
            Err(IdError::Zero {
                kind: IdKind::Order
            })
        );
        assert_eq!(
            TradeId::new(0),
            Err(IdError::Zero {
                kind: IdKind::Trade
            })
        );
        assert_eq!(OrderId::new(u64::MAX).unwrap().get(), u64::MAX);
        assert_eq!(TradeId::try_from(7).unwrap().get(), 7);
        assert_eq!(u64::from(UserId::new(9).unwrap()), 9);
    }

    #[test]
    fn parse_and_display() {
        let id: OrderId = "18446744073709551615".parse().unwrap();
        assert_eq!(id.to_string(), "18446744073709551615");
        assert_eq!("42".parse::<UserId>().unwrap().get(), 42);
        for bad in [
            "",
            "+1",
            "-1",
            " 1",
            "1 ",
            "0x10",
            "1.0",
            "18446744073709551616",
            "١",
        ] {
            assert_eq!(
                bad.parse::<OrderId>(),
                Err(IdError::Invalid {
                    kind: IdKind::Order
                }),
                "{bad:?}"
            );
        }
        assert_eq!(
            "0".parse::<UserId>(),
            Err(IdError::Zero { kind: IdKind::User })
        );
        assert_eq!("65535".parse::<ShardId>().unwrap().get(), u16::MAX);
        assert!("65536".parse::<ShardId>().is_err());
        assert_eq!(ShardId::new(3).to_string(), "3");
    }

    #[test]
    fn sharding() {
        let u = UserId::new(10).unwrap();
        assert_eq!(u.shard(count(4)), ShardId::new(2));
        assert_eq!(u.shard(count(1)), ShardId::new(0));
        assert_eq!(
            UserId::new(u64::MAX).unwrap().shard(count(u16::MAX)),
            ShardId::new((u64::MAX % 65535) as u16)
        );
        assert_eq!(ShardId::new(3).check(count(4)), Ok(ShardId::new(3)));
        assert_eq!(
            ShardId::new(4).check(count(4)),
            Err(IdError::ShardOutOfRange {
                shard: 4,
                shard_count: 4
            })
        );
        let all: Vec<_> = ShardId::all(count(3)).map(ShardId::get).collect();
        assert_eq!(all, [0, 1, 2]);
    }

    #[test]
    fn ordering() {
        assert!(OrderId::new(2).unwrap() < OrderId::new(10).unwrap());
    }

    #[test]
    fn serde_numbers_and_strings() {
        let id = OrderId::new(9_007_199_254_740_993).unwrap();
        assert_eq!(serde_json::to_string(&id).unwrap(), "9007199254740993");
        assert_eq!(
            serde_json::from_str::<OrderId>("9007199254740993").unwrap(),
            id
        );
        assert_eq!(
            serde_json::from_str::<OrderId>(r#""9007199254740993""#).unwrap(),
            id
        );
        assert_eq!(serde_json::from_str::<TradeId>(r#""5""#).unwrap().get(), 5);
        assert_eq!(serde_json::from_str::<UserId>("5").unwrap().get(), 5);
        for bad in [
            "0", r#""0""#, "-1", "1.5", r#""""#, r#""+1""#, r#"" 1""#, "null", "true",
        ] {
            assert!(serde_json::from_str::<OrderId>(bad).is_err(), "{bad}");
        }
        assert_eq!(serde_json::to_string(&ShardId::new(7)).unwrap(), "7");
        assert_eq!(
            serde_json::from_str::<ShardId>("7").unwrap(),
            ShardId::new(7)
        );
        assert!(serde_json::from_str::<ShardId>("65536").is_err());
        assert!(serde_json::from_str::<ShardId>(r#""7""#).is_err());
    }

    #[test]
    fn error_serde() {
        let e = IdError::Zero { kind: IdKind::User };
        let json = serde_json::to_string(&e).unwrap();
        assert_eq!(json, r#"{"ZERO":{"kind":"USER"}}"#);
        assert_eq!(serde_json::from_str::<IdError>(&json).unwrap(), e);
        assert_eq!(e.to_string(), "user id must be greater than zero");
    }
}
