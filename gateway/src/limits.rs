//! Rate limits in Redis, Binance's way: request weight per minute per IP (every
//! endpoint has Binance's weight), orders per 10 s and per day per user; each check is
//! one atomic Lua script over sliding windows (the current fixed window's count plus
//! the previous window's, weighted by how much of it still overlaps), so several
//! gateways share one budget. Over a limit: 429 with `Retry-After` (-1003 for weight,
//! -1015 for orders) and nothing counted; an IP that keeps sending while refused gets a
//! 418 ban that doubles for each repeat (2 min, 4 min, … up to 3 days). Every answer
//! carries `X-MBX-USED-WEIGHT-1M`; order answers `X-MBX-ORDER-COUNT-10S` and `-1D`.

use std::net::IpAddr;

use axum::http::StatusCode;
use serde::{Deserialize, Serialize};

use crate::error::ApiError;

/// The limits.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct Limits {
    /// Request weight per minute per IP.
    pub weight_per_minute: u64,
    /// Orders per 10 s per user.
    pub orders_per_10s: u64,
    /// Orders per day per user.
    pub orders_per_day: u64,
    /// Refused requests within a minute that earn an IP a ban.
    pub refusals_before_ban: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            weight_per_minute: 6_000,
            orders_per_10s: 100,
            orders_per_day: 200_000,
            refusals_before_ban: 20,
        }
    }
}

/// Checks every `(current key, previous key, weight, limit, window ms, elapsed ms)`
/// group of KEYS/ARGV; counts all of them only when every one fits. Returns
/// `{ok, used_1, retry_ms_1, used_2, retry_ms_2, …}` (used after counting when ok).
const SCRIPT: &str = r"
local n = #KEYS / 2
local used = {}
local ok = 1
for i = 1, n do
  local w = tonumber(ARGV[(i - 1) * 4 + 1])
  local limit = tonumber(ARGV[(i - 1) * 4 + 2])
  local window = tonumber(ARGV[(i - 1) * 4 + 3])
  local elapsed = tonumber(ARGV[(i - 1) * 4 + 4])
  local cur = tonumber(redis.call('GET', KEYS[(i - 1) * 2 + 1]) or '0')
  local prev = tonumber(redis.call('GET', KEYS[(i - 1) * 2 + 2]) or '0')
  local u = cur + math.floor(prev * (window - elapsed) / window)
  used[i] = u
  if u + w > limit then ok = 0 end
end
local out = {ok}
for i = 1, n do
  local w = tonumber(ARGV[(i - 1) * 4 + 1])
  local window = tonumber(ARGV[(i - 1) * 4 + 3])
  local elapsed = tonumber(ARGV[(i - 1) * 4 + 4])
  if ok == 1 and w > 0 then
    redis.call('INCRBY', KEYS[(i - 1) * 2 + 1], w)
    redis.call('PEXPIRE', KEYS[(i - 1) * 2 + 1], window * 2)
    used[i] = used[i] + w
  end
  out[#out + 1] = used[i]
  out[#out + 1] = window - elapsed
end
return out
";

/// Records a refusal of `KEYS[1]`'s IP and bans it once `ARGV[1]` refusals fall in a
/// minute: the ban lasts `ARGV[2]` ms × 2^(earlier bans), at most 3 days. Returns the
/// ban's remaining ms (0 = not banned).
const REFUSAL: &str = r"
local n = redis.call('INCR', KEYS[1])
redis.call('PEXPIRE', KEYS[1], 60000)
if n < tonumber(ARGV[1]) then return 0 end
local level = redis.call('INCR', KEYS[3])
redis.call('PEXPIRE', KEYS[3], 259200000)
local ms = math.min(tonumber(ARGV[2]) * 2 ^ (level - 1), 259200000)
redis.call('SET', KEYS[2], '1', 'PX', ms)
redis.call('DEL', KEYS[1])
return ms
";

static CHECK: std::sync::LazyLock<deadpool_redis::redis::Script> =
    std::sync::LazyLock::new(|| deadpool_redis::redis::Script::new(SCRIPT));
static BAN: std::sync::LazyLock<deadpool_redis::redis::Script> =
    std::sync::LazyLock::new(|| deadpool_redis::redis::Script::new(REFUSAL));

/// One limit to check: a key scope, the weight to add, the limit, the window.
#[derive(Debug, Clone, Copy)]
struct Window<'a> {
    scope: &'a str,
    id: &'a str,
    weight: u64,
    limit: u64,
    window_ms: u64,
}

/// What a check saw: used amounts per window (after counting when allowed).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Usage {
    /// Used per window, in the order checked.
    pub used: Vec<u64>,
}

/// The limiter.
#[derive(Clone)]
pub struct Limiter {
    redis: deadpool_redis::Pool,
    prefix: String,
    /// The limits in force.
    pub limits: Limits,
}

