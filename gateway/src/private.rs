//! Signed endpoints: orders and account reads of the key's owner (see [`crate::auth`]
//! for the signature rules). A user only ever sees and cancels their own orders: every
//! read and cancel is keyed by the key's user, so another user's order id is simply
//! "Order does not exist." (-2013) — never a hint that it exists.
//!
//! Differences from Binance, on purpose or not yet closed:
//! * `newOrderRespType` RESULT and FULL answer the order as committed on its shard
//!   (status `NEW`, no fills yet): they do not wait for the matcher's outcome;
//! * a cancel is a request to the matcher: its reply carries the order as it was
//!   (`PENDING_CANCEL` while still open) and the final state arrives on the user stream
//!   and in `GET /api/v3/order`;
//! * a `newClientOrderId` used before answers the original order (a retry after a lost
//!   reply is safe) instead of -2010 "Duplicate order sent.";
//! * `selfTradePreventionMode` is applied but not stored: queries report `NONE`.

use std::str::FromStr;

use axum::extract::State;
use axum::Json;
use domain::{Month, OrderId, OrderStatus, OrderType, Side, Symbol, TimeInForce, UserId};
use matcher::StpMode;
use serde_json::{json, Value};
use trading::placement::{CancelTarget, PlaceRequest};
use trading::readers::{self, OrderRecord, Page, TradePage, TradeRecord};

use crate::auth;
use crate::error::{ApiError, Invalid};
use crate::params::Params;
use crate::public::listed;
use crate::{Req, Shared};

type Answer = Result<Json<Value>, ApiError>;

/// The key's user, once the request's key, time window and signature check out.
///
/// # Errors
/// -2014 / -2015 for the key, -1021 / -1102 / -1131 for the time, -1022 for the
/// signature; -1001 when the key store is unreachable.
pub async fn authenticate(s: &Shared, r: &Req) -> Result<UserId, ApiError> {
    let key = r
        .headers
        .get("x-mbx-apikey")
        .and_then(|v| v.to_str().ok())
        .filter(|k| auth::key_format_ok(k))
        .ok_or_else(ApiError::bad_key_format)?;
    let found = s.directory.key_auth(key).await?;
    let auth = found.ok_or_else(ApiError::rejected_key)?;
    auth::check_time(&r.params, s.now_ms())?;
    auth::check_signature(&auth, &r.query, &r.body)?;
    Ok(auth.user_id)
}

fn text(d: rust_decimal::Decimal) -> String {
    d.normalize().to_string()
}

fn opt_text<T: Into<rust_decimal::Decimal>>(v: Option<T>) -> String {
    v.map_or_else(|| "0".to_owned(), |v| text(v.into()))
}

/// An order as `GET /api/v3/order` shows it.
pub fn order_json(o: &OrderRecord) -> Value {
    json!({
        "symbol": o.symbol.as_str(),
        "orderId": o.order_id.get(),
        "orderListId": -1,
        "clientOrderId": o.client_order_id.clone().unwrap_or_default(),
        "price": opt_text(o.price),
        "origQty": opt_text(o.qty),
        "executedQty": text(o.filled_qty.get()),
        "cummulativeQuoteQty": text(o.filled_amount.get()),
        "status": o.status.as_str(),
        "timeInForce": o.tif.as_str(),
        "type": o.order_type.as_str(),
        "side": o.side.as_str(),
        "stopPrice": opt_text(o.stop_price),
        "icebergQty": "0",
        "time": o.created_ms,
        "updateTime": o.updated_ms,
        "isWorking": o.status.is_open(),
        "workingTime": o.created_ms,
        // a buy by quantity stores its hold cap there; the client sent none
        "origQuoteOrderQty": if o.side == Side::Buy && o.qty.is_some() { "0".to_owned() } else { opt_text(o.quote_qty) },
        "selfTradePreventionMode": "NONE",
    })
}

fn enum_param<T: FromStr>(p: &Params, name: &str, invalid: Invalid) -> Result<Option<T>, ApiError> {
    p.get(name)
        .map(|v| v.parse().map_err(|_| ApiError::invalid(invalid)))
        .transpose()
}

