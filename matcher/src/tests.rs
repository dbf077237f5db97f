//! Unit tests for every order type, TIF and STP mode, and properties over random
//! command streams.

use std::collections::{BTreeMap, BTreeSet};

use domain::{
    Amount, Asset, Decimal, OrderId, OrderType, Price, Qty, Side, Symbol, TimeInForce, UserId,
};
use proptest::prelude::*;

use super::*;

const BUY: Side = Side::Buy;
const SELL: Side = Side::Sell;

/// tick 0.01, step 0.001, 8-digit assets, maker 0.1 %, taker 0.2 %, band 5 %.
fn spec() -> SymbolSpec {
    SymbolSpec::new(
        Symbol::new("BTCUSDT").expect("sym"),
        Asset::new("BTC").expect("base"),
        Asset::new("USDT").expect("quote"),
        "0.01".parse().expect("tick"),
        "0.001".parse().expect("step"),
        8,
        8,
        1_000,
        2_000,
        500,
    )
    .expect("spec")
}

fn px(t: u64) -> Price {
    Price::new(Decimal::new(i64::try_from(t).expect("t"), 2)).expect("price")
}

fn q(l: u64) -> Qty {
    Qty::new(Decimal::new(i64::try_from(l).expect("l"), 3)).expect("qty")
}

fn oid(i: u64) -> OrderId {
    OrderId::new(i).expect("oid")
}

fn uid(i: u64) -> UserId {
    UserId::new(i).expect("uid")
}

fn order(id: u64, user: u64, side: Side, ty: OrderType) -> NewOrder {
    NewOrder {
        order_id: oid(id),
        user_id: uid(user),
        side,
        order_type: ty,
        tif: TimeInForce::Gtc,
        price: None,
        qty: None,
        quote_qty: None,
        stop_price: None,
        stp: StpMode::None,
    }
}

fn limit(id: u64, user: u64, side: Side, ticks: u64, lots: u64, tif: TimeInForce) -> Command {
    Command::Place(NewOrder {
        tif,
        price: Some(px(ticks)),
        qty: Some(q(lots)),
        ..order(id, user, side, OrderType::Limit)
    })
}

fn gtc(id: u64, user: u64, side: Side, ticks: u64, lots: u64) -> Command {
    limit(id, user, side, ticks, lots, TimeInForce::Gtc)
}

fn market(id: u64, user: u64, side: Side, lots: u64) -> Command {
    Command::Place(NewOrder {
        qty: Some(q(lots)),
        ..order(id, user, side, OrderType::Market)
    })
}

fn with_stp(cmd: Command, stp: StpMode) -> Command {
    match cmd {
        Command::Place(mut n) => {
            n.stp = stp;
            Command::Place(n)
        }
        other => other,
    }
}

fn run(m: &mut Matcher, cmds: &[Command]) -> Vec<Event> {
    let mut out = Vec::new();
    for c in cmds {
        m.apply(c, &mut out);
    }
    out
}

fn trades(ev: &[Event]) -> Vec<(u64, u64, u64, u64)> {
    ev.iter()
        .filter_map(|e| match e {
            Event::Trade { trade, .. } => Some((
                trade.taker_order.get(),
                trade.maker_order.get(),
                trade.price.get(),
                trade.qty.get(),
            )),
            _ => None,
        })
        .collect()
}

fn rejects(ev: &[Event]) -> Vec<(u64, RejectReason)> {
    ev.iter()
        .filter_map(|e| match e {
            Event::Rejected {
                order_id, reason, ..
            } => Some((order_id.get(), *reason)),
            _ => None,
        })
        .collect()
}

fn expiries(ev: &[Event]) -> Vec<(u64, u64, ExpireReason)> {
    ev.iter()
        .filter_map(|e| match e {
            Event::Expired {
                order_id,
                remaining,
                reason,
                ..
            } => Some((order_id.get(), remaining.get(), *reason)),
            _ => None,
        })
        .collect()
}

fn cancels(ev: &[Event]) -> Vec<(u64, u64, CancelReason)> {
    ev.iter()
        .filter_map(|e| match e {
            Event::Cancelled {
                order_id,
                remaining,
                reason,
                ..
            } => Some((order_id.get(), remaining.get(), *reason)),
            _ => None,
        })
        .collect()
}

#[test]
fn price_time_priority_and_price_improvement() {
    let mut m = Matcher::new(spec());
    run(
        &mut m,
        &[
            gtc(1, 1, SELL, 101, 5),
            gtc(2, 2, SELL, 100, 5),
            gtc(3, 3, SELL, 100, 5),
        ],
    );
    // a buy at 102 takes 100 first (older order 2 before 3), then 101: maker prices
    let ev = run(&mut m, &[gtc(4, 4, BUY, 102, 12)]);
    assert_eq!(
        trades(&ev),
        [(4, 2, 100, 5), (4, 3, 100, 5), (4, 1, 101, 2)]
    );
    assert_eq!(m.best_ask(), Some((Ticks(101), Lots(3))));
    assert_eq!(m.best_bid(), None, "fully filled taker does not rest");
    assert_eq!(m.last_price(), Some(Ticks(101)));
    let seqs: Vec<u64> = ev.iter().map(Event::seq).collect();
    let first = seqs[0];
    assert_eq!(
        seqs,
        (first..first + seqs.len() as u64).collect::<Vec<_>>(),
        "seq has no gaps"
    );
}

#[test]
fn partial_fill_rests_the_remainder_and_fees_round_up() {
    let mut m = Matcher::new(spec());
    run(&mut m, &[gtc(1, 1, SELL, 10_000, 3)]); // 3 lots = 0.003 BTC at 100.00
    let ev = run(&mut m, &[gtc(2, 2, BUY, 10_000, 7)]);
    let t = ev
        .iter()
        .find_map(|e| match e {
            Event::Trade { trade, .. } => Some(trade.clone()),
            _ => None,
        })
        .expect("trade");
    // notional 0.3 USDT = 30_000_000 quote atoms; base 0.003 BTC = 300_000 atoms
    assert_eq!(t.quote_atoms, 30_000_000);
    assert_eq!(t.taker_fee, 600, "taker buys: 0.2 % of 300_000 base atoms");
    assert_eq!(
        t.maker_fee, 30_000,
        "maker sells: 0.1 % of 30_000_000 quote atoms"
    );
    assert!(t.maker_filled);
    assert_eq!(m.best_bid(), Some((Ticks(10_000), Lots(4))));
    // rounding up: 1 lot = 100_000 base atoms x 0.2 % = 200 exactly; odd notional rounds up
    assert_eq!(SymbolSpec::fee(1_001, 1_000), 2);
    assert_eq!(SymbolSpec::fee(1_000, 1_000), 1);
    assert_eq!(SymbolSpec::fee(0, 1_000), 0);
    let s = spec();
    assert_eq!(
        s.quote_amount(t.quote_atoms).expect("amt"),
        "0.3".parse::<Amount>().expect("a")
    );
    assert_eq!(
        s.price(Ticks(10_000)).expect("p"),
        "100".parse::<Price>().expect("p")
    );
    assert_eq!(
        s.qty(Lots(3)).expect("q"),
        "0.003".parse::<Qty>().expect("q")
    );
}

