//! One adapter per engine. Each converts the neutral stream to the engine's native
//! commands up front (not timed) and applies one native command per call.
//!
//! * **ours** (`matcher`): native commands carry decimals (`Price`, `Qty`); the
//!   exact decimal → ticks/lots conversion is inside `Matcher::apply` and so is timed,
//!   as are the events it appends (fees, book deltas, ...). STP mode NONE.
//! * **matchcore** 0.4: integer prices/quantities, no users, no STP. Order ids are the
//!   sequence number of the submitting command (its rule), so cancels are converted to
//!   name the submit's position in the stream. Commands carry sequence = position and
//!   timestamp = position.
//! * **orderbook-rs** 0.15: integer prices (`u128`) and quantities, `OrderBook<()>` built
//!   with `OrderBook::new` (its default: wall-clock timestamps, no listeners, no fees,
//!   STP off). Users are passed (`Hash32` from the user id) so its per-user index is
//!   maintained like our user bookkeeping; its cancel takes no user (no ownership check).

use std::collections::HashMap;
use std::hint::black_box;

use super::workload::{Cmd, Side};

/// What one command did, for the untimed cross-check pass.
#[derive(Debug, Clone, Copy, Default)]
pub struct Outcome {
    /// Lots this command traded as the taker.
    pub filled: u64,
    /// The engine refused the command (error / reject / cancel of a missing order).
    pub rejected: bool,
}

/// A matching engine under test.
pub trait Adapter {
    /// Name in the output.
    const NAME: &'static str;
    /// Pre-converted command.
    type Native;
    /// Engine state (plus any reusable buffers).
    type Engine;
    /// Converts the neutral stream (not timed).
    fn convert(cmds: &[Cmd]) -> Vec<Self::Native>;
    /// A fresh, empty engine for the benchmark symbol.
    fn fresh() -> Self::Engine;
    /// Applies one command (the timed operation).
    fn apply(engine: &mut Self::Engine, cmd: &Self::Native);
    /// Applies one command and reports what it did (untimed cross-check).
    fn apply_checked(engine: &mut Self::Engine, cmd: &Self::Native) -> Outcome;
}

// ---------------------------------------------------------------------------------
// ours

pub mod ours {
    use super::*;
    use domain::{Asset, Decimal, OrderId, OrderType, Price, Qty, Symbol, TimeInForce, UserId};
    use matcher::{Command, Event, Matcher, NewOrder, StpMode, SymbolSpec};

    /// `matcher::Matcher` plus the reused event buffer.
    #[derive(Debug)]
    pub struct Ours {
        pub m: Matcher,
        pub out: Vec<Event>,
        /// Events produced so far (counted, then the buffer is cleared).
        pub events: u64,
    }

    impl Ours {
        pub fn from_matcher(m: Matcher) -> Self {
            Self {
                m,
                out: Vec::with_capacity(256),
                events: 0,
            }
        }
    }

    /// BTCUSDT: tick 0.01, step 0.00001, precisions 8/8, fees 0.1 %/0.1 %, band 5 %.
    pub fn spec() -> SymbolSpec {
        SymbolSpec::new(
            Symbol::new("BTCUSDT").expect("symbol"),
            Asset::new("BTC").expect("asset"),
            Asset::new("USDT").expect("asset"),
            "0.01".parse::<Price>().expect("tick"),
            "0.00001".parse::<Qty>().expect("step"),
            8,
            8,
            1000,
            1000,
            500,
        )
        .expect("spec")
    }

    fn side(s: Side) -> domain::Side {
        match s {
            Side::Buy => domain::Side::Buy,
            Side::Sell => domain::Side::Sell,
        }
    }

    fn price(ticks: u64) -> Price {
        Price::new(Decimal::new(i64::try_from(ticks).expect("ticks"), 2)).expect("price")
    }

    fn qty(lots: u64) -> Qty {
        Qty::new(Decimal::new(i64::try_from(lots).expect("lots"), 5)).expect("qty")
    }

    fn oid(id: u64) -> OrderId {
        OrderId::new(id).expect("order id")
    }

    fn uid(id: u64) -> UserId {
        UserId::new(id).expect("user id")
    }

    /// Converts one neutral command.
    pub fn native(c: &Cmd) -> Command {
        match *c {
            Cmd::Place {
                id,
                user,
                side: s,
                price_ticks,
                qty_lots,
                ioc,
            } => Command::Place(NewOrder {
                order_id: oid(id),
                user_id: uid(user),
                side: side(s),
                order_type: OrderType::Limit,
                tif: if ioc {
                    TimeInForce::Ioc
                } else {
                    TimeInForce::Gtc
                },
                price: Some(price(price_ticks)),
                qty: Some(qty(qty_lots)),
                quote_qty: None,
                stop_price: None,
                stp: StpMode::None,
            }),
            Cmd::Market {
                id,
                user,
                side: s,
                qty_lots,
            } => Command::Place(NewOrder {
                order_id: oid(id),
                user_id: uid(user),
                side: side(s),
                order_type: OrderType::Market,
                tif: TimeInForce::Gtc,
                price: None,
                qty: Some(qty(qty_lots)),
                quote_qty: None,
                stop_price: None,
                stp: StpMode::None,
            }),
            Cmd::Cancel { id, user } => Command::Cancel {
                order_id: oid(id),
                user_id: uid(user),
            },
        }
    }

