//! Typed, layered configuration: built-in defaults → TOML file → environment.
//!
//! * file: the path in `EXCHANGE_CONFIG`, else `exchange.toml` in the working
//!   directory if it exists;
//! * env: `EXCHANGE_` prefix, `__` separates nesting levels, e.g.
//!   `EXCHANGE_POOL__MAX_CONNECTIONS=64`, `EXCHANGE_SNOWFLAKE__WORKER_ID=3`;
//!   the shard list, being a list, is set with `EXCHANGE_SHARD_URLS` (comma separated
//!   `mysql://` URLs, shard 0 first).
//!
//! Nothing here assumes four shards: the count is the length of `shards`.
//! [`Settings::validate`] runs at start-up; [`Settings::redacted`] is what gets logged.

use std::path::PathBuf;
use std::time::Duration;

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};

use crate::error::RouterError;

/// Everything the router layer needs: shards, meta schema, pools, Redis, ids, symbols.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Settings {
    /// One `mysql://user:pass@host:port/database` URL per shard; index = shard id.
    pub shards: Vec<String>,
    /// URL of the meta schema (user directory, api keys, TCC globals).
    pub meta: String,
    /// A read replica per shard, by index (an empty string: none), for `shardctl
    /// status` to show replication lag; set with `EXCHANGE_REPLICA_URLS` (comma
    /// separated, positional: `,,,mysql://…` is a replica of shard 3 only).
    #[serde(default)]
    pub replicas: Vec<String>,
    /// Pool sizes and timeouts, the same for every shard pool and the meta pool.
    pub pool: PoolSettings,
    /// Redis used for lookup caches and snowflake worker leases.
    pub redis: RedisSettings,
    /// Snowflake id generation.
    pub snowflake: SnowflakeSettings,
    /// The symbol whitelist: only these names ever reach a table name.
    pub symbols: Vec<String>,
    /// How many months ahead `ensure-tables` creates month tables and partitions.
    pub months_ahead: u32,
}

/// sqlx pool settings.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct PoolSettings {
    /// Upper bound of connections per pool.
    pub max_connections: u32,
    /// Connections kept open when idle.
    pub min_connections: u32,
    /// How long a caller waits for a free connection before an error.
    pub acquire_timeout_ms: u64,
    /// Idle connections above `min_connections` are closed after this.
    pub idle_timeout_s: u64,
}

/// Redis connection and key namespace.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct RedisSettings {
    /// `redis://host:port/db`.
    pub url: String,
    /// Pool size.
    pub pool_size: usize,
    /// Prefix of every key this process writes (tests use their own).
    pub key_prefix: String,
    /// Time-to-live of cached directory lookups.
    pub cache_ttl_s: u64,
}

/// Snowflake settings.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct SnowflakeSettings {
    /// 0..=31.
    pub datacenter_id: u8,
    /// 0..=31 from config (e.g. the StatefulSet ordinal); `None` = lease one in Redis.
    pub worker_id: Option<u8>,
    /// Lease time-to-live in Redis; renewed every third of it.
    pub lease_ttl_ms: u64,
}

impl Default for Settings {
    fn default() -> Self {
        let shards = (0..4)
            .map(|i| format!("mysql://exchange:exchange@127.0.0.1:{}/exchange", 3307 + i))
            .collect();
        Self {
            shards,
            meta: "mysql://exchange:exchange@127.0.0.1:3307/exchange_meta".to_owned(),
            replicas: Vec::new(),
            pool: PoolSettings {
                max_connections: 32,
                min_connections: 0,
                acquire_timeout_ms: 5_000,
                idle_timeout_s: 300,
            },
            redis: RedisSettings {
                url: "redis://127.0.0.1:6379/0".to_owned(),
                pool_size: 16,
                key_prefix: "ex:".to_owned(),
                cache_ttl_s: 3_600,
            },
            snowflake: SnowflakeSettings {
                datacenter_id: 0,
                worker_id: None,
                lease_ttl_ms: 10_000,
            },
            symbols: vec![
                "BTCUSDT".to_owned(),
                "ETHUSDT".to_owned(),
                "ETHBTC".to_owned(),
            ],
            months_ahead: 2,
        }
    }
}

