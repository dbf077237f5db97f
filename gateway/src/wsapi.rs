//! The WebSocket API, `/ws-api/v3` (Binance's request/response protocol): each text
//! frame `{"id", "method", "params"}` is answered `{"id", "status", "result"}` or
//! `{"id", "status", "error": {"code", "msg"}}`, with `rateLimits`. Every method is
//! the REST endpoint of the same meaning, called with the same checks: the params
//! become that endpoint's parameters; a signed method carries `apiKey`, `timestamp`
//! and `signature` in its params, the signature being the HMAC-SHA256 of every other
//! param sorted by name, form-encoded as `name=value&…` (Binance's rule for this API,
//! and what its official SDK signs), which is checked as a REST signature over that
//! payload. Request weights and order counts
//! are the REST ones, in the same Redis windows.
//!
//! `userDataStream.subscribe.signature` (what ccxt's pro module uses) subscribes the
//! connection to the key's user's events, pushed as `{"subscriptionId", "event"}` in
//! the user stream's format; `userDataStream.unsubscribe` ends it. `session.logon`
//! (Ed25519 keys) is not supported: such keys do not exist yet.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::Response;
use axum::Json;
use serde_json::{json, Map, Value};
use tokio::sync::mpsc;

use crate::error::ApiError;
use crate::params::Params;
use crate::{limits, private, public, userstream, Req, Shared};

/// Frames larger than this are refused (closed with 1009).
const MAX_FRAME: usize = 64 * 1024;
/// Pushed events waiting for a slow reader: beyond this the connection is closed.
const EVENT_BUFFER: usize = 1024;

/// `GET /ws-api/v3`.
pub async fn handler(
    ws: WebSocketUpgrade,
    State(s): State<Shared>,
    peer: Option<axum::Extension<ConnectInfo<SocketAddr>>>,
) -> Response {
    let ip = peer.map_or(IpAddr::from([127, 0, 0, 1]), |c| c.0 .0.ip());
    ws.max_message_size(MAX_FRAME)
        .on_upgrade(move |socket| session(socket, s, ip))
}

async fn session(mut socket: WebSocket, s: Shared, ip: IpAddr) {
    // events of the user-data subscription, when there is one
    let (events_tx, mut events) = mpsc::channel::<Value>(EVENT_BUFFER);
    let mut subscription: Option<tokio::task::JoinHandle<()>> = None;
    let mut ping = tokio::time::interval(Duration::from_secs(20));
    ping.tick().await;
    let end = |sub: &mut Option<tokio::task::JoinHandle<()>>| {
        if let Some(h) = sub.take() {
            h.abort();
        }
    };
    loop {
        tokio::select! {
            m = socket.recv() => {
                let text = match m {
                    Some(Ok(Message::Text(t))) => t.to_string(),
                    Some(Ok(Message::Ping(p))) => {
                        if socket.send(Message::Pong(p)).await.is_err() {
                            break;
                        }
                        continue;
                    }
                    Some(Ok(Message::Pong(_))) => continue,
                    Some(Ok(Message::Binary(_))) => {
                        let answer = json!({"id": Value::Null, "status": 400,
                            "error": {"code": -1000, "msg": "Binary frames are not supported."}});
                        if socket.send(Message::Text(answer.to_string().into())).await.is_err() {
                            break;
                        }
                        continue;
                    }
                    Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                };
                let answer = answer(&s, ip, &text, &events_tx, &mut subscription).await;
                if socket.send(Message::Text(answer.to_string().into())).await.is_err() {
                    break;
                }
            }
            Some(e) = events.recv() => {
                if socket.send(Message::Text(e.to_string().into())).await.is_err() {
                    break;
                }
            }
            _ = ping.tick() => {
                if socket.send(Message::Ping(Vec::new().into())).await.is_err() {
                    break;
                }
            }
        }
    }
    end(&mut subscription);
}

