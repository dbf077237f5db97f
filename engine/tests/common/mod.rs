//! Shared set-up of the engine's integration tests: a fresh set of databases with
//! month tables and the symbol config, a placer, topics of its own on the real broker,
//! and the pipeline's services as tasks. Everything panics on failure (test support).

#![allow(dead_code)]

pub mod load;

use std::collections::BTreeMap;
use std::num::NonZeroU16;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use domain::{Amount, OrderType, Side, Symbol, UserId};
use engine::bus::{ensure_topic, producer, BusSettings};
use engine::metrics::Metrics;
use engine::relay::Relay;
use engine::service::{run_matching, run_settler, MatchingCore, SnapshotStore, Topics};
use engine::settle::{Settler, UserStream};
use matcher::SymbolSpec;
use rand::distr::{Alphanumeric, SampleString};
use router::TableRouter;
use testkit::TestEnv;
#[allow(unused_imports)] // each test binary uses its own subset
pub use testkit::{all_audits_hold, balance};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use trading::placement::{PlaceRequest, Placer};

/// An exact amount from text.
pub fn amt(s: &str) -> Amount {
    Amount::from_str(s).expect("amount")
}

/// A BTCUSDT request.
pub fn req(
    user: u64,
    side: Side,
    ty: OrderType,
    price: Option<&str>,
    qty: Option<&str>,
    quote: Option<&str>,
) -> PlaceRequest {
    testkit::order_request(user, side, ty, price, qty, quote)
}

/// Credits a completed deposit of `amount` `asset` to `user` (txid `d-{user}-{asset}`).
pub async fn deposit(env: &TestEnv, user: u64, asset: &str, amount: &str) {
    ledger::balances::credit_deposit(
        &env.map,
        UserId::new(user).expect("user"),
        &domain::Asset::new(asset).expect("asset"),
        amt(amount),
        &format!("d-{user}-{asset}"),
    )
    .await
    .expect("deposit");
}