impl std::fmt::Debug for Limiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limiter")
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

impl Limiter {
    /// A limiter on `redis` under `prefix`.
    pub fn new(redis: deadpool_redis::Pool, prefix: impl Into<String>, limits: Limits) -> Self {
        Self {
            redis,
            prefix: prefix.into(),
            limits,
        }
    }

    fn key(&self, scope: &str, id: &str, start: u64) -> String {
        format!("{}rl:{scope}:{id}:{start}", self.prefix)
    }

    async fn check(
        &self,
        windows: &[Window<'_>],
        now_ms: u64,
    ) -> Result<(bool, Vec<(u64, u64)>), ApiError> {
        let mut inv = CHECK.prepare_invoke();
        for w in windows {
            let start = now_ms / w.window_ms * w.window_ms;
            inv.key(self.key(w.scope, w.id, start))
                .key(self.key(w.scope, w.id, start.saturating_sub(w.window_ms)))
                .arg(w.weight)
                .arg(w.limit)
                .arg(w.window_ms)
                .arg(now_ms - start);
        }
        let mut conn = self.redis.get().await.map_err(router::RouterError::from)?;
        let out: Vec<u64> = inv
            .invoke_async(&mut *conn)
            .await
            .map_err(router::RouterError::from)?;
        let ok = out.first() == Some(&1);
        let per = out[1..].chunks(2).map(|c| (c[0], c[1])).collect();
        Ok((ok, per))
    }

    /// Whether `ip` is banned (the ban's remaining ms).
    async fn banned(&self, ip: &str) -> Result<Option<u64>, ApiError> {
        let mut conn = self.redis.get().await.map_err(router::RouterError::from)?;
        let ttl: i64 = deadpool_redis::redis::cmd("PTTL")
            .arg(format!("{}rl:ban:{ip}", self.prefix))
            .query_async(&mut *conn)
            .await
            .map_err(router::RouterError::from)?;
        Ok(u64::try_from(ttl).ok().filter(|t| *t > 0))
    }

    async fn refused(&self, ip: &str) -> Result<u64, ApiError> {
        let mut conn = self.redis.get().await.map_err(router::RouterError::from)?;
        let ms: u64 = BAN
            .key(format!("{}rl:refused:{ip}", self.prefix))
            .key(format!("{}rl:ban:{ip}", self.prefix))
            .key(format!("{}rl:banlevel:{ip}", self.prefix))
            .arg(self.limits.refusals_before_ban)
            .arg(120_000)
            .invoke_async(&mut *conn)
            .await
            .map_err(router::RouterError::from)?;
        Ok(ms)
    }

    /// Counts `weight` for `ip`; the weight used in the minute on success.
    ///
    /// # Errors
    /// 418 -1003 while banned, 429 -1003 over the limit (with `Retry-After`).
    pub async fn request(&self, ip: IpAddr, weight: u64, now_ms: u64) -> Result<u64, ApiError> {
        let ip = ip.to_string();
        if let Some(ms) = self.banned(&ip).await? {
            return Err(banned(ms));
        }
        let w = Window {
            scope: "w",
            id: &ip,
            weight,
            limit: self.limits.weight_per_minute,
            window_ms: 60_000,
        };
        let (ok, per) = self.check(&[w], now_ms).await?;
        if ok {
            return Ok(per[0].0);
        }
        let ban = self.refused(&ip).await?;
        if ban > 0 {
            return Err(banned(ban));
        }
        Err(too_many(
            -1003,
            format!(
                "Too much request weight used; current limit is {} request weight per 1 MINUTE. Please use WebSocket Streams for live updates to avoid polling the API.",
                self.limits.weight_per_minute
            ),
            per[0].1,
        ))
    }

    /// `user`'s order counts `(in 10 s, today)`, without counting anything.
    ///
    /// # Errors
    /// -1001 when Redis cannot be asked.
    pub async fn order_usage(&self, user: u64, now_ms: u64) -> Result<(u64, u64), ApiError> {
        let id = user.to_string();
        let ws = [
            Window {
                scope: "o10s",
                id: &id,
                weight: 0,
                limit: self.limits.orders_per_10s,
                window_ms: 10_000,
            },
            Window {
                scope: "o1d",
                id: &id,
                weight: 0,
                limit: self.limits.orders_per_day,
                window_ms: 86_400_000,
            },
        ];
        let (_, per) = self.check(&ws, now_ms).await?;
        Ok((per[0].0, per[1].0))
    }

    /// Counts one order for `user`: `(orders in 10 s, orders today)`.
    ///
    /// # Errors
    /// 429 -1015 over either limit.
    pub async fn order(&self, user: u64, now_ms: u64) -> Result<(u64, u64), ApiError> {
        let id = user.to_string();
        let ws = [
            Window {
                scope: "o10s",
                id: &id,
                weight: 1,
                limit: self.limits.orders_per_10s,
                window_ms: 10_000,
            },
            Window {
                scope: "o1d",
                id: &id,
                weight: 1,
                limit: self.limits.orders_per_day,
                window_ms: 86_400_000,
            },
        ];
        let (ok, per) = self.check(&ws, now_ms).await?;
        if ok {
            return Ok((per[0].0, per[1].0));
        }
        let (limit, window, retry) = if per[0].0 + 1 > self.limits.orders_per_10s {
            (self.limits.orders_per_10s, "10 SECOND", per[0].1)
        } else {
            (self.limits.orders_per_day, "1 DAY", per[1].1)
        };
        Err(too_many(
            -1015,
            format!("Too many new orders; current limit is {limit} orders per {window}."),
            retry,
        ))
    }
}

fn too_many(code: i32, msg: String, retry_ms: u64) -> ApiError {
    let mut e = ApiError::new(StatusCode::TOO_MANY_REQUESTS, code, msg);
    e.retry_after = Some(retry_ms.div_ceil(1000).max(1));
    e
}

fn banned(ms: u64) -> ApiError {
    let mut e = ApiError::new(
        StatusCode::IM_A_TEAPOT,
        -1003,
        format!(
            "Way too much request weight used; IP banned for {} more seconds. Please use WebSocket Streams for live updates to avoid bans.",
            ms.div_ceil(1000)
        ),
    );
    e.retry_after = Some(ms.div_ceil(1000).max(1));
    e
}

/// Binance's request weight of an endpoint, given its parameters.
pub fn weight(method: &axum::http::Method, path: &str, query: &str) -> u64 {
    use axum::http::Method;
    let has = |name: &str| {
        query
            .split('&')
            .any(|p| p.split('=').next() == Some(name) && p.len() > name.len() + 1)
    };
    let limit = || -> u64 {
        query
            .split('&')
            .find_map(|p| p.strip_prefix("limit="))
            .and_then(|v| v.parse().ok())
            .unwrap_or(100)
    };
    let one_or_all = |one: u64, all: u64| if has("symbol") { one } else { all };
    match (method, path) {
        (_, "/api/v3/depth") => match limit() {
            0..=100 => 5,
            101..=500 => 25,
            501..=1000 => 50,
            _ => 250,
        },
        (_, "/api/v3/exchangeInfo") => 20,
        (_, "/api/v3/trades") => 25,
        (_, "/api/v3/historicalTrades") => 25,
        (_, "/api/v3/aggTrades") => 4,
        (_, "/api/v3/klines" | "/api/v3/uiKlines") => 2,
        (_, "/api/v3/ticker/24hr") => one_or_all(2, 80),
        // 4 per symbol, at most 200 (a `symbols` list counts its commas)
        (_, "/api/v3/ticker") => {
            let listed = query
                .split('&')
                .find_map(|p| p.strip_prefix("symbols="))
                .map_or(1, |l| l.matches("%2C").count() + l.matches(',').count() + 1);
            (4 * u64::try_from(listed).unwrap_or(50)).min(200)
        }
        (_, "/api/v3/ticker/price" | "/api/v3/ticker/bookTicker") => one_or_all(2, 4),
        (_, "/api/v3/avgPrice") => 2,
        (&Method::GET, "/api/v3/order") => 4,
        (_, "/api/v3/rateLimit/order") => 40,
        (_, "/api/v3/account/commission") => 20,
        (&Method::GET, "/api/v3/openOrders") => one_or_all(6, 80),
        (&Method::DELETE, "/api/v3/openOrders") => 1,
        (_, "/api/v3/allOrders" | "/api/v3/myTrades" | "/api/v3/account") => 20,
        _ => 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::Method;

    #[test]
    fn binance_weights() {
        assert_eq!(weight(&Method::GET, "/api/v3/depth", "symbol=X"), 5);
        assert_eq!(
            weight(&Method::GET, "/api/v3/depth", "symbol=X&limit=500"),
            25
        );
        assert_eq!(
            weight(&Method::GET, "/api/v3/depth", "symbol=X&limit=5000"),
            250
        );
        assert_eq!(weight(&Method::GET, "/api/v3/ticker/24hr", ""), 80);
        assert_eq!(weight(&Method::GET, "/api/v3/ticker/24hr", "symbol=X"), 2);
        assert_eq!(weight(&Method::GET, "/api/v3/ticker", "symbol=X"), 4);
        assert_eq!(
            weight(
                &Method::GET,
                "/api/v3/ticker",
                "symbols=%5B%22A%22%2C%22B%22%2C%22C%22%5D"
            ),
            12
        );
        assert_eq!(weight(&Method::GET, "/api/v3/order", "symbol=X"), 4);
        assert_eq!(weight(&Method::POST, "/api/v3/order", ""), 1);
        assert_eq!(weight(&Method::GET, "/api/v3/ping", ""), 1);
    }
}
