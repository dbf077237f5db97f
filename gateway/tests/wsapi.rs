//! The WebSocket API (`/ws-api/v3`, issue 14) over real databases and Redis: Binance's
//! request/response frames; signed methods with the params-sorted HMAC; order.place /
//! order.status / openOrders.status / order.cancel / account.status doing what their
//! REST endpoints do (the same rows, the same balances); every bad request answered in
//! the API's error format with its id (malformed JSON, no method, params not an
//! object, an unknown method, a wrong signature, a stale timestamp, another user's
//! order, a session logon) and nothing changed; the user-data subscription pushing the
//! user's events as `{"subscriptionId", "event"}`, and only that user's.

mod common;

use std::time::Duration;

use common::{now_ms, Gw, Key};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Map, Value};
use tokio_tungstenite::tungstenite::Message;

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect(gw: &Gw) -> Ws {
    let url = format!("{}/ws-api/v3", gw.base.replacen("http", "ws", 1));
    tokio_tungstenite::connect_async(url)
        .await
        .expect("ws-api connect")
        .0
}

/// The next text frame that is not a pushed event, as JSON.
async fn next(ws: &mut Ws) -> Value {
    loop {
        let m = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("an answer within 10 s")
            .expect("open")
            .expect("frame");
        if let Message::Text(t) = m {
            return serde_json::from_str(&t).expect("JSON frame");
        }
    }
}

async fn send(ws: &mut Ws, frame: &str) -> Value {
    ws.send(Message::Text(frame.into())).await.expect("send");
    next(ws).await
}

/// `params` with apiKey, timestamp and the signature over the sorted params.
fn signed(key: &Key, params: Value) -> Value {
    let mut p: Map<String, Value> = params.as_object().cloned().unwrap_or_default();
    p.insert("apiKey".into(), json!(key.key));
    p.entry("timestamp").or_insert(json!(now_ms()));
    let mut pairs: Vec<(String, String)> = p
        .iter()
        .map(|(k, v)| {
            let text = match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            (k.clone(), text)
        })
        .collect();
    pairs.sort();
    let payload = serde_urlencoded::to_string(&pairs).expect("form");
    p.insert(
        "signature".into(),
        json!(gateway::auth::sign_hmac(
            key.secret.as_bytes(),
            payload.as_bytes()
        )),
    );
    Value::Object(p)
}

async fn call(ws: &mut Ws, id: &str, method: &str, params: Value) -> Value {
    let frame = json!({"id": id, "method": method, "params": params});
    let v = send(ws, &frame.to_string()).await;
    assert_eq!(v["id"], id, "{v}");
    v
}