#[test]
fn ioc_and_fok() {
    let mut m = Matcher::new(spec());
    run(&mut m, &[gtc(1, 1, SELL, 100, 5), gtc(2, 1, SELL, 102, 5)]);
    // IOC: takes what crosses, expires the rest
    let ev = run(&mut m, &[limit(3, 2, BUY, 101, 8, TimeInForce::Ioc)]);
    assert_eq!(trades(&ev), [(3, 1, 100, 5)]);
    assert_eq!(expiries(&ev), [(3, 3, ExpireReason::Ioc)]);
    // FOK that cannot fill: nothing trades at all
    let ev = run(&mut m, &[limit(4, 2, BUY, 102, 6, TimeInForce::Fok)]);
    assert!(trades(&ev).is_empty());
    assert_eq!(expiries(&ev), [(4, 6, ExpireReason::Fok)]);
    assert_eq!(m.best_ask(), Some((Ticks(102), Lots(5))));
    // FOK that can
    let ev = run(&mut m, &[limit(5, 2, BUY, 102, 5, TimeInForce::Fok)]);
    assert_eq!(trades(&ev), [(5, 2, 102, 5)]);
    assert!(expiries(&ev).is_empty());
    // empty book: IOC expires whole, GTC rests
    let ev = run(
        &mut m,
        &[
            limit(6, 2, BUY, 99, 1, TimeInForce::Ioc),
            gtc(7, 2, BUY, 99, 1),
        ],
    );
    assert_eq!(expiries(&ev), [(6, 1, ExpireReason::Ioc)]);
    assert_eq!(m.best_bid(), Some((Ticks(99), Lots(1))));
}

#[test]
fn market_orders_band_liquidity_and_quote() {
    let mut m = Matcher::new(spec());
    // empty book: expires cleanly
    let ev = run(&mut m, &[market(1, 1, BUY, 5)]);
    assert_eq!(expiries(&ev), [(1, 5, ExpireReason::NoLiquidity)]);
    // asks at 100, 104, 106; band 5 % from reference 100 (no last price: best ask) = 105
    run(
        &mut m,
        &[
            gtc(2, 2, SELL, 100, 2),
            gtc(3, 2, SELL, 104, 2),
            gtc(4, 2, SELL, 106, 2),
        ],
    );
    let ev = run(&mut m, &[market(5, 1, BUY, 10)]);
    assert_eq!(trades(&ev), [(5, 2, 100, 2), (5, 3, 104, 2)]);
    assert_eq!(expiries(&ev), [(5, 6, ExpireReason::PriceBand)]);
    assert_eq!(m.best_ask(), Some((Ticks(106), Lots(2))));
    // market by quote amount: 2.12 USDT buys 2 lots at 1.06 (0.00212 BTC... 1 lot = 0.001)
    let spend = "0.00300".parse::<Amount>().expect("amt"); // 0.003 USDT
    let ev = run(
        &mut m,
        &[Command::Place(NewOrder {
            quote_qty: Some(spend),
            ..order(6, 1, BUY, OrderType::Market)
        })],
    );
    // lot cost at 106 ticks (1.06) = 0.00106 USDT: 0.003 buys 2 lots, 0.00088 left
    assert_eq!(trades(&ev), [(6, 4, 106, 2)]);
    match ev.last() {
        Some(Event::Expired {
            remaining_quote,
            reason,
            ..
        }) => {
            assert_eq!(*remaining_quote, 88_000);
            assert!(matches!(
                reason,
                ExpireReason::NoLiquidity | ExpireReason::QuoteExhausted
            ));
        }
        other => panic!("expected expiry, got {other:?}"),
    }
    // sell market: band below last price (106): 106 * 0.95 = 100.7 -> ceil 101
    run(&mut m, &[gtc(7, 3, BUY, 102, 1), gtc(8, 3, BUY, 100, 1)]);
    let ev = run(&mut m, &[market(9, 1, SELL, 5)]);
    assert_eq!(trades(&ev), [(9, 7, 102, 1)]);
    assert_eq!(expiries(&ev), [(9, 4, ExpireReason::PriceBand)]);
}

fn capped(id: u64, user: u64, lots: u64, cap: &str) -> Command {
    Command::Place(NewOrder {
        qty: Some(q(lots)),
        quote_qty: Some(cap.parse().expect("cap")),
        ..order(id, user, BUY, OrderType::Market)
    })
}

