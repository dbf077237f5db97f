//! The gateway on port 0 over a test's own databases and Redis prefix, and a client
//! that signs like the real ones (form body as python-binance, query string as the
//! official SDK).

#![allow(dead_code)]

use std::sync::Arc;

use gateway::{AppState, GatewaySettings};
use router::marketdata::MarketReader;
use serde_json::Value;
use testkit::Placement;

/// A running gateway and what it runs on.
pub struct Gw {
    /// `http://127.0.0.1:<port>`.
    pub base: String,
    /// Databases, placer, symbols.
    pub p: Placement,
    /// HTTP client.
    pub http: reqwest::Client,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

/// A user's API key and secret.
#[derive(Clone)]
pub struct Key {
    pub user: u64,
    pub key: String,
    pub secret: String,
}

/// Where a client puts the signed parameters.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Style {
    /// In a form-urlencoded body (python-binance's POST/PUT/DELETE).
    Body,
    /// In the query string (binance-sdk-spot, every method).
    Query,
}

/// Milliseconds now.
pub fn now_ms() -> u64 {
    u64::try_from(chrono::Utc::now().timestamp_millis()).expect("ms")
}

impl Gw {
    /// Fresh databases named after `name`, `users` registered users (ids 1..=n), and
    /// the gateway serving them.
    pub async fn start(name: &str, worker: u8, users: u64) -> Self {
        Self::start_with(name, worker, users, gateway::limits::Limits::default()).await
    }

    /// [`Gw::start`] with these rate limits.
    pub async fn start_with(
        name: &str,
        worker: u8,
        users: u64,
        limits: gateway::limits::Limits,
    ) -> Self {
        Self::start_full(name, worker, users, limits, 0).await
    }

