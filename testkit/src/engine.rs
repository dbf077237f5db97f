//! The engine as a real child process (`engine run --roles …`) on a test's databases,
//! Redis prefix and topics: what crash, supervision and gateway tests run against.

use std::time::{Duration, Instant};

use crate::TestEnv;

/// The environment an `engine run` child process needs to work on `env`'s databases,
/// Redis prefix and the local broker, with topics under `topic_prefix`.
pub fn engine_env(env: &TestEnv, topic_prefix: &str) -> Vec<(String, String)> {
    let kafka = std::env::var("EXCHANGE_KAFKA_PORT").unwrap_or_else(|_| "9092".into());
    vec![
        ("EXCHANGE_SHARD_URLS".into(), env.settings.shards.join(",")),
        ("EXCHANGE_META".into(), env.settings.meta.clone()),
        ("EXCHANGE_REDIS__URL".into(), env.settings.redis.url.clone()),
        ("EXCHANGE_REDIS__KEY_PREFIX".into(), env.prefix.clone()),
        (
            "EXCHANGE_ENGINE__BROKERS".into(),
            format!("127.0.0.1:{kafka}"),
        ),
        ("EXCHANGE_ENGINE__TOPIC_PREFIX".into(), topic_prefix.into()),
        ("EXCHANGE_ENGINE__ORDERS_PARTITIONS".into(), "2".into()),
    ]
}

/// One `engine run --roles …` child process.
#[derive(Debug)]
pub struct EngineProcess {
    roles: &'static str,
    /// Port of its `/metrics`, `/health`, `/ready`.
    pub port: u16,
    env: Vec<(String, String)>,
    /// Where its stderr goes (appended across restarts).
    pub log: std::path::PathBuf,
    child: Option<std::process::Child>,
}

impl EngineProcess {
    /// Not started yet.
    pub fn new(
        roles: &'static str,
        port: u16,
        env: Vec<(String, String)>,
        log: std::path::PathBuf,
    ) -> Self {
        Self {
            roles,
            port,
            env,
            log,
            child: None,
        }
    }

    /// Starts it.
    pub fn start(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("log");
        let child = std::process::Command::new(crate::workspace_bin("engine"))
            .args(["run", "--roles", self.roles])
            .envs(self.env.iter().cloned())
            .env(
                "EXCHANGE_ENGINE__HTTP_ADDR",
                format!("127.0.0.1:{}", self.port),
            )
            .env(
                "RUST_LOG",
                std::env::var("CRASH_TEST_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn engine");
        self.child = Some(child);
    }

    /// SIGKILL, and reap.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().expect("SIGKILL"); // std's kill is SIGKILL on unix
            c.wait().expect("reap");
        }
    }

    /// `/ready`'s status code and body (`None` when it does not answer).
    pub async fn readiness(&self) -> Option<(u16, String)> {
        http_get(self.port, "/ready").await
    }

    /// Waits (60 s at most) until `/ready` answers 200.
    pub async fn ready(&self) {
        let until = Instant::now() + Duration::from_secs(60);
        while self.readiness().await.map(|r| r.0) != Some(200) {
            assert!(
                Instant::now() < until,
                "{} not ready; log {}",
                self.roles,
                self.log.display()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for EngineProcess {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A GET on 127.0.0.1:`port`: the status code and body.
pub async fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .ok()?;
    s.write_all(format!("GET {path} HTTP/1.1\r\nhost: x\r\n\r\n").as_bytes())
        .await
        .ok()?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.ok()?;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (head, body) = text.split_once("\r\n\r\n")?;
    let code = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((code, body.to_owned()))
}