#[test]
fn a_market_buy_by_quantity_stops_at_its_quantity_or_its_quote_cap() {
    let book = [gtc(1, 1, SELL, 10_000, 2), gtc(2, 2, SELL, 10_100, 5)];
    // the cap runs out first: 2 lots at 100 (0.2) + 3 at 101 (0.303) fit in 0.603,
    // a fourth lot at 101 does not; the rest of the cap is what is left unspent
    let mut m = Matcher::new(spec());
    run(&mut m, &book);
    let ev = run(&mut m, &[capped(3, 3, 6, "0.603")]);
    assert_eq!(trades(&ev), vec![(3, 1, 10_000, 2), (3, 2, 10_100, 3)]);
    let left: Vec<_> = ev
        .iter()
        .filter_map(|e| match e {
            Event::Expired {
                order_id,
                remaining,
                remaining_quote,
                reason,
                ..
            } => Some((order_id.get(), remaining.get(), *remaining_quote, *reason)),
            _ => None,
        })
        .collect();
    assert_eq!(left, vec![(3, 1, 10_000_000, ExpireReason::QuoteExhausted)]);
    // the quantity runs out first: filled, nothing expires
    let mut m = Matcher::new(spec());
    run(&mut m, &book);
    let ev = run(&mut m, &[capped(3, 3, 4, "100")]);
    assert_eq!(trades(&ev), vec![(3, 1, 10_000, 2), (3, 2, 10_100, 2)]);
    assert!(expiries(&ev).is_empty());
    // the band still applies (5 % above 100: 101 is in, 106 is not)
    let mut m = Matcher::new(spec());
    run(
        &mut m,
        &[gtc(1, 1, SELL, 10_000, 1), gtc(2, 2, SELL, 10_600, 5)],
    );
    let ev = run(&mut m, &[capped(3, 3, 3, "100")]);
    assert_eq!(trades(&ev), vec![(3, 1, 10_000, 1)]);
    assert_eq!(expiries(&ev), vec![(3, 2, ExpireReason::PriceBand)]);
    // a cap off the quote precision is refused like any amount
    let ev = run(&mut m, &[capped(4, 3, 1, "0.000000001")]);
    assert_eq!(rejects(&ev), vec![(4, RejectReason::AmountNotOnPrecision)]);
    // a waiting capped stop cancels with its whole quantity; it cannot be amended
    let mut m = Matcher::new(spec());
    run(
        &mut m,
        &[gtc(1, 1, SELL, 10_000, 1), gtc(2, 2, BUY, 10_000, 1)],
    );
    let stop = Command::Place(NewOrder {
        qty: Some(q(4)),
        quote_qty: Some("1".parse().expect("cap")),
        stop_price: Some(px(11_000)),
        ..order(5, 5, BUY, OrderType::StopLoss)
    });
    run(&mut m, &[stop]);
    assert_eq!(m.open_orders(), 1);
    let ev = run(
        &mut m,
        &[
            Command::Amend {
                order_id: oid(5),
                user_id: uid(5),
                new_qty: q(2),
            },
            Command::Cancel {
                order_id: oid(5),
                user_id: uid(5),
            },
        ],
    );
    assert_eq!(rejects(&ev), vec![(5, RejectReason::BadQuantityFields)]);
    assert_eq!(cancels(&ev), vec![(5, 4, CancelReason::User)]);
}

#[test]
fn a_market_sell_by_quote_amount_stops_at_its_amount_or_its_base_cap() {
    // bids: 2 lots at 100, 5 at 99; one lot at 100 pays 0.1, at 99 0.099
    let book = [gtc(1, 1, BUY, 10_000, 2), gtc(2, 2, BUY, 9_900, 5)];
    // 0.3 of quote wanted, at most 6 lots: 2 at 100 (0.2), then 1 at 99 (0.099); a
    // second lot at 99 would pass the amount: expired with the 0.001 not reached
    let mut m = Matcher::new(spec());
    run(&mut m, &book);
    let sell = |lots, quote: &str| {
        Command::Place(NewOrder {
            qty: Some(q(lots)),
            quote_qty: Some(quote.parse().expect("quote")),
            ..order(3, 3, SELL, OrderType::Market)
        })
    };
    let ev = run(&mut m, &[sell(6, "0.3")]);
    assert_eq!(trades(&ev), vec![(3, 1, 10_000, 2), (3, 2, 9_900, 1)]);
    assert_eq!(expiries(&ev), vec![(3, 3, ExpireReason::QuoteExhausted)]);
    // the base cap runs out first
    let mut m = Matcher::new(spec());
    run(&mut m, &book);
    let ev = run(&mut m, &[sell(3, "100")]);
    assert_eq!(trades(&ev), vec![(3, 1, 10_000, 2), (3, 2, 9_900, 1)]);
    assert!(expiries(&ev).is_empty(), "filled by its cap");
}

#[test]
fn limit_maker_is_rejected_when_it_would_cross() {
    let mut m = Matcher::new(spec());
    run(&mut m, &[gtc(1, 1, SELL, 100, 1)]);
    let mk = |id, ticks| {
        Command::Place(NewOrder {
            price: Some(px(ticks)),
            qty: Some(q(1)),
            ..order(id, 2, BUY, OrderType::LimitMaker)
        })
    };
    let ev = run(&mut m, &[mk(2, 100)]);
    assert_eq!(rejects(&ev), [(2, RejectReason::WouldCross)]);
    let ev = run(&mut m, &[mk(3, 99)]);
    assert!(rejects(&ev).is_empty());
    assert_eq!(m.best_bid(), Some((Ticks(99), Lots(1))));
}

#[test]
fn self_trade_prevention_modes() {
    let setup = |m: &mut Matcher| run(m, &[gtc(1, 7, SELL, 100, 2), gtc(2, 8, SELL, 100, 2)]);
    // NONE: trades with itself
    let mut m = Matcher::new(spec());
    setup(&mut m);
    let ev = run(&mut m, &[gtc(3, 7, BUY, 100, 3)]);
    assert_eq!(trades(&ev), [(3, 1, 100, 2), (3, 2, 100, 1)]);
    // EXPIRE_TAKER: the taker stops at its own order
    let mut m = Matcher::new(spec());
    setup(&mut m);
    let ev = run(
        &mut m,
        &[with_stp(gtc(3, 7, BUY, 100, 3), StpMode::ExpireTaker)],
    );
    assert!(trades(&ev).is_empty());
    assert_eq!(expiries(&ev), [(3, 3, ExpireReason::Stp)]);
    assert_eq!(m.best_ask(), Some((Ticks(100), Lots(4))));
    // EXPIRE_MAKER: own resting order cancelled, matching goes on
    let mut m = Matcher::new(spec());
    setup(&mut m);
    let ev = run(
        &mut m,
        &[with_stp(gtc(3, 7, BUY, 100, 3), StpMode::ExpireMaker)],
    );
    assert_eq!(cancels(&ev), [(1, 2, CancelReason::Stp)]);
    assert_eq!(trades(&ev), [(3, 2, 100, 2)]);
    assert_eq!(m.best_bid(), Some((Ticks(100), Lots(1))));
    // EXPIRE_BOTH
    let mut m = Matcher::new(spec());
    setup(&mut m);
    let ev = run(
        &mut m,
        &[with_stp(gtc(3, 7, BUY, 100, 3), StpMode::ExpireBoth)],
    );
    assert_eq!(cancels(&ev), [(1, 2, CancelReason::Stp)]);
    assert_eq!(expiries(&ev), [(3, 3, ExpireReason::Stp)]);
    assert_eq!(m.best_ask(), Some((Ticks(100), Lots(2))));
    // FOK respects STP in its pre-check
    let mut m = Matcher::new(spec());
    setup(&mut m);
    let ev = run(
        &mut m,
        &[with_stp(
            limit(3, 7, BUY, 100, 3, TimeInForce::Fok),
            StpMode::ExpireTaker,
        )],
    );
    assert!(trades(&ev).is_empty());
    assert_eq!(expiries(&ev), [(3, 3, ExpireReason::Fok)]);
}