impl PoolSettings {
    /// The acquire timeout as a [`Duration`].
    pub fn acquire_timeout(&self) -> Duration {
        Duration::from_millis(self.acquire_timeout_ms)
    }
}

impl Settings {
    /// Loads defaults → file → env and validates the result.
    ///
    /// # Errors
    /// [`RouterError::Config`] when a layer cannot be parsed or a value is invalid.
    pub fn load() -> Result<Self, RouterError> {
        let file = std::env::var_os("EXCHANGE_CONFIG")
            .map(PathBuf::from)
            .or_else(|| Some(PathBuf::from("exchange.toml")).filter(|p| p.exists()));
        Self::load_from(file)
    }

    /// Like [`Settings::load`] with an explicit file (or none).
    ///
    /// # Errors
    /// [`RouterError::Config`] when a layer cannot be parsed or a value is invalid.
    pub fn load_from(file: Option<PathBuf>) -> Result<Self, RouterError> {
        Self::load_layers(file, true)
    }

    /// Defaults → file, then the environment only if `with_env` (tests of the file
    /// layer must not see the `EXCHANGE_*` variables the scripts export).
    fn load_layers(file: Option<PathBuf>, with_env: bool) -> Result<Self, RouterError> {
        let mut figment = Figment::from(Serialized::defaults(Settings::default()));
        if let Some(path) = file {
            if !path.exists() {
                return Err(RouterError::Config(format!(
                    "config file {} does not exist",
                    path.display()
                )));
            }
            figment = figment.merge(Toml::file(path));
        }
        if with_env {
            figment = figment.merge(
                Env::prefixed("EXCHANGE_")
                    .split("__")
                    // `shards` is a list: EXCHANGE_SHARD_URLS below. (The scripts'
                    // EXCHANGE_SHARDS is a count and must not land here.)
                    .ignore(&["config", "shards", "shard_urls", "replicas", "replica_urls"]),
            );
        }
        let mut settings: Settings = figment
            .extract()
            .map_err(|e| RouterError::Config(e.to_string()))?;
        if let Some(urls) = with_env
            .then(|| std::env::var("EXCHANGE_SHARD_URLS").ok())
            .flatten()
        {
            settings.shards = urls
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect();
        }
        if let Some(urls) = with_env
            .then(|| std::env::var("EXCHANGE_REPLICA_URLS").ok())
            .flatten()
        {
            // positional: an empty entry is a shard without a replica
            settings.replicas = urls.split(',').map(|u| u.trim().to_owned()).collect();
        }
        settings.validate()?;
        Ok(settings)
    }

    /// The replica URL configured for shard `index`, if any.
    pub fn replica(&self, index: usize) -> Option<&str> {
        self.replicas
            .get(index)
            .map(String::as_str)
            .filter(|u| !u.is_empty())
    }

