//! Exact money: [`Amount`], [`Price`] and [`Qty`].
//!
//! All three are newtypes over [`rust_decimal::Decimal`] and share these
//! invariants, checked by every constructor and every arithmetic operation:
//!
//! - at most [`MAX_FRACTION_DIGITS`] (18) fractional digits, and
//! - an absolute integer part below `10^18` ([`MAX_INTEGER_DIGITS`] digits),
//!
//! i.e. every value is representable *exactly* in a MySQL `DECIMAL(36,18)`
//! column. In addition the value must fit `Decimal`'s 96-bit mantissa: values
//! with more than ~28 significant digits (for example
//! `999999999999999999.999999999999999999`, 36 significant digits) are
//! rejected with [`MoneyError::NotRepresentable`] instead of being rounded.
//!
//! Per type:
//!
//! - [`Price`] and [`Qty`] are strictly positive ([`MoneyError::NotPositive`]).
//! - [`Amount`] may be zero or negative (ledger deltas, balances before
//!   checks); [`Amount::non_negative`] checks for `>= 0`.
//!
//! Nothing in this module ever rounds. Parsing, conversion and arithmetic
//! either produce the exact result or an error.
//!
//! # Text format
//!
//! [`FromStr`] and `from_db_str` accept exactly `-?[0-9]+(\.[0-9]+)?`:
//! an optional leading `-`, ASCII digits, and an optional `.` followed by at
//! least one digit. Rejected ([`MoneyError::Invalid`]): empty input, spaces,
//! a leading `+`, exponents (`1e5`), `NaN`, `inf`, `.5`, `5.`, `1,5`, `1_000`,
//! non-ASCII digits. Leading zeros (`007.5`) are accepted.
//!
//! Fractional digits beyond the 18th are accepted only if they are all zero
//! (`"1.0000000000000000000000"` is `1`); a non-zero 19th digit is
//! [`MoneyError::TooManyFractionDigits`]. More than 18 integer digits (after
//! leading zeros) is [`MoneyError::TooLarge`].
//!
//! The parser is hand-written and builds the mantissa as an integer, so it
//! is exact by construction (it never goes through `Decimal::from_str`,
//! which silently rounds past 28 digits).
//!
//! The scale of the input is kept where `Decimal` can hold it (`"0.00100000"`
//! displays as `0.00100000`); equality, ordering and hashing are numeric
//! (`1.5 == 1.50`). Negative zero is normalised to zero.
//!
//! # Serde
//!
//! Serialized as a JSON *string* (Binance style, `"0.00100000"`), using
//! `Display`. Deserialization accepts *only* strings, parsed as above: JSON
//! numbers are rejected because most JSON stacks turn them into `f64` and
//! lose precision before we ever see them.
//!
//! # Database
//!
//! `to_db_string` renders the value with exactly 18 fractional digits, the
//! way MySQL returns a `DECIMAL(36,18)` column (`"12.345000000000000000"`),
//! and `from_db_str` parses that text back, so
//! `X::from_db_str(&x.to_db_string()) == Ok(x)` for every value.

use std::fmt;
use std::str::FromStr;

use rust_decimal::Decimal;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Maximum number of fractional digits (the `18` of `DECIMAL(36,18)`).
pub const MAX_FRACTION_DIGITS: u32 = 18;
/// Maximum number of integer digits (`36 - 18`).
pub const MAX_INTEGER_DIGITS: u32 = 18;

/// `10^18`: every value's absolute integer part is strictly below this.
const INTEGER_LIMIT: u128 = 1_000_000_000_000_000_000;
/// Largest mantissa a `Decimal` can hold (`2^96 - 1`).
const MAX_DECIMAL_MANTISSA: u128 = (1 << 96) - 1;

/// Why a money value was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum MoneyError {
    /// The text is not a plain decimal number `-?[0-9]+(\.[0-9]+)?`.
    #[error("invalid decimal: expected digits with an optional leading '-' and '.'")]
    Invalid,
    /// More than 18 significant fractional digits (a non-zero digit after the 18th).
    #[error("too many fractional digits: at most 18 allowed")]
    TooManyFractionDigits,
    /// Absolute integer part is `>= 10^18`, or an arithmetic result overflowed.
    #[error("value too large: absolute integer part must be below 10^18")]
    TooLarge,
    /// Fits `DECIMAL(36,18)` but not exactly in `Decimal` (more than ~28 significant digits).
    #[error("value not exactly representable (too many significant digits)")]
    NotRepresentable,
    /// A [`Price`] or [`Qty`] was zero or negative.
    #[error("value must be greater than zero")]
    NotPositive,
    /// An [`Amount`] was negative where `>= 0` was required.
    #[error("value must not be negative")]
    Negative,
}