#[test]
fn stops_trigger_in_arrival_order_on_the_last_price() {
    let mut m = Matcher::new(spec());
    run(&mut m, &[gtc(1, 1, SELL, 100, 1), gtc(2, 2, BUY, 100, 1)]); // last = 100
    let stop = |id, user, side, ty, stop_ticks, price: Option<u64>| {
        Command::Place(NewOrder {
            stop_price: Some(px(stop_ticks)),
            price: price.map(px),
            qty: Some(q(1)),
            ..order(id, user, side, ty)
        })
    };
    // already satisfied: rejected
    let ev = run(&mut m, &[stop(3, 3, SELL, OrderType::StopLoss, 100, None)]);
    assert_eq!(rejects(&ev), [(3, RejectReason::WouldTriggerImmediately)]);
    // a buy stop-loss at 105 (rising) and a sell take-profit at 104 (rising)
    let ev = run(
        &mut m,
        &[
            stop(4, 4, BUY, OrderType::StopLossLimit, 105, Some(110)),
            stop(5, 5, SELL, OrderType::TakeProfit, 104, None),
            stop(6, 6, SELL, OrderType::StopLoss, 90, None),
        ],
    );
    assert!(rejects(&ev).is_empty());
    assert_eq!(m.open_orders(), 3);
    // liquidity, then a trade at 106 fires 4 then 5 (arrival order)
    let ev = run(
        &mut m,
        &[
            gtc(10, 7, BUY, 95, 5),
            gtc(7, 7, SELL, 106, 1),
            gtc(8, 7, SELL, 107, 1),
            gtc(9, 9, BUY, 106, 1),
        ],
    );
    let fired: Vec<u64> = ev
        .iter()
        .filter_map(|e| match e {
            Event::Triggered { order_id, .. } => Some(order_id.get()),
            _ => None,
        })
        .collect();
    assert_eq!(fired, [4, 5]);
    // 4 (buy limit 110) takes 107; 5 (sell market) may not sell down to the bid at 95:
    // the band from last 107 ends at ceil(101.65) = 102
    assert!(trades(&ev).contains(&(4, 8, 107, 1)));
    assert!(expiries(&ev)
        .iter()
        .any(|(id, _, r)| *id == 5 && *r == ExpireReason::PriceBand));
    // the falling stop at 90 still waits; cancel it
    let ev = run(
        &mut m,
        &[Command::Cancel {
            order_id: oid(6),
            user_id: uid(6),
        }],
    );
    assert_eq!(cancels(&ev), [(6, 1, CancelReason::User)]);
    assert_eq!(m.open_orders(), 1, "only order 10 rests");
}

#[test]
fn cancel_and_amend() {
    let mut m = Matcher::new(spec());
    run(&mut m, &[gtc(1, 1, SELL, 100, 5), gtc(2, 2, SELL, 100, 5)]);
    // amend keeps priority: 1 still trades first after shrinking
    let ev = run(
        &mut m,
        &[Command::Amend {
            order_id: oid(1),
            user_id: uid(1),
            new_qty: q(2),
        }],
    );
    assert!(matches!(
        ev[..],
        [
            Event::BookDelta { qty: Lots(7), .. },
            Event::Amended {
                remaining: Lots(2),
                reduced_by: Lots(3),
                ..
            }
        ]
    ));
    let ev = run(&mut m, &[gtc(3, 3, BUY, 100, 3)]);
    assert_eq!(trades(&ev), [(3, 1, 100, 2), (3, 2, 100, 1)]);
    // bad amends and cancels are clean rejects
    let ev = run(
        &mut m,
        &[
            Command::Amend {
                order_id: oid(2),
                user_id: uid(2),
                new_qty: q(4),
            },
            Command::Amend {
                order_id: oid(2),
                user_id: uid(2),
                new_qty: q(5),
            },
            Command::Amend {
                order_id: oid(2),
                user_id: uid(9),
                new_qty: q(1),
            },
            Command::Cancel {
                order_id: oid(2),
                user_id: uid(9),
            },
            Command::Cancel {
                order_id: oid(1),
                user_id: uid(1),
            },
            Command::Cancel {
                order_id: oid(99),
                user_id: uid(1),
            },
        ],
    );
    assert_eq!(
        rejects(&ev),
        [
            (2, RejectReason::AmendNotLower),
            (2, RejectReason::AmendNotLower),
            (2, RejectReason::UnknownOrder),
            (2, RejectReason::UnknownOrder),
            (1, RejectReason::UnknownOrder),
            (99, RejectReason::UnknownOrder),
        ]
    );
    let ev = run(
        &mut m,
        &[Command::Cancel {
            order_id: oid(2),
            user_id: uid(2),
        }],
    );
    assert_eq!(cancels(&ev), [(2, 4, CancelReason::User)]);
    assert_eq!(m.best_ask(), None);
}

#[test]
fn cancel_replace() {
    let mut m = Matcher::new(spec());
    run(&mut m, &[gtc(1, 1, BUY, 100, 5)]);
    let new = match gtc(2, 1, BUY, 101, 4) {
        Command::Place(n) => n,
        _ => unreachable!(),
    };
    let ev = run(
        &mut m,
        &[Command::CancelReplace {
            cancel_order_id: oid(1),
            new: new.clone(),
        }],
    );
    assert_eq!(cancels(&ev), [(1, 5, CancelReason::Replaced)]);
    assert_eq!(m.best_bid(), Some((Ticks(101), Lots(4))));
    let mut again = new;
    again.order_id = oid(3);
    let ev = run(
        &mut m,
        &[Command::CancelReplace {
            cancel_order_id: oid(1),
            new: again,
        }],
    );
    assert_eq!(
        rejects(&ev),
        [
            (1, RejectReason::UnknownOrder),
            (3, RejectReason::UnknownOrder)
        ]
    );
    assert_eq!(m.best_bid(), Some((Ticks(101), Lots(4))));
}