fn is_error(v: &Value, status: u64, code: i64) {
    assert_eq!(
        (v["status"].as_u64(), v["error"]["code"].as_i64()),
        (Some(status), Some(code)),
        "{v}"
    );
    assert!(
        v["error"]["msg"].as_str().is_some_and(|m| !m.is_empty()),
        "{v}"
    );
    assert!(v.get("result").is_none(), "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_websocket_api_answers_like_rest_and_pushes_the_users_events() {
    let gw = Gw::start("gwwsapi", 27, 3).await;
    let env = &gw.p.env;
    testkit::deposit(env, 1, "USDT", "1000").await;
    let (k1, k2) = (gw.key(1).await, gw.key(2).await);
    let mut ws = connect(&gw).await;

    // public methods
    let v = call(&mut ws, "p1", "ping", json!({})).await;
    assert_eq!(
        (v["status"].as_u64(), &v["result"]),
        (Some(200), &json!({})),
        "{v}"
    );
    let v = call(&mut ws, "p2", "time", json!({})).await;
    assert!(
        v["result"]["serverTime"].as_u64().is_some_and(|t| t > 0),
        "{v}"
    );
    let v = call(
        &mut ws,
        "p3",
        "depth",
        json!({"symbol": "BTCUSDT", "limit": 5}),
    )
    .await;
    assert!(v["result"]["lastUpdateId"].is_u64(), "{v}");
    let v = call(&mut ws, "p4", "exchangeInfo", json!({"symbol": "BTCUSDT"})).await;
    assert_eq!(v["result"]["symbols"][0]["symbol"], "BTCUSDT", "{v}");

    // a signed placement, as REST: 0.01 BTC at 50,000 freezes 500 USDT
    let order = json!({"symbol": "BTCUSDT", "side": "BUY", "type": "LIMIT",
        "timeInForce": "GTC", "price": "50000", "quantity": "0.01",
        "newClientOrderId": "ws:1/a", "newOrderRespType": "ACK"});
    let v = call(&mut ws, "o1", "order.place", signed(&k1, order.clone())).await;
    assert_eq!(v["status"], 200, "{v}");
    let id = v["result"]["orderId"].as_u64().expect("orderId");
    assert_eq!(v["result"]["clientOrderId"], "ws:1/a");
    let (free, locked) = testkit::balance(env, 1, "USDT").await;
    assert_eq!((free, locked), (testkit::amt("500"), testkit::amt("500")));
    // numbers are accepted as numbers too (signed as JSON writes them)
    let v = call(
        &mut ws,
        "o1b",
        "order.test",
        signed(
            &k1,
            json!({"symbol": "BTCUSDT", "side": "BUY", "type": "LIMIT",
            "timeInForce": "GTC", "price": 50000, "quantity": 0.01}),
        ),
    )
    .await;
    assert_eq!(
        (v["status"].as_u64(), &v["result"]),
        (Some(200), &json!({})),
        "{v}"
    );
    let v = call(
        &mut ws,
        "o2",
        "order.status",
        signed(&k1, json!({"symbol": "BTCUSDT", "orderId": id})),
    )
    .await;
    assert_eq!(
        (
            v["result"]["orderId"].as_u64(),
            v["result"]["status"].as_str()
        ),
        (Some(id), Some("NEW")),
        "{v}"
    );
    let v = call(
        &mut ws,
        "o3",
        "openOrders.status",
        signed(&k1, json!({"symbol": "BTCUSDT"})),
    )
    .await;
    assert_eq!(v["result"].as_array().map(Vec::len), Some(1), "{v}");
    let v = call(&mut ws, "o4", "account.status", signed(&k1, json!({}))).await;
    let usdt = v["result"]["balances"]
        .as_array()
        .and_then(|b| b.iter().find(|b| b["asset"] == "USDT"))
        .cloned()
        .expect("USDT balance");
    assert_eq!(
        (&usdt["free"], &usdt["locked"]),
        (&json!("500"), &json!("500")),
        "{v}"
    );

    // bad requests: the API's format, the request's id, nothing changed
    let v = send(&mut ws, "{not json").await;
    assert_eq!(v["id"], Value::Null);
    is_error(&v, 400, -1102);
    let v = send(&mut ws, r#"{"id": "b1", "params": {}}"#).await;
    assert_eq!(v["id"], "b1");
    is_error(&v, 400, -1102);
    let v = send(&mut ws, r#"{"id": "b2", "method": "ping", "params": [1]}"#).await;
    is_error(&v, 400, -1102);
    is_error(
        &call(&mut ws, "b3", "order.explode", json!({})).await,
        400,
        -1000,
    );
    is_error(
        &call(&mut ws, "b4", "session.logon", signed(&k1, json!({}))).await,
        400,
        -1000,
    );
    let mut forged = signed(&k1, order.clone());
    forged["quantity"] = json!("1");
    is_error(
        &call(&mut ws, "b5", "order.place", forged).await,
        400,
        -1022,
    );
    let stale = signed(
        &k1,
        json!({"symbol": "BTCUSDT", "orderId": id, "timestamp": now_ms() - 120_000}),
    );
    is_error(
        &call(&mut ws, "b6", "order.status", stale).await,
        400,
        -1021,
    );
    is_error(
        &call(
            &mut ws,
            "b7",
            "order.status",
            json!({"symbol": "BTCUSDT", "orderId": id}),
        )
        .await,
        401,
        -2014,
    );
    // another user cannot see or cancel the order
    is_error(
        &call(
            &mut ws,
            "b8",
            "order.status",
            signed(&k2, json!({"symbol": "BTCUSDT", "orderId": id})),
        )
        .await,
        400,
        -2013,
    );
    is_error(
        &call(
            &mut ws,
            "b9",
            "order.cancel",
            signed(&k2, json!({"symbol": "BTCUSDT", "orderId": id})),
        )
        .await,
        400,
        -2011,
    );
    is_error(
        &call(
            &mut ws,
            "b10",
            "order.place",
            signed(
                &k1,
                json!({"symbol": "NOPE", "side": "BUY", "type": "LIMIT",
            "timeInForce": "GTC", "price": "1", "quantity": "1"}),
            ),
        )
        .await,
        400,
        -1121,
    );
    let (free, locked) = testkit::balance(env, 1, "USDT").await;
    assert_eq!(
        (free, locked),
        (testkit::amt("500"), testkit::amt("500")),
        "nothing changed"
    );

    // the user-data subscription: user 1's events come, user 2's do not
    let v = call(
        &mut ws,
        "u1",
        "userDataStream.subscribe.signature",
        signed(&k1, json!({})),
    )
    .await;
    assert_eq!(
        (v["status"].as_u64(), &v["result"]),
        (Some(200), &json!({"subscriptionId": 0})),
        "{v}"
    );
    let redis = env.redis();
    let publish = |user: u64, body: Value| {
        let (redis, channel) = (redis.clone(), format!("{}user:{user}", env.prefix));
        async move {
            let mut c = redis.get().await.expect("redis");
            let _: i64 = deadpool_redis::redis::cmd("PUBLISH")
                .arg(channel)
                .arg(body.to_string())
                .query_async(&mut *c)
                .await
                .expect("publish");
        }
    };
    // the subscription is live once a published event arrives
    let event = json!({"e": "outboundAccountPosition", "a": "USDT", "f": "500.000", "l": "500"});
    let until = std::time::Instant::now() + Duration::from_secs(10);
    let pushed = loop {
        publish(
            2,
            json!({"e": "outboundAccountPosition", "a": "BTC", "f": "9", "l": "0"}),
        )
        .await;
        publish(1, event.clone()).await;
        if let Ok(Some(Ok(Message::Text(t)))) =
            tokio::time::timeout(Duration::from_millis(300), ws.next()).await
        {
            break serde_json::from_str::<Value>(&t).expect("json");
        }
        assert!(std::time::Instant::now() < until, "no pushed event");
    };
    assert_eq!(pushed["subscriptionId"], 0, "{pushed}");
    assert_eq!(pushed["event"]["e"], "outboundAccountPosition", "{pushed}");
    assert_eq!(
        pushed["event"]["B"][0]["a"], "USDT",
        "only user 1's events: {pushed}"
    );
    assert_eq!(pushed["event"]["B"][0]["f"], "500", "{pushed}");

    // cancel by the owner through the socket: the funds come back once settled (no
    // matcher here: the cancel request is written and answered PENDING_CANCEL)
    let v = call(
        &mut ws,
        "c1",
        "order.cancel",
        signed(
            &k1,
            json!({"symbol": "BTCUSDT", "origClientOrderId": "ws:1/a"}),
        ),
    )
    .await;
    assert_eq!(v["status"], 200, "{v}");
    assert_eq!(v["result"]["orderId"].as_u64(), Some(id), "{v}");
    let v = call(&mut ws, "u2", "userDataStream.unsubscribe", json!({})).await;
    assert_eq!(v["status"], 200, "{v}");
    ws.close(None).await.expect("close");
    testkit::audits_hold(env).await;
}
