//! Pure domain types shared by every service of the exchange.
//!
//! This crate does no I/O. It defines the vocabulary the router and the
//! matching engines agree on, with invariants checked at construction so
//! that a value of one of these types is always valid:
//!
//! - [`ids`]: [`UserId`], [`OrderId`], [`TradeId`] (all `> 0`) and
//!   [`ShardId`], plus [`UserId::shard`] (`user_id % shard_count`).
//! - [`symbol`]: [`Symbol`] and [`Asset`], guaranteed to match
//!   `^[A-Z0-9]{2,20}$` (safe to embed in a SQL identifier). Whether a symbol
//!   is actually *listed* is checked elsewhere.
//! - [`money`]: [`Amount`], [`Price`], [`Qty`], exact decimals that always fit
//!   MySQL `DECIMAL(36,18)` and never round.
//! - [`order`]: [`Side`], [`OrderType`], [`TimeInForce`], [`OrderStatus`] with
//!   Binance wire spellings and MySQL `ENUM` spellings, and the one definition of
//!   the open and final status sets ([`OrderStatus::OPEN`]).
//! - [`snowflake`]: the id layout and [`snowflake::decode`] (the generator lives in
//!   `router`); [`month`]: [`Month`], the unit of month tables.
//! - [`hold`]: what an open order must hold frozen (placement and the audit share it).
//! - [`kind`]: [`ErrorKind`] and [`Kinded`], the class of every library error
//!   (rejected / not found / conflict / unavailable / outcome unknown / internal).
//!
//! Every error type is a `thiserror` enum that is `Clone + Eq` and
//! serde-(de)serializable, so a reject can travel on a topic.
//!
//! ```
//! use std::num::NonZeroU16;
//! use domain::{Amount, MoneyError, OrderStatus, Price, Qty, ShardId, Side, Symbol, UserId};
//!
//! let user = UserId::new(42)?;
//! assert_eq!(user.shard(NonZeroU16::new(4).unwrap()), ShardId::new(2));
//!
//! let symbol: Symbol = "BTCUSDT".parse()?;
//! assert!("BTC;DROP".parse::<Symbol>().is_err());
//!
//! let price: Price = "25000.50".parse()?;
//! let qty = Qty::from_db_str("0.002000000000000000")?;
//! let notional: Amount = price.checked_notional(qty)?;
//! assert_eq!(notional.to_db_string(), "50.001000000000000000");
//! assert_eq!(
//!     Amount::from_db_str("999999999999999999.999999999999999999"),
//!     Err(MoneyError::NotRepresentable),
//! );
//!
//! assert_eq!(Side::Buy.opposite().as_str(), "SELL");
//! assert_eq!(OrderStatus::PartiallyFilled.as_db_str(), "partially_filled");
//! # let _ = symbol;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! [`Decimal`] is re-exported so that dependants use the same
//! `rust_decimal` version as this crate.

pub mod hold;
pub mod ids;
pub mod kind;
pub mod money;
pub mod month;
pub mod order;
pub mod snowflake;
pub mod symbol;

pub use ids::{IdError, IdKind, OrderId, ShardId, TradeId, TransferId, UserId, WithdrawalId};
pub use kind::{ErrorKind, Kinded};
pub use money::{Amount, MoneyError, Price, Qty, MAX_FRACTION_DIGITS, MAX_INTEGER_DIGITS};
pub use month::{Month, MonthError};
pub use order::{EnumError, EnumKind, OrderStatus, OrderType, Side, TimeInForce};
pub use rust_decimal::Decimal;
pub use snowflake::SnowflakeIdError;
pub use symbol::{Asset, CodeKind, Symbol, SymbolError, MAX_CODE_LEN, MIN_CODE_LEN};
