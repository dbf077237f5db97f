//! `/health`, `/ready` and `/metrics` of the gateway against the real stack.

mod common;

use common::{is_error, Gw};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_ready_and_metrics_count_requests_and_error_codes() {
    let gw = Gw::start("gwops", 23, 0).await;
    assert_eq!(gw.get("/health").await, (200, json!({"status": "ok"})));
    assert_eq!(gw.get("/ready").await, (200, json!({"status": "ready"})));
    is_error(&gw.get("/api/v3/depth?symbol=NOPE").await, 400, -1121);
    is_error(&gw.get("/api/v3/depth?symbol=NOPE").await, 400, -1121);
    is_error(&gw.get("/nowhere").await, 404, -1000);
    let _ = gw.get("/api/v3/ping").await;
    let text = gw
        .http
        .get(format!("{}/metrics", gw.base))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("body");
    for line in [
        "gateway_requests_total{route=\"/api/v3/depth\",status=\"400\"} 2",
        "gateway_requests_total{route=\"/api/v3/ping\",status=\"200\"} 1",
        "gateway_requests_total{route=\"unmatched\",status=\"404\"} 1",
        "gateway_errors_total{code=\"-1121\"} 2",
        "gateway_errors_total{code=\"-1000\"} 1",
    ] {
        assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
    }
    gw.close().await;
}
