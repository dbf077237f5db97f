//! The user data stream, Binance's listenKey way: `POST /api/v3/userDataStream` (the
//! API key alone, no signature) answers a `listenKey`; `PUT` with it keeps it alive,
//! `DELETE` closes it; a key not kept alive expires after 60 minutes
//! (`__LISTEN_KEY_TTL_S`). `/ws/<listenKey>` streams the user's events: an
//! `executionReport` per order change (one per fill, `x` = `TRADE`, with the fill's
//! `l`/`L`/`n`/`N`/`t`/`m`; otherwise `x` = the new state), an
//! `outboundAccountPosition` per balance change, and `listenKeyExpired` before the
//! server closes a stream whose key expired or was deleted.
//!
//! Keys live in Redis (`{prefix}lk:{key}` → user id, with the TTL), so every gateway
//! knows every key. Events come from the settlers' private channel
//! `{prefix}user:{id}`: best effort, as Binance's; a client that was away reconciles
//! through the REST reads.

use std::time::Duration;

use axum::extract::ws::{Message, WebSocket};
use axum::extract::State;
use axum::Json;
use domain::{OrderId, Symbol, UserId};
use rand::distr::{Alphanumeric, SampleString};
use serde_json::{json, Value};

use crate::error::ApiError;
use crate::{Req, Shared};

/// Length of a listenKey.
pub const KEY_LEN: usize = 60;

fn redis_key(s: &Shared, listen_key: &str) -> String {
    format!("{}lk:{listen_key}", s.prefix)
}

/// Whether `name` can be a listenKey (and not a stream name).
pub fn looks_like_key(name: &str) -> bool {
    name.len() == KEY_LEN && name.bytes().all(|b| b.is_ascii_alphanumeric())
}

async fn key_user(s: &Shared, r: &Req) -> Result<UserId, ApiError> {
    let key = r
        .headers
        .get("x-mbx-apikey")
        .and_then(|v| v.to_str().ok())
        .filter(|k| crate::auth::key_format_ok(k))
        .ok_or_else(ApiError::bad_key_format)?;
    let auth = s.directory.key_auth(key).await?;
    Ok(auth.ok_or_else(ApiError::rejected_key)?.user_id)
}

fn no_such_key() -> ApiError {
    ApiError::new(
        axum::http::StatusCode::BAD_REQUEST,
        -1125,
        "This listenKey does not exist.",
    )
}

async fn redis(s: &Shared) -> Result<deadpool_redis::Connection, ApiError> {
    Ok(s.redis.get().await.map_err(router::RouterError::from)?)
}

/// The user of a live `listen_key`.
///
/// # Errors
/// -1125 when it does not exist (expired or deleted).
pub async fn owner(s: &Shared, listen_key: &str) -> Result<UserId, ApiError> {
    let mut conn = redis(s).await?;
    let user: Option<u64> = deadpool_redis::redis::cmd("GET")
        .arg(redis_key(s, listen_key))
        .query_async(&mut *conn)
        .await
        .map_err(router::RouterError::from)?;
    user.and_then(|u| UserId::new(u).ok())
        .ok_or_else(no_such_key)
}

/// `POST /api/v3/userDataStream`.
pub async fn create(State(s): State<Shared>, r: Req) -> Result<Json<Value>, ApiError> {
    let user = key_user(&s, &r).await?;
    let listen_key = Alphanumeric.sample_string(&mut rand::rng(), KEY_LEN);
    let mut conn = redis(&s).await?;
    let () = deadpool_redis::redis::cmd("SET")
        .arg(redis_key(&s, &listen_key))
        .arg(user.get())
        .arg("EX")
        .arg(s.settings.listen_key_ttl_s)
        .query_async(&mut *conn)
        .await
        .map_err(router::RouterError::from)?;
    Ok(Json(json!({ "listenKey": listen_key })))
}

/// The `listenKey` parameter of a PUT/DELETE, checked to be the caller's.
async fn own_key(s: &Shared, r: &Req) -> Result<String, ApiError> {
    let user = key_user(s, r).await?;
    let listen_key = r.params.required("listenKey")?.to_owned();
    if owner(s, &listen_key).await? != user {
        return Err(no_such_key());
    }
    Ok(listen_key)
}

