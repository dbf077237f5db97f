//! `gateway` — the Binance-compatible REST API over the exchange's libraries (DESIGN.md
//! "Order flow" 1–3): public market data from Redis ([`router::marketdata`]), signed
//! order placement and cancels through [`trading::placement`] (group commit per shard),
//! order, trade and balance reads from the user's shard. It never links the broker
//! client: what it writes reaches the matcher through each shard's outbox.
//!
//! * [`public`] — `ping`, `time`, `exchangeInfo`, `depth`, `trades`,
//!   `historicalTrades`, `aggTrades`, `klines`, `uiKlines`, the tickers, `avgPrice`;
//! * [`private`] — `order` (POST/GET/DELETE, `test`), `openOrders` (GET/DELETE),
//!   `allOrders`, `myTrades`, `account`;
//! * [`auth`] — the signature and time-window rules; [`params`] — Binance's parameter
//!   rules; [`error`] — every error in Binance's format, mapped in one place.
//!
//! Every answer, including unknown paths, wrong methods, oversized bodies, timeouts
//! and panics, is JSON in Binance's error format: never a framework default page.

pub mod auth;
pub mod config;
pub mod error;
pub mod limits;
pub mod ops;
pub mod outcomes;
pub mod params;
pub mod private;
pub mod public;
mod request;
pub mod userstream;
pub mod ws;
pub mod wsapi;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use axum::http::header::CONTENT_TYPE;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use domain::Symbol;
use router::marketdata::MarketReader;
use router::{ShardMap, TableRouter, UserDirectory};
use tracing::info;
use trading::placement::{GroupWriter, Placer, SymbolConfig};

pub use config::GatewaySettings;
pub use error::ApiError;
pub use request::Req;

/// The OpenAPI 3 document of the Binance-compatible REST surface, served at
/// `GET /api/v3/openapi.json` (written by hand; `tests/fuzz.rs` fuzzes the gateway
/// against it with schemathesis).
pub const OPENAPI: &str = include_str!("../openapi.json");

/// What every handler shares.
pub struct AppState {
    /// Settings.
    pub settings: GatewaySettings,
    /// The shards.
    pub map: ShardMap,
    /// Month-table routing.
    pub router: TableRouter,
    /// Placement and cancels.
    pub placer: Placer,
    /// One group-commit writer per shard (when enabled).
    pub writers: Option<Arc<Vec<GroupWriter>>>,
    /// API keys.
    pub directory: UserDirectory,
    /// Market data.
    pub market: MarketReader,
    /// Rate limits.
    pub limiter: limits::Limiter,
    /// Market messages for the WebSocket streams.
    pub ws: ws::Hub,
    /// The settlers' reports per order (RESULT / FULL answers wait for them).
    pub outcomes: outcomes::Outcomes,
    /// Redis (listenKeys).
    pub redis: deadpool_redis::Pool,
    /// Redis URL (pub/sub connections of user streams).
    pub redis_url: String,
    /// Redis key prefix.
    pub prefix: String,
    /// Milliseconds since the Unix epoch (a test drives it).
    pub clock: Arc<dyn Fn() -> u64 + Send + Sync>,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("settings", &self.settings)
            .field("symbols", &self.symbols().len())
            .finish_non_exhaustive()
    }
}

impl AppState {
    /// The symbols' configuration (filters, status) in force: reloaded from meta every
    /// `symbols_refresh_ms`, so a halt or a rules change needs no restart.
    pub fn symbols(&self) -> Arc<BTreeMap<Symbol, SymbolConfig>> {
        self.placer.symbols()
    }

    /// Now, ms since the Unix epoch.
    pub fn now_ms(&self) -> u64 {
        (self.clock)()
    }
}

/// The host clock in ms.
pub fn system_clock() -> Arc<dyn Fn() -> u64 + Send + Sync> {
    Arc::new(|| u64::try_from(chrono::Utc::now().timestamp_millis()).unwrap_or(0))
}

/// Shared state.
pub type Shared = Arc<AppState>;