/// Builds a `Decimal` from sign, magnitude mantissa and scale, enforcing the
/// module invariants. Every constructor and operation ends here.
fn from_parts(negative: bool, mantissa: u128, scale: u32) -> Result<Decimal, MoneyError> {
    let (mut m, mut s) = (mantissa, scale);
    // Excess fractional digits are fine only when they are zeros.
    while s > MAX_FRACTION_DIGITS && m % 10 == 0 {
        m /= 10;
        s -= 1;
    }
    if s > MAX_FRACTION_DIGITS {
        return Err(MoneyError::TooManyFractionDigits);
    }
    if m / 10u128.pow(s) >= INTEGER_LIMIT {
        return Err(MoneyError::TooLarge);
    }
    // Trailing zeros may be dropped to fit the 96-bit mantissa (value unchanged).
    while m > MAX_DECIMAL_MANTISSA && s > 0 && m % 10 == 0 {
        m /= 10;
        s -= 1;
    }
    if m > MAX_DECIMAL_MANTISSA {
        return Err(MoneyError::NotRepresentable);
    }
    let signed = i128::try_from(m).map_err(|_| MoneyError::NotRepresentable)?;
    let signed = if negative { -signed } else { signed };
    Decimal::try_from_i128_with_scale(signed, s).map_err(|_| MoneyError::NotRepresentable)
}

/// Checks an arbitrary `Decimal` against the module invariants.
fn validate(value: Decimal) -> Result<Decimal, MoneyError> {
    from_parts(
        value.is_sign_negative(),
        value.mantissa().unsigned_abs(),
        value.scale(),
    )
}

/// Exact parser for `-?[0-9]+(\.[0-9]+)?`, shared by all money types.
fn parse(text: &str) -> Result<Decimal, MoneyError> {
    let (negative, body) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let (int_part, frac_part) = match body.split_once('.') {
        Some((i, f)) => (i, Some(f)),
        None => (body, None),
    };
    let all_digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !all_digits(int_part) || !frac_part.is_none_or(all_digits) {
        return Err(MoneyError::Invalid);
    }
    let int_digits = int_part.trim_start_matches('0');
    let frac_digits = frac_part.unwrap_or("");
    // Excess fractional digits must be zeros; keep up to 18 (the scale given).
    let keep = frac_digits.len().min(MAX_FRACTION_DIGITS as usize);
    let (frac_kept, frac_excess) = frac_digits.split_at(keep);
    if frac_excess.bytes().any(|b| b != b'0') {
        return Err(MoneyError::TooManyFractionDigits);
    }
    if int_digits.len() > MAX_INTEGER_DIGITS as usize {
        return Err(MoneyError::TooLarge);
    }
    // At most 36 digits: fits a u128 (10^36 < 2^120).
    let mantissa = int_digits
        .bytes()
        .chain(frac_kept.bytes())
        .fold(0u128, |acc, b| acc * 10 + u128::from(b - b'0'));
    let scale = u32::try_from(frac_kept.len()).map_err(|_| MoneyError::Invalid)?;
    from_parts(negative, mantissa, scale)
}

/// `|value| * 10^18` as an integer, valid for any value meeting the invariants.
fn scaled_to_max(value: Decimal) -> Result<i128, MoneyError> {
    let factor = 10i128.pow(MAX_FRACTION_DIGITS.saturating_sub(value.scale()));
    value
        .mantissa()
        .checked_mul(factor)
        .ok_or(MoneyError::TooLarge)
}

/// Exact `a + b` (both already valid).
fn add(a: Decimal, b: Decimal) -> Result<Decimal, MoneyError> {
    let scale = a.scale().max(b.scale());
    let align = |d: Decimal| {
        d.mantissa()
            .checked_mul(10i128.pow(scale - d.scale()))
            .ok_or(MoneyError::TooLarge)
    };
    let sum = align(a)?
        .checked_add(align(b)?)
        .ok_or(MoneyError::TooLarge)?;
    from_parts(sum < 0, sum.unsigned_abs(), scale)
}

