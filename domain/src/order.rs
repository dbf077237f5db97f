//! Order enums: [`Side`], [`OrderType`], [`TimeInForce`], [`OrderStatus`].
//!
//! Each enum has two spellings, both exact and case-sensitive:
//!
//! - the Binance wire spelling (`"BUY"`, `"STOP_LOSS_LIMIT"`, `"GTC"`,
//!   `"PARTIALLY_FILLED"`, `"CANCELED"`): [`Display`](fmt::Display),
//!   `as_str()`, [`FromStr`] and serde all use it;
//! - the MySQL `ENUM` spelling, lower snake case (`buy`, `stop_loss_limit`,
//!   `gtc`, `partially_filled`, `canceled`): `as_db_str()` / `from_db_str()`.
//!
//! Both spellings come from a single table per enum, so they cannot drift.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Which enum an [`EnumError`] is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum EnumKind {
    /// [`Side`].
    Side,
    /// [`OrderType`].
    OrderType,
    /// [`TimeInForce`].
    TimeInForce,
    /// [`OrderStatus`].
    OrderStatus,
}

impl fmt::Display for EnumKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Side => "side",
            Self::OrderType => "order type",
            Self::TimeInForce => "time in force",
            Self::OrderStatus => "order status",
        })
    }
}

/// Longest part of a rejected value kept in an [`EnumError`].
const MAX_ECHO: usize = 32;

/// An unknown enum spelling.
#[derive(Debug, Clone, PartialEq, Eq, Hash, thiserror::Error, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum EnumError {
    /// The text is not one of the spellings of `kind`.
    #[error("unknown {kind}: {value:?}")]
    Unknown {
        /// Which enum.
        kind: EnumKind,
        /// The rejected text (truncated to 32 characters).
        value: String,
    },
}

impl EnumError {
    fn unknown(kind: EnumKind, value: &str) -> Self {
        Self::Unknown {
            kind,
            value: value.chars().take(MAX_ECHO).collect(),
        }
    }
}

macro_rules! string_enum {
    (
        $(#[$meta:meta])*
        $name:ident, $kind:expr,
        { $( $(#[$vmeta:meta])* $variant:ident => $wire:literal, $db:literal; )+ }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum $name {
            $( $(#[$vmeta])* $variant, )+
        }

        impl $name {
            /// Every variant, in declaration order.
            pub const ALL: &'static [Self] = &[$(Self::$variant),+];

            /// Binance wire spelling (`SCREAMING_SNAKE_CASE`).
            #[must_use]
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $wire,)+
                }
            }

            /// MySQL `ENUM` spelling (lower snake case).
            #[must_use]
            pub const fn as_db_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $db,)+
                }
            }

            /// Parses the MySQL `ENUM` spelling.
            ///
            /// # Errors
            ///
            /// [`EnumError::Unknown`] for anything else (case-sensitive).
            pub fn from_db_str(text: &str) -> Result<Self, EnumError> {
                match text {
                    $($db => Ok(Self::$variant),)+
                    _ => Err(EnumError::unknown($kind, text)),
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.pad(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = EnumError;

            /// Parses the Binance wire spelling (case-sensitive).
            fn from_str(text: &str) -> Result<Self, EnumError> {
                match text {
                    $($wire => Ok(Self::$variant),)+
                    _ => Err(EnumError::unknown($kind, text)),
                }
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(self.as_str())
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                struct Visitor;

                impl serde::de::Visitor<'_> for Visitor {
                    type Value = $name;

                    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                        write!(f, "a {} string", $kind)
                    }

                    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<$name, E> {
                        v.parse().map_err(E::custom)
                    }
                }

                deserializer.deserialize_str(Visitor)
            }
        }
    };
}

string_enum!(
    /// Order side.
    Side, EnumKind::Side, {
        /// Buy the base asset.
        Buy => "BUY", "buy";
        /// Sell the base asset.
        Sell => "SELL", "sell";
    }
);

