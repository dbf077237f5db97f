//! Request parameters as Binance takes them: the query string and, for a
//! form-urlencoded body, the body's pairs, in one list; each name at most once
//! (-1101). Typed getters turn a missing or malformed value into the API's error
//! (-1102, -1100, -1111, …), so a handler reads like the endpoint's parameter table.

use std::str::FromStr;

use domain::{Amount, MoneyError, OrderId, Price, Qty, Symbol};

use crate::error::{ApiError, Invalid};

/// The legal range Binance states for decimal parameters.
pub const DECIMAL_RANGE: &str = "^([0-9]{1,20})(\\.[0-9]{1,20})?$";

/// Decoded parameters of one request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Params {
    pairs: Vec<(String, String)>,
}

impl Params {
    /// Parses `query` and `body` (form-urlencoded; empty for none).
    ///
    /// # Errors
    /// -1101 for a name given twice, -1102 for bytes that are not a form.
    pub fn parse(query: &str, body: &[u8]) -> Result<Self, ApiError> {
        let mut pairs: Vec<(String, String)> = Vec::new();
        for part in [query.as_bytes(), body] {
            if part.is_empty() {
                continue;
            }
            let decoded: Vec<(String, String)> =
                serde_urlencoded::from_bytes(part).map_err(|_| ApiError::mandatory("body"))?;
            for (k, v) in decoded {
                if pairs.iter().any(|(n, _)| *n == k) {
                    return Err(ApiError::duplicate(&k));
                }
                pairs.push((k, v));
            }
        }
        Ok(Self { pairs })
    }

    /// Parameters given as pairs (the WebSocket API's, already decoded).
    ///
    /// # Errors
    /// -1101 for a name given twice.
    pub fn from_pairs(given: Vec<(String, String)>) -> Result<Self, ApiError> {
        let mut pairs: Vec<(String, String)> = Vec::with_capacity(given.len());
        for (k, v) in given {
            if pairs.iter().any(|(n, _)| *n == k) {
                return Err(ApiError::duplicate(&k));
            }
            pairs.push((k, v));
        }
        Ok(Self { pairs })
    }

    /// The raw value of `name` (`None` when absent; an empty value counts as absent).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .filter(|v| !v.is_empty())
    }

    /// Whether `name` was sent.
    pub fn has(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    /// The value of mandatory `name`.
    ///
    /// # Errors
    /// -1102 when absent or empty.
    pub fn required(&self, name: &str) -> Result<&str, ApiError> {
        self.get(name).ok_or_else(|| ApiError::mandatory(name))
    }

    /// `symbol`, checked for shape (the symbol table decides whether it exists).
    ///
    /// # Errors
    /// -1102 when absent, -1121 when it cannot be a symbol.
    pub fn symbol(&self) -> Result<Symbol, ApiError> {
        parse_symbol(self.required("symbol")?)
    }

    /// An unsigned integer parameter.
    ///
    /// # Errors
    /// -1100 when it is not digits (or too large for 64 bits).
    pub fn u64_opt(&self, name: &str) -> Result<Option<u64>, ApiError> {
        self.get(name)
            .map(|v| {
                if !v.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(ApiError::illegal_chars(name, "^[0-9]{1,20}$"));
                }
                v.parse()
                    .map_err(|_| ApiError::illegal_chars(name, "^[0-9]{1,20}$"))
            })
            .transpose()
    }

    /// A boolean parameter (`false` when absent). Case-insensitive, as Binance takes
    /// it: python-binance sends a Python `True` as `True`, ccxt and the official SDK
    /// send `true`.
    ///
    /// # Errors
    /// -1100 for anything but `true` or `false`.
    pub fn flag(&self, name: &str) -> Result<bool, ApiError> {
        match self.get(name) {
            None => Ok(false),
            Some(v) if v.eq_ignore_ascii_case("true") => Ok(true),
            Some(v) if v.eq_ignore_ascii_case("false") => Ok(false),
            Some(_) => Err(ApiError::illegal_chars(name, "^(true|false)$")),
        }
    }

    /// `limit` with a default and a maximum (Binance clamps nothing: above the
    /// maximum is an error).
    ///
    /// # Errors
    /// -1100 for non-digits, -1130 for 0 or above `max`.
    pub fn limit(&self, default: u64, max: u64) -> Result<u64, ApiError> {
        match self.u64_opt("limit")? {
            None => Ok(default),
            Some(0) => Err(ApiError::invalid(Invalid::Parameter)),
            Some(n) if n > max => Err(ApiError::invalid(Invalid::Parameter)),
            Some(n) => Ok(n),
        }
    }

    /// An order id parameter.
    ///
    /// # Errors
    /// -1100 for non-digits; an id that is not a snowflake is no order: -2013.
    pub fn order_id_opt(&self, name: &str) -> Result<Option<OrderId>, ApiError> {
        self.u64_opt(name)?
            .map(|n| {
                // 2^63 and above decode to no month (a backend error further on)
                domain::snowflake::decode(n).map_err(|_| ApiError::no_such_order())?;
                OrderId::new(n).map_err(|_| ApiError::no_such_order())
            })
            .transpose()
    }

    /// A price parameter.
    ///
    /// # Errors
    /// See [`parse_decimal`].
    pub fn price_opt(&self, name: &str) -> Result<Option<Price>, ApiError> {
        self.get(name)
            .map(|v| parse_decimal(name, v, "PRICE_FILTER"))
            .transpose()
    }

    /// A quantity parameter.
    ///
    /// # Errors
    /// See [`parse_decimal`].
    pub fn qty_opt(&self, name: &str) -> Result<Option<Qty>, ApiError> {
        self.get(name)
            .map(|v| parse_decimal(name, v, "LOT_SIZE"))
            .transpose()
    }

    /// An amount parameter (`quoteOrderQty`).
    ///
    /// # Errors
    /// See [`parse_decimal`]; zero or negative fails `NOTIONAL`.
    pub fn amount_opt(&self, name: &str) -> Result<Option<Amount>, ApiError> {
        self.get(name)
            .map(|v| {
                let a: Amount = parse_decimal(name, v, "NOTIONAL")?;
                if a.is_positive() {
                    Ok(a)
                } else {
                    Err(ApiError::filter("NOTIONAL"))
                }
            })
            .transpose()
    }

    /// Every name sent.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.pairs.iter().map(|(k, _)| k.as_str())
    }
}