#[test]
fn bad_input_is_a_reject_never_a_panic() {
    let mut m = Matcher::new(spec());
    let bad_price = Command::Place(NewOrder {
        price: Some("100.001".parse().expect("p")),
        qty: Some(q(1)),
        ..order(1, 1, BUY, OrderType::Limit)
    });
    let bad_qty = Command::Place(NewOrder {
        price: Some(px(100)),
        qty: Some("0.0015".parse().expect("q")),
        ..order(2, 1, BUY, OrderType::Limit)
    });
    let huge = Command::Place(NewOrder {
        price: Some("999999999999999999".parse().expect("p")),
        qty: Some("999999999999999999".parse().expect("q")),
        ..order(3, 1, BUY, OrderType::Limit)
    });
    let no_price = Command::Place(NewOrder {
        qty: Some(q(1)),
        ..order(4, 1, BUY, OrderType::Limit)
    });
    let no_qty = Command::Place(order(5, 1, BUY, OrderType::Market));
    // both fields on a limit order: no use for a quote amount
    let both = Command::Place(NewOrder {
        price: Some(px(100)),
        qty: Some(q(1)),
        quote_qty: Some("1".parse().expect("a")),
        ..order(6, 1, SELL, OrderType::Limit)
    });
    let no_stop = Command::Place(NewOrder {
        qty: Some(q(1)),
        ..order(7, 1, BUY, OrderType::StopLoss)
    });
    let fine_quote = Command::Place(NewOrder {
        quote_qty: Some("0.000000001".parse().expect("a")),
        ..order(8, 1, BUY, OrderType::Market)
    });
    let ok = gtc(9, 1, BUY, 100, 1);
    let dup = gtc(9, 1, BUY, 100, 1);
    let ev = run(
        &mut m,
        &[
            bad_price, bad_qty, huge, no_price, no_qty, both, no_stop, fine_quote, ok, dup,
        ],
    );
    assert_eq!(
        rejects(&ev),
        [
            (1, RejectReason::PriceNotOnTick),
            (2, RejectReason::QtyNotOnStep),
            (3, RejectReason::TooLarge),
            (4, RejectReason::MissingPrice),
            (5, RejectReason::BadQuantityFields),
            (6, RejectReason::BadQuantityFields),
            (7, RejectReason::MissingStopPrice),
            (8, RejectReason::AmountNotOnPrecision),
            (9, RejectReason::DuplicateOrderId),
        ]
    );
    assert_eq!(m.open_orders(), 1);
    // an id seen before is a duplicate even after its order is gone
    run(
        &mut m,
        &[Command::Cancel {
            order_id: oid(9),
            user_id: uid(1),
        }],
    );
    let ev = run(&mut m, &[gtc(9, 1, BUY, 100, 1)]);
    assert_eq!(rejects(&ev), [(9, RejectReason::DuplicateOrderId)]);
    assert!(
        SymbolSpec::new(
            Symbol::new("X1").expect("s"),
            Asset::new("AA").expect("a"),
            Asset::new("BB").expect("b"),
            "0.01".parse().expect("t"),
            "0.001".parse().expect("s"),
            2,
            2,
            0,
            0,
            100
        )
        .is_err(),
        "step finer than the base precision"
    );
}

#[test]
fn snapshot_restores_everything() {
    let mut m = Matcher::new(spec());
    run(
        &mut m,
        &[
            gtc(1, 1, SELL, 105, 5),
            gtc(2, 2, SELL, 105, 3),
            gtc(3, 3, BUY, 100, 4),
            gtc(4, 4, BUY, 105, 1),
        ],
    );
    run(
        &mut m,
        &[Command::Place(NewOrder {
            stop_price: Some(px(110)),
            qty: Some(q(1)),
            ..order(5, 5, BUY, OrderType::StopLoss)
        })],
    );
    let bytes = m.snapshot();
    let r = Matcher::restore(&bytes).expect("restore");
    assert_eq!(r.snapshot(), bytes);
    assert_eq!(r.orders(SELL), m.orders(SELL));
    assert_eq!(r.last_price(), Some(Ticks(105)));
    assert!(Matcher::restore(&bytes[..bytes.len() / 2]).is_err());
    assert!(Matcher::restore(b"garbage").is_err());
}

/// `spec()` with other fees and grid.
fn spec_with(tick: &str, step: &str, maker: u32, taker: u32) -> SymbolSpec {
    SymbolSpec::new(
        Symbol::new("BTCUSDT").expect("sym"),
        Asset::new("BTC").expect("base"),
        Asset::new("USDT").expect("quote"),
        tick.parse().expect("tick"),
        step.parse().expect("step"),
        8,
        8,
        maker,
        taker,
        500,
    )
    .expect("spec")
}

fn fees(ev: &[Event]) -> Vec<(u128, u128)> {
    ev.iter()
        .filter_map(|e| match e {
            Event::Trade { trade, .. } => Some((trade.maker_fee, trade.taker_fee)),
            _ => None,
        })
        .collect()
}