string_enum!(
    /// Order type (Binance spot set).
    OrderType, EnumKind::OrderType, {
        /// Limit order.
        Limit => "LIMIT", "limit";
        /// Market order.
        Market => "MARKET", "market";
        /// Market order triggered at a stop price.
        StopLoss => "STOP_LOSS", "stop_loss";
        /// Limit order triggered at a stop price.
        StopLossLimit => "STOP_LOSS_LIMIT", "stop_loss_limit";
        /// Market order triggered at a take-profit price.
        TakeProfit => "TAKE_PROFIT", "take_profit";
        /// Limit order triggered at a take-profit price.
        TakeProfitLimit => "TAKE_PROFIT_LIMIT", "take_profit_limit";
        /// Limit order rejected if it would take liquidity (post-only).
        LimitMaker => "LIMIT_MAKER", "limit_maker";
    }
);

string_enum!(
    /// Time in force.
    TimeInForce, EnumKind::TimeInForce, {
        /// Good till canceled.
        Gtc => "GTC", "gtc";
        /// Immediate or cancel.
        Ioc => "IOC", "ioc";
        /// Fill or kill.
        Fok => "FOK", "fok";
    }
);

string_enum!(
    /// Order status.
    OrderStatus, EnumKind::OrderStatus, {
        /// Accepted, resting or about to match.
        New => "NEW", "new";
        /// Partly executed, remainder still live.
        PartiallyFilled => "PARTIALLY_FILLED", "partially_filled";
        /// Fully executed (final).
        Filled => "FILLED", "filled";
        /// Canceled by the user or by the engine, e.g. IOC remainder (final).
        Canceled => "CANCELED", "canceled";
        /// Cancel requested, not yet confirmed.
        PendingCancel => "PENDING_CANCEL", "pending_cancel";
        /// Refused (final).
        Rejected => "REJECTED", "rejected";
        /// Expired by time in force or by the system (final).
        Expired => "EXPIRED", "expired";
    }
);

impl Side {
    /// The other side.
    #[must_use]
    pub const fn opposite(self) -> Self {
        match self {
            Self::Buy => Self::Sell,
            Self::Sell => Self::Buy,
        }
    }
}

impl OrderType {
    /// Whether the order carries a limit price.
    #[must_use]
    pub const fn requires_price(self) -> bool {
        matches!(
            self,
            Self::Limit | Self::StopLossLimit | Self::TakeProfitLimit | Self::LimitMaker
        )
    }

    /// Whether the order carries a stop (trigger) price.
    #[must_use]
    pub const fn requires_stop_price(self) -> bool {
        matches!(
            self,
            Self::StopLoss | Self::StopLossLimit | Self::TakeProfit | Self::TakeProfitLimit
        )
    }
}

impl OrderStatus {
    /// The open statuses: the order is live on the book or about to be, and holds
    /// frozen funds for its remainder. The one definition of "open" (placement's
    /// cancel, the audits, the readers all use it).
    pub const OPEN: [OrderStatus; 3] = [Self::New, Self::PartiallyFilled, Self::PendingCancel];
    /// The final statuses: no further transition, nothing frozen.
    pub const FINAL: [OrderStatus; 4] =
        [Self::Filled, Self::Canceled, Self::Rejected, Self::Expired];

    /// Whether no further transition can happen: `Filled`, `Canceled`,
    /// `Rejected` or `Expired`.
    #[must_use]
    pub const fn is_final(self) -> bool {
        matches!(
            self,
            Self::Filled | Self::Canceled | Self::Rejected | Self::Expired
        )
    }

    /// Whether the order is open ([`OrderStatus::OPEN`]): exactly the statuses that
    /// are not final.
    #[must_use]
    pub const fn is_open(self) -> bool {
        !self.is_final()
    }

