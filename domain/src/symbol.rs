//! Trading symbols ([`Symbol`], e.g. `BTCUSDT`) and assets ([`Asset`], e.g. `BTC`).
//!
//! Invariant of both: the text matches `^[A-Z0-9]{2,20}$` exactly
//! (ASCII upper-case letters and digits, 2 to 20 of them). Such a string is
//! safe to embed in a SQL identifier such as a per-symbol table name.
//! Lower case, punctuation (`BTC-USDT`, `BTC;DROP`), whitespace and non-ASCII
//! (`ÄBC`) are rejected; nothing is normalised (no upper-casing, no trimming).
//!
//! These types guarantee the character set only. Whether a symbol or asset
//! is actually listed (the configured whitelist) is checked elsewhere.
//!
//! Both are `Copy` (stored inline, no allocation); ordering is
//! lexicographic on the text. Serde uses the string form and validates on
//! deserialize.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Minimum length of a symbol or asset code.
pub const MIN_CODE_LEN: usize = 2;
/// Maximum length of a symbol or asset code.
pub const MAX_CODE_LEN: usize = 20;

/// Which code a [`SymbolError`] is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum CodeKind {
    /// [`Symbol`].
    Symbol,
    /// [`Asset`].
    Asset,
}

impl fmt::Display for CodeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Symbol => "symbol",
            Self::Asset => "asset",
        })
    }
}

/// Why a symbol or asset code was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum SymbolError {
    /// Fewer than 2 or more than 20 bytes.
    #[error("{kind} must be 2 to 20 characters long, got {len} bytes")]
    InvalidLength {
        /// Which code.
        kind: CodeKind,
        /// Length of the rejected input in bytes.
        len: usize,
    },
    /// A character outside `A-Z0-9`.
    #[error("{kind} may only contain A-Z and 0-9")]
    InvalidCharacter {
        /// Which code.
        kind: CodeKind,
    },
}

/// Inline storage shared by [`Symbol`] and [`Asset`]. Unused bytes are 0,
/// which sorts below every allowed character, so the derived ordering on
/// `bytes` is the lexicographic ordering of the text.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
struct Code {
    bytes: [u8; MAX_CODE_LEN],
    len: u8,
}

impl Code {
    fn parse(text: &str, kind: CodeKind) -> Result<Self, SymbolError> {
        let len = text.len();
        if !(MIN_CODE_LEN..=MAX_CODE_LEN).contains(&len) {
            return Err(SymbolError::InvalidLength { kind, len });
        }
        if !text
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
        {
            return Err(SymbolError::InvalidCharacter { kind });
        }
        let mut bytes = [0u8; MAX_CODE_LEN];
        bytes[..len].copy_from_slice(text.as_bytes());
        let len = u8::try_from(len).map_err(|_| SymbolError::InvalidLength { kind, len })?;
        Ok(Self { bytes, len })
    }

    fn as_str(&self) -> &str {
        // Only ASCII is ever stored, so this cannot fail.
        std::str::from_utf8(&self.bytes[..usize::from(self.len)]).unwrap_or_default()
    }
}

