//! WebSocket market streams, Binance's way: raw streams on `/ws/<stream>[/<stream>…]`
//! (the payload alone), combined streams on `/stream?streams=<a>/<b>`
//! (`{"stream": name, "data": payload}`), and on either, live `SUBSCRIBE`,
//! `UNSUBSCRIBE`, `LIST_SUBSCRIPTIONS` requests (`{"method","params","id"}`, answered
//! `{"result","id"}` or `{"error":{"code","msg"},"id"}`).
//!
//! Streams: `<s>@trade`, `<s>@aggTrade` (one aggregate per trade, as REST), `<s>@depth`
//! / `@depth@100ms` / `@depth@1000ms` (diffs with `U`/`u` chained message to message:
//! `U` = previous `u` + 1, and REST depth's `lastUpdateId` is a `u`, so Binance's
//! "manage a local order book" procedure ends with exactly the REST book),
//! `<s>@depth5|10|20[@100ms]` (partial books), `<s>@kline_<interval>`, `<s>@ticker`,
//! `<s>@miniTicker`, `!miniTicker@arr`, `<s>@bookTicker`.
//!
//! One Redis pub/sub subscription per gateway process (pattern `{prefix}md:*`, the
//! market-data role's channels) feeds a bounded broadcast channel; each connection
//! renders what its subscriptions need. Backpressure: a connection that falls more than
//! [`BUFFER`] messages behind is closed (code 1008, "slow consumer"), so memory per
//! connection is bounded. The server pings every 20 s and closes a connection that has
//! not answered for 60 s.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, State};
use axum::response::Response;
use domain::Symbol;
use serde_json::{json, Value};
use tokio::sync::broadcast;

use crate::public::INTERVALS;
use crate::Shared;

/// Market messages a connection may fall behind before it is closed.
pub const BUFFER: usize = 1024;
/// Most streams one connection subscribes to (Binance's limit).
pub const MAX_STREAMS: usize = 1024;
const PING_EVERY: Duration = Duration::from_secs(20);
const PONG_WITHIN: Duration = Duration::from_secs(60);

/// The market-data role's channel messages, as one process-wide broadcast.
#[derive(Clone, Debug)]
pub struct Hub {
    tx: broadcast::Sender<Arc<Value>>,
}

