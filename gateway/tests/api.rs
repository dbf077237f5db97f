//! The REST gateway against the real stack: public endpoints and every error shape,
//! the signature and time-window rules, and a trading flow through a real `engine run`
//! process (relay, matcher, settlers, market data), checked field by field and ended by
//! the money audits.

mod common;

use std::time::{Duration, Instant};

use common::{is_error, now_ms, Gw, Style};
use reqwest::Method;
use serde_json::{json, Value};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn public_endpoints_answer_binance_shapes_and_every_error_is_json() {
    let gw = Gw::start("gwpub", 24, 0).await;
    assert_eq!(gw.get("/api/v3/ping").await, (200, json!({})));
    let (s, t) = gw.get("/api/v3/time").await;
    let server = t["serverTime"].as_u64().expect("serverTime");
    assert!(s == 200 && server.abs_diff(now_ms()) < 5_000, "{t}");

    // exchangeInfo: every configured symbol, with the filters placement applies
    let (s, info) = gw.get("/api/v3/exchangeInfo").await;
    assert_eq!(s, 200);
    let symbols = info["symbols"].as_array().expect("symbols");
    assert_eq!(symbols.len(), gw.p.symbols.len());
    let btc = symbols
        .iter()
        .find(|s| s["symbol"] == "BTCUSDT")
        .expect("BTCUSDT");
    let cfg = &gw.p.symbols[&"BTCUSDT".parse().expect("symbol")];
    assert_eq!(btc["status"], "TRADING");
    assert_eq!(btc["baseAsset"], "BTC");
    assert_eq!(btc["quoteAsset"], "USDT");
    let filter = |name: &str| {
        btc["filters"]
            .as_array()
            .expect("filters")
            .iter()
            .find(|f| f["filterType"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("no {name}"))
    };
    let t = |d: rust_decimal::Decimal| d.normalize().to_string();
    assert_eq!(
        filter("PRICE_FILTER")["tickSize"],
        t(cfg.spec.tick_size.get())
    );
    assert_eq!(filter("LOT_SIZE")["stepSize"], t(cfg.spec.step_size.get()));
    assert_eq!(filter("LOT_SIZE")["minQty"], t(cfg.min_qty.get()));
    assert_eq!(filter("LOT_SIZE")["maxQty"], t(cfg.max_qty.get()));
    assert_eq!(filter("NOTIONAL")["minNotional"], t(cfg.min_notional.get()));
    assert!(btc["orderTypes"]
        .as_array()
        .expect("types")
        .contains(&json!("LIMIT_MAKER")));
    let (s, one) = gw.get("/api/v3/exchangeInfo?symbol=ETHBTC").await;
    assert_eq!((s, one["symbols"].as_array().map(Vec::len)), (200, Some(1)));
    let (s, two) = gw
        .get("/api/v3/exchangeInfo?symbols=%5B%22ETHBTC%22,%22BTCUSDT%22%5D")
        .await;
    assert_eq!((s, two["symbols"].as_array().map(Vec::len)), (200, Some(2)));

    // an empty book and no trades yet
    let (s, d) = gw.get("/api/v3/depth?symbol=BTCUSDT&limit=5").await;
    assert_eq!(
        (s, d),
        (200, json!({"lastUpdateId": 0, "bids": [], "asks": []}))
    );
    assert_eq!(
        gw.get("/api/v3/trades?symbol=BTCUSDT").await,
        (200, json!([]))
    );
    assert_eq!(
        gw.get("/api/v3/klines?symbol=BTCUSDT&interval=1m").await,
        (200, json!([]))
    );
    let (s, p) = gw.get("/api/v3/ticker/price?symbol=BTCUSDT").await;
    assert_eq!((s, p), (200, json!({"symbol": "BTCUSDT", "price": "0"})));
    let (s, all) = gw.get("/api/v3/ticker/24hr").await;
    assert_eq!(
        (s, all.as_array().map(Vec::len)),
        (200, Some(gw.p.symbols.len()))
    );
    let (s, b) = gw.get("/api/v3/ticker/bookTicker?symbol=ETHUSDT").await;
    assert_eq!((s, &b["bidPrice"]), (200, &json!("0")));
    let (s, a) = gw.get("/api/v3/avgPrice?symbol=BTCUSDT").await;
    assert_eq!((s, &a["mins"], &a["price"]), (200, &json!(5), &json!("0")));

    // bad symbols: unknown, SQL-looking, unicode, lowercase, missing
    for q in [
        "symbol=DOGEUSDT",
        "symbol=BTCUSDT'%20OR%201=1--",
        "symbol=%E2%82%BFUSDT",
        "symbol=btcusdt",
    ] {
        is_error(&gw.get(&format!("/api/v3/depth?{q}")).await, 400, -1121);
    }
    is_error(&gw.get("/api/v3/depth").await, 400, -1102);
    is_error(
        &gw.get("/api/v3/depth?symbol=BTCUSDT&limit=0").await,
        400,
        -1130,
    );
    is_error(
        &gw.get("/api/v3/depth?symbol=BTCUSDT&limit=5001").await,
        400,
        -1130,
    );
    is_error(
        &gw.get("/api/v3/depth?symbol=BTCUSDT&limit=ten").await,
        400,
        -1100,
    );
    is_error(
        &gw.get("/api/v3/depth?symbol=BTCUSDT&symbol=ETHUSDT").await,
        400,
        -1101,
    );
    is_error(
        &gw.get("/api/v3/klines?symbol=BTCUSDT&interval=7m").await,
        400,
        -1120,
    );
    is_error(
        &gw.get("/api/v3/ticker/price?symbol=BTCUSDT&symbols=%5B%5D")
            .await,
        400,
        -1128,
    );
    // unknown paths, wrong methods, oversized and non-form bodies: the same format
    is_error(&gw.get("/api/v3/nothing").await, 404, -1000);
    is_error(&gw.get("/").await, 404, -1000);
    is_error(&gw.public(Method::POST, "/api/v3/depth").await, 405, -1000);
    let big = gw
        .http
        .post(format!("{}/api/v3/order", gw.base))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(vec![b'a'; 10_000])
        .send()
        .await
        .expect("send");
    is_error(&common::json_of(big).await, 413, -1000);
    let json_body = gw
        .http
        .post(format!("{}/api/v3/order", gw.base))
        .header("content-type", "application/json")
        .body(r#"{"symbol":"BTCUSDT"}"#)
        .send()
        .await
        .expect("send");
    is_error(&common::json_of(json_body).await, 415, -1000);
    // python-binance: GET with a JSON content type and no body is fine
    let r = gw
        .http
        .get(format!("{}/api/v3/ping", gw.base))
        .header("content-type", "application/json")
        .send()
        .await
        .expect("send");
    assert_eq!(common::json_of(r).await, (200, json!({})));
    gw.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_requests_are_checked_like_binance_and_refusals_change_nothing() {
    let gw = Gw::start("gwauth", 25, 2).await;
    testkit::deposit(&gw.p.env, 1, "USDT", "1000").await;
    let k1 = gw.key(1).await;
    let order: [(&str, &str); 6] = [
        ("symbol", "BTCUSDT"),
        ("side", "BUY"),
        ("type", "LIMIT"),
        ("timeInForce", "GTC"),
        ("quantity", "0.001"),
        ("price", "20000"),
    ];
    let post = |params: Vec<(&'static str, String)>, style| {
        let gw = &gw;
        let k1 = k1.clone();
        async move {
            let p: Vec<(&str, &str)> = params.iter().map(|(k, v)| (*k, v.as_str())).collect();
            gw.signed(Method::POST, "/api/v3/order", &k1, &p, style)
                .await
        }
    };
    let with = |extra: &[(&'static str, &str)]| -> Vec<(&'static str, String)> {
        let mut v: Vec<(&'static str, String)> =
            order.iter().map(|(k, v)| (*k, (*v).to_owned())).collect();
        for (k, val) in extra {
            if let Some(slot) = v.iter_mut().find(|(n, _)| n == k) {
                slot.1 = (*val).to_owned();
            } else {
                v.push((k, (*val).to_owned()));
            }
        }
        v
    };

    // a correct request signed over the query string, and over the body
    let (s, a) = post(with(&[("newOrderRespType", "ACK")]), Style::Query).await;
    assert_eq!(s, 200, "{a}");
    assert_eq!(a["symbol"], "BTCUSDT");
    assert!(a["orderId"].as_u64().is_some() && a["transactTime"].as_u64().is_some());
    let (s, b) = post(
        with(&[("newClientOrderId", "x-TKT5PX2F0123456789abcdefghij")]),
        Style::Body,
    )
    .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(
        b["clientOrderId"], "x-TKT5PX2F0123456789abcdefghij",
        "echoed"
    );
    assert_eq!((&b["status"], &b["fills"]), (&json!("NEW"), &json!([])));
    assert_eq!(
        (&b["price"], &b["origQty"]),
        (&json!("20000"), &json!("0.001"))
    );
    // the same client order id again: the original order, not a second one
    let (s, again) = post(
        with(&[("newClientOrderId", "x-TKT5PX2F0123456789abcdefghij")]),
        Style::Body,
    )
    .await;
    assert_eq!((s, &again["orderId"]), (200, &b["orderId"]));
    let frozen = testkit::balance(&gw.p.env, 1, "USDT").await;
    assert_eq!(frozen, (testkit::amt("960"), testkit::amt("40")));

    // the signature: tampered parameter, tampered signature, wrong secret, missing
    let ts = now_ms().to_string();
    let text = format!("symbol=BTCUSDT&side=BUY&type=LIMIT&timeInForce=GTC&quantity=0.001&price=20000&timestamp={ts}");
    let sig = gateway::auth::sign_hmac(k1.secret.as_bytes(), text.as_bytes());
    let tampered = text.replace("quantity=0.001", "quantity=0.010");
    for (body, code) in [
        (format!("{tampered}&signature={sig}"), -1022),
        (format!("{text}&signature={}", "0".repeat(64)), -1022),
        (format!("{text}&signature=nothex"), -1022),
        (
            format!(
                "{text}&signature={}",
                gateway::auth::sign_hmac(b"another secret", text.as_bytes())
            ),
            -1022,
        ),
        (text.clone(), -1102),
    ] {
        for style in [Style::Query, Style::Body] {
            let got = gw
                .raw(Method::POST, "/api/v3/order", &k1.key, &body, style)
                .await;
            is_error(&got, 400, code);
        }
    }
    // keys: none, malformed, unknown
    is_error(
        &gw.raw(
            Method::POST,
            "/api/v3/order",
            "",
            &format!("{text}&signature={sig}"),
            Style::Body,
        )
        .await,
        401,
        -2014,
    );
    is_error(
        &gw.raw(
            Method::POST,
            "/api/v3/order",
            "not a key!",
            &format!("{text}&signature={sig}"),
            Style::Body,
        )
        .await,
        401,
        -2014,
    );
    is_error(
        &gw.raw(
            Method::POST,
            "/api/v3/order",
            &"Z".repeat(64),
            &format!("{text}&signature={sig}"),
            Style::Body,
        )
        .await,
        401,
        -2015,
    );
    // time: stale (a replay outside the window), in the future, window too large
    let old = (now_ms() - 6_000).to_string();
    is_error(
        &post(with(&[("timestamp", &old)]), Style::Body).await,
        400,
        -1021,
    );
    let replay = post(
        with(&[("timestamp", &old), ("recvWindow", "10000")]),
        Style::Body,
    )
    .await;
    assert_eq!(replay.0, 200, "inside a 10 s window: {replay:?}");
    let future = (now_ms() + 5_000).to_string();
    is_error(
        &post(with(&[("timestamp", &future)]), Style::Body).await,
        400,
        -1021,
    );
    is_error(
        &post(with(&[("recvWindow", "60001")]), Style::Body).await,
        400,
        -1131,
    );
    // parameters
    is_error(
        &post(with(&[("quantity", "1e-05")]), Style::Body).await,
        400,
        -1100,
    );
    is_error(
        &post(with(&[("quantity", "-1")]), Style::Body).await,
        400,
        -1100,
    );
    is_error(
        &post(with(&[("quantity", "0.0000000000000000001")]), Style::Body).await,
        400,
        -1111,
    );
    is_error(
        &post(with(&[("quantity", "0.000011")]), Style::Body).await,
        400,
        -1013,
    );
    is_error(
        &post(with(&[("price", "20000.001")]), Style::Body).await,
        400,
        -1013,
    );
    is_error(
        &post(with(&[("quantity", "99999999999999999999")]), Style::Body).await,
        400,
        -1013,
    );
    is_error(
        &post(with(&[("side", "HOLD")]), Style::Body).await,
        400,
        -1117,
    );
    is_error(
        &post(with(&[("type", "ICEBERG")]), Style::Body).await,
        400,
        -1116,
    );
    is_error(
        &post(with(&[("timeInForce", "GTX")]), Style::Body).await,
        400,
        -1115,
    );
    is_error(
        &post(with(&[("symbol", "DOGEUSDT")]), Style::Body).await,
        400,
        -1121,
    );
    is_error(
        &post(with(&[("symbol", "BTC'USDT")]), Style::Body).await,
        400,
        -1121,
    );
    is_error(
        &post(with(&[("symbol", "ビットコイン")]), Style::Body).await,
        400,
        -1121,
    );
    is_error(
        &post(with(&[("newClientOrderId", "has space")]), Style::Body).await,
        400,
        -1100,
    );
    is_error(
        &post(with(&[("stopPrice", "1")]), Style::Body).await,
        400,
        -1106,
    );
    is_error(
        &post(with(&[("newOrderRespType", "ALL")]), Style::Body).await,
        400,
        -1130,
    );
    let no_tif: Vec<(&'static str, String)> = with(&[])
        .into_iter()
        .filter(|(k, _)| *k != "timeInForce")
        .collect();
    is_error(&post(no_tif, Style::Body).await, 400, -1102);
    // too much for the balance: Binance's exact text (ccxt maps it to InsufficientFunds)
    let broke = post(with(&[("quantity", "1")]), Style::Body).await;
    is_error(&broke, 400, -2010);
    assert_eq!(
        broke.1["msg"],
        "Account has insufficient balance for requested action."
    );
    // nothing of all that changed anything
    assert_eq!(
        testkit::balance(&gw.p.env, 1, "USDT").await,
        (testkit::amt("940"), testkit::amt("60"))
    );
    let (s, open) = gw
        .signed(
            Method::GET,
            "/api/v3/openOrders",
            &k1,
            &[("symbol", "BTCUSDT")],
            Style::Query,
        )
        .await;
    assert_eq!((s, open.as_array().map(Vec::len)), (200, Some(3)), "{open}");
    // order/test: the checks without a write
    let (s, t) = gw
        .signed(Method::POST, "/api/v3/order/test", &k1, &order, Style::Body)
        .await;
    assert_eq!((s, t), (200, json!({})));
    let off_step = with(&[("quantity", "0.000011")]);
    let p: Vec<(&str, &str)> = off_step.iter().map(|(k, v)| (*k, v.as_str())).collect();
    is_error(
        &gw.signed(Method::POST, "/api/v3/order/test", &k1, &p, Style::Body)
            .await,
        400,
        -1013,
    );
    assert_eq!(
        testkit::balance(&gw.p.env, 1, "USDT").await,
        (testkit::amt("940"), testkit::amt("60"))
    );
    // the symbol's commission rates, as configured
    let (s, c) = gw
        .signed(
            Method::GET,
            "/api/v3/account/commission",
            &k1,
            &[("symbol", "BTCUSDT")],
            Style::Query,
        )
        .await;
    let spec = &gw.p.symbols[&"BTCUSDT".parse().expect("symbol")].spec;
    let rate = |ppm: u32| {
        rust_decimal::Decimal::new(i64::from(ppm), 6)
            .normalize()
            .to_string()
    };
    assert_eq!(
        (
            s,
            c["standardCommission"]["maker"].clone(),
            c["standardCommission"]["taker"].clone()
        ),
        (
            200,
            json!(rate(spec.maker_fee_ppm)),
            json!(rate(spec.taker_fee_ppm))
        ),
        "{c}"
    );
    testkit::audits_hold(&gw.p.env).await;
    gw.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_replace_swaps_an_order_and_reports_each_part() {
    let gw = Gw::start("gwcr", 17, 1).await;
    testkit::deposit(&gw.p.env, 1, "BTC", "1").await;
    let k = gw.key(1).await;
    let (s, first) = gw
        .signed(
            Method::POST,
            "/api/v3/order",
            &k,
            &[
                ("symbol", "BTCUSDT"),
                ("side", "SELL"),
                ("type", "LIMIT"),
                ("timeInForce", "GTC"),
                ("quantity", "0.5"),
                ("price", "50000"),
                ("newOrderRespType", "ACK"),
            ],
            Style::Body,
        )
        .await;
    assert_eq!(s, 200, "{first}");
    let first_id = first["orderId"].as_u64().expect("id").to_string();
    let swap = |cancel_id: String, mode: &'static str, qty: &'static str| {
        let (gw, k) = (&gw, k.clone());
        async move {
            gw.signed(
                Method::POST,
                "/api/v3/order/cancelReplace",
                &k,
                &[
                    ("symbol", "BTCUSDT"),
                    ("side", "SELL"),
                    ("type", "LIMIT"),
                    ("timeInForce", "GTC"),
                    ("quantity", qty),
                    ("price", "50010"),
                    ("cancelReplaceMode", mode),
                    ("cancelOrderId", &cancel_id),
                    ("newOrderRespType", "ACK"),
                ],
                Style::Body,
            )
            .await
        }
    };
    // both parts succeed
    let (s, both) = swap(first_id.clone(), "STOP_ON_FAILURE", "0.3").await;
    assert_eq!(s, 200, "{both}");
    assert_eq!(
        (&both["cancelResult"], &both["newOrderResult"]),
        (&json!("SUCCESS"), &json!("SUCCESS"))
    );
    assert_eq!(
        both["cancelResponse"]["orderId"]
            .as_u64()
            .map(|i| i.to_string()),
        Some(first_id.clone())
    );
    assert!(
        both["newOrderResponse"]["orderId"].as_u64().is_some(),
        "{both}"
    );
    // the cancel fails: STOP_ON_FAILURE places nothing (-2022), ALLOW_FAILURE places (-2021)
    let unknown = (first["orderId"].as_u64().expect("id") + 1).to_string();
    let stop = swap(unknown.clone(), "STOP_ON_FAILURE", "0.01").await;
    is_error(&stop, 400, -2022);
    assert_eq!(stop.1["data"]["cancelResult"], "FAILURE", "{stop:?}");
    assert_eq!(stop.1["data"]["newOrderResult"], "NOT_ATTEMPTED");
    assert_eq!(stop.1["data"]["cancelResponse"]["code"], -2011);
    let allow = swap(unknown.clone(), "ALLOW_FAILURE", "0.01").await;
    is_error(&allow, 409, -2021);
    assert_eq!(allow.1["data"]["newOrderResult"], "SUCCESS", "{allow:?}");
    // both fail: the new order needs more than there is
    let none = swap(unknown, "ALLOW_FAILURE", "10").await;
    is_error(&none, 400, -2022);
    assert_eq!(
        none.1["data"]["newOrderResponse"]["code"], -2010,
        "{none:?}"
    );
    // what was placed: the first (its cancel requested), 0.3 and 0.01 frozen besides
    assert_eq!(
        testkit::balance(&gw.p.env, 1, "BTC").await,
        (testkit::amt("0.19"), testkit::amt("0.81"))
    );
    is_error(
        &gw.signed(
            Method::POST,
            "/api/v3/order/cancelReplace",
            &k,
            &[("symbol", "BTCUSDT")],
            Style::Body,
        )
        .await,
        400,
        -1102,
    );
    testkit::audits_hold(&gw.p.env).await;
    gw.close().await;
}

async fn wait_for(what: &str, mut f: impl AsyncFnMut() -> bool) {
    let until = Instant::now() + Duration::from_secs(60);
    while !f().await {
        assert!(Instant::now() < until, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orders_trade_through_the_engine_and_every_read_agrees() {
    let gw = Gw::start("gwflow", 26, 3).await;
    let env = &gw.p.env;
    testkit::deposit(env, 1, "BTC", "1").await;
    testkit::deposit(env, 2, "USDT", "100000").await;
    let (k1, k2) = (gw.key(1).await, gw.key(2).await);
    let tag = rand_tag();
    let logs = std::env::temp_dir().join(format!("gwflow-{tag}"));
    std::fs::create_dir_all(&logs).expect("logs");
    let mut engine = testkit::engine::EngineProcess::new(
        "relay,matcher,settler,market",
        19_300 + u16::from(tag.as_bytes()[0] % 200),
        testkit::engine::engine_env(env, &format!("t_gwflow_{tag}_")),
        logs.join("engine.log"),
    );
    engine.start();
    engine.ready().await;

    // user 1 rests 0.5 BTC at 50000 (form body, ccxt's FULL), user 2 takes 0.1 (query)
    let (s, sell) = gw
        .signed(
            Method::POST,
            "/api/v3/order",
            &k1,
            &[
                ("symbol", "BTCUSDT"),
                ("side", "SELL"),
                ("type", "LIMIT"),
                ("timeInForce", "GTC"),
                ("quantity", "0.5"),
                ("price", "50000"),
                ("newOrderRespType", "FULL"),
                ("recvWindow", "10000"),
            ],
            Style::Body,
        )
        .await;
    assert_eq!(s, 200, "{sell}");
    let sell_id = sell["orderId"].as_u64().expect("id").to_string();
    // the two orders come from two shards through two relays: the sell must rest
    // before the buy is sent, or the buy may arrive first and make the sell the taker
    wait_for("the sell to rest in the book", async || {
        gw.get("/api/v3/depth?symbol=BTCUSDT").await.1["asks"]
            .as_array()
            .is_some_and(|a| !a.is_empty())
    })
    .await;
    let (s, buy) = gw
        .signed(
            Method::POST,
            "/api/v3/order",
            &k2,
            &[
                ("symbol", "BTCUSDT"),
                ("side", "BUY"),
                ("type", "LIMIT"),
                ("timeInForce", "GTC"),
                ("quantity", "0.1"),
                ("price", "50000"),
                ("newOrderRespType", "ACK"),
            ],
            Style::Query,
        )
        .await;
    assert_eq!(s, 200, "{buy}");
    let buy_id = buy["orderId"].as_u64().expect("id").to_string();
    let q = |key: &common::Key, id: &str| {
        let (gw, key, id) = (&gw, key.clone(), id.to_owned());
        async move {
            gw.signed(
                Method::GET,
                "/api/v3/order",
                &key,
                &[("symbol", "BTCUSDT"), ("orderId", &id)],
                Style::Query,
            )
            .await
        }
    };
    wait_for("the buy to fill", async || {
        q(&k2, &buy_id).await.1["status"] == "FILLED"
    })
    .await;
    let (_, b) = q(&k2, &buy_id).await;
    assert_eq!(
        (&b["executedQty"], &b["cummulativeQuoteQty"]),
        (&json!("0.1"), &json!("5000"))
    );
    // the sell's half settles on its own shard, on its own time
    wait_for("the sell's half", async || {
        q(&k1, &sell_id).await.1["status"] == "PARTIALLY_FILLED"
    })
    .await;
    let (_, s1) = q(&k1, &sell_id).await;
    assert_eq!(s1["executedQty"], json!("0.1"));

    // one user cannot see or cancel another's order
    is_error(&q(&k2, &sell_id).await, 400, -2013);
    is_error(
        &gw.signed(
            Method::DELETE,
            "/api/v3/order",
            &k2,
            &[("symbol", "BTCUSDT"), ("orderId", &sell_id)],
            Style::Body,
        )
        .await,
        400,
        -2011,
    );
    is_error(&q(&k1, "12345").await, 400, -2013);

    // trades and balances as the settlers wrote them (0.1 % fees)
    let (s, mine) = gw
        .signed(
            Method::GET,
            "/api/v3/myTrades",
            &k2,
            &[("symbol", "BTCUSDT")],
            Style::Query,
        )
        .await;
    assert_eq!(s, 200, "{mine}");
    let t = &mine.as_array().expect("trades")[..];
    assert_eq!(t.len(), 1, "{mine}");
    assert_eq!(
        (
            &t[0]["price"],
            &t[0]["qty"],
            &t[0]["quoteQty"],
            &t[0]["commission"],
            &t[0]["commissionAsset"],
            &t[0]["isBuyer"],
            &t[0]["isMaker"]
        ),
        (
            &json!("50000"),
            &json!("0.1"),
            &json!("5000"),
            &json!("0.0001"),
            &json!("BTC"),
            &json!(true),
            &json!(false)
        )
    );
    assert_eq!(
        t[0]["orderId"].as_u64().map(|i| i.to_string()),
        Some(buy_id.clone())
    );
    let balances = |v: &Value| -> Vec<(String, String, String)> {
        v["balances"]
            .as_array()
            .expect("balances")
            .iter()
            .map(|b| {
                (
                    b["asset"].as_str().unwrap_or("").to_owned(),
                    b["free"].as_str().unwrap_or("").to_owned(),
                    b["locked"].as_str().unwrap_or("").to_owned(),
                )
            })
            .collect()
    };
    let (s, acc1) = gw
        .signed(Method::GET, "/api/v3/account", &k1, &[], Style::Query)
        .await;
    assert_eq!(s, 200, "{acc1}");
    let b1 = balances(&acc1);
    assert!(
        b1.contains(&("BTC".into(), "0.5".into(), "0.4".into())),
        "{b1:?}"
    );
    assert!(
        b1.contains(&("USDT".into(), "4995".into(), "0".into())),
        "{b1:?}"
    );
    assert_eq!(acc1["canTrade"], true);

    // market data: the book, the trade, a candle, the ticker
    wait_for("depth", async || {
        gw.get("/api/v3/depth?symbol=BTCUSDT").await.1["asks"] == json!([["50000", "0.4"]])
    })
    .await;
    let (_, d) = gw.get("/api/v3/depth?symbol=BTCUSDT").await;
    assert!(d["lastUpdateId"].as_u64().is_some_and(|s| s > 0), "{d}");
    let (_, tr) = gw.get("/api/v3/trades?symbol=BTCUSDT").await;
    let tr = &tr.as_array().expect("trades")[..];
    assert_eq!(
        (tr.len(), &tr[0]["price"], &tr[0]["qty"], &tr[0]["quoteQty"]),
        (1, &json!("50000"), &json!("0.1"), &json!("5000"))
    );
    let (_, agg) = gw.get("/api/v3/aggTrades?symbol=BTCUSDT").await;
    assert_eq!(agg[0]["p"], "50000");
    let (_, k) = gw.get("/api/v3/klines?symbol=BTCUSDT&interval=1m").await;
    let k = &k.as_array().expect("klines")[..];
    assert_eq!(k.len(), 1);
    assert_eq!(
        (&k[0][1], &k[0][5], &k[0][8]),
        (&json!("50000"), &json!("0.1"), &json!(1))
    );
    let (_, price) = gw.get("/api/v3/ticker/price?symbol=BTCUSDT").await;
    assert_eq!(price["price"], "50000");
    wait_for("the ticker", async || {
        gw.get("/api/v3/ticker/24hr?symbol=BTCUSDT").await.1["count"] == json!(1)
    })
    .await;
    // the rolling-window ticker over the same trade, FULL and MINI, one and a list
    for q in ["windowSize=1m", "windowSize=2h", "windowSize=7d", ""] {
        let (s, t) = gw.get(&format!("/api/v3/ticker?symbol=BTCUSDT&{q}")).await;
        assert_eq!(s, 200, "{q}: {t}");
        assert_eq!(
            (
                &t["symbol"],
                &t["lastPrice"],
                &t["openPrice"],
                &t["volume"],
                &t["quoteVolume"],
                &t["count"]
            ),
            (
                &json!("BTCUSDT"),
                &json!("50000"),
                &json!("50000"),
                &json!("0.1"),
                &json!("5000"),
                &json!(1)
            ),
            "{q}: {t}"
        );
        assert_eq!(
            (&t["priceChange"], &t["weightedAvgPrice"]),
            (&json!("0"), &json!("50000")),
            "{t}"
        );
    }
    let (_, mini) = gw
        .get("/api/v3/ticker?symbols=%5B%22BTCUSDT%22,%22ETHBTC%22%5D&type=MINI")
        .await;
    let mini = mini.as_array().expect("a list for symbols").clone();
    assert_eq!(mini.len(), 2, "{mini:?}");
    assert!(
        mini[0].get("priceChange").is_none(),
        "MINI has no change: {mini:?}"
    );
    assert_eq!(
        (&mini[1]["symbol"], &mini[1]["count"]),
        (&json!("ETHBTC"), &json!(0))
    );
    for bad in [
        "windowSize=60m",
        "windowSize=0d",
        "windowSize=1w",
        "windowSize=8d",
        "windowSize=m",
        "type=HUGE",
    ] {
        is_error(
            &gw.get(&format!("/api/v3/ticker?symbol=BTCUSDT&{bad}"))
                .await,
            400,
            -1130,
        );
    }
    is_error(&gw.get("/api/v3/ticker").await, 400, -1102);
    is_error(&gw.get("/api/v3/ticker?symbol=NOPE").await, 400, -1121);

    // open orders, a cancel, then allOrders
    let (_, open) = gw
        .signed(
            Method::GET,
            "/api/v3/openOrders",
            &k1,
            &[("symbol", "BTCUSDT")],
            Style::Query,
        )
        .await;
    assert_eq!(open.as_array().map(Vec::len), Some(1), "{open}");
    let (s, c) = gw
        .signed(
            Method::DELETE,
            "/api/v3/order",
            &k1,
            &[("symbol", "BTCUSDT"), ("orderId", &sell_id)],
            Style::Body,
        )
        .await;
    assert_eq!((s, &c["status"]), (200, &json!("PENDING_CANCEL")), "{c}");
    wait_for("the cancel", async || {
        q(&k1, &sell_id).await.1["status"] == "CANCELED"
    })
    .await;
    assert_eq!(
        testkit::balance(env, 1, "BTC").await,
        (testkit::amt("0.9"), testkit::amt("0"))
    );
    let (_, all) = gw
        .signed(
            Method::GET,
            "/api/v3/allOrders",
            &k1,
            &[("symbol", "BTCUSDT")],
            Style::Query,
        )
        .await;
    let all = &all.as_array().expect("all")[..];
    assert_eq!((all.len(), &all[0]["status"]), (1, &json!("CANCELED")));
    // a second cancel of a finished order is refused
    is_error(
        &gw.signed(
            Method::DELETE,
            "/api/v3/order",
            &k1,
            &[("symbol", "BTCUSDT"), ("orderId", &sell_id)],
            Style::Body,
        )
        .await,
        400,
        -2011,
    );
    testkit::all_audits_hold(env).await;
    drop(engine);
    gw.close().await;
}

fn rand_tag() -> String {
    format!("{:08x}", now_ms() % 0xffff_ffff)
}
