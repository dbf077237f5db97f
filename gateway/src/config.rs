//! The gateway's own settings (shards, meta, Redis and ids come from
//! `router::Settings`): built-in defaults → environment `EXCHANGE_GATEWAY__*`
//! (e.g. `EXCHANGE_GATEWAY__HTTP_ADDR=0.0.0.0:8080`).

use figment::providers::{Env, Serialized};
use figment::Figment;
use router::RouterError;
use serde::{Deserialize, Serialize};

/// Gateway settings.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct GatewaySettings {
    /// Listen address of the API (REST; WebSocket later on the same port).
    pub http_addr: String,
    /// Largest request body, bytes (a bigger one is refused with 413 in the API's
    /// format).
    pub max_body_bytes: usize,
    /// A request taking longer is answered 503 (-1007 for writes would be wrong: the
    /// timeout applies before a write starts only; writes run to their end).
    pub request_timeout_ms: u64,
    /// Group commit per shard for placements (the pipeline's throughput path).
    pub group_commit: bool,
    /// A listenKey not kept alive expires after this many seconds.
    pub listen_key_ttl_s: u64,
    /// How long a RESULT / FULL placement waits for the matcher's outcome before it is
    /// answered as committed (status NEW, no fills), ms; 0 answers at once.
    pub result_wait_ms: u64,
    /// How often the symbols' configuration (status, filters, rules) is re-read
    /// from meta, ms.
    pub symbols_refresh_ms: u64,
    /// Rate limits (`EXCHANGE_GATEWAY__LIMITS__WEIGHT_PER_MINUTE`, …).
    pub limits: crate::limits::Limits,
}

impl Default for GatewaySettings {
    fn default() -> Self {
        Self {
            http_addr: "127.0.0.1:8080".into(),
            max_body_bytes: 64 * 1024,
            request_timeout_ms: 10_000,
            group_commit: true,
            listen_key_ttl_s: 3_600,
            symbols_refresh_ms: 2_000,
            result_wait_ms: 1_000,
            limits: crate::limits::Limits::default(),
        }
    }
}

impl GatewaySettings {
    /// Defaults → `EXCHANGE_GATEWAY__*`.
    ///
    /// # Errors
    /// [`RouterError::Config`] for a malformed or out-of-range value.
    pub fn load() -> Result<Self, RouterError> {
        let s: Self = Figment::from(Serialized::defaults(Self::default()))
            .merge(Env::prefixed("EXCHANGE_GATEWAY__").split("__"))
            .extract()
            .map_err(|e| RouterError::Config(format!("gateway settings: {e}")))?;
        if s.max_body_bytes < 1024 || s.request_timeout_ms == 0 || s.symbols_refresh_ms == 0 {
            return Err(RouterError::Config(
                "max_body_bytes must be at least 1024, request_timeout_ms and symbols_refresh_ms positive"
                    .into(),
            ));
        }
        Ok(s)
    }
}
