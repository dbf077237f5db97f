//! The matcher's integer units, [`Ticks`] and [`Lots`]: a price and a quantity on the
//! symbol's grid. Their own module so that the spec and the command/event types both
//! use them without depending on each other.

use serde::{Deserialize, Serialize};

/// A price in ticks of the symbol: `price / tick_size`. A newtype over `u64`, so a
/// price cannot be passed where a quantity is meant; it has no arithmetic of its own
/// (compare, or take the integer with [`Ticks::get`]). Serialized as the bare `u64`.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(transparent)]
#[repr(transparent)]
pub struct Ticks(pub u64);

impl Ticks {
    /// The integer number of ticks.
    #[inline]
    pub const fn get(self) -> u64 {
        self.0
    }
}

/// A quantity in lots (steps) of the symbol: `qty / step_size`. A newtype over `u64`,
/// so a quantity cannot be passed where a price is meant. Lots are added to (`+=`) and
/// subtracted from (`-`, `-=`) lots only, with `u64` semantics (overflow panics in
/// debug builds); a notional needs ticks and the spec ([`crate::SymbolSpec::notional_atoms`]).
/// Serialized as the bare `u64`.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(transparent)]
#[repr(transparent)]
pub struct Lots(pub u64);

impl Lots {
    /// No lots.
    pub const ZERO: Lots = Lots(0);

    /// The integer number of lots.
    #[inline]
    pub const fn get(self) -> u64 {
        self.0
    }

    /// `true` for zero lots.
    #[inline]
    pub const fn is_zero(self) -> bool {
        self.0 == 0
    }

    /// `self + rhs`, capped at `u64::MAX` lots.
    #[inline]
    pub const fn saturating_add(self, rhs: Lots) -> Lots {
        Lots(self.0.saturating_add(rhs.0))
    }
}

impl std::ops::Sub for Lots {
    type Output = Lots;
    #[inline]
    fn sub(self, rhs: Lots) -> Lots {
        Lots(self.0 - rhs.0)
    }
}

impl std::ops::AddAssign for Lots {
    #[inline]
    fn add_assign(&mut self, rhs: Lots) {
        self.0 += rhs.0;
    }
}

impl std::ops::SubAssign for Lots {
    #[inline]
    fn sub_assign(&mut self, rhs: Lots) {
        self.0 -= rhs.0;
    }
}