/// One request's answer.
async fn answer(
    s: &Shared,
    ip: IpAddr,
    text: &str,
    events: &mpsc::Sender<Value>,
    subscription: &mut Option<tokio::task::JoinHandle<()>>,
) -> Value {
    let Ok(Value::Object(req)) = serde_json::from_str::<Value>(text) else {
        return error(
            &Value::Null,
            &ApiError::new(
                StatusCode::BAD_REQUEST,
                -1102,
                "Malformed request: not a JSON object.",
            ),
        );
    };
    let id = req.get("id").cloned().unwrap_or(Value::Null);
    if !matches!(id, Value::String(_) | Value::Number(_) | Value::Null) {
        return error(
            &Value::Null,
            &ApiError::new(
                StatusCode::BAD_REQUEST,
                -1102,
                "Malformed request: id must be a string or a number.",
            ),
        );
    }
    let Some(method) = req.get("method").and_then(Value::as_str) else {
        return error(&id, &ApiError::mandatory("method"));
    };
    let params = match req.get("params") {
        None => Map::new(),
        Some(Value::Object(p)) => p.clone(),
        Some(_) => {
            return error(
                &id,
                &ApiError::new(
                    StatusCode::BAD_REQUEST,
                    -1102,
                    "Malformed request: params must be an object.",
                ),
            )
        }
    };
    match call(s, ip, method, &params, events, subscription).await {
        Ok(result) => json!({"id": id, "status": 200, "result": result, "rateLimits": []}),
        Err(e) => error(&id, &e),
    }
}

fn error(id: &Value, e: &ApiError) -> Value {
    let mut err = json!({"code": e.code, "msg": e.msg});
    if let Some(d) = &e.data {
        err["data"] = d.clone();
    }
    json!({"id": id, "status": e.status.as_u16(), "error": err, "rateLimits": []})
}

/// A param's text as the client signed it: strings as they are, numbers and booleans
/// as JSON writes them.
fn text_of(v: &Value) -> Result<String, ApiError> {
    match v {
        Value::String(s) => Ok(s.clone()),
        Value::Number(n) => Ok(n.to_string()),
        Value::Bool(b) => Ok(b.to_string()),
        Value::Array(_) => Ok(v.to_string()),
        _ => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            -1102,
            "A parameter was null or an object.",
        )),
    }
}

/// The REST request a method's params stand for: the sorted payload as the signed
/// query, the key as the `X-MBX-APIKEY` header.
fn rest_request(params: &Map<String, Value>) -> Result<Req, ApiError> {
    let mut pairs: Vec<(String, String)> = Vec::with_capacity(params.len());
    for (k, v) in params {
        pairs.push((k.clone(), text_of(v)?));
    }
    pairs.sort();
    let signature = pairs
        .iter()
        .position(|(k, _)| k == "signature")
        .map(|i| pairs.remove(i).1);
    // form-encoded, as the clients sign it (binance-sdk-spot: `urlencode(sorted)`)
    let mut query =
        serde_urlencoded::to_string(&pairs).map_err(|_| ApiError::mandatory("params"))?;
    if let Some(sig) = &signature {
        query.push_str(if query.is_empty() {
            "signature="
        } else {
            "&signature="
        });
        query.push_str(sig);
    }
    let mut headers = HeaderMap::new();
    if let Some(key) = params.get("apiKey").and_then(Value::as_str) {
        if let Ok(v) = HeaderValue::from_str(key) {
            headers.insert("x-mbx-apikey", v);
        }
    }
    let mut all = pairs;
    if let Some(sig) = signature {
        all.push(("signature".into(), sig));
    }
    Ok(Req {
        headers,
        query,
        body: String::new(),
        params: Params::from_pairs(all)?,
    })
}

/// The REST endpoint a method is, for its weight.
fn rest_path(method: &str) -> Option<(Method, &'static str)> {
    Some(match method {
        "ping" => (Method::GET, "/api/v3/ping"),
        "time" => (Method::GET, "/api/v3/time"),
        "exchangeInfo" => (Method::GET, "/api/v3/exchangeInfo"),
        "depth" => (Method::GET, "/api/v3/depth"),
        "trades.recent" => (Method::GET, "/api/v3/trades"),
        "klines" => (Method::GET, "/api/v3/klines"),
        "uiKlines" => (Method::GET, "/api/v3/uiKlines"),
        "avgPrice" => (Method::GET, "/api/v3/avgPrice"),
        "ticker" => (Method::GET, "/api/v3/ticker"),
        "ticker.24hr" => (Method::GET, "/api/v3/ticker/24hr"),
        "ticker.price" => (Method::GET, "/api/v3/ticker/price"),
        "ticker.book" => (Method::GET, "/api/v3/ticker/bookTicker"),
        "order.place" => (Method::POST, "/api/v3/order"),
        "order.test" => (Method::POST, "/api/v3/order/test"),
        "order.status" => (Method::GET, "/api/v3/order"),
        "order.cancel" => (Method::DELETE, "/api/v3/order"),
        "order.cancelReplace" => (Method::POST, "/api/v3/order/cancelReplace"),
        "openOrders.status" => (Method::GET, "/api/v3/openOrders"),
        "openOrders.cancelAll" => (Method::DELETE, "/api/v3/openOrders"),
        "allOrders" => (Method::GET, "/api/v3/allOrders"),
        "myTrades" => (Method::GET, "/api/v3/myTrades"),
        "account.status" => (Method::GET, "/api/v3/account"),
        "account.rateLimits.orders" => (Method::GET, "/api/v3/rateLimit/order"),
        "account.commission" => (Method::GET, "/api/v3/account/commission"),
        "userDataStream.start" => (Method::POST, "/api/v3/userDataStream"),
        "userDataStream.ping" => (Method::PUT, "/api/v3/userDataStream"),
        "userDataStream.stop" => (Method::DELETE, "/api/v3/userDataStream"),
        "userDataStream.subscribe.signature" | "userDataStream.unsubscribe" => {
            (Method::GET, "/api/v3/account/commission")
        }
        _ => return None,
    })
}