macro_rules! code_type {
    ($(#[$meta:meta])* $name:ident, $kind:expr) => {
        $(#[$meta])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(Code);

        impl $name {
            /// Validates `^[A-Z0-9]{2,20}$`.
            ///
            /// # Errors
            ///
            /// [`SymbolError::InvalidLength`] or [`SymbolError::InvalidCharacter`].
            pub fn new(text: &str) -> Result<Self, SymbolError> {
                Code::parse(text, $kind).map(Self)
            }

            /// The validated text.
            #[must_use]
            pub fn as_str(&self) -> &str {
                self.0.as_str()
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_tuple(stringify!($name)).field(&self.as_str()).finish()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.pad(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = SymbolError;

            fn from_str(text: &str) -> Result<Self, SymbolError> {
                Self::new(text)
            }
        }

        impl TryFrom<&str> for $name {
            type Error = SymbolError;

            fn try_from(text: &str) -> Result<Self, SymbolError> {
                Self::new(text)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                self.as_str()
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                self.as_str() == other
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.as_str() == *other
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
                        f.write_str(concat!(
                            "a ",
                            stringify!($name),
                            " string matching ^[A-Z0-9]{2,20}$"
                        ))
                    }

                    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<$name, E> {
                        $name::new(v).map_err(E::custom)
                    }
                }

                deserializer.deserialize_str(Visitor)
            }
        }
    };
}

code_type!(
    /// A trading pair code such as `BTCUSDT`; matches `^[A-Z0-9]{2,20}$`.
    Symbol,
    CodeKind::Symbol
);

code_type!(
    /// An asset code such as `BTC`; matches `^[A-Z0-9]{2,20}$`.
    Asset,
    CodeKind::Asset
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_valid() {
        for ok in ["BTCUSDT", "BT", "1INCHUSDT", "ABCDEFGHIJKLMNOPQRST", "00"] {
            let s = Symbol::new(ok).unwrap();
            assert_eq!(s.as_str(), ok);
            assert_eq!(s.to_string(), ok);
            assert_eq!(s, ok);
            assert_eq!(ok.parse::<Asset>().unwrap().as_str(), ok);
        }
    }

    #[test]
    fn rejects_invalid() {
        let len = |len| SymbolError::InvalidLength {
            kind: CodeKind::Symbol,
            len,
        };
        let chr = SymbolError::InvalidCharacter {
            kind: CodeKind::Symbol,
        };
        assert_eq!(Symbol::new(""), Err(len(0)));
        assert_eq!(Symbol::new("B"), Err(len(1)));
        assert_eq!(Symbol::new("ABCDEFGHIJKLMNOPQRSTU"), Err(len(21)));
        for bad in [
            "btcusdt",
            "BTC;DROP",
            "BTC-USDT",
            "ÄBC",
            "BTC USDT",
            " BTC",
            "BTC\n",
            "BTC_USDT",
            "BTc",
            "BTC'",
            "BTC`",
            "ＢＴＣ",
        ] {
            let err = Symbol::new(bad).unwrap_err();
            assert!(
                err == chr || matches!(err, SymbolError::InvalidLength { .. }),
                "{bad:?}: {err:?}"
            );
        }
        assert_eq!(Symbol::new("ÄBC"), Err(chr));
        assert_eq!(
            Asset::new("b"),
            Err(SymbolError::InvalidLength {
                kind: CodeKind::Asset,
                len: 1
            })
        );
        // 20 multi-byte characters are far more than 20 bytes.
        assert!(Symbol::new(&"Ä".repeat(10)).is_err());
    }

    #[test]
    fn ordering_is_lexicographic() {
        let mut v: Vec<Symbol> = ["BTCUSDT", "BTC", "AB", "BTCA", "ETHBTC", "A0"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        v.sort();
        let got: Vec<&str> = v.iter().map(Symbol::as_str).collect();
        let mut want = vec!["BTCUSDT", "BTC", "AB", "BTCA", "ETHBTC", "A0"];
        want.sort_unstable();
        assert_eq!(got, want);
    }

    #[test]
    fn serde() {
        let s = Symbol::new("BTCUSDT").unwrap();
        let json = serde_json::to_string(&s).unwrap();
        assert_eq!(json, r#""BTCUSDT""#);
        assert_eq!(serde_json::from_str::<Symbol>(&json).unwrap(), s);
        assert!(serde_json::from_str::<Symbol>(r#""btcusdt""#).is_err());
        assert!(serde_json::from_str::<Asset>(r#""BTC;DROP""#).is_err());
        assert!(serde_json::from_str::<Asset>("12").is_err());
        assert_eq!(format!("{s:?}"), r#"Symbol("BTCUSDT")"#);
        assert_eq!(format!("{s:>9}"), "  BTCUSDT");
        let e = SymbolError::InvalidCharacter {
            kind: CodeKind::Asset,
        };
        let json = serde_json::to_string(&e).unwrap();
        assert_eq!(serde_json::from_str::<SymbolError>(&json).unwrap(), e);
    }
}