/// A symbol's shape: uppercase letters and digits (what the symbol table can hold).
///
/// # Errors
/// -1121 for anything else (SQL-looking text, unicode, lowercase).
pub fn parse_symbol(s: &str) -> Result<Symbol, ApiError> {
    Symbol::new(s).map_err(|_| ApiError::invalid(Invalid::Symbol))
}

/// A decimal parameter: Binance's legal range first (so `1e-05`, `-1`, `0x10` or
/// 21 digits are -1100), then the exact value: more than 18 decimals is -1111, zero
/// or beyond DECIMAL(36,18) fails the given filter (-1013).
///
/// # Errors
/// As above.
pub fn parse_decimal<T: FromStr<Err = MoneyError>>(
    name: &str,
    v: &str,
    filter: &str,
) -> Result<T, ApiError> {
    if !legal_decimal(v) {
        return Err(ApiError::illegal_chars(name, DECIMAL_RANGE));
    }
    v.parse().map_err(|e| match e {
        MoneyError::TooManyFractionDigits => ApiError::precision(name),
        _ => ApiError::filter(filter),
    })
}

/// `^([0-9]{1,20})(\.[0-9]{1,20})?$`.
fn legal_decimal(v: &str) -> bool {
    let (int, frac) = match v.split_once('.') {
        Some((i, f)) => (i, Some(f)),
        None => (v, None),
    };
    let digits = |s: &str| (1..=20).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_digit());
    digits(int) && frac.is_none_or(digits)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_and_body_are_one_list_without_repeats() {
        let p = Params::parse("symbol=BTCUSDT&limit=5", b"side=BUY&price=1.5").expect("parse");
        assert_eq!(p.get("side"), Some("BUY"));
        assert_eq!(p.get("limit"), Some("5"));
        let e = Params::parse("symbol=A", b"symbol=B").expect_err("dup");
        assert_eq!(e.code, -1101);
        let p = Params::parse("x=a%20b&y=", b"").expect("parse");
        assert_eq!(p.get("x"), Some("a b"));
        assert_eq!(p.get("y"), None, "empty is absent");
        assert_eq!(p.required("y").expect_err("empty").code, -1102);
    }

    #[test]
    fn decimals_follow_binance_legal_range_then_exactness() {
        let ok: Qty = parse_decimal("quantity", "0.00100000", "LOT_SIZE").expect("ok");
        assert_eq!(ok.get().normalize().to_string(), "0.001");
        for bad in [
            "1e-05",
            "-1",
            "+1",
            "1.",
            ".5",
            "0x10",
            "1,5",
            "",
            "１",
            "123456789012345678901",
        ] {
            let e = parse_decimal::<Qty>("quantity", bad, "LOT_SIZE").expect_err(bad);
            assert_eq!(e.code, -1100, "{bad}");
        }
        let e = parse_decimal::<Qty>("quantity", "0.0000000000000000001", "LOT_SIZE")
            .expect_err("precision");
        assert_eq!(e.code, -1111);
        let e = parse_decimal::<Qty>("quantity", "0", "LOT_SIZE").expect_err("zero");
        assert_eq!(
            (e.code, e.msg.as_str()),
            (-1013, "Filter failure: LOT_SIZE")
        );
        let e = parse_decimal::<Price>("price", "99999999999999999999", "PRICE_FILTER")
            .expect_err("too large");
        assert_eq!(e.code, -1013);
    }

    #[test]
    fn symbols_are_checked_for_shape() {
        for bad in ["btcusdt", "BTC USDT", "BTC';--", "ＢＴＣ", "", "A%00"] {
            assert_eq!(parse_symbol(bad).expect_err(bad).code, -1121, "{bad}");
        }
        assert!(parse_symbol("BTCUSDT").is_ok());
    }

    #[test]
    fn flags_are_case_insensitive() {
        let p = Params::parse("a=true&b=True&c=FALSE&d=yes", b"").expect("parse");
        assert!(p.flag("a").expect("a"));
        assert!(p.flag("b").expect("python-binance's str(True)"));
        assert!(!p.flag("c").expect("c"));
        assert!(!p.flag("absent").expect("absent"));
        assert_eq!(p.flag("d").expect_err("d").code, -1100);
    }

    #[test]
    fn limits_and_ids() {
        let p = Params::parse("limit=0&orderId=12x", b"").expect("parse");
        assert_eq!(p.limit(100, 5000).expect_err("0").code, -1130);
        assert_eq!(p.order_id_opt("orderId").expect_err("x").code, -1100);
        let p = Params::parse("orderId=9223372036854775808", b"").expect("parse");
        assert_eq!(p.order_id_opt("orderId").expect_err("2^63").code, -2013);
        let p = Params::parse("limit=5001", b"").expect("parse");
        assert_eq!(p.limit(100, 5000).expect_err("max").code, -1130);
        let p = Params::parse("", b"").expect("parse");
        assert_eq!(p.limit(100, 5000).expect("default"), 100);
    }
}
