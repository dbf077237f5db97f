//! Rate limits against the real Redis: request weight per IP and minute (429 -1003 with
//! `Retry-After`, then a 418 ban for an IP that keeps going), orders per user and 10 s
//! (429 -1015, the refused order not placed), and the usage headers.

mod common;

use common::{is_error, Gw, Style};
use gateway::limits::Limits;
use reqwest::Method;

async fn get_with_headers(
    gw: &Gw,
    path: &str,
) -> (u16, reqwest::header::HeaderMap, serde_json::Value) {
    let r = gw
        .http
        .get(format!("{}{path}", gw.base))
        .send()
        .await
        .expect("send");
    let headers = r.headers().clone();
    let (s, v) = common::json_of(r).await;
    (s, headers, v)
}

fn header(h: &reqwest::header::HeaderMap, name: &str) -> Option<u64> {
    h.get(name)?.to_str().ok()?.parse().ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_weight_is_limited_per_ip_then_the_ip_is_banned() {
    let limits = Limits {
        weight_per_minute: 30,
        refusals_before_ban: 5,
        ..Limits::default()
    };
    let gw = Gw::start_with("gwweight", 21, 0, limits).await;
    // depth (limit ≤ 100) weighs 5: six fit in 30
    let mut last = 0;
    for i in 0..6 {
        let (s, h, v) = get_with_headers(&gw, "/api/v3/depth?symbol=BTCUSDT").await;
        assert_eq!(s, 200, "request {i}: {v}");
        let used = header(&h, "x-mbx-used-weight-1m").expect("weight header");
        assert!(used > last && used <= 30, "used {used} after {last}");
        last = used;
    }
    // the seventh is refused, with Retry-After, and not counted
    let (s, h, v) = get_with_headers(&gw, "/api/v3/depth?symbol=BTCUSDT").await;
    is_error(&(s, v), 429, -1003);
    let retry = header(&h, "retry-after").expect("Retry-After");
    assert!((1..=60).contains(&retry), "retry after {retry}");
    // an IP that keeps going is banned: 418, also with Retry-After
    let mut banned = None;
    for _ in 0..10 {
        let (s, h, v) = get_with_headers(&gw, "/api/v3/ping").await;
        if s == 418 {
            banned = Some((h, v));
            break;
        }
        is_error(&(s, v), 429, -1003);
    }
    let (h, v) = banned.expect("banned after 5 refusals");
    assert_eq!(v["code"], -1003);
    assert!(
        header(&h, "retry-after").is_some_and(|s| (60..=120).contains(&s)),
        "{h:?}"
    );
    is_error(&gw.get("/api/v3/time").await, 418, -1003);
    gw.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orders_are_limited_per_user_and_a_refused_order_is_not_placed() {
    let limits = Limits {
        orders_per_10s: 3,
        ..Limits::default()
    };
    let gw = Gw::start_with("gworders", 20, 2, limits).await;
    testkit::deposit(&gw.p.env, 1, "USDT", "1000").await;
    let k = gw.key(1).await;
    // start early in a 10 s window, so the test never straddles two
    while common::now_ms() % 10_000 > 4_000 {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let order = [
        ("symbol", "BTCUSDT"),
        ("side", "BUY"),
        ("type", "LIMIT"),
        ("timeInForce", "GTC"),
        ("quantity", "0.001"),
        ("price", "20000"),
        ("newOrderRespType", "ACK"),
    ];
    for i in 1..=3u64 {
        let (s, v) = gw
            .signed(Method::POST, "/api/v3/order", &k, &order, Style::Body)
            .await;
        assert_eq!(s, 200, "order {i}: {v}");
    }
    let refused = gw
        .signed(Method::POST, "/api/v3/order", &k, &order, Style::Body)
        .await;
    is_error(&refused, 429, -1015);
    assert!(
        refused.1["msg"]
            .as_str()
            .is_some_and(|m| m.contains("3 orders per 10 SECOND")),
        "{refused:?}"
    );
    // three orders' worth frozen, not four
    assert_eq!(
        testkit::balance(&gw.p.env, 1, "USDT").await,
        (testkit::amt("940"), testkit::amt("60"))
    );
    // the caller's usage, without counting
    let (s, usage) = gw
        .signed(
            Method::GET,
            "/api/v3/rateLimit/order",
            &k,
            &[],
            Style::Query,
        )
        .await;
    assert_eq!(s, 200, "{usage}");
    assert_eq!(
        (
            usage[0]["interval"].clone(),
            usage[0]["limit"].clone(),
            usage[0]["count"].clone()
        ),
        (
            serde_json::json!("SECOND"),
            serde_json::json!(3),
            serde_json::json!(3)
        ),
        "{usage}"
    );
    assert_eq!(usage[1]["count"], 3, "{usage}");
    // another user has a budget of their own
    let k2 = gw.key(2).await;
    testkit::deposit(&gw.p.env, 2, "USDT", "100").await;
    let (s, v) = gw
        .signed(Method::POST, "/api/v3/order", &k2, &order, Style::Query)
        .await;
    assert_eq!(s, 200, "{v}");
    testkit::audits_hold(&gw.p.env).await;
    gw.close().await;
}
