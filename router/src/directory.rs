//! The user directory in the meta schema: dense auto-increment user ids (so `% N`
//! spreads evenly), email → user_id and API key → user_id, cached in Redis.
//!
//! Registration writes two places that share no transaction: the directory row in
//! meta (which allocates the id), then the `users` row on the user's shard. It is
//! idempotent by email: a retry after a crash between the two finds the directory row
//! and completes the shard row, so a user is never half-registered for long and never
//! registered twice.

use deadpool_redis::redis::AsyncCommands;
use domain::{ShardId, UserId};
use rand::distr::{Alphanumeric, SampleString};
use serde::Serialize;
use tracing::instrument;

use crate::error::RouterError;
use crate::shards::ShardMap;

/// Password hash stored for users created without a password (no password login).
pub const NO_PASSWORD: &str = "!";

/// Result of [`UserDirectory::register`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Registered {
    /// The user's id.
    pub user_id: UserId,
    /// The shard the user lives on.
    pub shard: ShardId,
    /// `false` when the email was already registered (idempotent retry).
    pub created: bool,
}

/// A secret (an HMAC key): never in `Debug` output or logs. It serializes to its
/// value only where it is shown once on purpose (the answer that creates it).
#[derive(Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: String) -> Self {
        Self(value)
    }

    /// The value, for signing or verifying. Do not log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

/// A freshly created API key; the secret is shown once.
#[derive(Debug, Clone, Serialize)]
pub struct ApiKey {
    /// Public key (`X-MBX-APIKEY`).
    pub key: String,
    /// HMAC secret.
    pub secret: Secret,
}

/// What verifying a signed request with an API key needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyAuth {
    /// The key's owner.
    pub user_id: UserId,
    /// The HMAC-SHA256 secret.
    pub secret: Secret,
}

/// Email / API key → user id, with the shard map and a Redis cache.
#[derive(Clone)]
pub struct UserDirectory {
    shards: ShardMap,
    redis: deadpool_redis::Pool,
    prefix: String,
    ttl_s: u64,
}