impl Hub {
    /// Subscribes (and resubscribes after a failure, every second) to `{prefix}md:*` on
    /// `redis_url`, broadcasting every message.
    pub fn start(redis_url: String, prefix: String) -> Self {
        let (tx, _) = broadcast::channel(BUFFER);
        let hub = Self { tx };
        let sender = hub.tx.clone();
        tokio::spawn(async move {
            use futures_util::StreamExt;
            loop {
                let conn = async {
                    let client = deadpool_redis::redis::Client::open(redis_url.as_str())?;
                    let mut ps = client.get_async_pubsub().await?;
                    ps.psubscribe(format!("{prefix}md:*")).await?;
                    Ok::<_, deadpool_redis::redis::RedisError>(ps)
                };
                match conn.await {
                    Ok(ps) => {
                        let mut messages = ps.into_on_message();
                        while let Some(m) = messages.next().await {
                            let Ok(body) = m.get_payload::<String>() else {
                                continue;
                            };
                            if let Ok(v) = serde_json::from_str::<Value>(&body) {
                                // no receivers is fine: nobody is connected
                                let _ = sender.send(Arc::new(v));
                            }
                        }
                        tracing::warn!("market channel subscription ended; resubscribing");
                    }
                    Err(e) => tracing::warn!(error = %e, "market channel subscription failed"),
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
        hub
    }

    fn subscribe(&self) -> broadcast::Receiver<Arc<Value>> {
        self.tx.subscribe()
    }
}

/// One stream a connection can follow.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Stream {
    Trade(Symbol),
    AggTrade(Symbol),
    Diff(Symbol),
    Partial(Symbol, usize),
    Kline(Symbol, &'static str),
    Ticker(Symbol),
    Mini(Symbol),
    Book(Symbol),
    AllMini,
}

impl Stream {
    fn symbol(&self) -> Option<&Symbol> {
        match self {
            Self::Trade(s)
            | Self::AggTrade(s)
            | Self::Diff(s)
            | Self::Partial(s, _)
            | Self::Kline(s, _)
            | Self::Ticker(s)
            | Self::Mini(s)
            | Self::Book(s) => Some(s),
            Self::AllMini => None,
        }
    }
}

/// A stream name (`btcusdt@depth@100ms`) of a listed symbol.
fn parse_stream(s: &Shared, name: &str) -> Option<Stream> {
    if name == "!miniTicker@arr" {
        return Some(Stream::AllMini);
    }
    let (sym, kind) = name.split_once('@')?;
    if sym.bytes().any(|b| b.is_ascii_uppercase()) {
        return None;
    }
    let symbol = Symbol::new(&sym.to_ascii_uppercase()).ok()?;
    if !s.symbols().contains_key(&symbol) {
        return None;
    }
    let kind = kind
        .strip_suffix("@100ms")
        .or_else(|| kind.strip_suffix("@1000ms"))
        .unwrap_or(kind);
    Some(match kind {
        "trade" => Stream::Trade(symbol),
        "aggTrade" => Stream::AggTrade(symbol),
        "depth" => Stream::Diff(symbol),
        "depth5" => Stream::Partial(symbol, 5),
        "depth10" => Stream::Partial(symbol, 10),
        "depth20" => Stream::Partial(symbol, 20),
        "ticker" => Stream::Ticker(symbol),
        "miniTicker" => Stream::Mini(symbol),
        "bookTicker" => Stream::Book(symbol),
        k => {
            let interval = k.strip_prefix("kline_")?;
            let (name, _) = INTERVALS.iter().find(|(n, _)| *n == interval)?;
            Stream::Kline(symbol, name)
        }
    })
}

/// `GET /ws` and `/ws/<streams>`: raw streams.
pub async fn raw(
    ws: WebSocketUpgrade,
    State(s): State<Shared>,
    path: Option<Path<String>>,
) -> Response {
    let names: Vec<String> = path
        .map(|Path(p)| {
            p.split('/')
                .filter(|n| !n.is_empty())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    // `/ws/<listenKey>`: the user data stream
    if let [key] = names.as_slice() {
        if crate::userstream::looks_like_key(key) {
            let key = key.clone();
            return match crate::userstream::owner(&s, &key).await {
                Ok(user) => {
                    ws.on_upgrade(move |socket| crate::userstream::stream(socket, s, key, user))
                }
                Err(e) => axum::response::IntoResponse::into_response(e),
            };
        }
    }
    ws.on_upgrade(move |socket| connection(socket, s, names, false))
}

/// `GET /stream?streams=a/b`: combined streams.
pub async fn combined(
    ws: WebSocketUpgrade,
    State(s): State<Shared>,
    Query(q): Query<std::collections::HashMap<String, String>>,
) -> Response {
    let names: Vec<String> = q
        .get("streams")
        .map(|v| {
            v.split('/')
                .filter(|n| !n.is_empty())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    ws.on_upgrade(move |socket| connection(socket, s, names, true))
}

/// A connection's state.
struct Conn {
    subs: BTreeSet<(String, Stream)>,
    combined: bool,
}

async fn connection(mut socket: WebSocket, s: Shared, names: Vec<String>, combined: bool) {
    let mut c = Conn {
        subs: BTreeSet::new(),
        combined,
    };
    for n in names.iter().take(MAX_STREAMS) {
        // a path segment that names no stream at all (ccxt's pro module connects to
        // `/ws/0`, `/ws/1`, … to spread its subscriptions, as Binance allows) is no
        // subscription; a stream name that does not resolve closes the connection
        if !n.contains('@') {
            continue;
        }
        match parse_stream(&s, n) {
            Some(st) => {
                c.subs.insert((n.clone(), st));
            }
            None => {
                let _ = socket
                    .send(close(1008, &format!("Invalid stream name {n}")))
                    .await;
                return;
            }
        }
    }
    let mut rx = s.ws.subscribe();
    let mut ping = tokio::time::interval(PING_EVERY);
    ping.tick().await;
    let mut last_heard = Instant::now();
    loop {
        tokio::select! {
            m = rx.recv() => match m {
                Ok(msg) => {
                    for frame in render(&s, &c, &msg).await {
                        if socket.send(Message::Text(frame.into())).await.is_err() {
                            return;
                        }
                    }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    let _ = socket.send(close(1008, "slow consumer")).await;
                    return;
                }
                Err(broadcast::error::RecvError::Closed) => return,
            },
            m = socket.recv() => {
                let Some(Ok(m)) = m else { return };
                last_heard = Instant::now();
                match m {
                    Message::Text(t) => {
                        let answer = request(&s, &mut c, t.as_str());
                        if socket.send(Message::Text(answer.to_string().into())).await.is_err() {
                            return;
                        }
                    }
                    Message::Close(_) => return,
                    _ => {}
                }
            },
            _ = ping.tick() => {
                if last_heard.elapsed() > PONG_WITHIN {
                    let _ = socket.send(close(1000, "no pong")).await;
                    return;
                }
                if socket.send(Message::Ping(Vec::new().into())).await.is_err() {
                    return;
                }
            }
        }
    }
}

fn close(code: u16, reason: &str) -> Message {
    Message::Close(Some(CloseFrame {
        code,
        reason: Utf8Bytes::from(reason.to_owned()),
    }))
}

/// Answers a `SUBSCRIBE` / `UNSUBSCRIBE` / `LIST_SUBSCRIPTIONS` request.
fn request(s: &Shared, c: &mut Conn, text: &str) -> Value {
    let err =
        |code: i64, msg: String, id: &Value| json!({"error": {"code": code, "msg": msg}, "id": id});
    let Ok(req) = serde_json::from_str::<Value>(text) else {
        return err(3, "Invalid JSON: expected an object".into(), &Value::Null);
    };
    let id = req.get("id").cloned().unwrap_or(Value::Null);
    if !(id.is_null() || id.is_u64() || id.is_string()) {
        return err(
            2,
            "Invalid request: 'id' must be an unsigned integer or a string".into(),
            &Value::Null,
        );
    }
    let names: Vec<String> = match req.get("params") {
        None => Vec::new(),
        Some(Value::Array(a)) if a.iter().all(Value::is_string) => a
            .iter()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect(),
        Some(_) => {
            return err(
                2,
                "Invalid request: 'params' must be an array of strings".into(),
                &id,
            )
        }
    };
    match req.get("method").and_then(Value::as_str) {
        Some("SUBSCRIBE") => {
            let mut parsed = Vec::with_capacity(names.len());
            for n in &names {
                match parse_stream(s, n) {
                    Some(st) => parsed.push((n.clone(), st)),
                    None => return err(2, format!("Invalid request: unknown stream '{n}'"), &id),
                }
            }
            if c.subs.len() + parsed.len() > MAX_STREAMS {
                return err(
                    2,
                    format!("Invalid request: at most {MAX_STREAMS} streams"),
                    &id,
                );
            }
            c.subs.extend(parsed);
            json!({"result": null, "id": id})
        }
        Some("UNSUBSCRIBE") => {
            c.subs.retain(|(n, _)| !names.contains(n));
            json!({"result": null, "id": id})
        }
        Some("LIST_SUBSCRIPTIONS") => {
            let list: Vec<&String> = c.subs.iter().map(|(n, _)| n).collect();
            json!({"result": list, "id": id})
        }
        Some("GET_PROPERTY") => json!({"result": c.combined, "id": id}),
        Some("SET_PROPERTY") => match req["params"].as_array().map(Vec::as_slice) {
            Some([Value::String(p), Value::Bool(b)]) if p == "combined" => {
                c.combined = *b;
                json!({"result": null, "id": id})
            }
            _ => err(
                2,
                "Invalid request: SET_PROPERTY takes [\"combined\", bool]".into(),
                &id,
            ),
        },
        _ => err(2, "Invalid request: unknown method".into(), &id),
    }
}

/// The frames a market message gives this connection's subscriptions, in order.
async fn render(s: &Shared, c: &Conn, msg: &Value) -> Vec<String> {
    let Some(symbol) = msg["symbol"].as_str().and_then(|v| Symbol::new(v).ok()) else {
        return Vec::new();
    };
    let e = msg["E"].as_u64().unwrap_or_else(|| s.now_ms());
    let sym = symbol.as_str();
    let events = msg["events"].as_array().map(Vec::as_slice).unwrap_or(&[]);
    let trades: Vec<&Value> = events.iter().filter(|v| v.get("id").is_some()).collect();
    let mut out = Vec::new();
    let mut push = |name: &str, data: Value| {
        let v = if c.combined {
            json!({"stream": name, "data": data})
        } else {
            data
        };
        out.push(v.to_string());
    };
    for (name, st) in &c.subs {
        if st.symbol().is_some_and(|x| *x != symbol) {
            continue;
        }
        match st {
            Stream::Trade(_) => {
                for t in &trades {
                    push(
                        name,
                        json!({
                            "e": "trade", "E": e, "s": sym, "t": t["id"], "p": t["price"], "q": t["qty"],
                            "T": t["time"], "m": t["isBuyerMaker"], "M": true,
                        }),
                    );
                }
            }
            Stream::AggTrade(_) => {
                for t in &trades {
                    push(
                        name,
                        json!({
                            "e": "aggTrade", "E": e, "s": sym, "a": t["id"], "p": t["price"], "q": t["qty"],
                            "f": t["id"], "l": t["id"], "T": t["time"], "m": t["isBuyerMaker"], "M": true,
                        }),
                    );
                }
            }
            Stream::Diff(_) => {
                let side = |which: &str| -> Vec<Value> {
                    events
                        .iter()
                        .filter(|v| v["depth"] == which)
                        .map(|v| json!([v["price"], v["qty"]]))
                        .collect()
                };
                push(
                    name,
                    json!({
                        "e": "depthUpdate", "E": e, "s": sym, "U": msg["U"], "u": msg["u"],
                        "b": side("bids"), "a": side("asks"),
                    }),
                );
            }
            Stream::Partial(_, n) => {
                if let Ok((seq, bids, asks)) = s.market.depth(&symbol, *n).await {
                    let lv = |l: Vec<(domain::Price, domain::Qty)>| -> Vec<[String; 2]> {
                        l.into_iter()
                            .map(|(p, q)| {
                                [
                                    p.get().normalize().to_string(),
                                    q.get().normalize().to_string(),
                                ]
                            })
                            .collect()
                    };
                    push(
                        name,
                        json!({"lastUpdateId": seq, "bids": lv(bids), "asks": lv(asks)}),
                    );
                }
            }
            Stream::Book(_) => {
                if let Ok((seq, bids, asks)) = s.market.depth(&symbol, 1).await {
                    let best = |l: &[(domain::Price, domain::Qty)]| {
                        l.first()
                            .map_or(("0".to_owned(), "0".to_owned()), |(p, q)| {
                                (
                                    p.get().normalize().to_string(),
                                    q.get().normalize().to_string(),
                                )
                            })
                    };
                    let ((bp, bq), (ap, aq)) = (best(&bids), best(&asks));
                    push(
                        name,
                        json!({"u": seq, "s": sym, "b": bp, "B": bq, "a": ap, "A": aq}),
                    );
                }
            }
            Stream::Kline(_, interval) => {
                let k = &msg["klines"][*interval];
                if k.is_object() {
                    push(
                        name,
                        json!({
                            "e": "kline", "E": e, "s": sym,
                            "k": {
                                "t": k["t"], "T": k["T"], "s": sym, "i": interval, "f": -1, "L": -1,
                                "o": k["o"], "c": k["c"], "h": k["h"], "l": k["l"], "v": k["v"],
                                "n": k["n"], "x": false, "q": k["q"], "V": "0", "Q": "0", "B": "0",
                            },
                        }),
                    );
                }
            }
            Stream::Ticker(_) => {
                let t = &msg["ticker"];
                let f = |k: &str| t.get(k).cloned().unwrap_or_else(|| json!("0"));
                push(
                    name,
                    json!({
                        "e": "24hrTicker", "E": e, "s": sym,
                        "p": f("priceChange"), "P": f("priceChangePercent"), "w": f("weightedAvgPrice"),
                        "c": f("lastPrice"), "o": f("openPrice"), "h": f("highPrice"), "l": f("lowPrice"),
                        "v": f("volume"), "q": f("quoteVolume"),
                        "O": t["openTime"].as_str().and_then(|v| v.parse::<u64>().ok()),
                        "C": t["closeTime"].as_str().and_then(|v| v.parse::<u64>().ok()),
                        "n": t["count"].as_str().and_then(|v| v.parse::<u64>().ok()).unwrap_or(0),
                    }),
                );
            }
            Stream::Mini(_) | Stream::AllMini => {
                let t = &msg["ticker"];
                let f = |k: &str| t.get(k).cloned().unwrap_or_else(|| json!("0"));
                let mini = json!({
                    "e": "24hrMiniTicker", "E": e, "s": sym, "c": f("lastPrice"), "o": f("openPrice"),
                    "h": f("highPrice"), "l": f("lowPrice"), "v": f("volume"), "q": f("quoteVolume"),
                });
                push(
                    name,
                    if matches!(st, Stream::AllMini) {
                        json!([mini])
                    } else {
                        mini
                    },
                );
            }
        }
    }
    out
}