/// `newOrderRespType`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RespType {
    Ack,
    Result,
    Full,
}

/// The placement request a `POST /api/v3/order` describes (checks Binance's parameter
/// rules; the symbol's filters are placement's).
fn place_request(
    s: &Shared,
    user: UserId,
    p: &Params,
) -> Result<(PlaceRequest, RespType), ApiError> {
    let symbol = p.symbol()?;
    let cfg = listed(s, &symbol)?;
    let side: Side =
        enum_param(p, "side", Invalid::Side)?.ok_or_else(|| ApiError::mandatory("side"))?;
    let ty: OrderType =
        enum_param(p, "type", Invalid::OrderType)?.ok_or_else(|| ApiError::mandatory("type"))?;
    let limit_like = matches!(
        ty,
        OrderType::Limit | OrderType::StopLossLimit | OrderType::TakeProfitLimit
    );
    let tif: Option<TimeInForce> = enum_param(p, "timeInForce", Invalid::TimeInForce)?;
    let tif = match (limit_like, tif) {
        (true, Some(t)) => t,
        (true, None) => return Err(ApiError::mandatory("timeInForce")),
        (false, Some(_)) if ty == OrderType::LimitMaker || ty == OrderType::Market => {
            return Err(ApiError::not_required("timeInForce"))
        }
        (false, _) => TimeInForce::Gtc,
    };
    let price = p.price_opt("price")?;
    if ty.requires_price() && price.is_none() {
        return Err(ApiError::mandatory("price"));
    }
    if !ty.requires_price() && price.is_some() {
        return Err(ApiError::not_required("price"));
    }
    let stop_price = p.price_opt("stopPrice")?;
    if ty.requires_stop_price() && stop_price.is_none() {
        return Err(ApiError::mandatory("stopPrice"));
    }
    if !ty.requires_stop_price() && stop_price.is_some() {
        return Err(ApiError::not_required("stopPrice"));
    }
    let qty = p.qty_opt("quantity")?;
    let quote_qty = p.amount_opt("quoteOrderQty")?;
    match (ty, qty.is_some(), quote_qty.is_some()) {
        (OrderType::Market, true, true) => {
            return Err(ApiError::new(
                axum::http::StatusCode::BAD_REQUEST,
                -1128,
                "Combination of optional parameters invalid.",
            ))
        }
        (OrderType::Market, false, false) => return Err(ApiError::mandatory("quantity")),
        (OrderType::Market, _, _) => {}
        (_, _, true) => return Err(ApiError::not_required("quoteOrderQty")),
        (_, false, _) => return Err(ApiError::mandatory("quantity")),
        _ => {}
    }
    for unsupported in ["icebergQty", "trailingDelta"] {
        if p.has(unsupported) {
            return Err(ApiError::unsupported_combination());
        }
    }
    let stp = match p.get("selfTradePreventionMode") {
        None => StpMode::None,
        Some(v) => serde_json::from_value(Value::String(v.to_owned()))
            .map_err(|_| ApiError::invalid(Invalid::Parameter))?,
    };
    let resp = match p.get("newOrderRespType") {
        None if matches!(ty, OrderType::Market | OrderType::Limit) => RespType::Full,
        None => RespType::Ack,
        Some("ACK") => RespType::Ack,
        Some("RESULT") => RespType::Result,
        Some("FULL") => RespType::Full,
        Some(_) => return Err(ApiError::invalid(Invalid::Parameter)),
    };
    let _ = cfg;
    Ok((
        PlaceRequest {
            user_id: user,
            symbol,
            side,
            order_type: ty,
            tif,
            price,
            qty,
            quote_qty,
            stop_price,
            stp,
            client_order_id: p.get("newClientOrderId").map(str::to_owned),
            market_reference: None,
        },
        resp,
    ))
}

/// A decimal string of a settler report without trailing zeros.
fn num_text(v: &Value) -> Value {
    v.as_str()
        .and_then(|t| t.parse::<rust_decimal::Decimal>().ok())
        .map_or_else(|| v.clone(), |d| json!(text(d)))
}