/// Removes `count` factors `factor` from the product `a * b`, or fails if
/// the product does not have that many.
fn remove_factor(a: &mut u128, b: &mut u128, factor: u128, count: u32) -> Result<(), MoneyError> {
    let mut left = count;
    for m in [a, b] {
        while left > 0 && *m % factor == 0 {
            *m /= factor;
            left -= 1;
        }
    }
    if left > 0 {
        Err(MoneyError::TooManyFractionDigits)
    } else {
        Ok(())
    }
}

/// Exact `a * b`. `a` must be valid; `b` may be any `Decimal`.
fn mul(a: Decimal, b: Decimal) -> Result<Decimal, MoneyError> {
    let negative = a.is_sign_negative() != b.is_sign_negative();
    let (mut ma, mut mb) = (a.mantissa().unsigned_abs(), b.mantissa().unsigned_abs());
    let mut scale = a.scale() + b.scale();
    if ma == 0 || mb == 0 {
        return from_parts(false, 0, scale);
    }
    if scale > MAX_FRACTION_DIGITS {
        // The product must be divisible by 10^excess = 2^excess * 5^excess.
        let excess = scale - MAX_FRACTION_DIGITS;
        remove_factor(&mut ma, &mut mb, 2, excess)?;
        remove_factor(&mut ma, &mut mb, 5, excess)?;
        scale = MAX_FRACTION_DIGITS;
    }
    // Overflowing u128 at scale <= 18 means a value >= 2^128 / 10^18 > 10^18.
    let product = ma.checked_mul(mb).ok_or(MoneyError::TooLarge)?;
    from_parts(negative, product, scale)
}

/// Renders a valid value with exactly 18 fractional digits.
fn db_string(value: Decimal) -> String {
    // Valid values always fit; the fallback keeps this function total.
    let Ok(scaled) = scaled_to_max(value) else {
        return value.to_string();
    };
    let sign = if scaled < 0 { "-" } else { "" };
    let magnitude = scaled.unsigned_abs();
    let int = magnitude / INTEGER_LIMIT;
    let frac = magnitude % INTEGER_LIMIT;
    format!("{sign}{int}.{frac:018}")
}

/// `a` is an integer multiple of `step` (exact; `step` must be non-zero).
fn is_multiple_of(a: Decimal, step: Decimal) -> bool {
    match (scaled_to_max(a), scaled_to_max(step)) {
        (Ok(a), Ok(step)) if step != 0 => a % step == 0,
        _ => false,
    }
}

