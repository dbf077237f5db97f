//! WebSocket market streams against the real pipeline (a real `engine run` process with
//! the market-data role): subscription requests and their errors, trade and aggTrade
//! messages for every trade, and Binance's "how to manage a local order book correctly"
//! procedure run over the diff stream while orders trade: the local book ends equal to
//! REST depth.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::Gw;
use futures_util::{SinkExt, StreamExt};
use rand::Rng;
use rust_decimal::Decimal;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect(gw: &Gw, path: &str) -> Ws {
    let url = format!("{}{path}", gw.base.replace("http://", "ws://"));
    tokio_tungstenite::connect_async(url)
        .await
        .expect("ws connect")
        .0
}

/// The next text frame as JSON (pings are answered by the library).
async fn next_json(ws: &mut Ws, within: Duration) -> Option<Value> {
    let until = Instant::now() + within;
    loop {
        let left = until.checked_duration_since(Instant::now())?;
        match tokio::time::timeout(left, ws.next()).await {
            Ok(Some(Ok(Message::Text(t)))) => return Some(serde_json::from_str(&t).expect("json")),
            Ok(Some(Ok(Message::Close(f)))) => {
                eprintln!("closed: {f:?}");
                return None;
            }
            Ok(None) | Err(_) => return None,
            Ok(Some(Ok(_))) => {}
            Ok(Some(Err(e))) => panic!("ws error: {e}"),
        }
    }
}

async fn ask(ws: &mut Ws, req: Value) -> Value {
    ws.send(Message::Text(req.to_string().into()))
        .await
        .expect("send");
    loop {
        let v = next_json(ws, Duration::from_secs(10))
            .await
            .expect("an answer");
        if v.get("id").is_some() {
            return v;
        }
    }
}

type Book = BTreeMap<Decimal, Decimal>;

fn apply(book: &mut Book, levels: &Value) {
    for l in levels.as_array().expect("levels") {
        let p: Decimal = l[0].as_str().expect("p").parse().expect("price");
        let q: Decimal = l[1].as_str().expect("q").parse().expect("qty");
        if q.is_zero() {
            book.remove(&p);
        } else {
            book.insert(p, q);
        }
    }
}