    /// Checks every value; called by the loaders.
    ///
    /// # Errors
    /// [`RouterError::Config`] naming the first bad value.
    pub fn validate(&self) -> Result<(), RouterError> {
        let bad = |m: String| Err(RouterError::Config(m));
        if self.shards.is_empty() {
            return bad("at least one shard is required".into());
        }
        if self.shards.len() > usize::from(u16::MAX) {
            return bad("too many shards".into());
        }
        for (i, url) in self
            .shards
            .iter()
            .chain(std::iter::once(&self.meta))
            .enumerate()
        {
            if !url.starts_with("mysql://") && !url.starts_with("mariadb://") {
                return bad(format!("database url #{i} must start with mysql://"));
            }
        }
        if self.replicas.len() > self.shards.len() {
            return bad(format!(
                "{} replica urls for {} shards (one per shard, by position)",
                self.replicas.len(),
                self.shards.len()
            ));
        }
        for (i, url) in self.replicas.iter().enumerate() {
            if !url.is_empty() && !url.starts_with("mysql://") && !url.starts_with("mariadb://") {
                return bad(format!(
                    "replica url of shard {i} must start with mysql:// or mariadb://"
                ));
            }
        }
        if self.pool.max_connections == 0 || self.pool.min_connections > self.pool.max_connections {
            return bad("pool: need 0 <= min_connections <= max_connections, max > 0".into());
        }
        if self.snowflake.datacenter_id > 31 {
            return bad("snowflake.datacenter_id must be 0..=31".into());
        }
        if self.snowflake.worker_id.is_some_and(|w| w > 31) {
            return bad("snowflake.worker_id must be 0..=31".into());
        }
        if self.snowflake.lease_ttl_ms < 2_000 {
            return bad("snowflake.lease_ttl_ms must be at least 2000".into());
        }
        for s in &self.symbols {
            domain::Symbol::new(s)
                .map_err(|e| RouterError::Config(format!("symbol {s:?}: {e}")))?;
        }
        if self.months_ahead > 24 {
            return bad("months_ahead must be at most 24".into());
        }
        Ok(())
    }

    /// The settings with passwords masked, for logs.
    pub fn redacted(&self) -> Settings {
        let mut s = self.clone();
        s.shards = s.shards.iter().map(|u| redact_url(u)).collect();
        s.meta = redact_url(&s.meta);
        s.replicas = s.replicas.iter().map(|u| redact_url(u)).collect();
        s.redis.url = redact_url(&s.redis.url);
        s
    }

    /// Number of shards, as the type shard ids use.
    pub fn shard_count(&self) -> u16 {
        u16::try_from(self.shards.len()).unwrap_or(u16::MAX)
    }
}

/// Replaces the password of `scheme://user:password@host` with `***`.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let Some((creds, host)) = rest.rsplit_once('@') else {
        return url.to_owned();
    };
    match creds.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_have_four_shards() {
        let s = Settings::default();
        s.validate().expect("defaults valid");
        assert_eq!(s.shard_count(), 4);
        assert!(s.shards[3].contains(":3310/"));
    }

    #[test]
    fn redaction_hides_passwords_only() {
        assert_eq!(
            redact_url("mysql://u:secret@h:1/db"),
            "mysql://u:***@h:1/db"
        );
        assert_eq!(redact_url("redis://h:1/0"), "redis://h:1/0");
        let s = Settings {
            replicas: vec![String::new(), "mysql://mon:hidden@r1:3306".into()],
            ..Settings::default()
        };
        let r = s.redacted();
        assert!(r.shards.iter().all(|u| !u.contains("exchange@")));
        assert_eq!(r.replicas, ["", "mysql://mon:***@r1:3306"]);
    }

    #[test]
    fn bad_values_are_rejected() {
        let mut s = Settings::default();
        s.symbols.push("btc;drop".into());
        assert!(s.validate().is_err());
        let mut s = Settings::default();
        s.shards.clear();
        assert!(s.validate().is_err());
        let mut s = Settings::default();
        s.snowflake.worker_id = Some(32);
        assert!(s.validate().is_err());
    }

    #[test]
    fn file_layer_overrides_defaults() {
        let dir = std::env::temp_dir().join(format!("exch-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("tmp dir");
        let path = dir.join("x.toml");
        std::fs::write(
            &path,
            "shards = [\"mysql://a:b@127.0.0.1:1/x\", \"mysql://a:b@127.0.0.1:2/x\"]\n[pool]\nmax_connections = 7\n",
        )
        .expect("write");
        let s = Settings::load_layers(Some(path), false).expect("load");
        assert_eq!(s.shard_count(), 2);
        assert_eq!(s.pool.max_connections, 7);
        assert_eq!(s.pool.acquire_timeout_ms, 5_000);
        assert!(Settings::load_from(Some(dir.join("missing.toml"))).is_err());
    }
}
