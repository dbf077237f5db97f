//! Market data in the real Redis: depth, recent trades, last price and the 1m kline
//! from matcher events; a redelivered batch changes nothing.

mod common;

use std::collections::BTreeMap;

use common::Harness;
use deadpool_redis::redis::AsyncCommands;
use domain::{OrderType, Side, Symbol};
use engine::market::MarketData;
use engine::matcher::{Command, Matcher};

#[tokio::test]
async fn events_become_depth_trades_and_klines_once() {
    let h = Harness::new("market", 17).await;
    let btc = Symbol::new("BTCUSDT").expect("symbol");
    let specs: BTreeMap<Symbol, _> = h.specs.clone();
    let md = MarketData::new(h.env.redis(), h.env.prefix.clone(), specs.clone());
    // a book and a trade, straight from the matcher
    let mut m = Matcher::new(specs[&btc].clone());
    let mut events = Vec::new();
    let order = |id, user, side, price, qty| {
        let mut r = common::req(user, side, OrderType::Limit, Some(price), Some(qty), None);
        r.client_order_id = None;
        engine::matcher::NewOrder {
            order_id: domain::OrderId::new(id).expect("id"),
            user_id: r.user_id,
            side: r.side,
            order_type: r.order_type,
            tif: r.tif,
            price: r.price,
            qty: r.qty,
            quote_qty: None,
            stop_price: None,
            stp: r.stp,
        }
    };
    for o in [
        order(1, 1, Side::Sell, "50010", "0.5"),
        order(2, 2, Side::Sell, "50000", "0.2"),
        order(3, 3, Side::Buy, "49990", "0.1"),
        order(4, 4, Side::Buy, "50000", "0.05"),
    ] {
        m.apply(&Command::Place(o), &mut events);
    }
    let minute_ms = 1_800_000_000_000u64;
    assert_eq!(
        md.apply(&btc, &events, minute_ms + 5).await.expect("apply"),
        events.len()
    );

    let mut r = h.env.redis().get().await.expect("redis");
    let asks: Vec<(String, f64)> = r
        .zrange_withscores(md.key(&btc, "asks"), 0, -1)
        .await
        .expect("asks");
    assert_eq!(
        asks.iter().map(|a| a.0.as_str()).collect::<Vec<_>>(),
        ["50000", "50010"]
    );
    let ask_qty: String = r
        .hget(md.key(&btc, "asks:qty"), "50000")
        .await
        .expect("qty");
    assert_eq!(ask_qty, "0.15", "0.2 minus the 0.05 traded");
    let bids: Vec<String> = r.zrange(md.key(&btc, "bids"), 0, -1).await.expect("bids");
    assert_eq!(bids, ["49990"]);
    let last: String = r.get(md.key(&btc, "last")).await.expect("last");
    assert_eq!(last, "50000");
    let trades: Vec<String> = r
        .lrange(md.key(&btc, "trades"), 0, -1)
        .await
        .expect("trades");
    assert_eq!(trades.len(), 1);
    let t: serde_json::Value = serde_json::from_str(&trades[0]).expect("json");
    assert_eq!(
        (
            t["price"].as_str(),
            t["qty"].as_str(),
            t["isBuyerMaker"].as_bool()
        ),
        (Some("50000"), Some("0.05"), Some(false))
    );
    let kline: String = r
        .hget(md.key(&btc, "kline:1m"), minute_ms)
        .await
        .expect("kline");
    assert_eq!(kline, "50000,50000,50000,50000,0.05");

    // the same batch again: nothing new
    assert_eq!(
        md.apply(&btc, &events, minute_ms + 9).await.expect("again"),
        0
    );
    let n: i64 = r.llen(md.key(&btc, "trades")).await.expect("len");
    assert_eq!(n, 1);
    // a new trade in the same minute extends the kline
    let before = events.len();
    m.apply(
        &Command::Place(order(5, 5, Side::Buy, "50010", "0.25")),
        &mut events,
    );
    md.apply(&btc, &events[before..], minute_ms + 30)
        .await
        .expect("apply");
    let kline: String = r
        .hget(md.key(&btc, "kline:1m"), minute_ms)
        .await
        .expect("kline");
    assert_eq!(
        kline, "50000,50010,50000,50010,0.30",
        "0.15 at 50000 then 0.1 at 50010 in one batch"
    );
    h.env.drop_all().await;
}