/// A MARKET buy by quantity or sell by quote amount holds against the last trade
/// price, else the best opposite price — what the matcher's band is relative to
/// (`PlaceRequest::market_reference`).
async fn with_reference(s: &Shared, mut req: PlaceRequest) -> Result<PlaceRequest, ApiError> {
    let buy_by_qty = req.side == Side::Buy && req.qty.is_some() && req.quote_qty.is_none();
    let sell_by_quote = req.side == Side::Sell && req.qty.is_none() && req.quote_qty.is_some();
    if req.order_type == OrderType::Market && (buy_by_qty || sell_by_quote) {
        req.market_reference = match s.market.last_price(&req.symbol).await? {
            Some(p) => Some(p),
            None => {
                // no trade yet: the best price on the side it would take
                let (_, bids, asks) = s.market.depth(&req.symbol, 1).await?;
                if buy_by_qty { asks } else { bids }.first().map(|l| l.0)
            }
        };
    }
    Ok(req)
}

/// `POST /api/v3/order`, with `X-MBX-ORDER-COUNT-10S` / `-1D`.
pub async fn new_order(
    State(s): State<Shared>,
    r: Req,
) -> Result<([(&'static str, String); 2], Json<Value>), ApiError> {
    let user = authenticate(&s, &r).await?;
    let (req, resp) = place_request(&s, user, &r.params)?;
    let req = with_reference(&s, req).await?;
    let (ten_s, day) = s.limiter.order(user.get(), s.now_ms()).await?;
    let headers = [
        ("x-mbx-order-count-10s", ten_s.to_string()),
        ("x-mbx-order-count-1d", day.to_string()),
    ];
    Ok((headers, place(&s, user, req, resp).await?))
}

async fn place(s: &Shared, user: UserId, req: PlaceRequest, resp: RespType) -> Answer {
    let placed = match &s.writers {
        Some(w) => s.placer.place_grouped(w, &req).await,
        None => s.placer.place(&req).await,
    };
    let ack = placed??;
    let now = s.now_ms();
    if resp == RespType::Ack {
        return Ok(Json(json!({
            "symbol": ack.symbol.as_str(),
            "orderId": ack.order_id.get(),
            "orderListId": -1,
            "clientOrderId": ack.client_order_id,
            "transactTime": now,
        })));
    }
    // RESULT / FULL: the matcher's outcome, waited for within the bound (the settler
    // writes the order before it reports, so the row read next is at least as new)
    let outcome = if ack.duplicate {
        None
    } else {
        s.outcomes
            .wait(
                ack.order_id.get(),
                std::time::Duration::from_millis(s.settings.result_wait_ms),
            )
            .await
    };
    let mut found = readers::order(&s.map, &s.router, ack.symbol, ack.order_id, Some(user)).await?;
    let (_, o) = found.pop().ok_or_else(ApiError::internal)?;
    let mut v = order_json(&o);
    if let Some(m) = v.as_object_mut() {
        m.insert("transactTime".into(), json!(now));
        for k in [
            "stopPrice",
            "icebergQty",
            "time",
            "updateTime",
            "isWorking",
            "origQuoteOrderQty",
        ] {
            m.remove(k);
        }
        m.insert(
            "selfTradePreventionMode".into(),
            serde_json::to_value(req.stp).unwrap_or(Value::Null),
        );
        if resp == RespType::Full {
            let fills: Vec<Value> = outcome
                .as_ref()
                .and_then(|r| r["fills"].as_array())
                .map(|fills| {
                    fills
                        .iter()
                        .map(|f| {
                            json!({
                                "price": num_text(&f["L"]),
                                "qty": num_text(&f["l"]),
                                "commission": num_text(&f["n"]),
                                "commissionAsset": f["N"],
                                "tradeId": f["t"],
                            })
                        })
                        .collect()
                })
                .unwrap_or_default();
            m.insert("fills".into(), json!(fills));
        }
    }
    Ok(Json(v))
}

/// `POST /api/v3/order/test`: every check of a placement except the balance, nothing
/// written (`computeCommissionRates` adds the symbol's rates).
pub async fn test_order(State(s): State<Shared>, r: Req) -> Answer {
    let user = authenticate(&s, &r).await?;
    let (req, _) = place_request(&s, user, &r.params)?;
    let req = with_reference(&s, req).await?;
    s.placer.check_only(&req)??;
    if r.params.flag("computeCommissionRates")? {
        let spec = &listed(&s, &req.symbol)?.spec;
        let rate = |ppm: u32| text(rust_decimal::Decimal::new(i64::from(ppm), 6));
        return Ok(Json(json!({
            "standardCommissionForOrder": {
                "maker": rate(spec.maker_fee_ppm), "taker": rate(spec.taker_fee_ppm),
            },
            "taxCommissionForOrder": {"maker": "0", "taker": "0"},
            "discount": {"enabledForAccount": false, "enabledForSymbol": false, "discountAsset": "", "discount": "0"},
        })));
    }
    Ok(Json(json!({})))
}

/// The order `symbol` + `orderId` or `origClientOrderId` name, of `user`.
async fn find_order(s: &Shared, user: UserId, p: &Params) -> Result<OrderRecord, ApiError> {
    let symbol = p.symbol()?;
    listed(s, &symbol)?;
    let found = match (p.order_id_opt("orderId")?, p.get("origClientOrderId")) {
        (Some(id), _) => readers::order(&s.map, &s.router, symbol, id, Some(user))
            .await
            .map(|mut v| v.pop().map(|(_, o)| o)),
        (None, Some(cid)) => readers::order_by_client_id(&s.map, &s.router, user, cid)
            .await
            .map(|o| o.filter(|o| o.symbol == symbol)),
        (None, None) => return Err(ApiError::mandatory("orderId")),
    };
    match found {
        Ok(Some(o)) => Ok(o),
        Ok(None) => Err(ApiError::no_such_order()),
        // an id whose month has no table is no order of this exchange
        Err(readers::ReadError::Router(router::RouterError::MissingTable { .. })) => {
            Err(ApiError::no_such_order())
        }
        Err(e) => Err(e.into()),
    }
}

/// `GET /api/v3/order`.
pub async fn query_order(State(s): State<Shared>, r: Req) -> Answer {
    let user = authenticate(&s, &r).await?;
    Ok(Json(order_json(&find_order(&s, user, &r.params).await?)))
}

fn cancel_json(o: &OrderRecord, cancel_client_id: &str, now: u64) -> Value {
    let mut v = order_json(o);
    if let Some(m) = v.as_object_mut() {
        m.insert(
            "origClientOrderId".into(),
            json!(o.client_order_id.clone().unwrap_or_default()),
        );
        m.insert("clientOrderId".into(), json!(cancel_client_id));
        m.insert("transactTime".into(), json!(now));
        if o.status.is_open() {
            m.insert("status".into(), json!(OrderStatus::PendingCancel.as_str()));
        }
        for k in [
            "stopPrice",
            "icebergQty",
            "time",
            "updateTime",
            "isWorking",
            "workingTime",
            "origQuoteOrderQty",
        ] {
            m.remove(k);
        }
    }
    v
}

async fn cancel_one(
    s: &Shared,
    user: UserId,
    symbol: Symbol,
    target: CancelTarget,
    cancel_id: &str,
) -> Result<Value, ApiError> {
    match s.placer.cancel(user, symbol, target).await {
        Ok(Ok(o)) => Ok(cancel_json(&o, cancel_id, s.now_ms())),
        Ok(Err(trading::placement::Reject::UnknownOrder)) => {
            Err(ApiError::cancel_rejected("Unknown order sent."))
        }
        Ok(Err(r)) => Err(r.into()),
        Err(e) => Err(e.into()),
    }
}

/// `DELETE /api/v3/order` (`symbol` + `orderId` or `origClientOrderId`;
/// `newClientOrderId` names the cancel).
pub async fn cancel_order(State(s): State<Shared>, r: Req) -> Answer {
    let user = authenticate(&s, &r).await?;
    let p = &r.params;
    let symbol = p.symbol()?;
    listed(&s, &symbol)?;
    let target = match (p.order_id_opt("orderId"), p.get("origClientOrderId")) {
        (Ok(Some(id)), _) => CancelTarget::Order(id),
        // a non-snowflake id can name no order
        (Err(e), _) if e.code == -2013 => {
            return Err(ApiError::cancel_rejected("Unknown order sent."))
        }
        (Err(e), _) => return Err(e),
        (Ok(None), Some(cid)) => CancelTarget::Client(cid.to_owned()),
        (Ok(None), None) => return Err(ApiError::mandatory("orderId")),
    };
    let cancel_id = p
        .get("newClientOrderId")
        .map_or_else(|| format!("cancel-{}", s.now_ms()), str::to_owned);
    Ok(Json(
        cancel_one(&s, user, symbol, target, &cancel_id).await?,
    ))
}

/// The oldest month `symbol` has `kind` tables for on `user`'s shard (this month when
/// none is older): where a history read starts, so a month before the first table is
/// never asked for.
async fn first_month(
    s: &Shared,
    user: UserId,
    kind: &str,
    symbol: &Symbol,
) -> Result<Month, ApiError> {
    let now = Month::of(chrono::Utc::now());
    let names = s.map.month_tables(s.map.shard_of(user)).await?;
    let prefix = format!("{kind}_{}_", symbol.as_str());
    Ok(names
        .iter()
        .filter_map(|n| n.strip_prefix(&prefix))
        .filter_map(|m| Month::parse_yyyymm(m).ok())
        .min()
        .map_or(now, |m| m.min(now)))
}

/// Every order of `user` in `symbol` (open ones only when `open_only`), newest
/// first, page by page.
async fn all_of_symbol(
    s: &Shared,
    user: UserId,
    symbol: Symbol,
    open_only: bool,
    max: usize,
    before: Option<OrderId>,
) -> Result<Vec<OrderRecord>, ApiError> {
    let since = first_month(s, user, "orders", &symbol).await?;
    let mut out: Vec<OrderRecord> = Vec::new();
    let mut cursor = before;
    loop {
        let page = Page {
            before: cursor,
            limit: 1000,
            since,
        };
        let got = readers::orders_of_user(
            &s.map,
            &s.router,
            user,
            symbol,
            page,
            open_only,
            chrono::Utc::now(),
        )
        .await?;
        let n = got.len();
        cursor = got.last().map(|o| o.order_id);
        out.extend(got);
        if n < 1000 || out.len() >= max {
            break;
        }
    }
    out.truncate(max);
    Ok(out)
}

/// `GET /api/v3/openOrders` (`symbol` optional: all symbols without it).
pub async fn open_orders(State(s): State<Shared>, r: Req) -> Answer {
    let user = authenticate(&s, &r).await?;
    let symbols: Vec<Symbol> = match r.params.get("symbol") {
        Some(_) => {
            let sym = r.params.symbol()?;
            listed(&s, &sym)?;
            vec![sym]
        }
        None => s.symbols().keys().copied().collect(),
    };
    let mut out = Vec::new();
    for sym in symbols {
        let mut orders = all_of_symbol(&s, user, sym, true, usize::MAX, None).await?;
        orders.reverse();
        out.extend(orders.iter().map(order_json));
    }
    Ok(Json(Value::Array(out)))
}

/// `DELETE /api/v3/openOrders` (`symbol`): a cancel for each open order.
pub async fn cancel_open_orders(State(s): State<Shared>, r: Req) -> Answer {
    let user = authenticate(&s, &r).await?;
    let symbol = r.params.symbol()?;
    listed(&s, &symbol)?;
    let open = all_of_symbol(&s, user, symbol, true, usize::MAX, None).await?;
    if open.is_empty() {
        return Err(ApiError::cancel_rejected("Unknown order sent."));
    }
    let now = s.now_ms();
    let mut out = Vec::with_capacity(open.len());
    for o in open.iter().rev() {
        match cancel_one(
            &s,
            user,
            symbol,
            CancelTarget::Order(o.order_id),
            &format!("cancel-{now}"),
        )
        .await
        {
            Ok(v) => out.push(v),
            // finished meanwhile: nothing to cancel
            Err(e) if e.code == -2011 => {}
            Err(e) => return Err(e),
        }
    }
    Ok(Json(Value::Array(out)))
}

/// `GET /api/v3/allOrders` (`symbol`, `orderId` = from this id on, `startTime`,
/// `endTime`, `limit` 1–1000 default 500): oldest first.
pub async fn all_orders(State(s): State<Shared>, r: Req) -> Answer {
    let user = authenticate(&s, &r).await?;
    let p = &r.params;
    let symbol = p.symbol()?;
    listed(&s, &symbol)?;
    let limit = usize::try_from(p.limit(500, 1000)?).unwrap_or(1000);
    let from = p.order_id_opt("orderId")?;
    let start = p.u64_opt("startTime")?;
    let end = p.u64_opt("endTime")?;
    if let (Some(a), Some(b)) = (start, end) {
        if b < a || b - a > 24 * 3_600_000 {
            return Err(ApiError::invalid(Invalid::Parameter));
        }
    }
    // ids carry their time: endTime bounds the cursor, startTime and orderId the floor
    let before = match end {
        Some(e) => domain::snowflake::min_id_at(e.saturating_add(1))
            .ok()
            .and_then(|id| OrderId::new(id).ok()),
        None => None,
    };
    let floor = match (from, start) {
        (Some(id), _) => Some(id.get()),
        (None, Some(t)) => domain::snowflake::min_id_at(t).ok(),
        (None, None) => None,
    };
    let mut orders = if let Some(floor) = floor {
        // oldest first from the floor: newest-first pages down to it
        let mut all = all_of_symbol(&s, user, symbol, false, usize::MAX, before).await?;
        all.retain(|o| o.order_id.get() >= floor);
        all.reverse();
        all.truncate(limit);
        all
    } else {
        let mut newest = all_of_symbol(&s, user, symbol, false, limit, before).await?;
        newest.reverse();
        newest
    };
    orders.retain(|o| {
        start.is_none_or(|t| o.created_ms >= i64::try_from(t).unwrap_or(i64::MAX))
            && end.is_none_or(|t| o.created_ms <= i64::try_from(t).unwrap_or(i64::MAX))
    });
    Ok(Json(Value::Array(orders.iter().map(order_json).collect())))
}

fn trade_json(t: &TradeRecord) -> Value {
    json!({
        "symbol": t.symbol.as_str(),
        "id": t.trade_id,
        "orderId": t.order_id.get(),
        "orderListId": -1,
        "price": text(t.price.get()),
        "qty": text(t.qty.get()),
        "quoteQty": text(t.amount.get()),
        "commission": text(t.fee.get()),
        "commissionAsset": t.fee_asset,
        "time": t.created_ms,
        "isBuyer": t.side == Side::Buy,
        "isMaker": t.is_maker,
        "isBestMatch": true,
    })
}

/// `GET /api/v3/myTrades` (`symbol`, `orderId`, `fromId`, `startTime`, `endTime`,
/// `limit` 1–1000 default 500): oldest first.
pub async fn my_trades(State(s): State<Shared>, r: Req) -> Answer {
    let user = authenticate(&s, &r).await?;
    let p = &r.params;
    let symbol = p.symbol()?;
    listed(&s, &symbol)?;
    let limit = p.limit(500, 1000)?;
    let from = p.u64_opt("fromId")?;
    let order = p.order_id_opt("orderId")?;
    let start = p.u64_opt("startTime")?;
    let end = p.u64_opt("endTime")?;
    if from.is_some() && (start.is_some() || end.is_some()) {
        return Err(ApiError::new(
            axum::http::StatusCode::BAD_REQUEST,
            -1128,
            "Combination of optional parameters invalid.",
        ));
    }
    let since = first_month(&s, user, "trades", &symbol).await?;
    let mut out: Vec<TradeRecord> = Vec::new();
    let mut after = from.map(|f| f.saturating_sub(1));
    let want = usize::try_from(limit).unwrap_or(1000);
    loop {
        let got = readers::trades_of_user(
            &s.map,
            &s.router,
            user,
            symbol,
            TradePage {
                after,
                limit: 1000,
                since,
            },
            chrono::Utc::now(),
        )
        .await?;
        let n = got.len();
        after = got.last().map(|t| t.trade_id);
        out.extend(got.into_iter().filter(|t| {
            order.is_none_or(|o| t.order_id == o)
                && start.is_none_or(|s| t.created_ms >= i64::try_from(s).unwrap_or(i64::MAX))
                && end.is_none_or(|e| t.created_ms <= i64::try_from(e).unwrap_or(i64::MAX))
        }));
        if n < 1000 || (from.is_some() && out.len() >= want) {
            break;
        }
    }
    // without fromId: the newest `limit`; with it: the first `limit` from it
    if from.is_some() {
        out.truncate(want);
    } else {
        let skip = out.len().saturating_sub(want);
        out.drain(..skip);
    }
    Ok(Json(Value::Array(out.iter().map(trade_json).collect())))
}

/// `GET /api/v3/account`: balances (every asset the user holds), permissions and the
/// commission rates of the first symbol (rates are per symbol here).
pub async fn account(State(s): State<Shared>, r: Req) -> Answer {
    let user = authenticate(&s, &r).await?;
    let balances = ledger::balances::all_of(&s.map, user).await?;
    let omit_zero = r.params.flag("omitZeroBalances")?;
    let list: Vec<Value> = balances
        .iter()
        .filter(|(_, b)| !(omit_zero && b.available.is_zero() && b.frozen.is_zero()))
        .map(|(a, b)| {
            json!({"asset": a.as_str(), "free": text(b.available.get()), "locked": text(b.frozen.get())})
        })
        .collect();
    let (maker, taker) = s
        .symbols()
        .values()
        .next()
        .map_or((0, 0), |c| (c.spec.maker_fee_ppm, c.spec.taker_fee_ppm));
    let rate = |ppm: u32| text(rust_decimal::Decimal::new(i64::from(ppm), 6));
    Ok(Json(json!({
        "makerCommission": maker / 100,
        "takerCommission": taker / 100,
        "buyerCommission": 0,
        "sellerCommission": 0,
        "commissionRates": {"maker": rate(maker), "taker": rate(taker), "buyer": "0", "seller": "0"},
        "canTrade": true,
        "canWithdraw": true,
        "canDeposit": true,
        "brokered": false,
        "requireSelfTradePrevention": false,
        "preventSor": false,
        "updateTime": s.now_ms(),
        "accountType": "SPOT",
        "balances": list,
        "permissions": ["SPOT"],
        "uid": user.get(),
    })))
}

/// `GET /api/v3/rateLimit/order`: the caller's order counts against the order limits.
pub async fn rate_limit_order(State(s): State<Shared>, r: Req) -> Answer {
    let user = authenticate(&s, &r).await?;
    let (ten_s, day) = s.limiter.order_usage(user.get(), s.now_ms()).await?;
    let l = s.limiter.limits;
    Ok(Json(json!([
        {"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 10, "limit": l.orders_per_10s, "count": ten_s},
        {"rateLimitType": "ORDERS", "interval": "DAY", "intervalNum": 1, "limit": l.orders_per_day, "count": day},
    ])))
}

/// `GET /api/v3/account/commission` (`symbol`): the symbol's maker and taker rates.
pub async fn commission(State(s): State<Shared>, r: Req) -> Answer {
    let _user = authenticate(&s, &r).await?;
    let symbol = r.params.symbol()?;
    let spec = &listed(&s, &symbol)?.spec;
    let rate = |ppm: u32| text(rust_decimal::Decimal::new(i64::from(ppm), 6));
    Ok(Json(json!({
        "symbol": symbol.as_str(),
        "standardCommission": {
            "maker": rate(spec.maker_fee_ppm), "taker": rate(spec.taker_fee_ppm), "buyer": "0", "seller": "0",
        },
        "specialCommission": {"maker": "0", "taker": "0", "buyer": "0", "seller": "0"},
        "taxCommission": {"maker": "0", "taker": "0", "buyer": "0", "seller": "0"},
        "discount": {"enabledForAccount": false, "enabledForSymbol": false, "discountAsset": "", "discount": "0"},
    })))
}

/// `POST /api/v3/order/cancelReplace`: cancels `cancelOrderId` /
/// `cancelOrigClientOrderId` and places the new order the other parameters describe.
/// `cancelReplaceMode` STOP_ON_FAILURE places nothing when the cancel fails;
/// ALLOW_FAILURE places anyway. One part failing is -2021 (409), both -2022 (400),
/// each with Binance's `data` (`cancelResult`, `newOrderResult`, the two responses).
///
/// The cancel is a request to the matcher, as everywhere here: the funds of the
/// cancelled order are released when the matcher has removed it, so a new order that
/// needs them may be refused as insufficient (-2021), where Binance swaps atomically.
pub async fn cancel_replace(State(s): State<Shared>, r: Req) -> Answer {
    let user = authenticate(&s, &r).await?;
    let p = &r.params;
    let symbol = p.symbol()?;
    listed(&s, &symbol)?;
    let stop_on_failure = match p.required("cancelReplaceMode")? {
        "STOP_ON_FAILURE" => true,
        "ALLOW_FAILURE" => false,
        _ => return Err(ApiError::invalid(Invalid::Parameter)),
    };
    // `None`: an id that can name no order (not a snowflake): the cancel fails
    let target = match (
        p.order_id_opt("cancelOrderId"),
        p.get("cancelOrigClientOrderId"),
    ) {
        (Ok(Some(id)), _) => Some(CancelTarget::Order(id)),
        (Err(e), _) if e.code == -2013 => None,
        (Err(e), _) => return Err(e),
        (Ok(None), Some(cid)) => Some(CancelTarget::Client(cid.to_owned())),
        (Ok(None), None) => return Err(ApiError::mandatory("cancelOrderId")),
    };
    // the new order's parameters first: a malformed one changes nothing
    let (req, resp) = place_request(&s, user, p)?;
    let req = with_reference(&s, req).await?;
    let err_json = |e: &ApiError| json!({"code": e.code, "msg": e.msg});
    let cancel_id = p
        .get("cancelNewClientOrderId")
        .map_or_else(|| format!("cancel-{}", s.now_ms()), str::to_owned);
    let cancelled = match target {
        Some(t) => cancel_one(&s, user, symbol, t, &cancel_id).await,
        None => Err(ApiError::cancel_rejected("Unknown order sent.")),
    };
    let (cancel_ok, cancel_resp) = match &cancelled {
        Ok(v) => (true, v.clone()),
        Err(e) => (false, err_json(e)),
    };
    let (placed_ok, placed_resp, new_result) = if !cancel_ok && stop_on_failure {
        (false, Value::Null, "NOT_ATTEMPTED")
    } else {
        let limited = s.limiter.order(user.get(), s.now_ms()).await;
        let placed = match limited {
            Ok(_) => place(&s, user, req, resp).await,
            Err(e) => Err(e),
        };
        match placed {
            Ok(Json(v)) => (true, v, "SUCCESS"),
            Err(e) => (false, err_json(&e), "FAILURE"),
        }
    };
    let data = json!({
        "cancelResult": if cancel_ok { "SUCCESS" } else { "FAILURE" },
        "newOrderResult": new_result,
        "cancelResponse": cancel_resp,
        "newOrderResponse": placed_resp,
    });
    if cancel_ok && placed_ok {
        return Ok(Json(data));
    }
    let mut e = if cancel_ok || placed_ok {
        ApiError::new(
            axum::http::StatusCode::CONFLICT,
            -2021,
            "Order cancel-replace partially failed.",
        )
    } else {
        ApiError::new(
            axum::http::StatusCode::BAD_REQUEST,
            -2022,
            "Order cancel-replace failed.",
        )
    };
    e.data = Some(data);
    Err(e)
}