async fn call(
    s: &Shared,
    ip: IpAddr,
    method: &str,
    params: &Map<String, Value>,
    events: &mpsc::Sender<Value>,
    subscription: &mut Option<tokio::task::JoinHandle<()>>,
) -> Result<Value, ApiError> {
    let Some((rest_method, path)) = rest_path(method) else {
        return Err(match method {
            "session.logon" | "session.status" | "session.logout" | "userDataStream.subscribe" => {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    -1000,
                    "Session logon needs an Ed25519 key, which this exchange does not issue yet: sign each request, or use userDataStream.subscribe.signature.",
                )
            }
            _ => ApiError::new(StatusCode::BAD_REQUEST, -1000, format!("Unknown method {method:?}.")),
        });
    };
    let r = rest_request(params)?;
    // the REST weight, in the same per-IP window
    let w = limits::weight(&rest_method, path, &r.query);
    match s.limiter.request(ip, w, s.now_ms()).await {
        Err(e) if e.code != -1001 => return Err(e),
        _ => {}
    }
    let st = || State(s.clone());
    let Json(v) = match method {
        "ping" => public::ping().await,
        "time" => public::time(st()).await,
        "exchangeInfo" => public::exchange_info(st(), r).await?,
        "depth" => public::depth(st(), r).await?,
        "trades.recent" => public::trades(st(), r).await?,
        "klines" | "uiKlines" => public::klines(st(), r).await?,
        "avgPrice" => public::avg_price(st(), r).await?,
        "ticker" => public::ticker_window(st(), r).await?,
        "ticker.24hr" => public::ticker_24hr(st(), r).await?,
        "ticker.price" => public::ticker_price(st(), r).await?,
        "ticker.book" => public::book_ticker(st(), r).await?,
        "order.place" => private::new_order(st(), r).await?.1,
        "order.test" => private::test_order(st(), r).await?,
        "order.status" => private::query_order(st(), r).await?,
        "order.cancel" => private::cancel_order(st(), r).await?,
        "order.cancelReplace" => private::cancel_replace(st(), r).await?,
        "openOrders.status" => private::open_orders(st(), r).await?,
        "openOrders.cancelAll" => private::cancel_open_orders(st(), r).await?,
        "allOrders" => private::all_orders(st(), r).await?,
        "myTrades" => private::my_trades(st(), r).await?,
        "account.status" => private::account(st(), r).await?,
        "account.rateLimits.orders" => private::rate_limit_order(st(), r).await?,
        "account.commission" => private::commission(st(), r).await?,
        "userDataStream.start" => userstream::create(st(), r).await?,
        "userDataStream.ping" => userstream::keepalive(st(), r).await?,
        "userDataStream.stop" => userstream::close(st(), r).await?,
        "userDataStream.subscribe.signature" => {
            let user = private::authenticate(s, &r).await?;
            if let Some(h) = subscription.take() {
                h.abort();
            }
            *subscription = Some(tokio::spawn(userstream::forward(
                s.clone(),
                user,
                events.clone(),
                0,
            )));
            Json(json!({"subscriptionId": 0}))
        }
        "userDataStream.unsubscribe" => {
            if let Some(h) = subscription.take() {
                h.abort();
            }
            Json(json!({}))
        }
        _ => return Err(ApiError::internal()),
    };
    Ok(v)
}