/// `PUT /api/v3/userDataStream`: keeps the key alive another TTL.
pub async fn keepalive(State(s): State<Shared>, r: Req) -> Result<Json<Value>, ApiError> {
    let listen_key = own_key(&s, &r).await?;
    let mut conn = redis(&s).await?;
    let _: i64 = deadpool_redis::redis::cmd("EXPIRE")
        .arg(redis_key(&s, &listen_key))
        .arg(s.settings.listen_key_ttl_s)
        .query_async(&mut *conn)
        .await
        .map_err(router::RouterError::from)?;
    Ok(Json(json!({})))
}

/// `DELETE /api/v3/userDataStream`.
pub async fn close(State(s): State<Shared>, r: Req) -> Result<Json<Value>, ApiError> {
    let listen_key = own_key(&s, &r).await?;
    let mut conn = redis(&s).await?;
    let _: i64 = deadpool_redis::redis::cmd("DEL")
        .arg(redis_key(&s, &listen_key))
        .query_async(&mut *conn)
        .await
        .map_err(router::RouterError::from)?;
    Ok(Json(json!({})))
}

/// Sends `user`'s events, rendered as on a user stream, to `out` as
/// `{"subscriptionId", "event"}` (the WebSocket API's subscription), until `out` closes
/// or the subscription fails (then it resubscribes every second: pub/sub is
/// fire-and-forget, the REST queries reconcile).
pub async fn forward(s: Shared, user: UserId, out: tokio::sync::mpsc::Sender<Value>, id: u64) {
    use futures_util::StreamExt;
    let channel = s.market.keys().user_channel(user);
    while !out.is_closed() {
        let subscribed = async {
            let client = deadpool_redis::redis::Client::open(s.redis_url.as_str())?;
            let mut ps = client.get_async_pubsub().await?;
            ps.subscribe(&channel).await?;
            Ok::<_, deadpool_redis::redis::RedisError>(ps)
        };
        if let Ok(ps) = subscribed.await {
            let mut messages = ps.into_on_message();
            while let Some(m) = messages.next().await {
                let Ok(body) = m.get_payload::<String>() else {
                    continue;
                };
                let Ok(event) = serde_json::from_str::<Value>(&body) else {
                    continue;
                };
                for frame in render(&s, user, &event).await {
                    // a reader too slow to take its events loses the subscription
                    if out
                        .try_send(json!({"subscriptionId": id, "event": frame}))
                        .is_err()
                    {
                        return;
                    }
                }
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Streams `user`'s events on `socket` while `listen_key` lives.
pub async fn stream(mut socket: WebSocket, s: Shared, listen_key: String, user: UserId) {
    use futures_util::StreamExt;
    let channel = s.market.keys().user_channel(user);
    let subscribed = async {
        let client = deadpool_redis::redis::Client::open(s.redis_url.as_str())?;
        let mut ps = client.get_async_pubsub().await?;
        ps.subscribe(&channel).await?;
        Ok::<_, deadpool_redis::redis::RedisError>(ps)
    };
    let Ok(ps) = subscribed.await else {
        let _ = socket.send(Message::Close(None)).await;
        return;
    };
    let mut messages = ps.into_on_message();
    let mut check = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            m = messages.next() => {
                let Some(m) = m else { return };
                let Ok(body) = m.get_payload::<String>() else { continue };
                let Ok(event) = serde_json::from_str::<Value>(&body) else { continue };
                for frame in render(&s, user, &event).await {
                    if socket.send(Message::Text(frame.to_string().into())).await.is_err() {
                        return;
                    }
                }
            }
            m = socket.recv() => match m {
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                _ => {}
            },
            _ = check.tick() => {
                if matches!(owner(&s, &listen_key).await, Err(e) if e.code == -1125) {
                    let expired = json!({"e": "listenKeyExpired", "E": s.now_ms(), "listenKey": listen_key});
                    let _ = socket.send(Message::Text(expired.to_string().into())).await;
                    let _ = socket.send(Message::Close(None)).await;
                    return;
                }
            }
        }
    }
}

/// A decimal string without trailing zeros (`"0.10000"` → `"0.1"`), as the REST
/// answers write amounts; anything else unchanged.
fn norm(v: &Value) -> Value {
    v.as_str()
        .and_then(|t| t.parse::<rust_decimal::Decimal>().ok())
        .map_or_else(|| v.clone(), |d| json!(d.normalize().to_string()))
}

/// Binance's frames for one settler event.
async fn render(s: &Shared, user: UserId, e: &Value) -> Vec<Value> {
    let now = s.now_ms();
    // an order the matcher accepted and nothing else changed: an executionReport NEW
    // (client order id and side from its row, below)
    let accepted;
    let e = if e["e"] == "orderAccepted" {
        accepted = json!({
            "e": "executionReport", "s": e["s"], "i": e["i"], "X": "NEW",
            "z": "0", "Z": "0", "fills": [], "c": Value::Null, "S": Value::Null,
        });
        &accepted
    } else {
        e
    };
    match e["e"].as_str() {
        Some("outboundAccountPosition") => vec![json!({
            "e": "outboundAccountPosition", "E": now, "u": now,
            "B": [{"a": e["a"], "f": norm(&e["f"]), "l": norm(&e["l"])}],
        })],
        Some("executionReport") => {
            // the order's fixed fields come from its row
            let order = match (
                e["s"].as_str().and_then(|v| Symbol::new(v).ok()),
                e["i"].as_u64().and_then(|v| OrderId::new(v).ok()),
            ) {
                (Some(sym), Some(id)) => {
                    trading::readers::order(&s.map, &s.router, sym, id, Some(user))
                        .await
                        .ok()
                        .and_then(|mut v| v.pop())
                        .map(|(_, o)| o)
                }
                _ => None,
            };
            let t = |v: Option<domain::Price>| {
                v.map_or_else(|| "0".to_owned(), |p| p.get().normalize().to_string())
            };
            let (c, side) = match (&order, e["c"].is_null()) {
                (Some(o), true) => (
                    json!(o.client_order_id.clone().unwrap_or_default()),
                    json!(o.side.as_str()),
                ),
                _ => (e["c"].clone(), e["S"].clone()),
            };
            let base = json!({
                "e": "executionReport", "E": now, "s": e["s"], "c": c, "S": side,
                "o": order.as_ref().map(|o| o.order_type.as_str()),
                "f": order.as_ref().map(|o| o.tif.as_str()),
                "q": order.as_ref().map(|o| o.qty.map_or_else(|| "0".to_owned(), |q| q.get().normalize().to_string())),
                "p": order.as_ref().map(|o| t(o.price)),
                "P": order.as_ref().map(|o| t(o.stop_price)),
                "F": "0", "g": -1, "C": "", "X": e["X"], "r": "NONE", "i": e["i"],
                "z": norm(&e["z"]), "Z": norm(&e["Z"]), "O": order.as_ref().map(|o| o.created_ms),
                "T": now, "w": e["X"] == "NEW" || e["X"] == "PARTIALLY_FILLED", "M": false,
                "I": 0, "Y": "0", "Q": "0", "V": "NONE",
            });
            let fills = e["fills"].as_array().cloned().unwrap_or_default();
            if fills.is_empty() {
                let mut v = base;
                v["x"] = e["X"].clone();
                for (k, z) in [("l", "0"), ("L", "0"), ("n", "0")] {
                    v[k] = json!(z);
                }
                v["N"] = Value::Null;
                v["t"] = json!(-1);
                v["m"] = json!(false);
                return vec![v];
            }
            fills
                .iter()
                .map(|f| {
                    let mut v = base.clone();
                    v["x"] = json!("TRADE");
                    v["l"] = norm(&f["l"]);
                    v["L"] = norm(&f["L"]);
                    v["n"] = norm(&f["n"]);
                    v["N"] = f["N"].clone();
                    v["t"] = f["t"].clone();
                    v["m"] = f["m"].clone();
                    v
                })
                .collect()
        }
        _ => Vec::new(),
    }
}
