//! Public market-data endpoints (no key), Binance's paths, parameters and shapes.
//! Everything is read from what the market-data role keeps in Redis
//! ([`router::marketdata`]); prices and quantities are decimal strings, ids and times
//! integers, as the official SDK's strict models expect.
//!
//! Where this exchange differs from Binance, on purpose:
//! * `aggTrades`: each trade is its own aggregate (`a` = `f` = `l` = trade id): no
//!   trade is hidden, and the ids page the same way;
//! * `klines` / `uiKlines`: the intervals the market-data role keeps (1m, 5m, 15m,
//!   1h, 4h, 1d; others are -1120) over the candles still in Redis;
//! * `historicalTrades` / `trades`: the recent trades Redis keeps (`fromId` pages within
//!   them).

use axum::extract::State;
use axum::Json;
use domain::Symbol;
use router::marketdata::{Candle, RecentTrade};
use rust_decimal::Decimal;
use serde_json::{json, Value};
use trading::placement::SymbolConfig;

use crate::error::{ApiError, Invalid};
use crate::params::{parse_symbol, Params};
use crate::{Req, Shared};

pub use router::marketdata::INTERVALS;

/// Order types every symbol takes.
pub const ORDER_TYPES: [&str; 7] = [
    "LIMIT",
    "LIMIT_MAKER",
    "MARKET",
    "STOP_LOSS",
    "STOP_LOSS_LIMIT",
    "TAKE_PROFIT",
    "TAKE_PROFIT_LIMIT",
];

type Answer = Result<Json<Value>, ApiError>;

fn text(d: Decimal) -> String {
    d.normalize().to_string()
}

/// `GET /api/v3/ping`.
pub async fn ping() -> Json<Value> {
    Json(json!({}))
}

/// `GET /api/v3/time`.
pub async fn time(State(s): State<Shared>) -> Json<Value> {
    Json(json!({ "serverTime": s.now_ms() }))
}

/// The configured symbol `symbol` names.
///
/// # Errors
/// -1121 when it is malformed or not listed.
pub fn listed(s: &Shared, symbol: &Symbol) -> Result<SymbolConfig, ApiError> {
    s.symbols()
        .get(symbol)
        .cloned()
        .ok_or_else(|| ApiError::invalid(Invalid::Symbol))
}

fn symbol_param(s: &Shared, p: &Params) -> Result<Symbol, ApiError> {
    let sym = p.symbol()?;
    listed(s, &sym)?;
    Ok(sym)
}

/// The symbols a ticker-like endpoint is asked for: `symbol`, `symbols` (a JSON
/// array, as Binance takes it) or, with neither, all. `true` when one was named
/// (the answer is then an object, not an array).
fn symbols_param(s: &Shared, p: &Params) -> Result<(Vec<Symbol>, bool), ApiError> {
    match (p.get("symbol"), p.get("symbols")) {
        (Some(_), Some(_)) => Err(ApiError::new(
            axum::http::StatusCode::BAD_REQUEST,
            -1128,
            "Combination of optional parameters invalid.",
        )),
        (Some(_), None) => Ok((vec![symbol_param(s, p)?], true)),
        (None, Some(list)) => {
            let names: Vec<String> =
                serde_json::from_str(list).map_err(|_| ApiError::mandatory("symbols"))?;
            let mut out = Vec::with_capacity(names.len());
            for n in names {
                let sym = parse_symbol(&n)?;
                listed(s, &sym)?;
                out.push(sym);
            }
            Ok((out, false))
        }
        (None, None) => Ok((s.symbols().keys().copied().collect(), false)),
    }
}