    /// Marker type for [`Adapter`].
    #[derive(Debug)]
    pub struct OursAdapter;

    impl Adapter for OursAdapter {
        const NAME: &'static str = "ours (matcher)";
        type Native = Command;
        type Engine = Ours;

        fn convert(cmds: &[Cmd]) -> Vec<Command> {
            cmds.iter().map(native).collect()
        }

        fn fresh() -> Ours {
            // Diagnostic knob: MATCHER_BENCH_DEDUP_WINDOW overrides the duplicate-id window.
            match std::env::var("MATCHER_BENCH_DEDUP_WINDOW")
                .ok()
                .and_then(|v| v.parse().ok())
            {
                Some(w) => Ours::from_matcher(Matcher::with_dedup_window(spec(), w)),
                None => Ours::from_matcher(Matcher::new(spec())),
            }
        }

        #[inline]
        fn apply(e: &mut Ours, cmd: &Command) {
            e.m.apply(cmd, &mut e.out);
            e.events += black_box(e.out.len()) as u64;
            e.out.clear();
        }

        fn apply_checked(e: &mut Ours, cmd: &Command) -> Outcome {
            e.m.apply(cmd, &mut e.out);
            let mut o = Outcome::default();
            let taker = match cmd {
                Command::Place(n) => Some(n.order_id),
                _ => None,
            };
            for ev in &e.out {
                match ev {
                    Event::Trade { trade, .. } if Some(trade.taker_order) == taker => {
                        o.filled += trade.qty.get();
                    }
                    Event::Rejected { .. } => o.rejected = true,
                    _ => {}
                }
            }
            e.events += e.out.len() as u64;
            e.out.clear();
            o
        }
    }
}

// ---------------------------------------------------------------------------------
// matchcore

pub mod matchcore_adapter {
    use super::*;
    use matchcore as mc;

    /// Marker type for [`Adapter`].
    #[derive(Debug)]
    pub struct MatchcoreAdapter;

    fn side(s: Side) -> mc::Side {
        match s {
            Side::Buy => mc::Side::Buy,
            Side::Sell => mc::Side::Sell,
        }
    }

    impl Adapter for MatchcoreAdapter {
        const NAME: &'static str = "matchcore 0.4.0";
        type Native = mc::Command;
        type Engine = mc::OrderBook;

        fn convert(cmds: &[Cmd]) -> Vec<mc::Command> {
            // matchcore names an order by the sequence number of its submit command.
            let mut seq_of: HashMap<u64, u64> = HashMap::with_capacity(cmds.len());
            cmds.iter()
                .enumerate()
                .map(|(i, c)| {
                    let seq = i as u64;
                    let kind = match *c {
                        Cmd::Place {
                            id,
                            side: s,
                            price_ticks,
                            qty_lots,
                            ioc,
                            ..
                        } => {
                            seq_of.insert(id, seq);
                            mc::CommandKind::Submit(mc::SubmitCmd {
                                order: mc::NewOrder::Limit(mc::LimitOrder::new(
                                    mc::Price(price_ticks),
                                    mc::QuantityPolicy::Standard {
                                        quantity: mc::Quantity(qty_lots),
                                    },
                                    mc::OrderFlags::new(
                                        side(s),
                                        false,
                                        if ioc {
                                            mc::TimeInForce::Ioc
                                        } else {
                                            mc::TimeInForce::Gtc
                                        },
                                    ),
                                )),
                            })
                        }
                        Cmd::Market {
                            id,
                            side: s,
                            qty_lots,
                            ..
                        } => {
                            seq_of.insert(id, seq);
                            mc::CommandKind::Submit(mc::SubmitCmd {
                                order: mc::NewOrder::Market(mc::MarketOrder::new(
                                    mc::Quantity(qty_lots),
                                    side(s),
                                    false,
                                )),
                            })
                        }
                        Cmd::Cancel { id, .. } => mc::CommandKind::Cancel(mc::CancelCmd {
                            order_id: mc::OrderId(seq_of[&id]),
                            order_kind: mc::OrderKind::Limit,
                        }),
                    };
                    mc::Command {
                        meta: mc::CommandMeta {
                            sequence_number: mc::SequenceNumber(seq),
                            timestamp: mc::Timestamp(seq),
                        },
                        kind,
                    }
                })
                .collect()
        }

        fn fresh() -> mc::OrderBook {
            mc::OrderBook::new("BTCUSDT")
        }

        #[inline]
        fn apply(e: &mut mc::OrderBook, cmd: &mc::Command) {
            black_box(e.execute(cmd));
        }

