//! Market data in the real Redis: depth, recent trades, last price, klines of every
//! interval and the 24 h rolling ticker from matcher events; a redelivered batch changes
//! nothing; a restarted writer continues the window from Redis; old trades roll out.

mod common;

use std::collections::BTreeMap;

use common::Harness;
use deadpool_redis::redis::AsyncCommands;
use domain::{OrderType, Side, Symbol};
use engine::market::MarketData;
use matcher::{Command, Matcher};
use router::keys::Book;

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
        matcher::NewOrder {
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
    let mut channel = common::subscribe(&h.env, &md.keys().market_channel(&btc)).await;
    assert_eq!(
        md.apply(&btc, &events, minute_ms + 5).await.expect("apply"),
        events.len()
    );

    let mut r = h.env.redis().get().await.expect("redis");
    let asks: Vec<(String, f64)> = r
        .zrange_withscores(md.keys().book(&btc, Book::Asks), 0, -1)
        .await
        .expect("asks");
    assert_eq!(
        asks.iter().map(|a| a.0.as_str()).collect::<Vec<_>>(),
        ["50000", "50010"]
    );
    let ask_qty: String = r
        .hget(md.keys().book_qty(&btc, Book::Asks), "50000")
        .await
        .expect("qty");
    assert_eq!(ask_qty, "0.15", "0.2 minus the 0.05 traded");
    let bids: Vec<String> = r
        .zrange(md.keys().book(&btc, Book::Bids), 0, -1)
        .await
        .expect("bids");
    assert_eq!(bids, ["49990"]);
    let last: String = r.get(md.keys().last_price(&btc)).await.expect("last");
    assert_eq!(last, "50000");
    let trades: Vec<String> = r
        .lrange(md.keys().trades(&btc), 0, -1)
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
        .hget(md.keys().kline(&btc, "1m"), minute_ms)
        .await
        .expect("kline");
    assert_eq!(kline, "50000,50000,50000,50000,0.05,2500,1");
    // every interval's bucket holds the one trade so far
    for (name, ms) in engine::market::INTERVALS {
        let k: String = r
            .hget(md.keys().kline(&btc, name), minute_ms - minute_ms % ms)
            .await
            .expect("kline");
        assert_eq!(k, "50000,50000,50000,50000,0.05,2500,1", "{name}");
    }
    // the typed reader (the gateway's) sees exactly what the writer wrote
    let reader = router::marketdata::MarketReader::new(h.env.redis(), h.env.prefix.clone());
    let (seq, rbids, rasks) = reader.depth(&btc, 10).await.expect("depth");
    assert!(
        seq > 0,
        "the depth carries the matcher sequence it reflects"
    );
    let level = |p: &str, q: &str| (p.parse().expect("p"), q.parse().expect("q"));
    assert_eq!(rasks, [level("50000", "0.15"), level("50010", "0.5")]);
    assert_eq!(rbids, [level("49990", "0.1")]);
    assert_eq!(
        reader.depth(&btc, 1).await.expect("depth").2.len(),
        1,
        "limit"
    );
    let recent = reader.recent_trades(&btc, 5).await.expect("trades");
    assert_eq!(recent.len(), 1);
    assert_eq!(
        (
            recent[0].price.as_str(),
            recent[0].qty.as_str(),
            recent[0].is_buyer_maker
        ),
        ("50000", "0.05", false)
    );
    assert_eq!(
        reader.last_price(&btc).await.expect("last"),
        Some("50000".parse().expect("p"))
    );
    let candles = reader
        .klines(&btc, "1m", minute_ms - 60_000, minute_ms)
        .await
        .expect("klines");
    assert_eq!(candles.len(), 1);
    assert_eq!(candles[0].0, minute_ms);
    assert_eq!(candles[0].1.render(), "50000,50000,50000,50000,0.05,2500,1");
    assert!(reader
        .klines(&btc, "1m", 0, minute_ms - 1)
        .await
        .expect("klines")
        .is_empty());
    assert_eq!(
        reader
            .ticker(&btc)
            .await
            .expect("ticker")
            .get("count")
            .map(String::as_str),
        Some("1")
    );

    let msg = tokio::time::timeout(std::time::Duration::from_secs(10), channel.recv())
        .await
        .expect("market message")
        .expect("open");
    assert_eq!(msg["ticker"]["count"], "1", "{msg}");
    assert_eq!(msg["klines"]["4h"]["c"], "50000", "{msg}");
    // the diff-stream contract: the first message starts at 1 and ends at the sequence
    // REST depth reports; each depth change carries the level's new quantity
    assert_eq!(
        (msg["U"].as_u64(), msg["u"].as_u64()),
        (Some(1), Some(seq)),
        "{msg}"
    );
    let changes: Vec<(String, String, String)> = msg["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter(|e| e.get("depth").is_some())
        .map(|e| {
            let f = |k: &str| e[k].as_str().unwrap_or_default().to_owned();
            (f("depth"), f("price"), f("qty"))
        })
        .collect();
    assert!(
        changes.contains(&("asks".into(), "50000".into(), "0.15".into())),
        "{changes:?}"
    );
    assert_eq!(
        msg["klines"]["1d"]["t"].as_u64(),
        Some(minute_ms - minute_ms % 86_400_000)
    );

    // the same batch again: nothing new
    assert_eq!(
        md.apply(&btc, &events, minute_ms + 9).await.expect("again"),
        0
    );
    let n: i64 = r.llen(md.keys().trades(&btc)).await.expect("len");
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
        .hget(md.keys().kline(&btc, "1m"), minute_ms)
        .await
        .expect("kline");
    assert_eq!(
        kline, "50000,50010,50000,50010,0.3,15001,3",
        "0.15 at 50000 then 0.1 at 50010 in one batch"
    );
    let redis = h.env.redis();
    let ticker = || {
        let (redis, key) = (redis.clone(), md.keys().ticker(&btc));
        async move {
            let mut r = redis.get().await.expect("redis");
            let t: BTreeMap<String, String> = r.hgetall(key).await.expect("ticker");
            t
        }
    };
    let t = ticker().await;
    let field = |t: &BTreeMap<String, String>, f: &str| t.get(f).cloned().unwrap_or_default();
    assert_eq!(
        [
            "openPrice",
            "highPrice",
            "lowPrice",
            "lastPrice",
            "volume",
            "quoteVolume",
            "count",
            "priceChange",
            "priceChangePercent",
            "weightedAvgPrice"
        ]
        .map(|f| field(&t, f)),
        [
            "50000",
            "50010",
            "50000",
            "50010",
            "0.3",
            "15001",
            "3",
            "10",
            "0.020",
            "50003.33333333"
        ],
        "15001 / 0.3 = 50003.333… (8 places); 10 / 50000 = 0.020 %"
    );

    // a restarted writer (a new MarketData) continues the 24 h window from Redis
    let md2 = MarketData::new(h.env.redis(), h.env.prefix.clone(), specs.clone());
    let before = events.len();
    m.apply(
        &Command::Place(order(6, 6, Side::Buy, "50010", "0.1")),
        &mut events,
    );
    let two_hours = 2 * 3_600_000;
    md2.apply(&btc, &events[before..], minute_ms + two_hours)
        .await
        .expect("apply after restart");
    let t = ticker().await;
    assert_eq!(
        ["count", "volume", "quoteVolume", "openPrice", "lastPrice"].map(|f| field(&t, f)),
        ["4", "0.4", "20002", "50000", "50010"]
    );
    // time passes with no trades: the first minute leaves the window, then the rest
    let t = {
        md2.refresh_tickers(minute_ms + 86_400_000 + 30 * 60_000)
            .await
            .expect("refresh");
        ticker().await
    };
    assert_eq!(
        ["count", "volume", "openPrice", "lastPrice", "priceChange"].map(|f| field(&t, f)),
        ["1", "0.1", "50010", "50010", "0"]
    );
    md2.refresh_tickers(minute_ms + 27 * 3_600_000)
        .await
        .expect("refresh");
    let t2 = ticker().await;
    assert_eq!(
        [
            "count",
            "volume",
            "quoteVolume",
            "lastPrice",
            "highPrice",
            "priceChangePercent"
        ]
        .map(|f| field(&t2, f)),
        ["0", "0", "0", "50010", "50010", "0.000"],
        "an empty window keeps the last price"
    );
    h.env.drop_all().await;
}