/// Waits until `user`'s balance of `asset` is `want` (the pipeline is asynchronous).
pub async fn settled(env: &TestEnv, user: u64, asset: &str, want: (&str, &str)) {
    let want = (amt(want.0), amt(want.1));
    let until = Instant::now() + Duration::from_secs(90);
    loop {
        let got = balance(env, user, asset).await;
        if got == want {
            return;
        }
        assert!(
            Instant::now() < until,
            "user {user} {asset}: {got:?}, want {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The broker of the local stack.
pub fn bus(client: &str) -> BusSettings {
    let port = std::env::var("EXCHANGE_KAFKA_PORT").unwrap_or_else(|_| "9092".into());
    BusSettings::new(format!("127.0.0.1:{port}"), client)
}

/// Databases, config and a placer for one test.
pub struct Harness {
    pub env: TestEnv,
    pub router: TableRouter,
    pub specs: BTreeMap<Symbol, SymbolSpec>,
    pub placer: Placer,
    pub count: NonZeroU16,
}

impl Harness {
    /// Fresh databases named after `name`; order ids from snowflake worker `worker`.
    pub async fn new(name: &str, worker: u8) -> Self {
        let p = testkit::placement(name, worker).await;
        let specs = p
            .symbols
            .iter()
            .map(|(s, c)| (*s, c.spec.clone()))
            .collect();
        let count = NonZeroU16::new(p.env.map.count()).expect("count");
        Self {
            env: p.env,
            router: p.router,
            specs,
            placer: p.placer,
            count,
        }
    }

    /// Topics of this test (own prefix), created on the broker.
    pub async fn topics(&self, name: &str) -> (Topics, BusSettings, String) {
        let tag = Alphanumeric.sample_string(&mut rand::rng(), 8);
        let topics = Topics {
            prefix: format!("t_{name}_{tag}_"),
        };
        let bus = bus(name);
        ensure_topic(&bus, &topics.orders(), 2)
            .await
            .expect("orders topic");
        ensure_topic(&bus, &topics.fills(), i32::from(self.count.get()))
            .await
            .expect("fills topic");
        ensure_topic(&bus, &topics.market(), 1)
            .await
            .expect("market topic");
        (topics, bus, tag)
    }

    /// One relay per shard.
    pub fn relays(&self, bus: &BusSettings, topics: &Topics) -> Vec<Relay> {
        self.env
            .map
            .iter()
            .map(|(shard, pool)| {
                Relay::new(
                    shard,
                    pool.clone(),
                    producer(bus).expect("producer"),
                    topics.prefix.clone(),
                    500,
                )
            })
            .collect()
    }

    /// One relay per shard, each a task running rounds every 20 ms for as long as the
    /// test (an error in a round fails it).
    pub fn spawn_relays(&self, bus: &BusSettings, topics: &Topics) -> Vec<JoinHandle<()>> {
        self.relays(bus, topics)
            .into_iter()
            .map(|r| {
                tokio::spawn(async move {
                    loop {
                        r.round().await.expect("relay");
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                })
            })
            .collect()
    }

    /// One settler task per shard, stopped by `stop`.
    pub fn spawn_settlers(
        &self,
        bus: &BusSettings,
        topics: &Topics,
        tag: &str,
        stop: &watch::Receiver<bool>,
    ) -> Vec<JoinHandle<()>> {
        self.env
            .map
            .iter()
            .map(|(shard, pool)| {
                let s = Settler::new(
                    shard,
                    self.count,
                    pool.clone(),
                    self.router.clone(),
                    self.specs.clone(),
                )
                .with_user_stream(UserStream::new(
                    router::directory::redis_pool(&self.env.settings.redis).expect("redis"),
                    self.env.prefix.clone(),
                ));
                let (bus, topics, rx) = (bus.clone(), topics.clone(), stop.clone());
                let group = format!("g_settle_{tag}_{}", shard.get());
                tokio::spawn(async move {
                    run_settler(&bus, &topics, &group, s, shard, Default::default(), rx)
                        .await
                        .expect("settler");
                })
            })
            .collect()
    }

    /// The matching service as a task.
    pub fn spawn_matching(
        &self,
        bus: &BusSettings,
        topics: &Topics,
        group: &str,
        store: Option<SnapshotStore>,
        metrics: Arc<Metrics>,
    ) -> (watch::Sender<bool>, JoinHandle<()>) {
        let (tx, rx) = watch::channel(false);
        let (bus, topics, group) = (bus.clone(), topics.clone(), group.to_owned());
        let core = MatchingCore::new(self.specs.values().cloned(), self.count);
        let h = tokio::spawn(async move {
            run_matching(&bus, &topics, &group, core, store, metrics, rx)
                .await
                .expect("matching service");
        });
        (tx, h)
    }
}

/// Runs a relay round on every shard.
pub async fn relay_all(relays: &[Relay]) {
    for r in relays {
        r.round().await.expect("relay");
    }
}

/// Subscribes to user `user`'s private channel; returns the messages received (JSON)
/// through a channel, until the test ends.
pub async fn user_messages(
    env: &TestEnv,
    user: u64,
) -> tokio::sync::mpsc::UnboundedReceiver<serde_json::Value> {
    subscribe(env, &format!("{}user:{user}", env.prefix)).await
}

/// Subscribes to a Redis channel; returns its messages (JSON) through a channel.
pub async fn subscribe(
    env: &TestEnv,
    channel: &str,
) -> tokio::sync::mpsc::UnboundedReceiver<serde_json::Value> {
    use futures_util::StreamExt;
    let client =
        deadpool_redis::redis::Client::open(env.settings.redis.url.as_str()).expect("redis url");
    let mut pubsub = client.get_async_pubsub().await.expect("pubsub");
    pubsub.subscribe(channel).await.expect("subscribe");
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut messages = pubsub.into_on_message();
        while let Some(m) = messages.next().await {
            let body: String = m.get_payload().expect("payload");
            if tx.send(serde_json::from_str(&body).expect("json")).is_err() {
                return;
            }
        }
    });
    rx
}

#[allow(unused_imports)] // each test binary uses its own subset
pub use testkit::engine::{engine_env, http_get, EngineProcess};
