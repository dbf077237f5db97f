//! A symbol's trading rules and the exact conversion between decimals at the edge and
//! the integers the matcher works in.
//!
//! * price → [`Ticks`]: `price / tick_size`, must be a whole number;
//! * quantity → [`Lots`]: `qty / step_size`, must be a whole number;
//! * quote amounts are counted in quote atoms (`10^-quote_precision`), base amounts in
//!   base atoms (`10^-base_precision`). `tick_size * step_size` must be a whole number
//!   of quote atoms and `step_size` a whole number of base atoms, so every fill's
//!   notional and quantity are exact integers of atoms.
//!
//! Nothing here rounds: a value off the grid is an error.
//!
//! [`Ticks`] and [`Lots`] are distinct newtypes over `u64` (serialized as the bare
//! integer), so a price can never be used as a quantity or the other way round.

use domain::{Amount, Asset, Decimal, Price, Qty, Symbol};
use serde::{Deserialize, Serialize};

use super::types::RejectReason;
use super::units::{Lots, Ticks};

/// `10^18`: decimals are compared on a grid of 10^-18 (the DECIMAL(36,18) grid).
const E18: i128 = 1_000_000_000_000_000_000;

/// A symbol's trading rules. (De)serialized as its parameters; the derived fields are
/// recomputed and checked on the way in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "SpecParams", into = "SpecParams")]
pub struct SymbolSpec {
    /// The symbol, e.g. `BTCUSDT`.
    pub symbol: Symbol,
    /// Base asset (what is bought and sold).
    pub base: Asset,
    /// Quote asset (what prices are in).
    pub quote: Asset,
    /// Price grid.
    pub tick_size: Price,
    /// Quantity grid.
    pub step_size: Qty,
    /// Fraction digits of the base asset (fees in base are rounded to this).
    pub base_precision: u32,
    /// Fraction digits of the quote asset.
    pub quote_precision: u32,
    /// Maker fee in millionths (1000 = 0.1 %).
    pub maker_fee_ppm: u32,
    /// Taker fee in millionths.
    pub taker_fee_ppm: u32,
    /// How far (basis points) from the reference price a market order may trade.
    pub market_band_bps: u32,
    /// Derived: a tick in 10^-18 units.
    tick_e18: i128,
    /// Derived: `Some(k)` when the tick is exactly `10^-k` (the fast conversion path).
    tick_pow10: Option<u32>,
    /// Derived: `Some(k)` when the step is exactly `10^-k`.
    step_pow10: Option<u32>,
    /// Derived: a lot in 10^-18 units.
    step_e18: i128,
    /// Derived: base atoms per lot.
    base_atoms_per_lot: u128,
    /// Derived: quote atoms per (tick × lot).
    quote_atoms_per_tick_lot: u128,
}

/// Why a spec is invalid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    /// Grid and precisions do not line up.
    #[error("bad symbol spec: {0}")]
    Invalid(String),
}

/// The serialized form of [`SymbolSpec`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SpecParams {
    symbol: Symbol,
    base: Asset,
    quote: Asset,
    tick_size: Price,
    step_size: Qty,
    base_precision: u32,
    quote_precision: u32,
    maker_fee_ppm: u32,
    taker_fee_ppm: u32,
    market_band_bps: u32,
}

impl TryFrom<SpecParams> for SymbolSpec {
    type Error = SpecError;
    fn try_from(p: SpecParams) -> Result<Self, SpecError> {
        SymbolSpec::new(
            p.symbol,
            p.base,
            p.quote,
            p.tick_size,
            p.step_size,
            p.base_precision,
            p.quote_precision,
            p.maker_fee_ppm,
            p.taker_fee_ppm,
            p.market_band_bps,
        )
    }
}

impl From<SymbolSpec> for SpecParams {
    fn from(s: SymbolSpec) -> Self {
        SpecParams {
            symbol: s.symbol,
            base: s.base,
            quote: s.quote,
            tick_size: s.tick_size,
            step_size: s.step_size,
            base_precision: s.base_precision,
            quote_precision: s.quote_precision,
            maker_fee_ppm: s.maker_fee_ppm,
            taker_fee_ppm: s.taker_fee_ppm,
            market_band_bps: s.market_band_bps,
        }
    }
}