#[test]
fn a_fee_change_applies_at_once_a_grid_change_only_on_an_empty_book() {
    let mut m = Matcher::new(spec());
    run(
        &mut m,
        &[
            gtc(1, 1, SELL, 10_000, 2_000),
            gtc(2, 2, SELL, 10_000, 1_000),
        ],
    );
    // fees on the same grid: in force for the next trade, orders kept
    m.respec(spec_with("0.01", "0.001", 0, 5_000))
        .expect("fee change");
    let ev = run(&mut m, &[gtc(3, 3, BUY, 10_000, 1_000)]);
    // 1 BTC at 100 USDT: taker buys 1 BTC, pays 0.5 % of it in base atoms; maker 0
    assert_eq!(fees(&ev), vec![(0, 500_000)]);
    // a finer step while two orders rest: refused, nothing changed
    let before = m.snapshot();
    assert_eq!(
        m.respec(spec_with("0.01", "0.0001", 0, 5_000)),
        Err(RespecError::BookNotEmpty { open: 2 })
    );
    assert_eq!(m.snapshot(), before);
    assert_eq!(
        m.respec(
            SymbolSpec::new(
                Symbol::new("ETHUSDT").expect("sym"),
                Asset::new("ETH").expect("base"),
                Asset::new("USDT").expect("quote"),
                "0.01".parse().expect("tick"),
                "0.001".parse().expect("step"),
                8,
                8,
                0,
                5_000,
                500,
            )
            .expect("spec")
        ),
        Err(RespecError::OtherSymbol)
    );
    // emptied, the grid changes; the last price (100.00) lies on the new 0.05 grid
    run(
        &mut m,
        &[
            Command::Cancel {
                order_id: oid(1),
                user_id: uid(1),
            },
            Command::Cancel {
                order_id: oid(2),
                user_id: uid(2),
            },
        ],
    );
    m.respec(spec_with("0.05", "0.0001", 0, 5_000))
        .expect("grid change on an empty book");
    assert_eq!(m.last_price(), Some(Ticks(2_000)));
    // new orders count on the new grid: 0.0001 lots, 0.05 ticks
    let ev = run(
        &mut m,
        &[
            Command::Place(NewOrder {
                price: Some("100.05".parse().expect("p")),
                qty: Some("0.0005".parse().expect("q")),
                ..order(4, 4, SELL, OrderType::Limit)
            }),
            Command::Place(NewOrder {
                price: Some("100.01".parse().expect("p")),
                qty: Some("0.0005".parse().expect("q")),
                ..order(5, 5, BUY, OrderType::Limit)
            }),
        ],
    );
    assert_eq!(rejects(&ev), vec![(5, RejectReason::PriceNotOnTick)]);
    assert_eq!(
        m.orders(SELL),
        vec![(oid(4), uid(4), Ticks(2_001), Lots(5))]
    );
    // a last price off the next grid is forgotten, not rounded
    let mut m = Matcher::new(spec());
    run(
        &mut m,
        &[gtc(1, 1, SELL, 10_003, 1), gtc(2, 2, BUY, 10_003, 1)],
    );
    assert_eq!(m.last_price(), Some(Ticks(10_003)));
    m.respec(spec_with("0.05", "0.001", 1_000, 2_000))
        .expect("empty book");
    assert_eq!(m.last_price(), None);
}

// ---------------------------------------------------------------- properties ---

fn arb_command(max_id: u64) -> impl Strategy<Value = Command> {
    let side = prop_oneof![Just(BUY), Just(SELL)];
    let tif = prop_oneof![
        Just(TimeInForce::Gtc),
        Just(TimeInForce::Gtc),
        Just(TimeInForce::Ioc),
        Just(TimeInForce::Fok)
    ];
    let stp = prop_oneof![
        4 => Just(StpMode::None),
        1 => Just(StpMode::ExpireTaker),
        1 => Just(StpMode::ExpireMaker),
        1 => Just(StpMode::ExpireBoth)
    ];
    let ty = prop_oneof![
        8 => Just(OrderType::Limit),
        2 => Just(OrderType::Market),
        1 => Just(OrderType::LimitMaker),
        1 => Just(OrderType::StopLoss),
        1 => Just(OrderType::StopLossLimit),
        1 => Just(OrderType::TakeProfit),
        1 => Just(OrderType::TakeProfitLimit)
    ];
    prop_oneof![
        6 => (1..=max_id, 1u64..=4, side, ty, tif, stp, 95u64..=105, 1u64..=6, 93u64..=107, any::<bool>()).prop_map(
            |(id, user, side, ty, tif, stp, price, lots, stop, by_quote)| {
                let mut n = order(id, user, side, ty);
                n.tif = tif;
                n.stp = stp;
                n.price = Some(px(price));
                if matches!(ty, OrderType::Market | OrderType::StopLoss | OrderType::TakeProfit) && by_quote {
                    n.quote_qty = Some(Amount::new(Decimal::new(i64::try_from(lots * price).expect("a"), 5)).expect("a"));
                } else {
                    n.qty = Some(q(lots));
                }
                n.stop_price = Some(px(stop));
                Command::Place(n)
            }
        ),
        2 => (1..=max_id, 1u64..=4).prop_map(|(id, user)| Command::Cancel { order_id: oid(id), user_id: uid(user) }),
        1 => (1..=max_id, 1u64..=4, 1u64..=5).prop_map(|(id, user, lots)| Command::Amend {
            order_id: oid(id),
            user_id: uid(user),
            new_qty: q(lots)
        }),
        1 => Just(Command::TriggerCheck),
    ]
}

/// Per-order accounting reconstructed from events.
#[derive(Debug, Default)]
struct Ledger {
    placed: BTreeMap<u64, u64>,
    filled: BTreeMap<u64, u64>,
    gone: BTreeMap<u64, u64>, // cancelled + expired + amended away
    by_quote: BTreeSet<u64>,
}