/// The API's routes, with every non-handler answer in Binance's error format.
pub fn app(state: Shared) -> Router {
    let timeout = Duration::from_millis(state.settings.request_timeout_ms);
    let metrics = Arc::new(ops::Metrics::default());
    let exposition = metrics.clone();
    Router::new()
        .route("/health", get(ops::health))
        .route("/ready", get(ops::ready))
        .route(
            "/metrics",
            get(move || {
                let m = exposition.clone();
                async move { m.render() }
            }),
        )
        .route("/ws", get(ws::raw))
        .route("/ws/{*streams}", get(ws::raw))
        .route("/stream", get(ws::combined))
        .route("/ws-api/v3", get(wsapi::handler))
        .route(
            "/api/v3/openapi.json",
            get(|| async { ([(CONTENT_TYPE, "application/json")], OPENAPI) }),
        )
        .route("/api/v3/ping", get(public::ping))
        .route("/api/v3/time", get(public::time))
        .route("/api/v3/exchangeInfo", get(public::exchange_info))
        .route("/api/v3/depth", get(public::depth))
        .route("/api/v3/trades", get(public::trades))
        .route("/api/v3/historicalTrades", get(public::historical_trades))
        .route("/api/v3/aggTrades", get(public::agg_trades))
        .route("/api/v3/klines", get(public::klines))
        .route("/api/v3/uiKlines", get(public::klines))
        .route("/api/v3/ticker/24hr", get(public::ticker_24hr))
        .route("/api/v3/ticker", get(public::ticker_window))
        .route("/api/v3/ticker/price", get(public::ticker_price))
        .route("/api/v3/ticker/bookTicker", get(public::book_ticker))
        .route("/api/v3/avgPrice", get(public::avg_price))
        .route(
            "/api/v3/order",
            post(private::new_order)
                .get(private::query_order)
                .delete(private::cancel_order),
        )
        .route("/api/v3/order/test", post(private::test_order))
        .route("/api/v3/order/cancelReplace", post(private::cancel_replace))
        .route(
            "/api/v3/openOrders",
            get(private::open_orders).delete(private::cancel_open_orders),
        )
        .route("/api/v3/allOrders", get(private::all_orders))
        .route("/api/v3/myTrades", get(private::my_trades))
        .route("/api/v3/account", get(private::account))
        .route("/api/v3/account/commission", get(private::commission))
        .route("/api/v3/rateLimit/order", get(private::rate_limit_order))
        .route(
            "/api/v3/userDataStream",
            post(userstream::create)
                .put(userstream::keepalive)
                .delete(userstream::close),
        )
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            limit_requests,
        ))
        .fallback(unknown_path)
        .method_not_allowed_fallback(wrong_method)
        .layer(axum::middleware::from_fn(
            move |req: axum::extract::Request, next: axum::middleware::Next| async move {
                match tokio::time::timeout(timeout, next.run(req)).await {
                    Ok(r) => r,
                    // a write may have happened: Binance's "execution status unknown"
                    Err(_) => ApiError::outcome_unknown().into_response(),
                }
            },
        ))
        .layer(axum::middleware::from_fn_with_state(metrics, ops::count))
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(
            |_: Box<dyn std::any::Any + Send>| ApiError::internal().into_response(),
        ))
        .with_state(state)
}

/// Counts a request's weight against its IP's budget and answers
/// `X-MBX-USED-WEIGHT-1M`. When Redis cannot be asked the request goes through (the
/// limits protect capacity, not money) and the failure is logged.
async fn limit_requests(
    axum::extract::State(s): axum::extract::State<Shared>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let ip = req
        .extensions()
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map_or(std::net::IpAddr::from([127, 0, 0, 1]), |c| c.0.ip());
    let w = limits::weight(
        req.method(),
        req.uri().path(),
        req.uri().query().unwrap_or(""),
    );
    let used = match s.limiter.request(ip, w, s.now_ms()).await {
        Ok(used) => Some(used),
        Err(e) if e.code == -1001 => {
            tracing::warn!("rate limiter unavailable; request let through");
            None
        }
        Err(e) => return e.into_response(),
    };
    let mut resp = next.run(req).await;
    if let Some(u) = used {
        if let Ok(v) = axum::http::HeaderValue::from_str(&u.to_string()) {
            resp.headers_mut().insert("x-mbx-used-weight-1m", v.clone());
            resp.headers_mut().insert("x-mbx-used-weight", v);
        }
    }
    resp
}

async fn unknown_path(uri: axum::http::Uri) -> Response {
    ApiError::unknown(
        StatusCode::NOT_FOUND,
        format!("Unknown path {}.", uri.path()),
    )
    .into_response()
}

