//! What the matcher made of an order, for `newOrderRespType` RESULT and FULL: one
//! process-wide subscription to every user's private channel (`{prefix}user:*`, what
//! the settlers publish after each settled batch), kept per order id for a short while
//! so an answer can wait for it. A placement answered RESULT / FULL waits at most
//! `result_wait_ms` for its order's first report (an `executionReport` with its fills,
//! or `orderAccepted` for an order that rests or waits untouched); at the bound it is
//! answered as committed (status NEW, no fills), like ACK with the order's fields.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::sync::Notify;

/// How long a report is kept for a waiter that registers late.
const KEEP: Duration = Duration::from_secs(30);
/// At most this many orders remembered (the oldest go first).
const MAX_ORDERS: usize = 200_000;

/// What is known of one order.
#[derive(Debug, Default)]
struct Entry {
    /// The latest report (`X`, `z`, `Z`), with every fill seen so far in `fills`.
    report: Option<Value>,
    notify: Arc<Notify>,
}

#[derive(Debug, Default)]
struct State {
    orders: HashMap<u64, Entry>,
    /// (when first seen, order id), oldest first: what pruning walks.
    seen: VecDeque<(Instant, u64)>,
}

/// The reports of recent orders, fed by one Redis pattern subscription.
#[derive(Debug, Clone, Default)]
pub struct Outcomes {
    state: Arc<Mutex<State>>,
}

impl Outcomes {
    /// Subscribes (and resubscribes after a failure, every second) to
    /// `{prefix}user:*` on `redis_url`.
    pub fn start(redis_url: String, prefix: String) -> Self {
        let me = Self::default();
        let feed = me.clone();
        tokio::spawn(async move {
            use futures_util::StreamExt;
            loop {
                let conn = async {
                    let client = deadpool_redis::redis::Client::open(redis_url.as_str())?;
                    let mut ps = client.get_async_pubsub().await?;
                    ps.psubscribe(format!("{prefix}user:*")).await?;
                    Ok::<_, deadpool_redis::redis::RedisError>(ps)
                };
                match conn.await {
                    Ok(ps) => {
                        let mut messages = ps.into_on_message();
                        while let Some(m) = messages.next().await {
                            let body = m.get_payload::<String>().unwrap_or_default();
                            if let Ok(v) = serde_json::from_str::<Value>(&body) {
                                feed.record(&v);
                            }
                        }
                        tracing::warn!("private channel subscription ended; resubscribing");
                    }
                    Err(e) => tracing::warn!(error = %e, "private channel subscription failed"),
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
        me
    }

    /// Takes one settler message: an order's report is kept (fills accumulated), and
    /// whoever waits for that order is woken.
    pub fn record(&self, v: &Value) {
        let Some(id) = v["i"].as_u64() else { return };
        let accepted_only = v["e"] == "orderAccepted";
        let report = match v["e"].as_str() {
            Some("executionReport") => v.clone(),
            Some("orderAccepted") => serde_json::json!({
                "e": "executionReport", "s": v["s"], "i": id, "X": "NEW",
                "z": "0", "Z": "0", "fills": [],
            }),
            _ => return,
        };
        let mut st = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        while st.seen.len() >= MAX_ORDERS
            || st
                .seen
                .front()
                .is_some_and(|(t, _)| now.duration_since(*t) > KEEP)
        {
            let Some((_, old)) = st.seen.pop_front() else {
                break;
            };
            st.orders.remove(&old);
        }
        let fresh = !st.orders.contains_key(&id);
        let entry = st.orders.entry(id).or_default();
        entry.report = Some(match entry.report.take() {
            None => report,
            // an accepted-only report after a real one changes nothing
            Some(prev) if accepted_only => prev,
            // a later report: its state, and the fills of both
            Some(prev) => {
                let mut fills = prev["fills"].as_array().cloned().unwrap_or_default();
                fills.extend(report["fills"].as_array().cloned().unwrap_or_default());
                let mut next = report;
                next["fills"] = Value::Array(fills);
                next
            }
        });
        entry.notify.notify_waiters();
        if fresh {
            st.seen.push_back((now, id));
        }
    }

    /// The order's first report, waiting at most `bound` for it.
    pub async fn wait(&self, order_id: u64, bound: Duration) -> Option<Value> {
        let notify = {
            let mut st = self.state.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(r) = st.orders.get(&order_id).and_then(|e| e.report.clone()) {
                return Some(r);
            }
            st.orders.entry(order_id).or_default().notify.clone()
        };
        let until = tokio::time::Instant::now() + bound;
        loop {
            let notified = notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(r) = self.peek(order_id) {
                return Some(r);
            }
            if tokio::time::timeout_at(until, notified).await.is_err() {
                return self.peek(order_id);
            }
        }
    }

    fn peek(&self, order_id: u64) -> Option<Value> {
        let st = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        st.orders.get(&order_id).and_then(|e| e.report.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[tokio::test]
    async fn a_waiter_gets_the_first_report_with_the_fills_seen_so_far() {
        let o = Outcomes::default();
        // nothing comes: the bound
        let t = Instant::now();
        assert_eq!(o.wait(7, Duration::from_millis(50)).await, None);
        assert!(t.elapsed() >= Duration::from_millis(50));
        // a report that arrives while waiting wakes the waiter
        let (o2, waiter) = (
            o.clone(),
            tokio::spawn({
                let o = o.clone();
                async move { o.wait(8, Duration::from_secs(5)).await }
            }),
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
        o2.record(
            &json!({"e": "executionReport", "i": 8, "X": "PARTIALLY_FILLED",
            "z": "1", "Z": "10", "fills": [{"t": 1}]}),
        );
        let r = waiter.await.expect("join").expect("report");
        assert_eq!(r["X"], "PARTIALLY_FILLED");
        // later reports keep every fill; an accepted-only report does not go back
        o.record(&json!({"e": "executionReport", "i": 8, "X": "FILLED",
            "z": "2", "Z": "20", "fills": [{"t": 2}]}));
        o.record(&json!({"e": "orderAccepted", "i": 8, "s": "BTCUSDT"}));
        let r = o.wait(8, Duration::ZERO).await.expect("kept");
        assert_eq!(
            (r["X"].as_str(), r["fills"].as_array().map(Vec::len)),
            (Some("FILLED"), Some(2))
        );
        // a resting order: NEW, no fills, even when the waiter registers late
        o.record(&json!({"e": "orderAccepted", "i": 9, "s": "BTCUSDT"}));
        let r = o.wait(9, Duration::ZERO).await.expect("accepted");
        assert_eq!((r["X"].as_str(), r["z"].as_str()), (Some("NEW"), Some("0")));
        // not an order's report: ignored
        o.record(&json!({"e": "outboundAccountPosition", "a": "BTC"}));
        o.record(&json!({"e": "executionReport"}));
    }
}
