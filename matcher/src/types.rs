//! Commands into the matcher and events out of it.
//!
//! Commands carry the Binance-shaped request (decimals, optional fields); the matcher
//! validates and converts them exactly. Events carry integers ([`Ticks`], [`Lots`],
//! atoms as `u128`) so the hot path never formats decimals; [`super::SymbolSpec`] turns them back into
//! exact decimals at the edge.

use domain::{Amount, OrderId, OrderType, Price, Qty, Side, TimeInForce, UserId};
use serde::{Deserialize, Serialize};

use super::units::{Lots, Ticks};

/// Self-trade prevention (Binance `selfTradePreventionMode`), taken from the taker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum StpMode {
    /// Users may trade with themselves.
    #[default]
    None,
    /// The incoming order's remainder expires.
    ExpireTaker,
    /// The resting order is cancelled; the taker goes on matching.
    ExpireMaker,
    /// Both.
    ExpireBoth,
}

/// A new order as a client sends it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewOrder {
    /// Snowflake id assigned by the gateway.
    pub order_id: OrderId,
    /// Owner.
    pub user_id: UserId,
    /// Buy or sell.
    pub side: Side,
    /// LIMIT, MARKET, STOP_LOSS(_LIMIT), TAKE_PROFIT(_LIMIT), LIMIT_MAKER.
    pub order_type: OrderType,
    /// For LIMIT-like orders (ignored by market orders).
    pub tif: TimeInForce,
    /// Limit price (LIMIT, LIMIT_MAKER, *_LIMIT).
    pub price: Option<Price>,
    /// Base quantity.
    pub qty: Option<Qty>,
    /// Quote amount (`quoteOrderQty`), MARKET / STOP_LOSS / TAKE_PROFIT only.
    pub quote_qty: Option<Amount>,
    /// Trigger price of stop orders.
    pub stop_price: Option<Price>,
    /// Self-trade prevention.
    pub stp: StpMode,
}

/// Matcher input.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// Place an order.
    Place(NewOrder),
    /// Cancel an open order (resting or pending stop) of `user_id`.
    Cancel {
        /// Order to cancel.
        order_id: OrderId,
        /// Must be the owner.
        user_id: UserId,
    },
    /// Lower an open order's remaining quantity, keeping its priority.
    Amend {
        /// Order to amend.
        order_id: OrderId,
        /// Must be the owner.
        user_id: UserId,
        /// New remaining quantity: positive and below the current remaining.
        new_qty: Qty,
    },
    /// Cancel one order and place another (Binance cancelReplace, STOP_ON_FAILURE):
    /// if the cancel fails the new order is rejected.
    CancelReplace {
        /// Order to cancel.
        cancel_order_id: OrderId,
        /// Replacement (same user).
        new: NewOrder,
    },
    /// Re-run stop triggers against the last price (after a restore, say).
    TriggerCheck,
}

/// Why an order or request was refused. Nothing in the book changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RejectReason {
    /// Quantity missing, zero or negative.
    InvalidQuantity,
    /// Price missing for an order type that needs one.
    MissingPrice,
    /// Stop price missing for a stop order.
    MissingStopPrice,
    /// Both or neither of quantity and quote quantity given, or quote qty where not allowed.
    BadQuantityFields,
    /// Price is not a multiple of the tick size.
    PriceNotOnTick,
    /// Quantity is not a multiple of the step size.
    QtyNotOnStep,
    /// Quote amount finer than the quote asset's precision.
    AmountNotOnPrecision,
    /// A value too large for the matcher's integers.
    TooLarge,
    /// The order id was seen before (a redelivery; settlers ignore this reject).
    DuplicateOrderId,
    /// Cancel/amend of an order that is not open or not the user's.
    UnknownOrder,
    /// LIMIT_MAKER that would take liquidity.
    WouldCross,
    /// A stop whose trigger condition already holds.
    WouldTriggerImmediately,
    /// Amend to a quantity not below the current remaining.
    AmendNotLower,
}

/// Why an order left the book without filling completely, not at the user's request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ExpireReason {
    /// IOC remainder.
    Ioc,
    /// FOK that could not fill completely (nothing traded).
    Fok,
    /// Market order found no (more) liquidity.
    NoLiquidity,
    /// Market order reached the price band.
    PriceBand,
    /// Self-trade prevention expired it.
    Stp,
    /// Market-by-quote: what is left cannot buy one lot.
    QuoteExhausted,
}

