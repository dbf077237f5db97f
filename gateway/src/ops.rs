//! Operability: `/health` (the process answers), `/ready` (meta, every shard and Redis
//! answer within 2 s; 503 naming what does not), `/metrics` (Prometheus text: requests
//! by route and status, errors by Binance code, latency sums), and the middleware that
//! counts every request. Answers are JSON like the rest of the API, except `/metrics`.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use crate::Shared;

/// The Binance error code of an error answer, attached to the response for the
/// metrics middleware.
#[derive(Debug, Clone, Copy)]
pub struct ErrorCode(pub i32);

/// Request counters.
#[derive(Debug, Default)]
pub struct Metrics {
    /// (route, status) → (count, seconds).
    requests: Mutex<BTreeMap<(String, u16), (u64, f64)>>,
    /// Binance error code → count.
    errors: Mutex<BTreeMap<i32, u64>>,
}

impl Metrics {
    fn record(&self, route: String, status: u16, secs: f64, code: Option<i32>) {
        {
            let mut r = self
                .requests
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let e = r.entry((route, status)).or_default();
            e.0 += 1;
            e.1 += secs;
        }
        if let Some(c) = code {
            let mut e = self
                .errors
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            *e.entry(c).or_default() += 1;
        }
    }

    /// Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::from(
            "# HELP gateway_requests_total requests by route and status\n# TYPE gateway_requests_total counter\n",
        );
        let r = self
            .requests
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for ((route, status), (n, _)) in r.iter() {
            out.push_str(&format!(
                "gateway_requests_total{{route=\"{route}\",status=\"{status}\"}} {n}\n"
            ));
        }
        out.push_str("# HELP gateway_request_seconds_sum time spent answering, by route\n# TYPE gateway_request_seconds_sum counter\n");
        let mut by_route: BTreeMap<&str, f64> = BTreeMap::new();
        for ((route, _), (_, s)) in r.iter() {
            *by_route.entry(route).or_default() += s;
        }
        for (route, s) in by_route {
            out.push_str(&format!(
                "gateway_request_seconds_sum{{route=\"{route}\"}} {s:.6}\n"
            ));
        }
        drop(r);
        out.push_str("# HELP gateway_errors_total error answers by Binance code\n# TYPE gateway_errors_total counter\n");
        let e = self
            .errors
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for (code, n) in e.iter() {
            out.push_str(&format!("gateway_errors_total{{code=\"{code}\"}} {n}\n"));
        }
        out
    }
}

/// Counts one request (route template, not the raw path: bounded label values).
pub async fn count(State(m): State<std::sync::Arc<Metrics>>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let started = Instant::now();
    let resp = next.run(req).await;
    let code = resp.extensions().get::<ErrorCode>().map(|c| c.0);
    m.record(
        route,
        resp.status().as_u16(),
        started.elapsed().as_secs_f64(),
        code,
    );
    resp
}

/// `GET /health`.
pub async fn health() -> Json<serde_json::Value> {
    Json(json!({"status": "ok"}))
}

/// `GET /ready`: 200 when meta, every shard and Redis answer within 2 s.
pub async fn ready(State(s): State<Shared>) -> Response {
    let limit = Duration::from_secs(2);
    let mut down = router::status::unreachable(&s.map, limit).await;
    if !matches!(
        tokio::time::timeout(limit, s.market.ping()).await,
        Ok(Ok(()))
    ) {
        down.push("redis".to_owned());
    }
    if down.is_empty() {
        Json(json!({"status": "ready"})).into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "unavailable", "down": down})),
        )
            .into_response()
    }
}