    /// `'new', 'partially_filled', …` for a SQL `IN (…)` list of `statuses` (MySQL
    /// `ENUM` spellings; constant text, never user input).
    #[must_use]
    pub fn sql_list(statuses: &[OrderStatus]) -> String {
        statuses
            .iter()
            .map(|s| format!("'{}'", s.as_db_str()))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_all<T>(all: &[T], wire: &[&str], db: &[&str])
    where
        T: Copy
            + PartialEq
            + fmt::Debug
            + fmt::Display
            + FromStr<Err = EnumError>
            + Serialize
            + for<'de> Deserialize<'de>,
    {
        assert_eq!(all.len(), wire.len());
        assert_eq!(all.len(), db.len());
        for ((v, w), d) in all.iter().zip(wire).zip(db) {
            assert_eq!(v.to_string(), *w);
            assert_eq!(w.parse::<T>().unwrap(), *v);
            assert_eq!(serde_json::to_string(v).unwrap(), format!("\"{w}\""));
            assert_eq!(serde_json::from_str::<T>(&format!("\"{w}\"")).unwrap(), *v);
            assert!(d.parse::<T>().is_err(), "{d} is not a wire spelling");
            assert!(serde_json::from_str::<T>(&format!("\"{d}\"")).is_err());
        }
    }

    #[test]
    fn side() {
        check_all(Side::ALL, &["BUY", "SELL"], &["buy", "sell"]);
        assert_eq!(Side::Buy.as_db_str(), "buy");
        assert_eq!(Side::from_db_str("sell"), Ok(Side::Sell));
        assert_eq!(Side::Buy.opposite(), Side::Sell);
        assert_eq!(Side::Sell.opposite(), Side::Buy);
        assert_eq!(
            "Buy".parse::<Side>(),
            Err(EnumError::Unknown {
                kind: EnumKind::Side,
                value: "Buy".into()
            })
        );
        assert!(Side::from_db_str("BUY").is_err());
    }

    #[test]
    fn order_type() {
        check_all(
            OrderType::ALL,
            &[
                "LIMIT",
                "MARKET",
                "STOP_LOSS",
                "STOP_LOSS_LIMIT",
                "TAKE_PROFIT",
                "TAKE_PROFIT_LIMIT",
                "LIMIT_MAKER",
            ],
            &[
                "limit",
                "market",
                "stop_loss",
                "stop_loss_limit",
                "take_profit",
                "take_profit_limit",
                "limit_maker",
            ],
        );
        for t in OrderType::ALL {
            assert_eq!(OrderType::from_db_str(t.as_db_str()), Ok(*t));
            assert_eq!(t.as_db_str(), t.as_str().to_ascii_lowercase());
        }
        assert!(OrderType::Limit.requires_price());
        assert!(!OrderType::Market.requires_price());
        assert!(OrderType::StopLossLimit.requires_stop_price());
        assert!(!OrderType::LimitMaker.requires_stop_price());
    }

    #[test]
    fn time_in_force() {
        check_all(
            TimeInForce::ALL,
            &["GTC", "IOC", "FOK"],
            &["gtc", "ioc", "fok"],
        );
        assert_eq!(TimeInForce::from_db_str("fok"), Ok(TimeInForce::Fok));
    }

    #[test]
    fn order_status() {
        check_all(
            OrderStatus::ALL,
            &[
                "NEW",
                "PARTIALLY_FILLED",
                "FILLED",
                "CANCELED",
                "PENDING_CANCEL",
                "REJECTED",
                "EXPIRED",
            ],
            &[
                "new",
                "partially_filled",
                "filled",
                "canceled",
                "pending_cancel",
                "rejected",
                "expired",
            ],
        );
        for s in OrderStatus::ALL {
            assert_eq!(OrderStatus::from_db_str(s.as_db_str()), Ok(*s));
        }
        let finals: Vec<_> = OrderStatus::ALL
            .iter()
            .filter(|s| s.is_final())
            .copied()
            .collect();
        assert_eq!(
            finals,
            [
                OrderStatus::Filled,
                OrderStatus::Canceled,
                OrderStatus::Rejected,
                OrderStatus::Expired
            ]
        );
        assert!(OrderStatus::from_db_str("cancelled").is_err());
    }

    #[test]
    fn open_and_final_partition_every_status() {
        for s in OrderStatus::ALL {
            assert_ne!(
                OrderStatus::OPEN.contains(s),
                OrderStatus::FINAL.contains(s),
                "{s}"
            );
            assert_eq!(s.is_open(), OrderStatus::OPEN.contains(s), "{s}");
        }
        assert_eq!(
            OrderStatus::sql_list(&OrderStatus::OPEN),
            "'new', 'partially_filled', 'pending_cancel'"
        );
    }

    #[test]
    fn error_is_truncated_and_serializable() {
        let long = "X".repeat(1000);
        let err = long.parse::<OrderStatus>().unwrap_err();
        let EnumError::Unknown { value, .. } = &err;
        assert_eq!(value.len(), MAX_ECHO);
        let json = serde_json::to_string(&err).unwrap();
        assert_eq!(serde_json::from_str::<EnumError>(&json).unwrap(), err);
        assert!(serde_json::from_str::<Side>("1").is_err());
    }
}