/// One symbol of `exchangeInfo`.
pub fn symbol_info(c: &SymbolConfig) -> Value {
    let spec = &c.spec;
    let fee = |ppm: u32| text(Decimal::new(i64::from(ppm), 6));
    json!({
        "symbol": spec.symbol.as_str(),
        "status": if c.trading { "TRADING" } else { "HALT" },
        "baseAsset": spec.base.as_str(),
        "baseAssetPrecision": spec.base_precision,
        "quoteAsset": spec.quote.as_str(),
        "quotePrecision": spec.quote_precision,
        "quoteAssetPrecision": spec.quote_precision,
        "baseCommissionPrecision": spec.base_precision,
        "quoteCommissionPrecision": spec.quote_precision,
        "orderTypes": ORDER_TYPES,
        "icebergAllowed": false,
        "ocoAllowed": false,
        "otoAllowed": false,
        "quoteOrderQtyMarketAllowed": true,
        "allowTrailingStop": false,
        "cancelReplaceAllowed": true,
        "amendAllowed": false,
        "isSpotTradingAllowed": true,
        "isMarginTradingAllowed": false,
        "filters": [
            {
                "filterType": "PRICE_FILTER",
                "minPrice": text(spec.tick_size.get()),
                "maxPrice": "0",
                "tickSize": text(spec.tick_size.get()),
            },
            {
                "filterType": "LOT_SIZE",
                "minQty": text(c.min_qty.get()),
                "maxQty": text(c.max_qty.get()),
                "stepSize": text(spec.step_size.get()),
            },
            {
                "filterType": "MARKET_LOT_SIZE",
                "minQty": text(c.min_qty.get()),
                "maxQty": text(c.max_qty.get()),
                "stepSize": text(spec.step_size.get()),
            },
            {
                "filterType": "NOTIONAL",
                "minNotional": text(c.min_notional.get()),
                "applyMinToMarket": true,
                "maxNotional": "0",
                "applyMaxToMarket": false,
                "avgPriceMins": 0,
            },
        ],
        "permissions": [],
        "permissionSets": [["SPOT"]],
        "defaultSelfTradePreventionMode": "NONE",
        "allowedSelfTradePreventionModes": ["NONE", "EXPIRE_TAKER", "EXPIRE_MAKER", "EXPIRE_BOTH"],
        "makerCommission": fee(spec.maker_fee_ppm),
        "takerCommission": fee(spec.taker_fee_ppm),
    })
}