async fn wrong_method(method: axum::http::Method, uri: axum::http::Uri) -> Response {
    ApiError::unknown(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("Method {method} is not allowed on {}.", uri.path()),
    )
    .into_response()
}

/// Builds the state from settings: shards, symbols, a leased snowflake worker id for
/// order ids, group writers, the key directory and the market-data reader. The lease
/// is returned: ids stop when it is dropped.
///
/// # Errors
/// Settings, the shards, meta, or Redis unreachable.
pub async fn state_from_settings(
    settings: &router::Settings,
    gs: GatewaySettings,
) -> Result<(Shared, router::WorkerLease)> {
    let map = ShardMap::connect_lazy(settings)?;
    let router = TableRouter::new(&settings.symbols)?;
    map.ensure_tables(&router, chrono::Utc::now(), settings.months_ahead)
        .await
        .context("month tables")?;
    let symbols = trading::placement::load_symbols(map.meta())
        .await
        .context("loading symbols")?;
    let redis = router::directory::redis_pool(&settings.redis)?;
    let lease = router::WorkerLease::acquire(
        redis.clone(),
        &settings.redis.key_prefix,
        settings.snowflake.datacenter_id,
        Duration::from_millis(settings.snowflake.lease_ttl_ms),
    )
    .await
    .context("snowflake worker lease")?;
    let ids = Arc::new(lease.generator()?);
    let placer = Placer::new(
        map.clone(),
        router.clone(),
        symbols,
        Arc::new(move || ids.next_id()),
    );
    {
        // a halt, a resume or new rules reach the checks without a restart
        let (placer, meta) = (placer.clone(), map.meta().clone());
        let every = Duration::from_millis(gs.symbols_refresh_ms);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tick.tick().await;
                match placer.reload_symbols(&meta).await {
                    Ok(changed) if !changed.is_empty() => {
                        info!(?changed, "symbol configuration reloaded");
                    }
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "symbol reload failed; the rules in force stay")
                    }
                }
            }
        });
    }
    let writers = gs.group_commit.then(|| {
        Arc::new(
            map.iter()
                .map(|(s, _)| placer.group_writer(s, Default::default()))
                .collect::<Vec<_>>(),
        )
    });
    let directory = UserDirectory::new(
        map.clone(),
        redis.clone(),
        settings.redis.key_prefix.clone(),
        settings.redis.cache_ttl_s,
    );
    let market = MarketReader::new(redis.clone(), settings.redis.key_prefix.clone());
    let limiter = limits::Limiter::new(redis.clone(), settings.redis.key_prefix.clone(), gs.limits);
    let hub = ws::Hub::start(
        settings.redis.url.clone(),
        settings.redis.key_prefix.clone(),
    );
    let outcomes = outcomes::Outcomes::start(
        settings.redis.url.clone(),
        settings.redis.key_prefix.clone(),
    );
    let state = AppState {
        outcomes,
        settings: gs,
        map,
        router,
        placer,
        writers,
        directory,
        market,
        limiter,
        ws: hub,
        redis,
        redis_url: settings.redis.url.clone(),
        prefix: settings.redis.key_prefix.clone(),
        clock: system_clock(),
    };
    Ok((Arc::new(state), lease))
}

/// Serves the API on `listener` until `shutdown` resolves, then drains the requests in
/// flight.
///
/// # Errors
/// The listener's I/O errors.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: Shared,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(
        listener,
        app(state).into_make_service_with_connect_info::<std::net::SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await
}

/// Runs the gateway until SIGTERM / Ctrl-C, then stops accepting and drains the
/// requests in flight.
///
/// # Errors
/// Settings, the backends at start, or the listen address.
pub async fn run() -> Result<()> {
    let settings = router::Settings::load().context("router settings")?;
    let gs = GatewaySettings::load().context("gateway settings")?;
    info!(settings = ?settings.redacted(), gateway = ?gs, "starting");
    let addr = gs.http_addr.clone();
    let (state, lease) = state_from_settings(&settings, gs).await?;
    let listener = tokio::net::TcpListener::bind(&addr)
        .await
        .with_context(|| format!("listening on {addr}"))?;
    info!(addr, "gateway listening on http://{addr}");
    serve(listener, state.clone(), router::shutdown::signal())
        .await
        .context("serving")?;
    info!("stopped: draining done");
    let _ = lease.release().await;
    state.map.meta().close().await;
    Ok(())
}
