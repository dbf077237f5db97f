//! Counters for `/metrics` (Prometheus text format) and a tiny HTTP endpoint serving
//! `/metrics`, `/health` and `/ready`. No framework: the engine needs three GET routes.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::{info, warn};

/// The engine's counters. Cheap to share (`Arc`).
#[derive(Debug, Default)]
pub struct Metrics {
    /// Outbox rows published by relays.
    pub relayed: AtomicU64,
    /// Relay rounds that failed.
    pub relay_errors: AtomicU64,
    /// Matcher inputs applied.
    pub inputs_applied: AtomicU64,
    /// Matcher inputs dropped as redeliveries.
    pub inputs_duplicate: AtomicU64,
    /// Fill batches settled.
    pub batches_settled: AtomicU64,
    /// Events applied by settlers.
    pub events_settled: AtomicU64,
    /// Redelivered events skipped by settlers.
    pub events_skipped: AtomicU64,
    /// Settlement attempts that failed (and were retried).
    pub settle_errors: AtomicU64,
    /// Fill batches parked (failed too often, or queued behind a parked batch of their
    /// symbol).
    pub batches_parked: AtomicU64,
    /// Parked batches applied by a retry (`shardctl fills retry`).
    pub parked_applied: AtomicU64,
    /// Private-event publishes that failed (events lost for live subscribers only).
    pub publish_errors: AtomicU64,
    /// TCC transfers finished by the recovery loop.
    pub transfers_recovered: AtomicU64,
    /// 1 once every role has started.
    pub ready: AtomicU64,
    /// Health of each supervised role, by name (`matcher`, `settler-2`, …).
    roles: std::sync::Mutex<std::collections::BTreeMap<String, RoleHealth>>,
    /// Parked fill batches, by shard (as each settler last found them).
    parked: std::sync::Mutex<std::collections::BTreeMap<u16, ParkedHealth>>,
}

/// A shard's parked fill batches, as its settler reports them.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ParkedHealth {
    /// Batches parked on the shard.
    pub batches: u64,
    /// Their symbols.
    pub symbols: Vec<String>,
    /// The oldest failure: seq range, attempts and error.
    pub first_failure: Option<String>,
}

/// One supervised role's state.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RoleHealth {
    /// Running (and, after a failure, running for long enough to count as healthy).
    pub up: bool,
    /// Times it was started again after a failure.
    pub restarts: u64,
    /// Why it last failed.
    pub last_error: Option<String>,
}

impl Metrics {
    /// Adds `n` to a counter.
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    fn with_roles<T>(
        &self,
        f: impl FnOnce(&mut std::collections::BTreeMap<String, RoleHealth>) -> T,
    ) -> T {
        // a panic while holding this lock cannot leave it inconsistent: recover it
        let mut g = self
            .roles
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        f(&mut g)
    }

    /// Marks `role` running.
    pub fn role_up(&self, role: &str) {
        self.with_roles(|r| r.entry(role.to_owned()).or_default().up = true);
    }

    /// Marks `role` failed with `error` (it will be restarted).
    pub fn role_down(&self, role: &str, error: &str) {
        self.with_roles(|r| {
            let h = r.entry(role.to_owned()).or_default();
            h.up = false;
            h.last_error = Some(error.to_owned());
        });
    }

    /// Counts a restart of `role`.
    pub fn role_restarted(&self, role: &str) {
        self.with_roles(|r| r.entry(role.to_owned()).or_default().restarts += 1);
    }

    /// Records shard `shard`'s parked batches (a settler calls it at start and after
    /// every change).
    pub fn set_parked(&self, shard: u16, health: ParkedHealth) {
        let mut g = self
            .parked
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        g.insert(shard, health);
    }