macro_rules! money_type {
    ($(#[$meta:meta])* $name:ident, positive = $positive:expr) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(Decimal);

        impl $name {
            fn checked(value: Decimal) -> Result<Self, MoneyError> {
                if $positive && value <= Decimal::ZERO {
                    return Err(MoneyError::NotPositive);
                }
                Ok(Self(value))
            }

            /// Validates a `Decimal`. Trailing zeros past the 18th fractional
            /// digit are dropped; anything else that does not fit is an error.
            ///
            /// # Errors
            ///
            /// [`MoneyError::TooManyFractionDigits`], [`MoneyError::TooLarge`],
            /// [`MoneyError::NotRepresentable`], or [`MoneyError::NotPositive`]
            /// for [`Price`]/[`Qty`] `<= 0`.
            pub fn new(value: Decimal) -> Result<Self, MoneyError> {
                Self::checked(validate(value)?)
            }

            /// The underlying decimal.
            #[must_use]
            pub const fn get(self) -> Decimal {
                self.0
            }

            /// Parses the text MySQL returns for a `DECIMAL(36,18)` column
            /// (e.g. `"12.345000000000000000"`). Same grammar as [`FromStr`].
            ///
            /// # Errors
            ///
            /// Any [`MoneyError`] except [`MoneyError::Negative`]; in particular
            /// `"999999999999999999.999999999999999999"` is
            /// [`MoneyError::NotRepresentable`], never a rounded value.
            pub fn from_db_str(text: &str) -> Result<Self, MoneyError> {
                text.parse()
            }

            /// Exact text for MySQL, always with 18 fractional digits
            /// (`"12.345000000000000000"`, `"-0.000000000000000001"`).
            #[must_use]
            pub fn to_db_string(&self) -> String {
                db_string(self.0)
            }

            /// Exact `self + rhs`.
            ///
            /// # Errors
            ///
            /// [`MoneyError::TooLarge`] / [`MoneyError::NotRepresentable`] if the
            /// sum leaves the range, [`MoneyError::NotPositive`] for
            /// [`Price`]/[`Qty`] results `<= 0`.
            pub fn checked_add(self, rhs: Self) -> Result<Self, MoneyError> {
                Self::checked(add(self.0, rhs.0)?)
            }

            /// Exact `self - rhs`.
            ///
            /// # Errors
            ///
            /// As [`Self::checked_add`]; for [`Price`]/[`Qty`] a result `<= 0`
            /// is [`MoneyError::NotPositive`] (go through [`Amount`] for deltas).
            pub fn checked_sub(self, rhs: Self) -> Result<Self, MoneyError> {
                Self::checked(add(self.0, -rhs.0)?)
            }

            /// Exact `self * factor` (any `Decimal` factor, e.g. a fee rate).
            /// Never rounds: a product needing more than 18 fractional
            /// digits is an error.
            ///
            /// # Errors
            ///
            /// [`MoneyError::TooManyFractionDigits`], [`MoneyError::TooLarge`],
            /// [`MoneyError::NotRepresentable`], or [`MoneyError::NotPositive`]
            /// for [`Price`]/[`Qty`] results `<= 0`.
            pub fn checked_mul(self, factor: Decimal) -> Result<Self, MoneyError> {
                Self::checked(mul(self.0, factor)?)
            }

            /// Whether `self` is an exact integer multiple of `step` (tick
            /// size / step size filters). `false` when `step` is zero.
            #[must_use]
            pub fn is_multiple_of(self, step: Self) -> bool {
                is_multiple_of(self.0, step.0)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0, f)
            }
        }

        impl FromStr for $name {
            type Err = MoneyError;

            fn from_str(text: &str) -> Result<Self, MoneyError> {
                Self::checked(parse(text)?)
            }
        }

        impl TryFrom<Decimal> for $name {
            type Error = MoneyError;

            fn try_from(value: Decimal) -> Result<Self, MoneyError> {
                Self::new(value)
            }
        }

        impl From<$name> for Decimal {
            fn from(value: $name) -> Decimal {
                value.0
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.collect_str(self)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                struct Visitor;

                impl serde::de::Visitor<'_> for Visitor {
                    type Value = $name;

                    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                        f.write_str(concat!(
                            "a decimal string for ",
                            stringify!($name),
                            " (JSON numbers are not accepted)"
                        ))
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

money_type!(
    /// A signed quantity of an asset: balance, ledger delta, fee, notional.
    /// May be zero or negative; see the [module docs](self) for invariants.
    Amount,
    positive = false
);

money_type!(
    /// A strictly positive price (quote asset per unit of base asset).
    /// See the [module docs](self) for invariants.
    Price,
    positive = true
);

money_type!(
    /// A strictly positive order / trade quantity in the base asset.
    /// See the [module docs](self) for invariants.
    Qty,
    positive = true
);

impl Amount {
    /// Zero.
    pub const ZERO: Self = Self(Decimal::ZERO);

    /// Returns `self` if it is `>= 0`.
    ///
    /// # Errors
    ///
    /// [`MoneyError::Negative`] if `self < 0`.
    pub fn non_negative(self) -> Result<Self, MoneyError> {
        if self.0.is_sign_negative() && !self.0.is_zero() {
            Err(MoneyError::Negative)
        } else {
            Ok(self)
        }
    }

    /// `self == 0`.
    #[must_use]
    pub fn is_zero(self) -> bool {
        self.0.is_zero()
    }

    /// `self < 0`.
    #[must_use]
    pub fn is_negative(self) -> bool {
        self.0 < Decimal::ZERO
    }

    /// `self > 0`.
    #[must_use]
    pub fn is_positive(self) -> bool {
        self.0 > Decimal::ZERO
    }
}

impl std::ops::Neg for Amount {
    type Output = Self;

    /// Always exact: the valid range is symmetric.
    fn neg(self) -> Self {
        if self.0.is_zero() {
            self
        } else {
            Self(-self.0)
        }
    }
}

impl Default for Amount {
    fn default() -> Self {
        Self::ZERO
    }
}

impl From<Price> for Amount {
    fn from(value: Price) -> Self {
        Self(value.0)
    }
}

impl From<Qty> for Amount {
    fn from(value: Qty) -> Self {
        Self(value.0)
    }
}

impl TryFrom<Amount> for Price {
    type Error = MoneyError;

    /// # Errors
    ///
    /// [`MoneyError::NotPositive`] if the amount is `<= 0`.
    fn try_from(value: Amount) -> Result<Self, MoneyError> {
        Self::checked(value.0)
    }
}

impl TryFrom<Amount> for Qty {
    type Error = MoneyError;

    /// # Errors
    ///
    /// [`MoneyError::NotPositive`] if the amount is `<= 0`.
    fn try_from(value: Amount) -> Result<Self, MoneyError> {
        Self::checked(value.0)
    }
}

impl Price {
    /// Exact notional `price * qty` in the quote asset.
    ///
    /// # Errors
    ///
    /// [`MoneyError::TooManyFractionDigits`] if the exact product needs more
    /// than 18 fractional digits, [`MoneyError::TooLarge`] /
    /// [`MoneyError::NotRepresentable`] if it leaves the range.
    pub fn checked_notional(self, qty: Qty) -> Result<Amount, MoneyError> {
        Ok(Amount(mul(self.0, qty.0)?))
    }
}

impl Qty {
    /// Exact notional `qty * price` in the quote asset; same as
    /// [`Price::checked_notional`].
    ///
    /// # Errors
    ///
    /// As [`Price::checked_notional`].
    pub fn checked_notional(self, price: Price) -> Result<Amount, MoneyError> {
        price.checked_notional(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const MAX_DB: &str = "999999999999999999.999999999999999999";

    fn dec(s: &str) -> Decimal {
        Decimal::from_str_exact(s).unwrap()
    }

    fn amount(s: &str) -> Amount {
        s.parse().unwrap()
    }

    #[test]
    fn accepts_plain_decimals() {
        for (input, display) in [
            ("0", "0"),
            ("1", "1"),
            ("-1", "-1"),
            ("1.5", "1.5"),
            ("0.00100000", "0.00100000"),
            ("007.50", "7.50"),
            ("-0", "0"),
            ("-0.000", "0.000"),
            ("0.000000000000000001", "0.000000000000000001"),
            ("-0.000000000000000001", "-0.000000000000000001"),
            ("999999999999999999", "999999999999999999"),
            ("-999999999999999999", "-999999999999999999"),
            ("1.0000000000000000000000", "1.000000000000000000"),
            ("12345678901.123456789", "12345678901.123456789"),
        ] {
            let a: Amount = input.parse().unwrap_or_else(|e| panic!("{input}: {e}"));
            assert_eq!(a.to_string(), display, "{input}");
        }
    }

    #[test]
    fn rejects_malformed_text() {
        for input in [
            "", "-", "+1", " 1", "1 ", "1e5", "1E5", "NaN", "nan", "inf", "-inf", "1,5", ".5",
            "5.", "-.5", "--1", "1.2.3", "1_000", "0x10", "١", "1.5\n", "- 1",
        ] {
            assert_eq!(
                input.parse::<Amount>(),
                Err(MoneyError::Invalid),
                "{input:?}"
            );
        }
    }

    #[test]
    fn rejects_out_of_range() {
        use MoneyError::*;
        for (input, err) in [
            ("0.0000000000000000001", TooManyFractionDigits),
            ("1.0000000000000000001", TooManyFractionDigits),
            ("1.0000000000000000000001", TooManyFractionDigits),
            ("1000000000000000000", TooLarge),
            ("-1000000000000000000", TooLarge),
            ("1000000000000000000.000", TooLarge),
            ("99999999999999999999999999999999", TooLarge),
            (MAX_DB, NotRepresentable),
            ("-999999999999999999.999999999999999999", NotRepresentable),
            ("999999999999999999.000000000000000001", NotRepresentable),
        ] {
            assert_eq!(input.parse::<Amount>(), Err(err), "{input}");
            assert_eq!(Amount::from_db_str(input), Err(err), "{input}");
        }
    }

    #[test]
    fn largest_db_magnitude_is_not_rounded() {
        for input in [MAX_DB, "-999999999999999999.999999999999999999"] {
            assert_eq!(
                Amount::from_db_str(input),
                Err(MoneyError::NotRepresentable)
            );
        }
        // Exactly 28 significant digits still works.
        let a = Amount::from_db_str("9999999999.999999999999999999").unwrap();
        assert_eq!(a.to_db_string(), "9999999999.999999999999999999");
    }

    #[test]
    fn db_strings_round_trip() {
        for s in [
            "0.000000000000000000",
            "0.000000000000000001",
            "-0.000000000000000001",
            "12.345000000000000000",
            "999999999999999999.000000000000000000",
            "-999999999999999999.000000000000000000",
            "79228162514.264337593543950335",
        ] {
            let a = Amount::from_db_str(s).unwrap();
            assert_eq!(a.to_db_string(), s);
        }
        assert_eq!(amount("1.5").to_db_string(), "1.500000000000000000");
        assert_eq!(amount("-0").to_db_string(), "0.000000000000000000");
    }

    #[test]
    fn positivity() {
        assert_eq!("0".parse::<Price>(), Err(MoneyError::NotPositive));
        assert_eq!("-1".parse::<Qty>(), Err(MoneyError::NotPositive));
        assert_eq!("0.000".parse::<Qty>(), Err(MoneyError::NotPositive));
        assert_eq!(Price::new(Decimal::ZERO), Err(MoneyError::NotPositive));
        assert!("0.000000000000000001".parse::<Price>().is_ok());
        assert!("999999999999999999".parse::<Qty>().is_ok());
        assert_eq!(amount("-1").non_negative(), Err(MoneyError::Negative));
        assert_eq!(amount("0").non_negative(), Ok(Amount::ZERO));
        assert_eq!(amount("-0").non_negative(), Ok(Amount::ZERO));
        assert!(Price::try_from(amount("1")).is_ok());
        assert_eq!(Qty::try_from(Amount::ZERO), Err(MoneyError::NotPositive));
    }

    #[test]
    fn new_from_decimal() {
        assert_eq!(Amount::new(dec("1.5")).unwrap().get(), dec("1.5"));
        // Trailing zeros beyond 18 digits are dropped, non-zero ones rejected.
        let trailing = Decimal::from_i128_with_scale(10i128.pow(22), 22);
        assert_eq!(Amount::new(trailing).unwrap().get(), Decimal::ONE);
        let tiny = Decimal::from_i128_with_scale(1, 19);
        assert_eq!(Amount::new(tiny), Err(MoneyError::TooManyFractionDigits));
        assert_eq!(
            Amount::new(Decimal::from(10u64.pow(18))),
            Err(MoneyError::TooLarge)
        );
        assert_eq!(Amount::new(Decimal::MAX), Err(MoneyError::TooLarge));
        assert!(Amount::new(Decimal::from(10u64.pow(18) - 1)).is_ok());
        assert!(Amount::new(-Decimal::from(10u64.pow(18) - 1)).is_ok());
    }

    #[test]
    fn checked_add_sub() {
        let max = amount("999999999999999999");
        assert_eq!(max.checked_add(amount("1")), Err(MoneyError::TooLarge));
        assert_eq!((-max).checked_sub(amount("1")), Err(MoneyError::TooLarge));
        assert_eq!(
            max.checked_add(amount("0.000000000000000001")),
            Err(MoneyError::NotRepresentable)
        );
        assert_eq!(amount("0.1").checked_add(amount("0.2")), Ok(amount("0.3")));
        assert_eq!(
            amount("1").checked_sub(amount("1.000000000000000001")),
            Ok(amount("-0.000000000000000001"))
        );
        assert_eq!(
            amount("1.5")
                .checked_sub(amount("1.5"))
                .unwrap()
                .to_string(),
            "0.0"
        );
        let q: Qty = "1".parse().unwrap();
        assert_eq!(q.checked_sub(q), Err(MoneyError::NotPositive));
        assert_eq!(q.checked_add("0.5".parse().unwrap()), "1.5".parse::<Qty>());
    }

    #[test]
    fn checked_mul_is_exact() {
        let p: Price = "0.000000001".parse().unwrap();
        let q: Qty = "0.000000001".parse().unwrap();
        assert_eq!(p.checked_notional(q), Ok(amount("0.000000000000000001")));
        let q2: Qty = "0.0000000001".parse().unwrap();
        assert_eq!(
            p.checked_notional(q2),
            Err(MoneyError::TooManyFractionDigits)
        );
        // Trailing zeros of the product make a long scale fine.
        let p: Price = "0.000000000000000002".parse().unwrap();
        let q: Qty = "0.5".parse().unwrap();
        assert_eq!(p.checked_notional(q), Ok(amount("0.000000000000000001")));
        // 2^90 * 5^38 * 10^-36 = 2^52 * 100.
        let a = Amount::new(Decimal::from_i128_with_scale(1i128 << 90, 18)).unwrap();
        let b = Decimal::from_i128_with_scale(5i128.pow(38), 18);
        assert_eq!(
            a.checked_mul(b),
            Ok(Amount::new(Decimal::from((1i64 << 52) * 100)).unwrap())
        );
        let big: Price = "1000000000".parse().unwrap();
        let bigq: Qty = "1000000000".parse().unwrap();
        assert_eq!(big.checked_notional(bigq), Err(MoneyError::TooLarge));
        assert_eq!(
            amount("999999999999999999").checked_mul(Decimal::MAX),
            Err(MoneyError::TooLarge)
        );
        assert_eq!(amount("-3").checked_mul(dec("0.001")), Ok(amount("-0.003")));
        assert_eq!(amount("-3").checked_mul(Decimal::ZERO), Ok(Amount::ZERO));
        assert_eq!(
            "2".parse::<Qty>().unwrap().checked_mul(dec("-1")),
            Err(MoneyError::NotPositive)
        );
        assert_eq!(
            "1.5"
                .parse::<Qty>()
                .unwrap()
                .checked_notional("2".parse().unwrap()),
            Ok(amount("3"))
        );
    }

    #[test]
    fn multiples() {
        let tick: Price = "0.01".parse().unwrap();
        assert!("1.23".parse::<Price>().unwrap().is_multiple_of(tick));
        assert!(!"1.234".parse::<Price>().unwrap().is_multiple_of(tick));
        assert!(Amount::ZERO.is_multiple_of(amount("0.5")));
        assert!(!amount("1").is_multiple_of(Amount::ZERO));
    }

    #[test]
    fn ordering_and_equality_are_numeric() {
        assert_eq!(amount("1.5"), amount("1.50"));
        assert!(amount("-1") < amount("0.000000000000000001"));
        let mut set = std::collections::HashSet::new();
        set.insert(amount("2.0"));
        assert!(set.contains(&amount("2")));
    }

    #[test]
    fn serde_uses_strings_only() {
        let p: Price = "0.00100000".parse().unwrap();
        assert_eq!(serde_json::to_string(&p).unwrap(), r#""0.00100000""#);
        assert_eq!(serde_json::from_str::<Price>(r#""0.00100000""#).unwrap(), p);
        assert!(serde_json::from_str::<Price>("0.001").is_err());
        assert!(serde_json::from_str::<Amount>("1").is_err());
        assert!(serde_json::from_str::<Qty>(r#""0""#).is_err());
        assert!(serde_json::from_str::<Amount>(r#""1e5""#).is_err());
        let err = serde_json::from_str::<Amount>(&format!("\"{MAX_DB}\"")).unwrap_err();
        assert!(
            err.to_string().contains("not exactly representable"),
            "{err}"
        );
        let a = amount("-12.345000");
        let json = serde_json::to_string(&a).unwrap();
        assert_eq!(json, r#""-12.345000""#);
        assert_eq!(serde_json::from_str::<Amount>(&json).unwrap(), a);
        let q: Qty = "3".parse().unwrap();
        assert_eq!(
            serde_json::from_str::<Qty>(&serde_json::to_string(&q).unwrap()).unwrap(),
            q
        );
    }

    #[test]
    fn error_serde() {
        let json = serde_json::to_string(&MoneyError::NotRepresentable).unwrap();
        assert_eq!(json, r#""NOT_REPRESENTABLE""#);
        assert_eq!(
            serde_json::from_str::<MoneyError>(&json).unwrap(),
            MoneyError::NotRepresentable
        );
    }

    fn valid_parts() -> impl Strategy<Value = (i128, u32)> {
        (0u32..=18).prop_flat_map(|scale| {
            // |value| < 10^18 and mantissa < 2^96.
            let limit = (10i128.pow(18 + scale) - 1).min((1i128 << 96) - 1);
            (-limit..=limit, Just(scale))
        })
    }

    proptest! {
        #[test]
        fn db_round_trip((mantissa, scale) in valid_parts()) {
            let d = Decimal::from_i128_with_scale(mantissa, scale);
            let a = Amount::new(d).unwrap();
            prop_assert_eq!(a.get(), d);
            let db = a.to_db_string();
            let back = Amount::from_db_str(&db).unwrap();
            prop_assert_eq!(back, a);
            prop_assert_eq!(&back.to_db_string(), &db);
            let shown = a.to_string();
            let reparsed: Amount = shown.parse().unwrap();
            prop_assert_eq!(reparsed, a);
            prop_assert_eq!(&reparsed.to_string(), &shown);
            let json = serde_json::to_string(&a).unwrap();
            prop_assert_eq!(serde_json::from_str::<Amount>(&json).unwrap(), a);
            if a.is_positive() {
                let p = Price::from_db_str(&db).unwrap();
                prop_assert_eq!(Amount::from(p), a);
            }
        }

        /// Independent oracle: any `I.F` text with <= 18 + 18 digits either
        /// renders back digit for digit or is rejected as not representable.
        #[test]
        fn text_is_exact(
            negative in any::<bool>(),
            int in "[0-9]{1,18}",
            frac in "[0-9]{0,18}",
        ) {
            let text = format!(
                "{}{int}{}{frac}",
                if negative { "-" } else { "" },
                if frac.is_empty() { "" } else { "." },
            );
            let int_norm = int.trim_start_matches('0');
            let int_norm = if int_norm.is_empty() { "0" } else { int_norm };
            let padded = format!("{int_norm}.{frac:0<18}");
            let is_zero = padded.bytes().all(|b| b == b'0' || b == b'.');
            let expected = if negative && !is_zero { format!("-{padded}") } else { padded };
            let significant = format!("{int_norm}{frac}");
            let significant = significant.trim_start_matches('0').trim_end_matches('0');
            match Amount::from_db_str(&text) {
                Ok(a) => prop_assert_eq!(a.to_db_string(), expected),
                Err(e) => {
                    prop_assert_eq!(e, MoneyError::NotRepresentable);
                    prop_assert!(significant.len() >= 29, "{}", text);
                }
            }
        }

        #[test]
        fn add_matches_decimal((m1, s1) in valid_parts(), (m2, s2) in valid_parts()) {
            let a = Amount::new(Decimal::from_i128_with_scale(m1, s1)).unwrap();
            let b = Amount::new(Decimal::from_i128_with_scale(m2, s2)).unwrap();
            match a.checked_add(b) {
                Ok(sum) => {
                    prop_assert_eq!(Some(sum.get()), a.get().checked_add(b.get()));
                    prop_assert_eq!(sum.checked_sub(b), Ok(a));
                }
                Err(e) => prop_assert!(
                    matches!(e, MoneyError::TooLarge | MoneyError::NotRepresentable)
                ),
            }
        }

        #[test]
        fn mul_matches_decimal(
            m1 in -(1i64 << 40)..(1i64 << 40), s1 in 0u32..=18,
            m2 in -(1i64 << 40)..(1i64 << 40), s2 in 0u32..=10,
        ) {
            // s1 + s2 <= 28, so Decimal's own product below is exact.
            let a = Amount::new(Decimal::new(m1, s1)).unwrap();
            let factor = Decimal::new(m2, s2);
            let exact = a.get().checked_mul(factor).unwrap();
            match a.checked_mul(factor) {
                Ok(p) => prop_assert_eq!(p.get(), exact),
                Err(MoneyError::TooManyFractionDigits) => {
                    prop_assert!(exact.normalize().scale() > 18);
                }
                Err(MoneyError::TooLarge) => {
                    prop_assert!(exact.abs() >= Decimal::from(10u64.pow(18)));
                }
                Err(e) => prop_assert!(false, "unexpected {e:?}"),
            }
        }
    }
}