fn levels(v: &Value) -> Book {
    let mut b = Book::new();
    apply(&mut b, v);
    b
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_follow_the_trades_and_a_local_book_from_the_diffs_equals_rest_depth() {
    let gw = Gw::start("gwws", 19, 4).await;
    let env = &gw.p.env;
    for u in 1..=4 {
        testkit::deposit(env, u, "BTC", "10").await;
        testkit::deposit(env, u, "USDT", "1000000").await;
    }
    let tag = format!("{:06x}", rand::rng().random::<u32>() % 0xff_ffff);
    let logs = std::env::temp_dir().join(format!("gwws-{tag}"));
    std::fs::create_dir_all(&logs).expect("logs");
    let mut engine = testkit::engine::EngineProcess::new(
        "relay,matcher,settler,market",
        19_700 + u16::from(rand::rng().random::<u8>()),
        testkit::engine::engine_env(env, &format!("t_gwws_{tag}_")),
        logs.join("engine.log"),
    );
    engine.start();
    engine.ready().await;

    // subscription requests on a raw connection
    let mut raw = connect(&gw, "/ws").await;
    assert_eq!(
        ask(&mut raw, json!({"method": "SUBSCRIBE", "params": ["btcusdt@aggTrade", "btcusdt@kline_1m"], "id": "a1"})).await,
        json!({"result": null, "id": "a1"})
    );
    let bad = ask(
        &mut raw,
        json!({"method": "SUBSCRIBE", "params": ["dogeusdt@trade"], "id": 2}),
    )
    .await;
    assert_eq!(
        (bad["id"].clone(), bad["error"]["code"].clone()),
        (json!(2), json!(2)),
        "{bad}"
    );
    assert_eq!(
        ask(
            &mut raw,
            json!({"method": "UNSUBSCRIBE", "params": ["btcusdt@kline_1m"], "id": 3})
        )
        .await,
        json!({"result": null, "id": 3})
    );
    assert_eq!(
        ask(&mut raw, json!({"method": "LIST_SUBSCRIPTIONS", "id": 4})).await,
        json!({"result": ["btcusdt@aggTrade"], "id": 4})
    );
    let junk = ask(&mut raw, json!({"method": "FLY", "id": 5})).await;
    assert_eq!(junk["error"]["code"], 2, "{junk}");
    // a stream name that is no stream: closed with 1008
    let mut refused = connect(&gw, "/ws/dogeusdt@trade").await;
    match tokio::time::timeout(Duration::from_secs(5), refused.next()).await {
        Ok(Some(Ok(Message::Close(Some(f))))) => assert_eq!(u16::from(f.code), 1008),
        other => panic!("expected a close frame, got {other:?}"),
    }

    // the local-book client: open the diff stream first, buffer, then take a snapshot
    let mut book_ws = connect(&gw, "/stream?streams=btcusdt@depth@100ms/btcusdt@trade").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let placer = gw.p.placer.clone();
    // prices around 50000 on a 20-unit ladder; both sides cross now and then
    let plan: Vec<(domain::Side, String, String)> = {
        let mut rng = rand::rng();
        (0..120)
            .map(|_| {
                let side = if rng.random_range(0..2) == 0 {
                    domain::Side::Buy
                } else {
                    domain::Side::Sell
                };
                let price = format!("{}", 49_990 + rng.random_range(0..20u32));
                let qty = format!("0.00{}", 1 + rng.random_range(0..9u32));
                (side, price, qty)
            })
            .collect()
    };
    let trader = tokio::spawn(async move {
        for (i, (side, price, qty)) in (0u32..).zip(plan) {
            let user = 1 + u64::from(i % 4);
            let r = testkit::order_request(
                user,
                side,
                domain::OrderType::Limit,
                Some(&price),
                Some(&qty),
                None,
            );
            placer.place(&r).await.expect("place").expect("accepted");
            if i % 10 == 0 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    });
    tokio::time::sleep(Duration::from_millis(150)).await;
    let (s, snap) = gw.get("/api/v3/depth?symbol=BTCUSDT&limit=5000").await;
    assert_eq!(s, 200);
    let last_id = snap["lastUpdateId"].as_u64().expect("lastUpdateId");
    let mut bids = levels(&snap["bids"]);
    let mut asks = levels(&snap["asks"]);
    trader.await.expect("trader");

    // apply the buffered and the following diffs, Binance's rules
    let mut prev_u: Option<u64> = None;
    let mut trades = 0usize;
    let until = Instant::now() + Duration::from_secs(60);
    loop {
        // done when the book is quiet and the REST book is what we hold
        let (_, rest) = gw.get("/api/v3/depth?symbol=BTCUSDT&limit=5000").await;
        let rest_u = rest["lastUpdateId"].as_u64().expect("u");
        if prev_u.is_some_and(|u| u == rest_u)
            || (prev_u.is_none() && rest_u == last_id && rest_u > 0)
        {
            assert_eq!(bids, levels(&rest["bids"]), "bids at {rest_u}");
            assert_eq!(asks, levels(&rest["asks"]), "asks at {rest_u}");
            break;
        }
        assert!(
            Instant::now() < until,
            "the stream never caught up with REST depth {rest_u}"
        );
        while let Some(m) = next_json(&mut book_ws, Duration::from_millis(200)).await {
            let data = &m["data"];
            if m["stream"] == "btcusdt@trade" {
                assert_eq!(
                    (data["e"].clone(), data["s"].clone()),
                    (json!("trade"), json!("BTCUSDT"))
                );
                trades += 1;
                continue;
            }
            assert_eq!(m["stream"], "btcusdt@depth@100ms");
            let (first, last) = (
                data["U"].as_u64().expect("U"),
                data["u"].as_u64().expect("u"),
            );
            if last <= last_id {
                continue; // older than the snapshot
            }
            match prev_u {
                None => assert!(
                    first <= last_id + 1 && last_id < last,
                    "first diff {first}..{last} vs snapshot {last_id}"
                ),
                Some(p) => assert_eq!(first, p + 1, "diffs chain"),
            }
            apply(&mut bids, &data["b"]);
            apply(&mut asks, &data["a"]);
            prev_u = Some(last);
        }
    }
    assert!(trades > 0, "the load should trade");
    // the raw aggTrade subscription saw trades too
    let agg = next_json(&mut raw, Duration::from_secs(5))
        .await
        .expect("an aggTrade");
    assert_eq!(
        (agg["e"].clone(), agg["s"].clone()),
        (json!("aggTrade"), json!("BTCUSDT")),
        "{agg}"
    );
    testkit::settle_quiet(env, Duration::from_secs(60)).await;
    testkit::all_audits_hold(env).await;
    drop(engine);
    gw.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listen_key_streams_the_users_fills_and_balances_then_expires() {
    let gw = Gw::start("gwuds", 18, 2).await;
    let env = &gw.p.env;
    testkit::deposit(env, 1, "BTC", "1").await;
    testkit::deposit(env, 2, "USDT", "100000").await;
    let (k1, k2) = (gw.key(1).await, gw.key(2).await);
    let tag = format!("{:06x}", rand::rng().random::<u32>() % 0xff_ffff);
    let logs = std::env::temp_dir().join(format!("gwuds-{tag}"));
    std::fs::create_dir_all(&logs).expect("logs");
    let mut engine = testkit::engine::EngineProcess::new(
        "relay,matcher,settler,market",
        19_450 + u16::from(rand::rng().random::<u8>() % 40),
        testkit::engine::engine_env(env, &format!("t_gwuds_{tag}_")),
        logs.join("engine.log"),
    );
    engine.start();
    engine.ready().await;

    // the key: the API key alone; keepalive and close only for its owner
    let stream_req = |method: reqwest::Method, key: &common::Key, q: &str| {
        let req = gw
            .http
            .request(method, format!("{}/api/v3/userDataStream{q}", gw.base))
            .header("X-MBX-APIKEY", key.key.clone());
        async move { common::json_of(req.send().await.expect("send")).await }
    };
    let (s, created) = stream_req(reqwest::Method::POST, &k2, "").await;
    assert_eq!(s, 200, "{created}");
    let listen_key = created["listenKey"].as_str().expect("listenKey").to_owned();
    assert_eq!(listen_key.len(), 60);
    let q = format!("?listenKey={listen_key}");
    assert_eq!(
        stream_req(reqwest::Method::PUT, &k2, &q).await,
        (200, json!({}))
    );
    common::is_error(&stream_req(reqwest::Method::PUT, &k1, &q).await, 400, -1125);
    common::is_error(
        &stream_req(
            reqwest::Method::PUT,
            &k2,
            &format!("?listenKey={}", "x".repeat(60)),
        )
        .await,
        400,
        -1125,
    );

    let mut ws = connect(&gw, &format!("/ws/{listen_key}")).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let sell = testkit::order_request(
        1,
        domain::Side::Sell,
        domain::OrderType::Limit,
        Some("50000"),
        Some("0.5"),
        None,
    );
    gw.p.placer
        .place(&sell)
        .await
        .expect("place")
        .expect("accepted");
    let buy = testkit::order_request(
        2,
        domain::Side::Buy,
        domain::OrderType::Limit,
        Some("50000"),
        Some("0.1"),
        None,
    );
    let ack =
        gw.p.placer
            .place(&buy)
            .await
            .expect("place")
            .expect("accepted");
    // keep the 3 s key alive while waiting for the fill
    let (mut fill, mut position) = (None, None);
    let until = Instant::now() + Duration::from_secs(60);
    while fill.is_none() || position.is_none() {
        assert!(
            Instant::now() < until,
            "no fill / balance event: {fill:?} {position:?}"
        );
        let kept = stream_req(reqwest::Method::PUT, &k2, &q).await;
        assert_eq!(kept.0, 200, "{kept:?}");
        while let Some(m) = next_json(&mut ws, Duration::from_millis(500)).await {
            match m["e"].as_str() {
                Some("executionReport") if m["x"] == "TRADE" => fill = Some(m),
                Some("outboundAccountPosition") => position = Some(m),
                _ => {}
            }
        }
    }
    let fill = fill.expect("fill");
    assert_eq!(fill["i"].as_u64(), Some(ack.order_id.get()), "{fill}");
    assert_eq!(
        (
            &fill["s"], &fill["S"], &fill["o"], &fill["f"], &fill["X"], &fill["l"], &fill["L"],
            &fill["N"]
        ),
        (
            &json!("BTCUSDT"),
            &json!("BUY"),
            &json!("LIMIT"),
            &json!("GTC"),
            &json!("FILLED"),
            &json!("0.1"),
            &json!("50000"),
            &json!("BTC")
        ),
        "{fill}"
    );
    assert_eq!(fill["n"], "0.0001", "fee in the asset received: {fill}");
    let b = &position.expect("position")["B"][0];
    assert!(b["a"] == "BTC" || b["a"] == "USDT", "{b}");
    // closed by its owner: the stream says so and ends
    assert_eq!(
        stream_req(reqwest::Method::DELETE, &k2, &q).await,
        (200, json!({}))
    );
    let mut expired = None;
    while let Some(m) = next_json(&mut ws, Duration::from_secs(5)).await {
        if m["e"] == "listenKeyExpired" {
            expired = Some(m);
            break;
        }
    }
    assert_eq!(
        expired.expect("listenKeyExpired")["listenKey"],
        json!(listen_key)
    );
    common::is_error(&stream_req(reqwest::Method::PUT, &k2, &q).await, 400, -1125);
    // a key left without keepalive expires by itself
    let (_, again) = stream_req(reqwest::Method::POST, &k2, "").await;
    let second = again["listenKey"].as_str().expect("key").to_owned();
    let mut ws2 = connect(&gw, &format!("/ws/{second}")).await;
    let m = next_json(&mut ws2, Duration::from_secs(10))
        .await
        .expect("an event");
    assert_eq!(
        (m["e"].clone(), m["listenKey"].clone()),
        (json!("listenKeyExpired"), json!(second))
    );
    testkit::settle_quiet(env, Duration::from_secs(60)).await;
    testkit::all_audits_hold(env).await;
    drop(engine);
    gw.close().await;
}