/// `GET /api/v3/exchangeInfo` (`symbol`, `symbols` or all).
pub async fn exchange_info(State(s): State<Shared>, r: Req) -> Answer {
    let (symbols, _) = symbols_param(&s, &r.params)?;
    let all = s.symbols();
    let list: Vec<Value> = symbols
        .iter()
        .filter_map(|sym| all.get(sym))
        .map(symbol_info)
        .collect();
    Ok(Json(json!({
        "timezone": "UTC",
        "serverTime": s.now_ms(),
        "rateLimits": [
            {"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1, "limit": 6000},
            {"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 10, "limit": 100},
            {"rateLimitType": "ORDERS", "interval": "DAY", "intervalNum": 1, "limit": 200000},
        ],
        "exchangeFilters": [],
        "symbols": list,
    })))
}

/// `GET /api/v3/depth` (`symbol`, `limit` 1–5000, default 100).
pub async fn depth(State(s): State<Shared>, r: Req) -> Answer {
    let sym = symbol_param(&s, &r.params)?;
    let limit = r.params.limit(100, 5000)?;
    let (seq, bids, asks) = s
        .market
        .depth(&sym, usize::try_from(limit).unwrap_or(5000))
        .await?;
    let side = |levels: Vec<(domain::Price, domain::Qty)>| -> Vec<[String; 2]> {
        levels
            .into_iter()
            .map(|(p, q)| [text(p.get()), text(q.get())])
            .collect()
    };
    Ok(Json(json!({
        "lastUpdateId": seq,
        "bids": side(bids),
        "asks": side(asks),
    })))
}

/// A stored decimal text without trailing zeros, as every answer writes amounts.
fn norm(v: &str) -> String {
    v.parse::<Decimal>().map_or_else(|_| v.to_owned(), text)
}

fn trade_json(t: &RecentTrade) -> Value {
    json!({
        "id": t.id,
        "price": norm(&t.price),
        "qty": norm(&t.qty),
        "quoteQty": norm(&t.quote_qty),
        "time": t.time,
        "isBuyerMaker": t.is_buyer_maker,
        "isBestMatch": true,
    })
}

/// Recent trades oldest first, from `from_id` on when given, at most `limit`.
async fn trades_from(
    s: &Shared,
    sym: &Symbol,
    limit: u64,
    from_id: Option<u64>,
) -> Result<Vec<RecentTrade>, ApiError> {
    // newest first in Redis; with a fromId read all that is kept and page from it
    let want = if from_id.is_some() { 1_000_000 } else { limit };
    let mut trades = s
        .market
        .recent_trades(sym, usize::try_from(want).unwrap_or(usize::MAX))
        .await?;
    trades.reverse();
    if let Some(from) = from_id {
        trades.retain(|t| t.id >= from);
    }
    trades.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
    Ok(trades)
}

/// `GET /api/v3/trades` (`symbol`, `limit` 1–1000, default 500).
pub async fn trades(State(s): State<Shared>, r: Req) -> Answer {
    let sym = symbol_param(&s, &r.params)?;
    let limit = r.params.limit(500, 1000)?;
    let t = trades_from(&s, &sym, limit, None).await?;
    Ok(Json(Value::Array(t.iter().map(trade_json).collect())))
}

/// `GET /api/v3/historicalTrades` (`symbol`, `limit`, `fromId`).
pub async fn historical_trades(State(s): State<Shared>, r: Req) -> Answer {
    let sym = symbol_param(&s, &r.params)?;
    let limit = r.params.limit(500, 1000)?;
    let from = r.params.u64_opt("fromId")?;
    let t = trades_from(&s, &sym, limit, from).await?;
    Ok(Json(Value::Array(t.iter().map(trade_json).collect())))
}

/// `GET /api/v3/aggTrades` (`symbol`, `fromId`, `startTime`, `endTime`, `limit`).
pub async fn agg_trades(State(s): State<Shared>, r: Req) -> Answer {
    let sym = symbol_param(&s, &r.params)?;
    let limit = r.params.limit(500, 1000)?;
    let from = r.params.u64_opt("fromId")?;
    let start = r.params.u64_opt("startTime")?;
    let end = r.params.u64_opt("endTime")?;
    let ranged = start.is_some() || end.is_some();
    let mut t = trades_from(&s, &sym, if ranged { 1_000_000 } else { limit }, from).await?;
    if ranged {
        t.retain(|t| start.is_none_or(|s| t.time >= s) && end.is_none_or(|e| t.time <= e));
        t.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
    }
    Ok(Json(Value::Array(
        t.iter()
            .map(|t| {
                json!({
                    "a": t.id, "p": norm(&t.price), "q": norm(&t.qty), "f": t.id, "l": t.id,
                    "T": t.time, "m": t.is_buyer_maker, "M": true,
                })
            })
            .collect(),
    )))
}

fn kline_row(start: u64, ms: u64, c: &Candle) -> Value {
    json!([
        start,
        text(c.open),
        text(c.high),
        text(c.low),
        text(c.close),
        text(c.volume),
        start + ms - 1,
        text(c.quote_volume),
        c.trades,
        "0",
        "0",
        "0",
    ])
}

/// `GET /api/v3/klines` and `uiKlines` (`symbol`, `interval`, `startTime`, `endTime`,
/// `limit` 1–1000, default 500; `timeZone` 0 only).
pub async fn klines(State(s): State<Shared>, r: Req) -> Answer {
    let p = &r.params;
    let sym = symbol_param(&s, p)?;
    let interval = p.required("interval")?;
    let ms = INTERVALS
        .iter()
        .find(|(name, _)| *name == interval)
        .map(|(_, ms)| *ms)
        .ok_or_else(|| ApiError::invalid(Invalid::Interval))?;
    if p.get("timeZone").is_some_and(|z| z != "0" && z != "+00:00") {
        return Err(ApiError::invalid(Invalid::Parameter));
    }
    let limit = usize::try_from(p.limit(500, 1000)?).unwrap_or(1000);
    let start = p.u64_opt("startTime")?;
    let end = p.u64_opt("endTime")?;
    if let (Some(a), Some(b)) = (start, end) {
        if a > b {
            return Err(ApiError::invalid(Invalid::Parameter));
        }
    }
    let candles = s
        .market
        .klines(&sym, interval, start.unwrap_or(0), end.unwrap_or(u64::MAX))
        .await?;
    // from startTime forwards; without it, the newest `limit`
    let rows: Vec<&(u64, Candle)> = if start.is_some() {
        candles.iter().take(limit).collect()
    } else {
        let skip = candles.len().saturating_sub(limit);
        candles.iter().skip(skip).collect()
    };
    Ok(Json(Value::Array(
        rows.into_iter()
            .map(|(t, c)| kline_row(*t, ms, c))
            .collect(),
    )))
}

fn ticker_of(sym: &Symbol, t: &std::collections::BTreeMap<String, String>, now: u64) -> Value {
    let f = |k: &str| t.get(k).cloned().unwrap_or_else(|| "0".into());
    let n = |k: &str| t.get(k).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    json!({
        "symbol": sym.as_str(),
        "priceChange": f("priceChange"),
        "priceChangePercent": f("priceChangePercent"),
        "weightedAvgPrice": f("weightedAvgPrice"),
        "prevClosePrice": f("prevClosePrice"),
        "lastPrice": f("lastPrice"),
        "lastQty": f("lastQty"),
        "bidPrice": f("bidPrice"),
        "bidQty": f("bidQty"),
        "askPrice": f("askPrice"),
        "askQty": f("askQty"),
        "openPrice": f("openPrice"),
        "highPrice": f("highPrice"),
        "lowPrice": f("lowPrice"),
        "volume": f("volume"),
        "quoteVolume": f("quoteVolume"),
        "openTime": t.get("openTime").and_then(|v| v.parse::<u64>().ok()).unwrap_or(now.saturating_sub(86_400_000)),
        "closeTime": t.get("closeTime").and_then(|v| v.parse::<u64>().ok()).unwrap_or(now),
        "firstId": t.get("firstId").and_then(|v| v.parse::<i64>().ok()).unwrap_or(-1),
        "lastId": t.get("lastId").and_then(|v| v.parse::<i64>().ok()).unwrap_or(-1),
        "count": n("count"),
    })
}

async fn best(s: &Shared, sym: &Symbol) -> Result<[String; 4], ApiError> {
    let (_, bids, asks) = s.market.depth(sym, 1).await?;
    let lvl = |l: Option<&(domain::Price, domain::Qty)>| {
        l.map_or(("0".to_owned(), "0".to_owned()), |(p, q)| {
            (text(p.get()), text(q.get()))
        })
    };
    let (bp, bq) = lvl(bids.first());
    let (ap, aq) = lvl(asks.first());
    Ok([bp, bq, ap, aq])
}

fn one_or_many(list: Vec<Value>, single: bool) -> Value {
    if single {
        list.into_iter().next().unwrap_or(Value::Null)
    } else {
        Value::Array(list)
    }
}

/// `GET /api/v3/ticker/24hr` (`symbol`, `symbols` or all).
pub async fn ticker_24hr(State(s): State<Shared>, r: Req) -> Answer {
    let (symbols, single) = symbols_param(&s, &r.params)?;
    let now = s.now_ms();
    let mut out = Vec::with_capacity(symbols.len());
    for sym in &symbols {
        let mut t = s.market.ticker(sym).await?;
        let [bp, bq, ap, aq] = best(&s, sym).await?;
        t.insert("bidPrice".into(), bp);
        t.insert("bidQty".into(), bq);
        t.insert("askPrice".into(), ap);
        t.insert("askQty".into(), aq);
        out.push(ticker_of(sym, &t, now));
    }
    Ok(Json(one_or_many(out, single)))
}

/// A rolling window's length in ms from Binance's `windowSize` (`1m`–`59m`, `1h`–`23h`,
/// `1d`–`7d`; `1d` when absent), and the candle interval it is summed from.
fn window(p: &Params) -> Result<(u64, &'static str), ApiError> {
    let raw = p.get("windowSize").unwrap_or("1d");
    let bad = || ApiError::invalid(Invalid::Parameter);
    // the last character, whatever its width (a byte index could split one)
    let (n, unit) = raw.split_at(raw.char_indices().last().map_or(0, |(i, _)| i));
    let n: u64 = n.parse().map_err(|_| bad())?;
    match (unit, n) {
        ("m", 1..=59) => Ok((n * 60_000, "1m")),
        ("h", 1..=23) => Ok((n * 3_600_000, "1m")),
        // days are summed from hour candles: the window starts on an hour
        ("d", 1..=7) => Ok((n * 86_400_000, "1h")),
        _ => Err(bad()),
    }
}

/// `GET /api/v3/ticker` (rolling window, `symbol` or `symbols`, `windowSize`, `type`
/// FULL or MINI): the statistics of the candles inside `[now − window, now]`, the
/// current candle included; `firstId` / `lastId` are -1 (candles keep no trade ids).
pub async fn ticker_window(State(s): State<Shared>, r: Req) -> Answer {
    if !r.params.has("symbol") && !r.params.has("symbols") {
        return Err(ApiError::mandatory("symbol"));
    }
    let (symbols, single) = symbols_param(&s, &r.params)?;
    if symbols.len() > 100 {
        return Err(ApiError::invalid(Invalid::Parameter));
    }
    let (span, interval) = window(&r.params)?;
    let mini = match r.params.get("type") {
        None | Some("FULL") => false,
        Some("MINI") => true,
        Some(_) => return Err(ApiError::invalid(Invalid::Parameter)),
    };
    let now = s.now_ms();
    let from = now.saturating_sub(span);
    let step = if interval == "1h" { 3_600_000 } else { 60_000 };
    let mut out = Vec::with_capacity(symbols.len());
    for sym in &symbols {
        // the candle that holds `from` counts whole: the window's edge is within one
        // candle step
        let candles = s
            .market
            .klines(sym, interval, from - from % step, now)
            .await?;
        let quote_dp = listed(&s, sym)?.spec.quote_precision;
        let mut v = json!({"symbol": sym.as_str()});
        let (open, last) = (
            candles.first().map(|(_, c)| c.open),
            candles.last().map(|(_, c)| c.close),
        );
        let high = candles.iter().map(|(_, c)| c.high).max();
        let low = candles.iter().map(|(_, c)| c.low).min();
        let volume: Decimal = candles.iter().map(|(_, c)| c.volume).sum();
        let quote: Decimal = candles.iter().map(|(_, c)| c.quote_volume).sum();
        let count: u64 = candles.iter().map(|(_, c)| c.trades).sum();
        let t = |d: Option<Decimal>| text(d.unwrap_or(Decimal::ZERO));
        if !mini {
            let change = match (open, last) {
                (Some(o), Some(l)) => l - o,
                _ => Decimal::ZERO,
            };
            let percent = match open {
                Some(o) if !o.is_zero() => (change * Decimal::from(100) / o).round_dp(3),
                _ => Decimal::ZERO,
            };
            // display only, as avgPrice: Binance's weighted average is itself rounded
            let avg = if volume.is_zero() {
                Decimal::ZERO
            } else {
                (quote / volume).round_dp(quote_dp)
            };
            v["priceChange"] = json!(text(change));
            v["priceChangePercent"] = json!(text(percent));
            v["weightedAvgPrice"] = json!(text(avg));
        }
        v["openPrice"] = json!(t(open));
        v["highPrice"] = json!(t(high));
        v["lowPrice"] = json!(t(low));
        v["lastPrice"] = json!(t(last));
        v["volume"] = json!(text(volume));
        v["quoteVolume"] = json!(text(quote));
        v["openTime"] = json!(from);
        v["closeTime"] = json!(now);
        v["firstId"] = json!(-1);
        v["lastId"] = json!(-1);
        v["count"] = json!(count);
        out.push(v);
    }
    Ok(Json(one_or_many(out, single)))
}

/// `GET /api/v3/ticker/price`.
pub async fn ticker_price(State(s): State<Shared>, r: Req) -> Answer {
    let (symbols, single) = symbols_param(&s, &r.params)?;
    let mut out = Vec::with_capacity(symbols.len());
    for sym in &symbols {
        let price = s
            .market
            .last_price(sym)
            .await?
            .map_or_else(|| "0".to_owned(), |p| text(p.get()));
        out.push(json!({"symbol": sym.as_str(), "price": price}));
    }
    Ok(Json(one_or_many(out, single)))
}

/// `GET /api/v3/ticker/bookTicker`.
pub async fn book_ticker(State(s): State<Shared>, r: Req) -> Answer {
    let (symbols, single) = symbols_param(&s, &r.params)?;
    let mut out = Vec::with_capacity(symbols.len());
    for sym in &symbols {
        let [bp, bq, ap, aq] = best(&s, sym).await?;
        out.push(json!({
            "symbol": sym.as_str(), "bidPrice": bp, "bidQty": bq, "askPrice": ap, "askQty": aq,
        }));
    }
    Ok(Json(one_or_many(out, single)))
}

/// `GET /api/v3/avgPrice`: the volume-weighted price of the last 5 one-minute candles
/// (the last trade price when they hold no volume; 0 when the symbol never traded).
pub async fn avg_price(State(s): State<Shared>, r: Req) -> Answer {
    let sym = symbol_param(&s, &r.params)?;
    let now = s.now_ms();
    let from = (now / 60_000).saturating_sub(4) * 60_000;
    let candles = s.market.klines(&sym, "1m", from, now).await?;
    let (vol, quote) = candles
        .iter()
        .fold((Decimal::ZERO, Decimal::ZERO), |(v, q), (_, c)| {
            (v + c.volume, q + c.quote_volume)
        });
    let price = if vol.is_zero() {
        s.market
            .last_price(&sym)
            .await?
            .map_or(Decimal::ZERO, |p| p.get())
    } else {
        // display only: Binance's avgPrice is itself a rounded average
        (quote / vol).round_dp(listed(&s, &sym)?.spec.quote_precision)
    };
    let close = candles.last().map_or(now, |(t, _)| t + 60_000 - 1);
    Ok(Json(
        json!({"mins": 5, "price": text(price), "closeTime": close}),
    ))
}
