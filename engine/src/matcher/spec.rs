//! A symbol's trading rules and the exact conversion between decimals at the edge and
//! the integers the matcher works in.
//!
//! * price → ticks: `price / tick_size`, must be a whole number;
//! * quantity → lots: `qty / step_size`, must be a whole number;
//! * quote amounts are counted in quote atoms (`10^-quote_precision`), base amounts in
//!   base atoms (`10^-base_precision`). `tick_size * step_size` must be a whole number
//!   of quote atoms and `step_size` a whole number of base atoms, so every fill's
//!   notional and quantity are exact integers of atoms.
//!
//! Nothing here rounds: a value off the grid is an error.

use domain::{Amount, Asset, Decimal, Price, Qty, Symbol};
use serde::{Deserialize, Serialize};

use super::types::RejectReason;

/// `10^18`: decimals are compared on a grid of 10^-18 (the DECIMAL(36,18) grid).
const E18: i128 = 1_000_000_000_000_000_000;

/// Price in ticks of the symbol.
pub type Ticks = u64;
/// Quantity in lots (steps) of the symbol.
pub type Lots = u64;

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
            step_e18,
            base_atoms_per_lot,
            quote_atoms_per_tick_lot,
        })
    }

    /// Price → ticks, exact.
    ///
    /// # Errors
    /// [`RejectReason::PriceNotOnTick`] off the grid, [`RejectReason::TooLarge`] past `u64`.
    #[inline]
    pub fn ticks(&self, price: Price) -> Result<Ticks, RejectReason> {
        let v = e18(price.get()).ok_or(RejectReason::TooLarge)?;
        if v % self.tick_e18 != 0 {
            return Err(RejectReason::PriceNotOnTick);
        }
        u64::try_from(v / self.tick_e18).map_err(|_| RejectReason::TooLarge)
    }

    /// Quantity → lots, exact.
    ///
    /// # Errors
    /// [`RejectReason::QtyNotOnStep`] off the grid, [`RejectReason::TooLarge`] past `u64`.
    #[inline]
    pub fn lots(&self, qty: Qty) -> Result<Lots, RejectReason> {
        let v = e18(qty.get()).ok_or(RejectReason::TooLarge)?;
        if v % self.step_e18 != 0 {
            return Err(RejectReason::QtyNotOnStep);
        }
        u64::try_from(v / self.step_e18).map_err(|_| RejectReason::TooLarge)
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
        let v = self.tick_e18.checked_mul(i128::from(ticks))?;
        Price::new(Decimal::try_from_i128_with_scale(v, 18).ok()?.normalize()).ok()
    }

    /// Lots → quantity.
    pub fn qty(&self, lots: Lots) -> Option<Qty> {
        let v = self.step_e18.checked_mul(i128::from(lots))?;
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
        u128::from(lots) * self.base_atoms_per_lot
    }

    /// Quote atoms of `lots` at `ticks` (the fill's notional).
    #[inline]
    pub fn notional_atoms(&self, ticks: Ticks, lots: Lots) -> u128 {
        u128::from(ticks) * u128::from(lots) * self.quote_atoms_per_tick_lot
    }

    /// Quote atoms per lot at `ticks`.
    #[inline]
    pub fn lot_cost(&self, ticks: Ticks) -> u128 {
        u128::from(ticks) * self.quote_atoms_per_tick_lot
    }

    /// The fee on `atoms` received at `ppm`, rounded **up** to a whole atom (in the
    /// exchange's favour). The exact split (net = atoms - fee) is what the ledger gets.
    #[inline]
    pub fn fee(atoms: u128, ppm: u32) -> u128 {
        (atoms * u128::from(ppm)).div_ceil(1_000_000)
    }
}