fn check_stream(cmds: &[Command]) -> Result<Vec<Event>, TestCaseError> {
    let mut m = Matcher::new(spec());
    let mut all = Vec::new();
    let mut ledger = Ledger::default();
    let mut limits: BTreeMap<u64, (Side, Option<u64>)> = BTreeMap::new();
    let mut arrival: BTreeMap<u64, u64> = BTreeMap::new(); // order id -> acceptance seq
    for cmd in cmds {
        let before_open: BTreeMap<u64, (Ticks, u64)> = [BUY, SELL]
            .iter()
            .flat_map(|s| m.orders(*s))
            .map(|(id, _, p, _)| (id.get(), (p, arrival.get(&id.get()).copied().unwrap_or(0))))
            .collect();
        let mut out = Vec::new();
        m.apply(cmd, &mut out);
        for e in &out {
            match e {
                Event::Accepted { seq, order_id, .. } => {
                    let Command::Place(n) = cmd else {
                        let Command::CancelReplace { new: n, .. } = cmd else {
                            return Err(TestCaseError::fail("accepted without a place"));
                        };
                        ledger.placed.insert(
                            order_id.get(),
                            n.qty.map_or(0, |x| m.spec().lots(x).map_or(0, Lots::get)),
                        );
                        continue;
                    };
                    arrival.insert(order_id.get(), *seq);
                    let is_limit = matches!(
                        n.order_type,
                        OrderType::Limit
                            | OrderType::LimitMaker
                            | OrderType::StopLossLimit
                            | OrderType::TakeProfitLimit
                    );
                    limits.insert(
                        order_id.get(),
                        (
                            n.side,
                            if is_limit {
                                n.price.and_then(|p| m.spec().ticks(p).ok().map(Ticks::get))
                            } else {
                                None
                            },
                        ),
                    );
                    match n.qty {
                        Some(x) => {
                            ledger
                                .placed
                                .insert(order_id.get(), m.spec().lots(x).map_or(0, Lots::get));
                        }
                        None => {
                            ledger.by_quote.insert(order_id.get());
                        }
                    }
                }
                Event::Trade { trade, .. } => {
                    *ledger.filled.entry(trade.taker_order.get()).or_default() += trade.qty.get();
                    *ledger.filled.entry(trade.maker_order.get()).or_default() += trade.qty.get();
                    // both limits respected
                    for id in [trade.taker_order.get(), trade.maker_order.get()] {
                        if let Some((side, Some(l))) = limits.get(&id) {
                            let ok = match side {
                                Side::Buy => trade.price.get() <= *l,
                                Side::Sell => trade.price.get() >= *l,
                            };
                            prop_assert!(
                                ok,
                                "trade at {} beyond limit {} of order {}",
                                trade.price.get(),
                                l,
                                id
                            );
                        }
                    }
                    // FIFO: no older order at the maker's price was still resting
                    let maker = trade.maker_order.get();
                    if let Some(&(price, arr)) = before_open.get(&maker) {
                        prop_assert_eq!(price, trade.price);
                        for (other, (p, a)) in &before_open {
                            if *p == price && *a < arr && *other != maker {
                                let gone_or_filled = !m
                                    .orders(Side::Buy)
                                    .iter()
                                    .chain(m.orders(Side::Sell).iter())
                                    .any(|o| o.0.get() == *other);
                                prop_assert!(
                                    gone_or_filled,
                                    "order {} older than maker {} at {} still rests",
                                    other,
                                    maker,
                                    price.get()
                                );
                            }
                        }
                    }
                }
                // a triggered stop-limit takes its place in the queue when it fires
                Event::Triggered { seq, order_id, .. } => {
                    arrival.insert(order_id.get(), *seq);
                }
                Event::Cancelled {
                    order_id,
                    remaining,
                    ..
                }
                | Event::Expired {
                    order_id,
                    remaining,
                    ..
                } => {
                    *ledger.gone.entry(order_id.get()).or_default() += remaining.get();
                }
                Event::Amended {
                    order_id,
                    reduced_by,
                    ..
                } => {
                    *ledger.gone.entry(order_id.get()).or_default() += reduced_by.get();
                }
                _ => {}
            }
        }
        // never crossed
        if let (Some((b, _)), Some((a, _))) = (m.best_bid(), m.best_ask()) {
            prop_assert!(b < a, "crossed book: bid {} >= ask {}", b.get(), a.get());
        }
        all.extend(out);
    }
    // sequences: consecutive from 1
    for (i, e) in all.iter().enumerate() {
        prop_assert_eq!(e.seq(), i as u64 + 1);
    }
    // conservation: placed = filled + resting + cancelled + expired (+ amended away),
    // for every order placed by base quantity; stops still waiting count as resting
    let resting: BTreeMap<u64, u64> = [BUY, SELL]
        .iter()
        .flat_map(|s| m.orders(*s))
        .map(|(id, _, _, l)| (id.get(), l.get()))
        .collect();
    for (id, placed) in &ledger.placed {
        if m.stop_index.contains_key(&oid(*id)) {
            continue;
        }
        let filled = ledger.filled.get(id).copied().unwrap_or(0);
        let gone = ledger.gone.get(id).copied().unwrap_or(0);
        let rest = resting.get(id).copied().unwrap_or(0);
        prop_assert_eq!(
            *placed,
            filled + gone + rest,
            "order {}: filled {} gone {} resting {}",
            id,
            filled,
            gone,
            rest
        );
    }
    Ok(all)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn random_streams_keep_every_invariant(cmds in proptest::collection::vec(arb_command(60), 1..250)) {
        check_stream(&cmds)?;
    }

    #[test]
    fn same_input_same_output(cmds in proptest::collection::vec(arb_command(60), 1..200)) {
        let a = check_stream(&cmds)?;
        let b = check_stream(&cmds)?;
        prop_assert_eq!(postcard::to_stdvec(&a).expect("a"), postcard::to_stdvec(&b).expect("b"));
    }

    #[test]
    fn snapshot_at_any_point_then_replay_equals_uninterrupted(
        cmds in proptest::collection::vec(arb_command(60), 1..200),
        cut in 0usize..200,
    ) {
        let cut = cut.min(cmds.len());
        let mut whole = Matcher::new(spec());
        let expected = run(&mut whole, &cmds);
        let mut first = Matcher::new(spec());
        let mut got = run(&mut first, &cmds[..cut]);
        let mut restored = Matcher::restore(&first.snapshot()).expect("restore");
        got.extend(run(&mut restored, &cmds[cut..]));
        prop_assert_eq!(got, expected);
        prop_assert_eq!(restored.snapshot(), whole.snapshot());
    }
}

#[test]
fn dedup_window_forgets_whole_generations_only() {
    let mut m = Matcher::with_dedup_window(spec(), 2);
    let place_cancel = |m: &mut Matcher, id: u64| {
        run(
            m,
            &[
                gtc(id, 1, BUY, 100, 1),
                Command::Cancel {
                    order_id: oid(id),
                    user_id: uid(1),
                },
            ],
        )
    };
    for id in 1..=3 {
        assert!(rejects(&place_cancel(&mut m, id)).is_empty());
    }
    // 1 and 2 are in the older generation, 3 in the current one
    assert_eq!(
        rejects(&run(&mut m, &[gtc(1, 1, BUY, 100, 1)])),
        [(1, RejectReason::DuplicateOrderId)]
    );
    assert_eq!(
        rejects(&run(&mut m, &[gtc(3, 1, BUY, 100, 1)])),
        [(3, RejectReason::DuplicateOrderId)]
    );
    // 4 fills the current generation, 5 starts a new one: 1 and 2 are forgotten
    place_cancel(&mut m, 4);
    place_cancel(&mut m, 5);
    assert!(rejects(&place_cancel(&mut m, 1)).is_empty());
    // a resting order is a duplicate however old the window
    let mut m = Matcher::with_dedup_window(spec(), 1);
    run(
        &mut m,
        &[
            gtc(10, 1, BUY, 100, 1),
            gtc(11, 1, BUY, 100, 1),
            gtc(12, 1, BUY, 100, 1),
        ],
    );
    assert_eq!(
        rejects(&run(&mut m, &[gtc(10, 1, BUY, 100, 1)])),
        [(10, RejectReason::DuplicateOrderId)]
    );
    // and the window survives a snapshot
    let r = Matcher::restore(&m.snapshot()).expect("restore");
    assert_eq!(r.snapshot(), m.snapshot());
}