/// Why an order was cancelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum CancelReason {
    /// The user asked.
    User,
    /// Self-trade prevention cancelled this resting order.
    Stp,
    /// Replaced by cancelReplace.
    Replaced,
}

/// One fill. The taker's and maker's fees are in the asset each receives (buyer: base
/// atoms, seller: quote atoms), rounded up to a whole atom.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Trade {
    /// Per-symbol trade sequence.
    pub trade_id: u64,
    /// Price in ticks (the maker's price).
    pub price: Ticks,
    /// Quantity in lots.
    pub qty: Lots,
    /// `price × qty` in quote atoms.
    pub quote_atoms: u128,
    /// The taker's side.
    pub taker_side: Side,
    /// Taker order.
    pub taker_order: OrderId,
    /// Taker user.
    pub taker_user: UserId,
    /// Maker order.
    pub maker_order: OrderId,
    /// Maker user.
    pub maker_user: UserId,
    /// Taker's fee in the atoms of the asset the taker receives.
    pub taker_fee: u128,
    /// Maker's fee in the atoms of the asset the maker receives.
    pub maker_fee: u128,
    /// The maker order is now completely filled.
    pub maker_filled: bool,
}

/// Matcher output. `seq` is the per-symbol event sequence: consecutive, from 1.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Event {
    /// The order is valid and entered the matcher (a stop order: waits for its trigger).
    Accepted {
        /// Event sequence.
        seq: u64,
        /// Order.
        order_id: OrderId,
        /// Owner.
        user_id: UserId,
    },
    /// Refused; nothing changed.
    Rejected {
        /// Event sequence.
        seq: u64,
        /// Order (or the order a cancel/amend named).
        order_id: OrderId,
        /// Who asked.
        user_id: UserId,
        /// Why.
        reason: RejectReason,
    },
    /// A stop order's trigger fired; it now matches as a market or limit order.
    Triggered {
        /// Event sequence.
        seq: u64,
        /// Order.
        order_id: OrderId,
        /// Owner.
        user_id: UserId,
    },
    /// A fill.
    Trade {
        /// Event sequence.
        seq: u64,
        /// The fill.
        trade: Trade,
    },
    /// Remaining quantity removed at the user's request or by STP/replace.
    Cancelled {
        /// Event sequence.
        seq: u64,
        /// Order.
        order_id: OrderId,
        /// Owner.
        user_id: UserId,
        /// Lots that were still open.
        remaining: Lots,
        /// Why.
        reason: CancelReason,
    },
    /// The rest of an order ended without trading (IOC, FOK, market limits, STP).
    Expired {
        /// Event sequence.
        seq: u64,
        /// Order.
        order_id: OrderId,
        /// Owner.
        user_id: UserId,
        /// Lots not filled (0 for market-by-quote, see `remaining_quote`).
        remaining: Lots,
        /// Quote atoms not spent (market-by-quote only).
        remaining_quote: u128,
        /// Why.
        reason: ExpireReason,
    },
    /// Remaining quantity lowered, priority kept.
    Amended {
        /// Event sequence.
        seq: u64,
        /// Order.
        order_id: OrderId,
        /// Owner.
        user_id: UserId,
        /// New remaining lots.
        remaining: Lots,
        /// Lots removed.
        reduced_by: Lots,
    },
    /// The total resting quantity at a price level changed (0 = level gone).
    BookDelta {
        /// Event sequence.
        seq: u64,
        /// Side of the level.
        side: Side,
        /// Level price.
        price: Ticks,
        /// Total lots now resting there.
        qty: Lots,
    },
}

impl Event {
    /// The event's sequence number.
    pub fn seq(&self) -> u64 {
        match self {
            Event::Accepted { seq, .. }
            | Event::Rejected { seq, .. }
            | Event::Triggered { seq, .. }
            | Event::Trade { seq, .. }
            | Event::Cancelled { seq, .. }
            | Event::Expired { seq, .. }
            | Event::Amended { seq, .. }
            | Event::BookDelta { seq, .. } => *seq,
        }
    }
}