impl std::fmt::Debug for UserDirectory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserDirectory")
            .field("shards", &self.shards.count())
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl UserDirectory {
    /// A directory over `shards`, caching in `redis` under `prefix`.
    pub fn new(
        shards: ShardMap,
        redis: deadpool_redis::Pool,
        prefix: impl Into<String>,
        ttl_s: u64,
    ) -> Self {
        Self {
            shards,
            redis,
            prefix: prefix.into(),
            ttl_s,
        }
    }

    /// The shard map this directory writes to.
    pub fn shards(&self) -> &ShardMap {
        &self.shards
    }

    /// Registers `email` (case-insensitive, stored lower-case). Idempotent: a second
    /// call returns the same id with `created = false` and repairs a missing shard row.
    ///
    /// # Errors
    /// [`RouterError::InvalidInput`] for a malformed email; database errors naming the
    /// place.
    #[instrument(skip(self, password_hash), fields(shard))]
    pub async fn register(
        &self,
        email: &str,
        password_hash: &str,
    ) -> Result<Registered, RouterError> {
        let email = normalize_email(email)?;
        if password_hash.is_empty() || password_hash.len() > 255 {
            return Err(RouterError::InvalidInput(
                "password hash must be 1..=255 bytes".into(),
            ));
        }
        let (user_id, created) = match self.directory_id(&email).await? {
            Some(id) => (id, false),
            None => match sqlx::query("INSERT INTO user_directory (email) VALUES (?)")
                .bind(&email)
                .execute(self.shards.meta())
                .await
            {
                Ok(res) => (
                    UserId::new(res.last_insert_id()).map_err(|e| {
                        RouterError::InvalidInput(format!("directory returned a bad id: {e}"))
                    })?,
                    true,
                ),
                // lost a race with a concurrent registration of the same email
                Err(sqlx::Error::Database(db)) if db.is_unique_violation() => {
                    let id = self.directory_id(&email).await?;
                    (
                        id.ok_or_else(|| {
                            RouterError::InvalidInput("email vanished during registration".into())
                        })?,
                        false,
                    )
                }
                Err(e) => return Err(RouterError::db("meta", e)),
            },
        };
        let shard = self.shards.shard_of(user_id);
        tracing::Span::current().record("shard", shard.get());
        // completes the shard row on first registration and on a retry after a crash
        let pool = self.shards.pool_for(user_id);
        let inserted = sqlx::query("INSERT INTO users (id, email, password_hash) VALUES (?, ?, ?)")
            .bind(user_id.get())
            .bind(&email)
            .bind(password_hash)
            .execute(pool)
            .await;
        match inserted {
            Ok(_) => {}
            // already there (a retry): fine only if it is this very user
            Err(sqlx::Error::Database(db)) if db.is_unique_violation() => {
                let same: Option<(u64,)> =
                    sqlx::query_as("SELECT id FROM users WHERE id = ? AND email = ?")
                        .bind(user_id.get())
                        .bind(&email)
                        .fetch_optional(pool)
                        .await
                        .map_err(|e| RouterError::db_on_shard(shard.get(), e))?;
                if same.is_none() {
                    return Err(RouterError::InvalidInput(format!(
                        "shard {shard} already has a users row for id {user_id} or email {email:?} that does not match the directory"
                    )));
                }
            }
            Err(e) => return Err(RouterError::db_on_shard(shard.get(), e)),
        }
        self.cache_set(&self.email_key(&email), user_id).await;
        Ok(Registered {
            user_id,
            shard,
            created,
        })
    }

    async fn directory_id(&self, email: &str) -> Result<Option<UserId>, RouterError> {
        let row: Option<(u64,)> = sqlx::query_as("SELECT id FROM user_directory WHERE email = ?")
            .bind(email)
            .fetch_optional(self.shards.meta())
            .await
            .map_err(|e| RouterError::db("meta", e))?;
        row.map(|(id,)| UserId::new(id).map_err(|e| RouterError::InvalidInput(e.to_string())))
            .transpose()
    }

    /// The user id of `email`, from Redis if cached, else from meta (then cached).
    ///
    /// # Errors
    /// [`RouterError::InvalidInput`] for a malformed email; database errors.
    pub async fn lookup_email(&self, email: &str) -> Result<Option<UserId>, RouterError> {
        let email = normalize_email(email)?;
        let key = self.email_key(&email);
        if let Some(id) = self.cache_get(&key).await {
            return Ok(Some(id));
        }
        let id = self.directory_id(&email).await?;
        if let Some(id) = id {
            self.cache_set(&key, id).await;
        }
        Ok(id)
    }

    /// Creates an API key for `user`.
    ///
    /// # Errors
    /// Database errors; [`RouterError::InvalidInput`] if the user is not registered.
    pub async fn create_api_key(&self, user: UserId, label: &str) -> Result<ApiKey, RouterError> {
        let exists = sqlx::query("SELECT 1 FROM user_directory WHERE id = ?")
            .bind(user.get())
            .fetch_optional(self.shards.meta())
            .await
            .map_err(|e| RouterError::db("meta", e))?;
        if exists.is_none() {
            return Err(RouterError::InvalidInput(format!(
                "user {user} is not registered"
            )));
        }
        let label: String = label.chars().take(64).collect();
        let mut rng = rand::rng();
        let key = ApiKey {
            key: Alphanumeric.sample_string(&mut rng, 64),
            secret: Secret::new(Alphanumeric.sample_string(&mut rng, 64)),
        };
        sqlx::query("INSERT INTO api_keys (api_key, user_id, secret, label) VALUES (?, ?, ?, ?)")
            .bind(&key.key)
            .bind(user.get())
            .bind(key.secret.expose())
            .bind(label)
            .execute(self.shards.meta())
            .await
            .map_err(|e| RouterError::db("meta", e))?;
        Ok(key)
    }

    /// The owner of an active API key, cached.
    ///
    /// # Errors
    /// Database errors.
    pub async fn lookup_api_key(&self, api_key: &str) -> Result<Option<UserId>, RouterError> {
        if api_key.len() != 64 || !api_key.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Ok(None);
        }
        let key = self.api_key_key(api_key);
        if let Some(id) = self.cache_get(&key).await {
            return Ok(Some(id));
        }
        let row: Option<(u64,)> =
            sqlx::query_as("SELECT user_id FROM api_keys WHERE api_key = ? AND revoked_at IS NULL")
                .bind(api_key)
                .fetch_optional(self.shards.meta())
                .await
                .map_err(|e| RouterError::db("meta", e))?;
        let id = row
            .map(|(id,)| UserId::new(id).map_err(|e| RouterError::InvalidInput(e.to_string())))
            .transpose()?;
        if let Some(id) = id {
            self.cache_set(&key, id).await;
        }
        Ok(id)
    }

    /// The owner and secret of an active API key, read from meta (secrets are never
    /// cached in Redis), for verifying a signed request.
    ///
    /// # Errors
    /// Database errors.
    pub async fn key_auth(&self, api_key: &str) -> Result<Option<KeyAuth>, RouterError> {
        if api_key.len() != 64 || !api_key.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Ok(None);
        }
        // `secret` is VARBINARY: bytes, which hold the ASCII secret we generated
        let row: Option<(u64, Vec<u8>)> = sqlx::query_as(
            "SELECT user_id, secret FROM api_keys WHERE api_key = ? AND revoked_at IS NULL",
        )
        .bind(api_key)
        .fetch_optional(self.shards.meta())
        .await
        .map_err(|e| RouterError::db("meta", e))?;
        row.map(|(id, secret)| {
            Ok(KeyAuth {
                user_id: UserId::new(id).map_err(|e| RouterError::InvalidInput(e.to_string()))?,
                secret: Secret::new(String::from_utf8(secret).map_err(|_| {
                    RouterError::InvalidInput(format!("api key of user {id}: secret is not text"))
                })?),
            })
        })
        .transpose()
    }

    /// Revokes an API key and drops it from the cache at once.
    ///
    /// # Errors
    /// Database or Redis errors (the cache entry must go, or the key would live on).
    pub async fn revoke_api_key(&self, api_key: &str) -> Result<bool, RouterError> {
        let res = sqlx::query("UPDATE api_keys SET revoked_at = CURRENT_TIMESTAMP(3) WHERE api_key = ? AND revoked_at IS NULL")
            .bind(api_key)
            .execute(self.shards.meta())
            .await
            .map_err(|e| RouterError::db("meta", e))?;
        let mut conn = self.redis.get().await?;
        let _: () = conn.del(self.api_key_key(api_key)).await?;
        Ok(res.rows_affected() == 1)
    }

    /// Whether the user's row exists on its shard (for `shardctl locate`).
    ///
    /// # Errors
    /// Database errors naming the shard.
    pub async fn exists_on_shard(&self, user: UserId) -> Result<bool, RouterError> {
        let shard = self.shards.shard_of(user);
        let row = sqlx::query("SELECT 1 FROM users WHERE id = ?")
            .bind(user.get())
            .fetch_optional(self.shards.pool_for(user))
            .await
            .map_err(|e| RouterError::db_on_shard(shard.get(), e))?;
        Ok(row.is_some())
    }

    fn email_key(&self, email: &str) -> String {
        format!("{}dir:email:{email}", self.prefix)
    }

    fn api_key_key(&self, api_key: &str) -> String {
        format!("{}dir:apikey:{api_key}", self.prefix)
    }

    /// Cache reads are best effort: Redis down means a slower lookup, not a failure.
    async fn cache_get(&self, key: &str) -> Option<UserId> {
        let mut conn = self.redis.get().await.ok()?;
        let raw: Option<u64> = conn.get(key).await.ok()?;
        raw.and_then(|r| UserId::new(r).ok())
    }

    async fn cache_set(&self, key: &str, id: UserId) {
        if let Ok(mut conn) = self.redis.get().await {
            let res: Result<(), _> = conn.set_ex(key, id.get(), self.ttl_s).await;
            if let Err(e) = res {
                tracing::warn!(error = %e, "directory cache write failed");
            }
        }
    }
}