/// `10^0 ..= 10^19`.
const POW10: [u64; 20] = {
    let mut t = [1u64; 20];
    let mut i = 1;
    while i < 20 {
        t[i] = t[i - 1] * 10;
        i += 1;
    }
    t
};

/// `Some(k)` if `unit_e18` (a grid unit in 10^-18) is exactly `10^-k`.
fn pow10_of(unit_e18: i128) -> Option<u32> {
    (0..=18u32).find(|&k| 10i128.pow(18 - k) == unit_e18)
}

/// Why a decimal does not map onto a grid.
enum OffGrid {
    NotOnGrid,
    TooLarge,
}

/// `d / unit` for a positive `d`, exact or an error. Fast path in `u64` when the unit
/// is a power of ten and the mantissa fits; otherwise `i128` on the 10^-18 grid.
#[inline]
fn to_grid(d: Decimal, unit_e18: i128, unit_pow10: Option<u32>) -> Result<u64, OffGrid> {
    if let (Some(k), Ok(m)) = (unit_pow10, u64::try_from(d.mantissa())) {
        let s = d.scale();
        return if s <= k {
            m.checked_mul(POW10[(k - s) as usize])
                .ok_or(OffGrid::TooLarge)
        } else {
            let div = POW10[(s - k) as usize];
            if m % div == 0 {
                Ok(m / div)
            } else {
                Err(OffGrid::NotOnGrid)
            }
        };
    }
    let v = e18(d).ok_or(OffGrid::TooLarge)?;
    if v % unit_e18 != 0 {
        return Err(OffGrid::NotOnGrid);
    }
    u64::try_from(v / unit_e18).map_err(|_| OffGrid::TooLarge)
}

fn e18(d: Decimal) -> Option<i128> {
    let scale = d.scale();
    if scale > 18 {
        return None;
    }
    d.mantissa().checked_mul(10i128.checked_pow(18 - scale)?)
}