    /// Every shard's parked batches, as reported.
    pub fn parked(&self) -> std::collections::BTreeMap<u16, ParkedHealth> {
        self.parked
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Every role's health, by name.
    pub fn roles(&self) -> std::collections::BTreeMap<String, RoleHealth> {
        self.with_roles(|r| r.clone())
    }

    /// `Ok` when the process has started every role, none is down and no settler has a
    /// parked fill batch; otherwise the text `/ready` answers with (one line per role
    /// down, one per shard with parked batches).
    pub fn readiness(&self) -> Result<(), String> {
        if self.ready.load(Ordering::Relaxed) != 1 {
            return Err("starting\n".into());
        }
        let down: String = self
            .roles()
            .into_iter()
            .filter(|(_, h)| !h.up)
            .map(|(name, h)| {
                format!(
                    "down: {name}: {}\n",
                    h.last_error.as_deref().unwrap_or("not running")
                )
            })
            .collect();
        let parked: String = self
            .parked()
            .into_iter()
            .filter(|(_, p)| p.batches > 0)
            .map(|(shard, p)| {
                format!(
                    "parked: settler-{shard}: {} fill batch(es) of {} held back, their \
                     settlement stopped ({}); see `shardctl fills parked`, fix the cause, \
                     then `shardctl fills retry --shard {shard}`\n",
                    p.batches,
                    p.symbols.join(", "),
                    p.first_failure.as_deref().unwrap_or("queued")
                )
            })
            .collect();
        let down = down + &parked;
        if down.is_empty() {
            Ok(())
        } else {
            Err(down)
        }
    }

    /// Prometheus text exposition.
    pub fn render(&self) -> String {
        let rows: [(&str, &str, &AtomicU64); 13] = [
            (
                "exchange_tcc_recovered_total",
                "transfers finished by the recovery loop",
                &self.transfers_recovered,
            ),
            (
                "exchange_settler_publish_errors_total",
                "user-stream publishes that failed",
                &self.publish_errors,
            ),
            (
                "exchange_relay_published_total",
                "outbox rows published",
                &self.relayed,
            ),
            (
                "exchange_relay_errors_total",
                "failed relay rounds",
                &self.relay_errors,
            ),
            (
                "exchange_matcher_inputs_total",
                "matcher inputs applied",
                &self.inputs_applied,
            ),
            (
                "exchange_matcher_duplicates_total",
                "redelivered inputs dropped",
                &self.inputs_duplicate,
            ),
            (
                "exchange_settler_batches_total",
                "fill batches settled",
                &self.batches_settled,
            ),
            (
                "exchange_settler_events_total",
                "events settled",
                &self.events_settled,
            ),
            (
                "exchange_settler_skipped_total",
                "redelivered events skipped",
                &self.events_skipped,
            ),
            (
                "exchange_settler_errors_total",
                "settlement attempts that failed",
                &self.settle_errors,
            ),
            (
                "exchange_settler_parked_total",
                "fill batches parked (failed too often, or behind a parked batch)",
                &self.batches_parked,
            ),
            (
                "exchange_settler_parked_applied_total",
                "parked fill batches applied by a retry",
                &self.parked_applied,
            ),
            (
                "exchange_started",
                "1 once every role was started",
                &self.ready,
            ),
        ];
        let mut out = String::new();
        for (name, help, v) in rows {
            let kind = if name.ends_with("_total") {
                "counter"
            } else {
                "gauge"
            };
            out.push_str(&format!(
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {}\n",
                v.load(Ordering::Relaxed)
            ));
        }
        let parked = self.parked();
        out.push_str(
            "# HELP exchange_settler_parked_batches fill batches parked on the shard now\n# TYPE exchange_settler_parked_batches gauge\n",
        );
        for (shard, p) in &parked {
            out.push_str(&format!(
                "exchange_settler_parked_batches{{shard=\"{shard}\"}} {}\n",
                p.batches
            ));
        }
        let roles = self.roles();
        let ready = u8::from(self.readiness().is_ok());
        out.push_str(&format!(
            "# HELP exchange_ready 1 when every role runs and no fill batch is parked\n# TYPE exchange_ready gauge\nexchange_ready {ready}\n"
        ));
        out.push_str(
            "# HELP exchange_role_up 1 while the role runs\n# TYPE exchange_role_up gauge\n",
        );
        for (name, h) in &roles {
            out.push_str(&format!(
                "exchange_role_up{{role=\"{name}\"}} {}\n",
                u8::from(h.up)
            ));
        }
        out.push_str(
            "# HELP exchange_role_restarts_total restarts after a failure\n# TYPE exchange_role_restarts_total counter\n",
        );
        for (name, h) in &roles {
            out.push_str(&format!(
                "exchange_role_restarts_total{{role=\"{name}\"}} {}\n",
                h.restarts
            ));
        }
        out
    }
}

/// Serves `/metrics`, `/health` (always 200 while the process runs) and `/ready` (200
/// once every role was started and while none is down; 503 naming the roles down and
/// why otherwise) on `addr` until `stop`.
///
/// # Errors
/// The bind error.
pub async fn serve(
    addr: &str,
    metrics: Arc<Metrics>,
    mut stop: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let listener = TcpListener::bind(addr).await?;
    info!(addr, "metrics and health on http://{addr}/metrics");
    loop {
        let (mut sock, _) = tokio::select! {
            a = listener.accept() => a?,
            _ = stop.changed() => return Ok(()),
        };
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let mut buf = [0u8; 1024];
            let n =
                match tokio::time::timeout(std::time::Duration::from_secs(2), sock.read(&mut buf))
                    .await
                {
                    Ok(Ok(n)) => n,
                    _ => return,
                };
            let line = String::from_utf8_lossy(&buf[..n]);
            let path = line.split_whitespace().nth(1).unwrap_or("/");
            let (status, body) = match path {
                "/metrics" => ("200 OK", metrics.render()),
                "/health" => ("200 OK", "ok\n".to_owned()),
                "/ready" => match metrics.readiness() {
                    Ok(()) => ("200 OK", "ready\n".to_owned()),
                    Err(why) => ("503 Service Unavailable", why),
                },
                _ => ("404 Not Found", "not found\n".to_owned()),
            };
            let resp = format!(
                "HTTP/1.1 {status}\r\ncontent-type: text/plain; version=0.0.4\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            if let Err(e) = sock.write_all(resp.as_bytes()).await {
                warn!(error = %e, "metrics response");
            }
        });
    }
}