        fn apply_checked(e: &mut mc::OrderBook, cmd: &mc::Command) -> Outcome {
            match e.execute(cmd) {
                mc::CommandOutcome::Applied(mc::CommandReport::Submit(fx)) => Outcome {
                    filled: fx
                        .target_order()
                        .match_result()
                        .map_or(0, |m| m.executed_quantity().0),
                    rejected: false,
                },
                mc::CommandOutcome::Applied(_) => Outcome::default(),
                mc::CommandOutcome::Rejected(_) => Outcome {
                    filled: 0,
                    rejected: true,
                },
            }
        }
    }
}

// ---------------------------------------------------------------------------------
// orderbook-rs

pub mod orderbook_rs_adapter {
    use super::*;
    use orderbook_rs::{Id, OrderBook, TimeInForce};
    use pricelevel::Hash32;

    /// Native command: the arguments of the orderbook-rs call.
    #[derive(Debug, Clone)]
    pub enum ObCmd {
        Limit {
            id: Id,
            price: u128,
            qty: u64,
            side: orderbook_rs::Side,
            tif: TimeInForce,
            user: Hash32,
        },
        Market {
            id: Id,
            qty: u64,
            side: orderbook_rs::Side,
            user: Hash32,
        },
        Cancel {
            id: Id,
        },
    }

    fn side(s: Side) -> orderbook_rs::Side {
        match s {
            Side::Buy => orderbook_rs::Side::Buy,
            Side::Sell => orderbook_rs::Side::Sell,
        }
    }

    fn user(u: u64) -> Hash32 {
        let mut b = [0u8; 32];
        b[..8].copy_from_slice(&u.to_be_bytes());
        Hash32::new(b)
    }

    /// Marker type for [`Adapter`].
    #[derive(Debug)]
    pub struct OrderbookRsAdapter;

    impl Adapter for OrderbookRsAdapter {
        const NAME: &'static str = "orderbook-rs 0.15.3";
        type Native = ObCmd;
        type Engine = OrderBook<()>;

        fn convert(cmds: &[Cmd]) -> Vec<ObCmd> {
            cmds.iter()
                .map(|c| match *c {
                    Cmd::Place {
                        id,
                        user: u,
                        side: s,
                        price_ticks,
                        qty_lots,
                        ioc,
                    } => ObCmd::Limit {
                        id: Id::sequential(id),
                        price: u128::from(price_ticks),
                        qty: qty_lots,
                        side: side(s),
                        tif: if ioc {
                            TimeInForce::Ioc
                        } else {
                            TimeInForce::Gtc
                        },
                        user: user(u),
                    },
                    Cmd::Market {
                        id,
                        user: u,
                        side: s,
                        qty_lots,
                    } => ObCmd::Market {
                        id: Id::sequential(id),
                        qty: qty_lots,
                        side: side(s),
                        user: user(u),
                    },
                    Cmd::Cancel { id, .. } => ObCmd::Cancel {
                        id: Id::sequential(id),
                    },
                })
                .collect()
        }

        fn fresh() -> OrderBook<()> {
            OrderBook::<()>::new("BTCUSDT")
        }

        #[inline]
        fn apply(e: &mut OrderBook<()>, cmd: &ObCmd) {
            match *cmd {
                ObCmd::Limit {
                    id,
                    price,
                    qty,
                    side,
                    tif,
                    user,
                } => {
                    let _ = black_box(
                        e.add_limit_order_with_user(id, price, qty, side, tif, user, None),
                    );
                }
                ObCmd::Market {
                    id,
                    qty,
                    side,
                    user,
                } => {
                    let _ = black_box(e.submit_market_order_with_user(id, qty, side, user));
                }
                ObCmd::Cancel { id } => {
                    let _ = black_box(e.cancel_order(id));
                }
            }
        }

        fn apply_checked(e: &mut OrderBook<()>, cmd: &ObCmd) -> Outcome {
            let qty_of =
                |m: &pricelevel::MatchResult| m.executed_quantity().map_or(0, |q| q.as_u64());
            match *cmd {
                ObCmd::Limit {
                    id,
                    price,
                    qty,
                    side,
                    tif,
                    user,
                } => {
                    match e
                        .add_limit_order_with_user_and_result(id, price, qty, side, tif, user, None)
                    {
                        Ok((_, tr)) => Outcome {
                            filled: tr.map_or(0, |t| qty_of(&t.match_result)),
                            rejected: false,
                        },
                        Err(_) => Outcome {
                            filled: 0,
                            rejected: true,
                        },
                    }
                }
                ObCmd::Market {
                    id,
                    qty,
                    side,
                    user,
                } => match e.submit_market_order_with_user(id, qty, side, user) {
                    Ok(m) => Outcome {
                        filled: qty_of(&m),
                        rejected: false,
                    },
                    Err(_) => Outcome {
                        filled: 0,
                        rejected: true,
                    },
                },
                ObCmd::Cancel { id } => match e.cancel_order(id) {
                    Ok(Some(_)) => Outcome::default(),
                    _ => Outcome {
                        filled: 0,
                        rejected: true,
                    },
                },
            }
        }
    }
}
