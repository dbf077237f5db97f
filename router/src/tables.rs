//! Table routing: `(symbol, order_id)` → `orders_{SYMBOL}_{YYYYMM}`.
//!
//! Invariants:
//! * a table name is built only from a whitelisted [`Symbol`] (charset `[A-Z0-9]{2,20}`)
//!   and a [`Month`]: raw input never reaches SQL text;
//! * months are UTC; an order id's month is the month of its snowflake timestamp, so
//!   one id maps to exactly one table (no fan-out);
//! * a range maps to every month table it touches, in order; a missing table is an
//!   error ([`RouterError::MissingTable`]), never silently skipped.

use std::collections::BTreeSet;
use std::fmt;

use chrono::{DateTime, Utc};
use domain::Symbol;
use serde::Serialize;

use crate::error::RouterError;
pub use domain::Month;

/// Longest range a single query may span (10 years of month tables).
pub const MAX_RANGE_MONTHS: u32 = 120;

/// The kind of a symbol/month table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub enum TableKind {
    /// `orders_{SYMBOL}_{YYYYMM}`.
    Orders,
    /// `trades_{SYMBOL}_{YYYYMM}`.
    Trades,
}

impl TableKind {
    /// Name prefix and template table.
    pub fn prefix(self) -> &'static str {
        match self {
            Self::Orders => "orders",
            Self::Trades => "trades",
        }
    }

    /// The template the month tables are created `LIKE`.
    pub fn template(self) -> &'static str {
        match self {
            Self::Orders => "orders_template",
            Self::Trades => "trades_template",
        }
    }
}

/// A validated symbol/month table name; only [`TableRouter`] makes one.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct TableName {
    name: String,
    kind: TableKind,
    month: Month,
}

impl TableName {
    /// The name, safe to splice into SQL text (charset `[a-z]+_[A-Z0-9]+_[0-9]{6}`).
    pub fn as_str(&self) -> &str {
        &self.name
    }

    /// The month this table holds.
    pub fn month(&self) -> Month {
        self.month
    }

    /// Orders or trades.
    pub fn kind(&self) -> TableKind {
        self.kind
    }
}

impl fmt::Display for TableName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}

/// Routes (symbol, id/time) to month tables, for whitelisted symbols only.
#[derive(Debug, Clone)]
pub struct TableRouter {
    symbols: BTreeSet<Symbol>,
}

impl TableRouter {
    /// A router over a whitelist.
    ///
    /// # Errors
    /// [`RouterError::InvalidSymbol`] if a whitelist entry is not a valid symbol.
    pub fn new<S: AsRef<str>>(whitelist: &[S]) -> Result<Self, RouterError> {
        let symbols = whitelist
            .iter()
            .map(|s| parse_symbol(s.as_ref()))
            .collect::<Result<_, _>>()?;
        Ok(Self { symbols })
    }

    /// The whitelisted symbols, sorted.
    pub fn symbols(&self) -> impl Iterator<Item = &Symbol> {
        self.symbols.iter()
    }

    /// Checks raw input against the charset and the whitelist.
    ///
    /// # Errors
    /// [`RouterError::InvalidSymbol`] for a malformed name,
    /// [`RouterError::UnknownSymbol`] for a well-formed one not in the whitelist.
    pub fn symbol(&self, raw: &str) -> Result<Symbol, RouterError> {
        let s = parse_symbol(raw)?;
        if self.symbols.contains(&s) {
            Ok(s)
        } else {
            Err(RouterError::UnknownSymbol(raw.to_owned()))
        }
    }

    /// The table of `kind` for `symbol` in `month`.
    ///
    /// # Errors
    /// [`RouterError::UnknownSymbol`] if the symbol is not whitelisted.
    pub fn table(
        &self,
        kind: TableKind,
        symbol: &Symbol,
        month: Month,
    ) -> Result<TableName, RouterError> {
        if !self.symbols.contains(symbol) {
            return Err(RouterError::UnknownSymbol(symbol.to_string()));
        }
        Ok(TableName {
            name: format!("{}_{}_{}", kind.prefix(), symbol.as_str(), month.yyyymm()),
            kind,
            month,
        })
    }

    /// The orders table holding `order_id` (its snowflake month).
    ///
    /// # Errors
    /// Unknown symbol, or an id that is not a snowflake.
    pub fn orders_table(
        &self,
        symbol: &Symbol,
        order_id: domain::OrderId,
    ) -> Result<TableName, RouterError> {
        self.table(TableKind::Orders, symbol, Month::of_id(order_id.get())?)
    }