impl SymbolSpec {
    /// Builds and checks a spec.
    ///
    /// # Errors
    /// [`SpecError::Invalid`] if precisions exceed 18, fees exceed 100 %, or the grid
    /// does not divide into whole atoms.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        symbol: Symbol,
        base: Asset,
        quote: Asset,
        tick_size: Price,
        step_size: Qty,
        base_precision: u32,
        quote_precision: u32,
        maker_fee_ppm: u32,
        taker_fee_ppm: u32,
        market_band_bps: u32,
    ) -> Result<Self, SpecError> {
        let bad = |m: &str| Err(SpecError::Invalid(format!("{symbol}: {m}")));
        if base_precision > 18 || quote_precision > 18 {
            return bad("precision above 18");
        }
        if maker_fee_ppm > 1_000_000 || taker_fee_ppm > 1_000_000 {
            return bad("fee above 100 %");
        }
        if market_band_bps == 0 || market_band_bps >= 10_000 {
            return bad("market band must be 1..10000 bps");
        }
        let (Some(tick_e18), Some(step_e18)) = (e18(tick_size.get()), e18(step_size.get())) else {
            return bad("tick or step off the 10^-18 grid");
        };
        let base_atom = 10i128.pow(18 - base_precision);
        let quote_atom = 10i128.pow(18 - quote_precision);
        if step_e18 % base_atom != 0 {
            return bad("step size is finer than the base precision");
        }
        // tick*step in 10^-36 units; one quote atom is quote_atom * 10^18 of those
        let Some(tick_lot_e36) = tick_e18.checked_mul(step_e18) else {
            return bad("tick x step overflows");
        };
        let Some(quote_atom_e36) = quote_atom.checked_mul(E18) else {
            return bad("quote precision overflows");
        };
        if tick_lot_e36 % quote_atom_e36 != 0 {
            return bad("tick x step is finer than the quote precision");
        }
        let base_atoms_per_lot = u128::try_from(step_e18 / base_atom).unwrap_or(0);
        let quote_atoms_per_tick_lot = u128::try_from(tick_lot_e36 / quote_atom_e36).unwrap_or(0);
        Ok(Self {
            symbol,
            base,
            quote,
            tick_size,
            step_size,
            base_precision,
            quote_precision,
            maker_fee_ppm,
            taker_fee_ppm,
            market_band_bps,
            tick_e18,
            tick_pow10: pow10_of(tick_e18),
            step_pow10: pow10_of(step_e18),
            step_e18,
            base_atoms_per_lot,
            quote_atoms_per_tick_lot,
        })
    }

    /// Whether `other` counts prices, quantities and atoms exactly as `self` does (same
    /// symbol, assets, tick, step and precisions): events matched under one settle
    /// identically under the other. Fees and the market band may differ.
    pub fn same_grid(&self, other: &SymbolSpec) -> bool {
        self.symbol == other.symbol
            && self.base == other.base
            && self.quote == other.quote
            && self.tick_e18 == other.tick_e18
            && self.step_e18 == other.step_e18
            && self.base_precision == other.base_precision
            && self.quote_precision == other.quote_precision
    }

    /// The rules that differ from `other`, as `field old → new` (for logs and errors).
    pub fn changes(&self, other: &SymbolSpec) -> Vec<String> {
        let mut v = Vec::new();
        let mut diff = |name: &str, a: String, b: String| {
            if a != b {
                v.push(format!("{name} {a} → {b}"));
            }
        };
        diff("base", self.base.to_string(), other.base.to_string());
        diff("quote", self.quote.to_string(), other.quote.to_string());
        diff(
            "tick_size",
            self.tick_size.get().normalize().to_string(),
            other.tick_size.get().normalize().to_string(),
        );
        diff(
            "step_size",
            self.step_size.get().normalize().to_string(),
            other.step_size.get().normalize().to_string(),
        );
        diff(
            "base_precision",
            self.base_precision.to_string(),
            other.base_precision.to_string(),
        );
        diff(
            "quote_precision",
            self.quote_precision.to_string(),
            other.quote_precision.to_string(),
        );
        diff(
            "maker_fee_ppm",
            self.maker_fee_ppm.to_string(),
            other.maker_fee_ppm.to_string(),
        );
        diff(
            "taker_fee_ppm",
            self.taker_fee_ppm.to_string(),
            other.taker_fee_ppm.to_string(),
        );
        diff(
            "market_band_bps",
            self.market_band_bps.to_string(),
            other.market_band_bps.to_string(),
        );
        v
    }

    /// Price → ticks, exact.
    ///
    /// # Errors
    /// [`RejectReason::PriceNotOnTick`] off the grid, [`RejectReason::TooLarge`] past `u64`.
    #[inline]
    pub fn ticks(&self, price: Price) -> Result<Ticks, RejectReason> {
        to_grid(price.get(), self.tick_e18, self.tick_pow10)
            .map(Ticks)
            .map_err(|e| match e {
                OffGrid::NotOnGrid => RejectReason::PriceNotOnTick,
                OffGrid::TooLarge => RejectReason::TooLarge,
            })
    }

    /// Quantity → lots, exact.
    ///
    /// # Errors
    /// [`RejectReason::QtyNotOnStep`] off the grid, [`RejectReason::TooLarge`] past `u64`.
    #[inline]
    pub fn lots(&self, qty: Qty) -> Result<Lots, RejectReason> {
        to_grid(qty.get(), self.step_e18, self.step_pow10)
            .map(Lots)
            .map_err(|e| match e {
                OffGrid::NotOnGrid => RejectReason::QtyNotOnStep,
                OffGrid::TooLarge => RejectReason::TooLarge,
            })
    }

    /// A quote amount → quote atoms, exact.
    ///
    /// # Errors
    /// [`RejectReason::AmountNotOnPrecision`] finer than the quote precision;
    /// [`RejectReason::InvalidQuantity`] if not positive.
    pub fn quote_atoms(&self, amount: Amount) -> Result<u128, RejectReason> {
        if !amount.is_positive() {
            return Err(RejectReason::InvalidQuantity);
        }
        let v = e18(amount.get()).ok_or(RejectReason::TooLarge)?;
        let atom = 10i128.pow(18 - self.quote_precision);
        if v % atom != 0 {
            return Err(RejectReason::AmountNotOnPrecision);
        }
        u128::try_from(v / atom).map_err(|_| RejectReason::TooLarge)
    }

    /// Ticks → price (exact; `None` only for 0 ticks or out of range).
    pub fn price(&self, ticks: Ticks) -> Option<Price> {
        let v = self.tick_e18.checked_mul(i128::from(ticks.get()))?;
        Price::new(Decimal::try_from_i128_with_scale(v, 18).ok()?.normalize()).ok()
    }

    /// Lots → quantity.
    pub fn qty(&self, lots: Lots) -> Option<Qty> {
        let v = self.step_e18.checked_mul(i128::from(lots.get()))?;
        Qty::new(Decimal::try_from_i128_with_scale(v, 18).ok()?.normalize()).ok()
    }

    /// Quote atoms → amount of the quote asset.
    pub fn quote_amount(&self, atoms: u128) -> Option<Amount> {
        Amount::new(
            Decimal::try_from_i128_with_scale(i128::try_from(atoms).ok()?, self.quote_precision)
                .ok()?,
        )
        .ok()
    }

    /// Base atoms → amount of the base asset.
    pub fn base_amount(&self, atoms: u128) -> Option<Amount> {
        Amount::new(
            Decimal::try_from_i128_with_scale(i128::try_from(atoms).ok()?, self.base_precision)
                .ok()?,
        )
        .ok()
    }

    /// Base atoms in `lots`.
    #[inline]
    pub fn base_atoms(&self, lots: Lots) -> u128 {
        u128::from(lots.get()) * self.base_atoms_per_lot
    }

    /// Quote atoms of `lots` at `ticks` (the fill's notional).
    #[inline]
    pub fn notional_atoms(&self, ticks: Ticks, lots: Lots) -> u128 {
        u128::from(ticks.get()) * u128::from(lots.get()) * self.quote_atoms_per_tick_lot
    }

    /// Quote atoms per lot at `ticks`.
    #[inline]
    pub fn lot_cost(&self, ticks: Ticks) -> u128 {
        u128::from(ticks.get()) * self.quote_atoms_per_tick_lot
    }

    /// The fee on `atoms` received at `ppm`, rounded **up** to a whole atom (in the
    /// exchange's favour). The exact split (net = atoms - fee) is what the ledger gets.
    ///
    /// Exact and overflow-free for every `atoms` and every `ppm` a spec accepts
    /// (≤ 1,000,000): with `atoms = q·10^6 + r`, the fee is `q·ppm + ⌈r·ppm / 10^6⌉`,
    /// and `q·ppm ≤ atoms`. (`atoms · ppm` itself wraps above 2^108 atoms, which an
    /// 18-decimal asset reaches at about 3·10^14 units.)
    #[inline]
    pub fn fee(atoms: u128, ppm: u32) -> u128 {
        debug_assert!(ppm <= 1_000_000, "a spec refuses fees above 100 %");
        // u64 when it fits (128-bit division is a slow library call)
        if let Some(p) = u64::try_from(atoms)
            .ok()
            .and_then(|a| a.checked_mul(u64::from(ppm)))
        {
            return u128::from(p.div_ceil(1_000_000));
        }
        let ppm = u128::from(ppm.min(1_000_000));
        let (q, r) = (atoms / 1_000_000, atoms % 1_000_000);
        q * ppm + (r * ppm).div_ceil(1_000_000)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fees_on_huge_18_decimal_amounts_do_not_wrap() {
        // 10^18 units of an 18-decimal asset: 10^36 atoms (atoms × ppm would wrap)
        let atoms: u128 = 10u128.pow(36);
        assert_eq!(SymbolSpec::fee(atoms, 1_000), 10u128.pow(33));
        assert_eq!(
            SymbolSpec::fee(atoms + 1, 1_000),
            10u128.pow(33) + 1,
            "rounded up"
        );
        assert_eq!(
            SymbolSpec::fee(u128::MAX, 1_000_000),
            u128::MAX,
            "100 % of everything"
        );
        assert_eq!(SymbolSpec::fee(u128::MAX, 0), 0);
        // the u64 path and the wide path agree where both apply
        for (a, p) in [
            (999_999u128, 1u32),
            (12_345_678_901, 2_500),
            (u128::from(u64::MAX), 7),
        ] {
            let wide = (a * u128::from(p)).div_ceil(1_000_000);
            assert_eq!(SymbolSpec::fee(a, p), wide, "{a} {p}");
        }
    }

    fn spec(tick: &str, step: &str) -> SymbolSpec {
        SymbolSpec::new(
            Symbol::new("XY").expect("s"),
            Asset::new("XX").expect("a"),
            Asset::new("YY").expect("a"),
            tick.parse().expect("tick"),
            step.parse().expect("step"),
            18,
            18,
            0,
            0,
            100,
        )
        .expect("spec")
    }

    proptest::proptest! {
        /// The u64 fast path and the i128 path agree on every input, on and off grid.
        #[test]
        fn fast_and_general_grid_conversion_agree(m in 1u64..u64::MAX, scale in 0u32..=18, k in 0u32..=18) {
            let d = Decimal::from_i128_with_scale(i128::from(m), scale);
            let unit = 10i128.pow(18 - k);
            let fast = to_grid(d, unit, Some(k));
            let slow = to_grid(d, unit, None);
            match (fast, slow) {
                (Ok(a), Ok(b)) => proptest::prop_assert_eq!(a, b),
                (Err(OffGrid::NotOnGrid), Err(OffGrid::NotOnGrid)) | (Err(OffGrid::TooLarge), Err(OffGrid::TooLarge)) => {}
                (Err(OffGrid::TooLarge), Err(OffGrid::NotOnGrid)) | (Err(OffGrid::NotOnGrid), Err(OffGrid::TooLarge)) => {
                    proptest::prop_assert!(false, "different errors for {}", d);
                }
                (a, b) => proptest::prop_assert!(false, "{} -> {:?} vs {:?}", d, a.is_ok(), b.is_ok()),
            }
        }
    }

    /// `serde(transparent)`: the newtypes encode exactly as the bare `u64`, so snapshots
    /// and topic frames are unchanged by them.
    #[test]
    fn ticks_and_lots_encode_as_bare_integers() {
        for v in [0u64, 1, 127, 128, 300, u64::MAX] {
            let bare = postcard::to_stdvec(&v).expect("u64");
            assert_eq!(postcard::to_stdvec(&Ticks(v)).expect("ticks"), bare);
            assert_eq!(postcard::to_stdvec(&Lots(v)).expect("lots"), bare);
            assert_eq!(postcard::from_bytes::<Ticks>(&bare).expect("t"), Ticks(v));
            assert_eq!(postcard::from_bytes::<Lots>(&bare).expect("l"), Lots(v));
        }
    }

    #[test]
    fn non_decimal_ticks_use_the_general_path() {
        let s = spec("0.05", "0.5");
        assert_eq!(s.ticks("1.15".parse().expect("p")), Ok(Ticks(23)));
        assert_eq!(
            s.ticks("1.12".parse().expect("p")),
            Err(RejectReason::PriceNotOnTick)
        );
        assert_eq!(s.lots("2".parse().expect("q")), Ok(Lots(4)));
        assert_eq!(
            s.lots("0.25".parse().expect("q")),
            Err(RejectReason::QtyNotOnStep)
        );
        let s = spec("0.01", "0.001");
        assert_eq!(s.ticks("123.45".parse().expect("p")), Ok(Ticks(12_345)));
        assert_eq!(s.ticks("123.4500".parse().expect("p")), Ok(Ticks(12_345)));
        assert_eq!(
            s.ticks("123.451".parse().expect("p")),
            Err(RejectReason::PriceNotOnTick)
        );
        assert_eq!(
            s.ticks("999999999999999999".parse().expect("p")),
            Err(RejectReason::TooLarge)
        );
    }
}
