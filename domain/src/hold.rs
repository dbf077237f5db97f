//! What an open order must hold frozen: the one definition, used by placement (what
//! to freeze) and by the audit (what an open order must still hold).
//!
//! * a limit-like buy (`LIMIT`, `LIMIT_MAKER`, `STOP_LOSS_LIMIT`, `TAKE_PROFIT_LIMIT`)
//!   holds `price × remaining quantity` of the quote asset (a fill below the limit
//!   gives the difference back, so this stays exact);
//! * any sell holds its remaining base quantity;
//! * a market-like buy holds what is left of its `quoteOrderQty`.
//!
//! Fees are charged in the asset received, so they are never held. An order without
//! the fields its rule needs (a limit without a price, a market buy without a quote
//! amount) has no defined hold: [`required_hold`] answers `None`.

use crate::{Amount, MoneyError, OrderType, Price, Side};

/// Which asset of the symbol an order holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeldAsset {
    /// The base asset (sells).
    Base,
    /// The quote asset (buys).
    Quote,
}

/// The asset an order of `side` holds.
#[must_use]
pub const fn held_asset(side: Side) -> HeldAsset {
    match side {
        Side::Buy => HeldAsset::Quote,
        Side::Sell => HeldAsset::Base,
    }
}

/// The fields of an order that decide its hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HoldShape {
    /// Buy or sell.
    pub side: Side,
    /// Its type.
    pub order_type: OrderType,
    /// Limit price.
    pub price: Option<Price>,
    /// Base quantity ordered.
    pub qty: Option<Amount>,
    /// Quote amount ordered (`quoteOrderQty`).
    pub quote_qty: Option<Amount>,
    /// Base quantity executed so far.
    pub filled_qty: Amount,
    /// Quote amount executed so far.
    pub filled_amount: Amount,
}

/// What the order must hold now, exactly; `None` when its shape has no defined hold.
///
/// # Errors
/// [`MoneyError`] when the exact amount leaves `DECIMAL(36,18)` (e.g. a product with
/// more than 18 fractional digits): no valid hold exists then.
pub fn required_hold(o: &HoldShape) -> Option<Result<Amount, MoneyError>> {
    let remaining = |q: Amount| q.checked_sub(o.filled_qty);
    match (o.order_type.requires_price(), o.side) {
        (true, Side::Buy) => {
            let (price, qty) = (o.price?, o.qty?);
            Some(remaining(qty).and_then(|r| r.checked_mul(price.get())))
        }
        (_, Side::Sell) => Some(remaining(o.qty?)),
        (false, Side::Buy) => Some(o.quote_qty?.checked_sub(o.filled_amount)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> Amount {
        s.parse().unwrap()
    }

    fn shape(side: Side, t: OrderType) -> HoldShape {
        HoldShape {
            side,
            order_type: t,
            price: Some("50000.5".parse().unwrap()),
            qty: Some(a("0.3")),
            quote_qty: None,
            filled_qty: a("0.1"),
            filled_amount: a("5000"),
        }
    }

    #[test]
    fn each_rule_on_the_remainder() {
        let buy = shape(Side::Buy, OrderType::Limit);
        assert_eq!(required_hold(&buy), Some(Ok(a("10000.1"))));
        assert_eq!(
            required_hold(&shape(Side::Buy, OrderType::StopLossLimit)),
            Some(Ok(a("10000.1")))
        );
        assert_eq!(
            required_hold(&shape(Side::Sell, OrderType::Limit)),
            Some(Ok(a("0.2")))
        );
        assert_eq!(
            required_hold(&shape(Side::Sell, OrderType::Market)),
            Some(Ok(a("0.2")))
        );
        let market_buy = HoldShape {
            quote_qty: Some(a("12000")),
            ..shape(Side::Buy, OrderType::Market)
        };
        assert_eq!(required_hold(&market_buy), Some(Ok(a("7000"))));
        // no defined hold
        assert_eq!(required_hold(&HoldShape { price: None, ..buy }), None);
        assert_eq!(required_hold(&shape(Side::Buy, OrderType::Market)), None);
        // finer than 18 places: no valid hold, never rounded
        let fine = HoldShape {
            price: Some("0.000000001".parse().unwrap()),
            qty: Some(a("0.0000000011")),
            filled_qty: a("0"),
            ..buy
        };
        assert!(matches!(required_hold(&fine), Some(Err(_))));
        assert_eq!(held_asset(Side::Buy), HeldAsset::Quote);
    }
}