#[test]
fn redelivered_inputs_are_dropped_by_source_sequence() {
    let mut m = Matcher::new(spec());
    let mut out = Vec::new();
    assert!(m.apply_sourced(1, 10, &gtc(1, 1, SELL, 100, 5), &mut out));
    assert!(m.apply_sourced(2, 3, &gtc(2, 2, SELL, 100, 5), &mut out));
    let before = out.len();
    // shard 1's relay crashed and re-sends rows 9 and 10: nothing happens at all
    assert!(!m.apply_sourced(1, 9, &gtc(9, 1, BUY, 100, 1), &mut out));
    assert!(!m.apply_sourced(1, 10, &gtc(1, 1, SELL, 100, 5), &mut out));
    assert_eq!(out.len(), before, "no events for redeliveries");
    assert!(m.apply_sourced(1, 11, &gtc(3, 1, BUY, 100, 2), &mut out));
    assert_eq!(m.source_mark(1), 11);
    assert_eq!(m.source_mark(2), 3);
    assert_eq!(m.source_mark(3), 0);
    let r = Matcher::restore(&m.snapshot()).expect("restore");
    assert_eq!(r.source_mark(1), 11, "marks survive a snapshot");
}

/// Every order type × time in force × STP mode × side, against a book holding the same
/// user's and other users' orders on both sides: no panic, and every invariant of the
/// random-stream property holds (never crossed, conservation, limits, FIFO, seq).
#[test]
fn every_type_tif_and_stp_combination_keeps_the_invariants() {
    let types = [
        OrderType::Limit,
        OrderType::LimitMaker,
        OrderType::Market,
        OrderType::StopLoss,
        OrderType::StopLossLimit,
        OrderType::TakeProfit,
        OrderType::TakeProfitLimit,
    ];
    let tifs = [TimeInForce::Gtc, TimeInForce::Ioc, TimeInForce::Fok];
    let stps = [
        StpMode::None,
        StpMode::ExpireTaker,
        StpMode::ExpireMaker,
        StpMode::ExpireBoth,
    ];
    let mut combos = 0;
    for ty in types {
        for tif in tifs {
            for stp in stps {
                for side in [BUY, SELL] {
                    for by_quote in [false, true] {
                        let mut cmds = vec![
                            gtc(1, 1, SELL, 101, 3),
                            gtc(2, 2, SELL, 101, 3),
                            gtc(3, 1, SELL, 103, 3),
                            gtc(4, 1, BUY, 99, 3),
                            gtc(5, 2, BUY, 99, 3),
                            gtc(6, 2, BUY, 97, 3),
                            // a trade at 100 sets the last price
                            gtc(7, 3, SELL, 100, 1),
                            gtc(8, 4, BUY, 100, 1),
                        ];
                        let mut n = order(9, 1, side, ty);
                        n.tif = tif;
                        n.stp = stp;
                        n.price = Some(px(if side == BUY { 102 } else { 98 }));
                        n.stop_price = Some(px(
                            if matches!(ty, OrderType::StopLoss | OrderType::StopLossLimit)
                                == (side == BUY)
                            {
                                101
                            } else {
                                99
                            },
                        ));
                        if by_quote
                            && matches!(
                                ty,
                                OrderType::Market | OrderType::StopLoss | OrderType::TakeProfit
                            )
                        {
                            n.quote_qty = Some("0.0505".parse().expect("quote"));
                        } else {
                            n.qty = Some(q(5));
                        }
                        cmds.push(Command::Place(n));
                        // move the price both ways so stops fire, then cancel what is left
                        cmds.push(gtc(10, 5, BUY, 101, 6));
                        cmds.push(gtc(11, 6, SELL, 97, 9));
                        cmds.push(Command::Cancel {
                            order_id: oid(9),
                            user_id: uid(1),
                        });
                        let events = check_stream(&cmds).unwrap_or_else(|e| {
                            panic!("{ty:?} {tif:?} {stp:?} {side:?} quote={by_quote}: {e}")
                        });
                        assert!(events.iter().any(|e| matches!(e, Event::Accepted { order_id, .. } | Event::Rejected { order_id, .. } if order_id.get() == 9)));
                        combos += 1;
                    }
                }
            }
        }
    }
    assert_eq!(combos, 7 * 3 * 4 * 2 * 2);
}

#[test]
fn market_by_quote_buys_what_the_amount_affords() {
    // BTCUSDT-like: tick 0.01, step 0.00001, 8-digit assets
    let spec = SymbolSpec::new(
        Symbol::new("BTCUSDT").expect("s"),
        Asset::new("BTC").expect("a"),
        Asset::new("USDT").expect("a"),
        "0.01".parse().expect("t"),
        "0.00001".parse().expect("s"),
        8,
        8,
        1_000,
        1_000,
        500,
    )
    .expect("spec");
    let mut m = Matcher::new(spec);
    let p = |s: &str| Some(s.parse::<Price>().expect("p"));
    let qq = |s: &str| Some(s.parse::<Qty>().expect("q"));
    let ev = run(
        &mut m,
        &[
            Command::Place(NewOrder {
                price: p("50000"),
                qty: qq("0.01"),
                ..order(1, 1, SELL, OrderType::Limit)
            }),
            Command::Place(NewOrder {
                price: p("50010"),
                qty: qq("0.01"),
                ..order(2, 2, SELL, OrderType::Limit)
            }),
            Command::Place(NewOrder {
                price: p("50010"),
                qty: qq("0.015"),
                ..order(3, 3, BUY, OrderType::Limit)
            }),
            Command::Place(NewOrder {
                quote_qty: Some("250".parse().expect("a")),
                ..order(4, 4, BUY, OrderType::Market)
            }),
        ],
    );
    let t = trades(&ev);
    assert_eq!(t.last(), Some(&(4, 2, 5_001_000, 499)), "{ev:#?}");
}