    /// [`Gw::start_with`] whose RESULT / FULL answers wait up to `result_wait_ms`
    /// for the matcher's outcome (0 where no matcher runs: answered at once).
    pub async fn start_full(
        name: &str,
        worker: u8,
        users: u64,
        limits: gateway::limits::Limits,
        result_wait_ms: u64,
    ) -> Self {
        let p = testkit::placement(name, worker).await;
        testkit::users(&p.env, users).await;
        let writers = Arc::new(
            p.env
                .map
                .iter()
                .map(|(s, _)| p.placer.group_writer(s, Default::default()))
                .collect::<Vec<_>>(),
        );
        let state = AppState {
            settings: GatewaySettings {
                max_body_bytes: 4096,
                listen_key_ttl_s: 3,
                limits,
                result_wait_ms,
                ..GatewaySettings::default()
            },
            outcomes: gateway::outcomes::Outcomes::start(
                p.env.settings.redis.url.clone(),
                p.env.prefix.clone(),
            ),
            map: p.env.map.clone(),
            router: p.router.clone(),
            placer: p.placer.clone(),
            writers: Some(writers),
            directory: p.env.directory(),
            market: MarketReader::new(p.env.redis(), p.env.prefix.clone()),
            limiter: gateway::limits::Limiter::new(p.env.redis(), p.env.prefix.clone(), limits),
            ws: gateway::ws::Hub::start(p.env.settings.redis.url.clone(), p.env.prefix.clone()),
            redis: p.env.redis(),
            redis_url: p.env.settings.redis.url.clone(),
            prefix: p.env.prefix.clone(),
            clock: gateway::system_clock(),
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(gateway::serve(listener, Arc::new(state), async move {
            let _ = rx.await;
        }));
        Self {
            base,
            p,
            http: reqwest::Client::new(),
            stop: Some(tx),
        }
    }

    /// An API key for `user`.
    pub async fn key(&self, user: u64) -> Key {
        let k = self
            .p
            .env
            .directory()
            .create_api_key(testkit::uid(user), "test")
            .await
            .expect("api key");
        Key {
            user,
            key: k.key,
            secret: k.secret.expose().to_owned(),
        }
    }

    /// An unsigned request: status and JSON body (panics on a non-JSON body: every
    /// answer must be JSON).
    pub async fn public(&self, method: reqwest::Method, path_and_query: &str) -> (u16, Value) {
        let r = self
            .http
            .request(method, format!("{}{path_and_query}", self.base))
            .send()
            .await
            .expect("request");
        json_of(r).await
    }

    /// GET without a key.
    pub async fn get(&self, path_and_query: &str) -> (u16, Value) {
        self.public(reqwest::Method::GET, path_and_query).await
    }

    /// A signed request with `params` (plus `timestamp` now), the way `style` sends it.
    pub async fn signed(
        &self,
        method: reqwest::Method,
        path: &str,
        key: &Key,
        params: &[(&str, &str)],
        style: Style,
    ) -> (u16, Value) {
        let mut all: Vec<(String, String)> = params
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        if !params.iter().any(|(k, _)| *k == "timestamp") {
            all.push(("timestamp".into(), now_ms().to_string()));
        }
        let text = serde_urlencoded::to_string(&all).expect("form");
        let sig = gateway::auth::sign_hmac(key.secret.as_bytes(), text.as_bytes());
        let signed = format!("{text}&signature={sig}");
        self.raw(method, path, &key.key, &signed, style).await
    }

    /// A request carrying `signed` (already signed) as `style` sends it.
    pub async fn raw(
        &self,
        method: reqwest::Method,
        path: &str,
        api_key: &str,
        signed: &str,
        style: Style,
    ) -> (u16, Value) {
        let mut req = match style {
            Style::Query => self
                .http
                .request(method, format!("{}{path}?{signed}", self.base)),
            Style::Body => self
                .http
                .request(method, format!("{}{path}", self.base))
                .header("content-type", "application/x-www-form-urlencoded")
                .body(signed.to_owned()),
        };
        if !api_key.is_empty() {
            req = req.header("X-MBX-APIKEY", api_key);
        }
        json_of(req.send().await.expect("request")).await
    }
}

impl Gw {
    /// Stops the server and drops the test's databases.
    pub async fn close(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        self.p.env.drop_all().await;
    }
}

/// Status and JSON body; panics unless the body is JSON with a JSON content type.
pub async fn json_of(r: reqwest::Response) -> (u16, Value) {
    let status = r.status().as_u16();
    let ct = r
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let text = r.text().await.expect("body");
    assert!(
        ct.starts_with("application/json"),
        "status {status}: content type {ct:?}, body {text:?}"
    );
    let v = serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text:?}"));
    (status, v)
}

/// Asserts a Binance error answer.
#[track_caller]
pub fn is_error(got: &(u16, Value), status: u16, code: i64) {
    assert_eq!(
        (got.0, got.1["code"].as_i64()),
        (status, Some(code)),
        "answer {got:?}"
    );
    assert!(
        got.1["msg"].as_str().is_some_and(|m| !m.is_empty()),
        "{got:?}"
    );
}

/// The workspace root.
#[allow(dead_code)] // each test binary uses its own subset
pub fn workspace() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// The clients' python (`scripts/clients-venv.sh` once per test binary: it creates or
/// updates the venv only when the requirements changed).
#[allow(dead_code)]
pub async fn python() -> &'static std::path::Path {
    static PYTHON: tokio::sync::OnceCell<std::path::PathBuf> = tokio::sync::OnceCell::const_new();
    PYTHON
        .get_or_init(|| async {
            let script = workspace().join("scripts/clients-venv.sh");
            let out = tokio::process::Command::new("bash")
                .arg(&script)
                .output()
                .await
                .expect("run scripts/clients-venv.sh");
            let stdout = String::from_utf8_lossy(&out.stdout);
            assert!(
                out.status.success(),
                "{} failed ({}):\n{stdout}\n{}",
                script.display(),
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
            let last = stdout.lines().last().unwrap_or("").trim();
            let py = std::path::PathBuf::from(last);
            assert!(py.is_file(), "no python at {last:?}: {stdout}");
            py
        })
        .await
}