/// Lower-cases and checks an email: `local@domain`, ≤ 255 bytes, no spaces.
///
/// # Errors
/// [`RouterError::InvalidInput`].
pub fn normalize_email(raw: &str) -> Result<String, RouterError> {
    let e = raw.trim().to_lowercase();
    let ok = e.len() <= 255
        && !e.chars().any(|c| c.is_whitespace() || c.is_control())
        && matches!(e.split_once('@'), Some((l, d)) if !l.is_empty() && d.contains('.') && !d.contains('@') && !d.starts_with('.') && !d.ends_with('.'));
    if ok {
        Ok(e)
    } else {
        Err(RouterError::InvalidInput(format!("invalid email {raw:?}")))
    }
}

/// A Redis pool from settings.
///
/// # Errors
/// [`RouterError::Redis`] for a bad URL.
pub fn redis_pool(
    settings: &crate::config::RedisSettings,
) -> Result<deadpool_redis::Pool, RouterError> {
    let mut cfg = deadpool_redis::Config::from_url(settings.url.clone());
    cfg.pool = Some(deadpool_redis::PoolConfig::new(settings.pool_size));
    cfg.create_pool(Some(deadpool_redis::Runtime::Tokio1))
        .map_err(|e| RouterError::Redis(e.to_string()))
}

#[cfg(test)]
mod secret_tests {
    use super::*;

    #[test]
    fn a_secret_never_shows_in_debug_output() {
        let k = ApiKey {
            key: "k".into(),
            secret: Secret::new("hunter2-very-secret".into()),
        };
        let shown = format!(
            "{k:?} {:?}",
            KeyAuth {
                user_id: UserId::new(1).unwrap(),
                secret: k.secret.clone()
            }
        );
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("[redacted]"));
        // shown once on purpose: the creating answer serializes the value
        assert_eq!(
            serde_json::to_value(&k).unwrap()["secret"],
            "hunter2-very-secret"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::normalize_email;

    #[test]
    fn emails_are_normalized_or_rejected() {
        assert_eq!(
            normalize_email(" A@Example.COM ").expect("ok"),
            "a@example.com"
        );
        for bad in [
            "",
            "a",
            "a@",
            "@b.c",
            "a b@c.d",
            "a@b",
            "a@@b.c",
            "a@.b",
            "a@b.",
            &"x".repeat(300),
        ] {
            assert!(normalize_email(bad).is_err(), "{bad:?}");
        }
    }
}