    /// Every `kind` table of `symbol` touching `[from, to]`, oldest first.
    ///
    /// # Errors
    /// Unknown symbol, `from > to`, or a span over [`MAX_RANGE_MONTHS`].
    pub fn tables_in_range(
        &self,
        kind: TableKind,
        symbol: &Symbol,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<TableName>, RouterError> {
        if from > to {
            return Err(RouterError::BadRange(format!(
                "from {from} is after to {to}"
            )));
        }
        let (first, last) = (Month::of(from), Month::of(to));
        let mut out = Vec::new();
        let mut m = first;
        loop {
            if out.len() >= MAX_RANGE_MONTHS as usize {
                return Err(RouterError::BadRange(format!(
                    "{first}..{last} spans more than {MAX_RANGE_MONTHS} months"
                )));
            }
            out.push(self.table(kind, symbol, m)?);
            if m == last {
                return Ok(out);
            }
            m = m.next();
        }
    }
}

fn parse_symbol(raw: &str) -> Result<Symbol, RouterError> {
    Symbol::new(raw).map_err(|e| RouterError::InvalidSymbol {
        input: raw.to_owned(),
        reason: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snowflake;
    use chrono::TimeZone;

    fn router() -> TableRouter {
        TableRouter::new(&["BTCUSDT", "ETHUSDT"]).expect("router")
    }

    fn at(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32, ms: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, mo, d, h, mi, s)
            .single()
            .expect("time")
            + chrono::Duration::milliseconds(i64::from(ms))
    }

    fn id_at(t: DateTime<Utc>) -> domain::OrderId {
        let ms = u64::try_from(t.timestamp_millis()).expect("ms");
        domain::OrderId::new(snowflake::min_id_at(ms).expect("id") | 4095).expect("order id")
    }

    #[test]
    fn month_boundaries_are_utc() {
        let r = router();
        let btc = r.symbol("BTCUSDT").expect("sym");
        let last_ms_of_nov = at(2026, 11, 30, 23, 59, 59, 999);
        let first_ms_of_dec = at(2026, 12, 1, 0, 0, 0, 0);
        assert_eq!(
            r.orders_table(&btc, id_at(last_ms_of_nov))
                .expect("t")
                .as_str(),
            "orders_BTCUSDT_202611"
        );
        assert_eq!(
            r.orders_table(&btc, id_at(first_ms_of_dec))
                .expect("t")
                .as_str(),
            "orders_BTCUSDT_202612"
        );
        let new_year = at(2027, 1, 1, 0, 0, 0, 0);
        assert_eq!(
            r.orders_table(&btc, id_at(new_year)).expect("t").as_str(),
            "orders_BTCUSDT_202701"
        );
        assert_eq!(
            r.orders_table(&btc, id_at(new_year - chrono::Duration::milliseconds(1)))
                .expect("t")
                .as_str(),
            "orders_BTCUSDT_202612"
        );
    }

    #[test]
    fn ranges_cover_every_month_in_order() {
        let r = router();
        let eth = r.symbol("ETHUSDT").expect("sym");
        let names: Vec<String> = r
            .tables_in_range(
                TableKind::Trades,
                &eth,
                at(2026, 11, 30, 0, 0, 0, 0),
                at(2027, 2, 1, 0, 0, 0, 0),
            )
            .expect("range")
            .iter()
            .map(|t| t.to_string())
            .collect();
        assert_eq!(
            names,
            [
                "trades_ETHUSDT_202611",
                "trades_ETHUSDT_202612",
                "trades_ETHUSDT_202701",
                "trades_ETHUSDT_202702"
            ]
        );
        let one = r
            .tables_in_range(
                TableKind::Orders,
                &eth,
                at(2026, 11, 1, 0, 0, 0, 0),
                at(2026, 11, 30, 23, 0, 0, 0),
            )
            .expect("range");
        assert_eq!(one.len(), 1);
        assert!(r
            .tables_in_range(
                TableKind::Orders,
                &eth,
                at(2026, 12, 1, 0, 0, 0, 0),
                at(2026, 11, 1, 0, 0, 0, 0)
            )
            .is_err());
        assert!(r
            .tables_in_range(
                TableKind::Orders,
                &eth,
                at(2010, 1, 1, 0, 0, 0, 0),
                at(2026, 1, 1, 0, 0, 0, 0)
            )
            .is_err());
    }

    #[test]
    fn bad_symbols_never_become_table_names() {
        let r = router();
        for bad in [
            "BTC;DROP",
            "btcusdt",
            "BTCUSDTBTCUSDTBTCUSDT",
            "",
            "B",
            "BTC USDT",
            "BTC`",
            "ÄBCD",
        ] {
            assert!(
                matches!(r.symbol(bad), Err(RouterError::InvalidSymbol { .. })),
                "{bad:?} accepted"
            );
        }
        assert!(matches!(
            r.symbol("DOGEUSDT"),
            Err(RouterError::UnknownSymbol(_))
        ));
        let doge = domain::Symbol::new("DOGEUSDT").expect("valid charset");
        assert!(r.table(TableKind::Orders, &doge, Month::EPOCH).is_err());
        assert!(TableRouter::new(&["BTC;DROP TABLE users"]).is_err());
    }

    #[test]
    fn months_parse_and_step() {
        let m = Month::parse_yyyymm("202612").expect("m");
        assert_eq!(m.next().yyyymm(), "202701");
        assert_eq!(m.plus(13).yyyymm(), "202801");
        assert_eq!(m.first_day(), "2026-12-01");
        assert!(Month::parse_yyyymm("202613").is_err());
        assert!(Month::parse_yyyymm("20261").is_err());
        assert!(Month::parse_yyyymm("2026a1").is_err());
        assert_eq!(m.start(), at(2026, 12, 1, 0, 0, 0, 0));
    }

    proptest::proptest! {
        #[test]
        fn id_month_matches_time_month(ms in snowflake::EPOCH_MS..snowflake::EPOCH_MS + 40 * 365 * 86_400_000u64,
                                       low in 0u64..(1 << 22)) {
            let id = snowflake::min_id_at(ms).expect("id") | low;
            let t = Utc.timestamp_millis_opt(i64::try_from(ms).expect("ms")).single().expect("t");
            proptest::prop_assert_eq!(Month::of_id(id).expect("month"), Month::of(t));
        }
    }
}
