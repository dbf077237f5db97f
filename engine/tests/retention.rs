//! Broker retention (issue 13, defect 2), against the real broker.
//!
//! * At start the engine makes `orders` and `fills` keep every record, an existing
//!   topic created with a short retention too, and refuses a compacted one.
//! * A settler whose committed offset, or a matcher whose snapshot offset, lies outside
//!   the log refuses to start instead of skipping: past the end (the topic was
//!   recreated: the stack's broker), below the log start (records deleted by retention:
//!   a broker of this test's own, since tansu deletes only in its maintenance pass,
//!   which runs when it starts and then every 10 minutes, and has no DeleteRecords).

mod common;

use std::num::NonZeroU16;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{bus, deposit, relay_all, req, Harness};
use domain::{OrderType, ShardId, Side};
use engine::bus::{consumer, ensure_topic, ensure_topic_with, producer, BusSettings};
use engine::metrics::Metrics;
use engine::service::{
    run_matching, run_settler, MatchingCore, ServiceError, SnapshotStore, Topics,
};
use engine::settle::Settler;
use rand::distr::{Alphanumeric, SampleString};
use rdkafka::admin::{AdminClient, AdminOptions, ResourceSpecifier};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::producer::FutureRecord;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use tokio::sync::watch;

fn tag() -> String {
    Alphanumeric.sample_string(&mut rand::rng(), 8)
}

fn admin(b: &BusSettings) -> AdminClient<DefaultClientContext> {
    ClientConfig::new()
        .set("bootstrap.servers", &b.brokers)
        .set("broker.address.family", "v4")
        .create()
        .expect("admin client")
}

/// `name` of `topic` as the broker describes it.
async fn config(b: &BusSettings, topic: &str, name: &str) -> Option<String> {
    let opts = AdminOptions::new().request_timeout(Some(Duration::from_secs(10)));
    let res = admin(b)
        .describe_configs([&ResourceSpecifier::Topic(topic)], &opts)
        .await
        .expect("describe configs");
    let res = res.into_iter().next().expect("one").expect("described");
    res.get(name).and_then(|e| e.value.clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn existing_topics_are_made_to_keep_every_record_at_start() {
    let b = bus("retention");
    let topics = Topics {
        prefix: format!("t_ret_{}_", tag()),
    };
    // topics left by an earlier version or an operator: short retention, a size limit
    ensure_topic_with(&b, &topics.orders(), 2, &[("retention.ms", "60000")])
        .await
        .expect("orders");
    ensure_topic_with(
        &b,
        &topics.fills(),
        4,
        &[("retention.ms", "3600000"), ("retention.bytes", "1048576")],
    )
    .await
    .expect("fills");
    assert_eq!(
        config(&b, &topics.orders(), "retention.ms")
            .await
            .as_deref(),
        Some("60000")
    );
    let shards = NonZeroU16::new(4).expect("4");
    engine::roles::ensure_topics(&b, &topics, 2, shards)
        .await
        .expect("topics set up");
    for topic in [topics.orders(), topics.fills()] {
        for name in ["retention.ms", "retention.bytes"] {
            assert_eq!(
                config(&b, &topic, name).await.as_deref(),
                Some("-1"),
                "{topic} {name}"
            );
        }
    }
    // a second start finds them right and changes nothing
    engine::roles::ensure_topics(&b, &topics, 2, shards)
        .await
        .expect("topics set up again");

    // a compacted log is refused, and left as it is
    let compacted = Topics {
        prefix: format!("t_retc_{}_", tag()),
    };
    ensure_topic_with(&b, &compacted.orders(), 2, &[("cleanup.policy", "compact")])
        .await
        .expect("compacted orders");
    let e = engine::roles::ensure_topics(&b, &compacted, 2, shards)
        .await
        .expect_err("a compacted orders topic is refused");
    let e = format!("{e:#}");
    assert!(
        e.contains(&compacted.orders()) && e.contains("cleanup.policy is compact"),
        "{e}"
    );
    assert_eq!(
        config(&b, &compacted.orders(), "cleanup.policy")
            .await
            .as_deref(),
        Some("compact")
    );
}

/// Commits `offset` of `topic`/`partition` for `group`.
fn commit(b: &BusSettings, group: &str, topic: &str, partition: i32, offset: i64) {
    let c = consumer(b, group).expect("consumer");
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, partition, Offset::Offset(offset))
        .expect("tpl");
    c.commit(&tpl, CommitMode::Sync).expect("commit");
}

fn settler(h: &Harness, shard: ShardId) -> Settler {
    Settler::new(
        shard,
        h.count,
        h.env.map.pool(shard).expect("pool").clone(),
        h.router.clone(),
        h.specs.clone(),
    )
}

/// Runs the settler of `shard` with `group`; its error (it must end by itself).
async fn settler_refuses(h: &Harness, b: &BusSettings, topics: &Topics, group: &str) -> String {
    let shard = ShardId::new(1);
    let (_stop, rx) = watch::channel(false);
    let run = run_settler(
        b,
        topics,
        group,
        settler(h, shard),
        shard,
        Arc::new(Metrics::default()),
        rx,
    );
    match tokio::time::timeout(Duration::from_secs(30), run).await {
        Ok(Err(e)) => e.to_string(),
        Ok(Ok(())) => panic!("the settler returned without an error"),
        Err(_) => panic!("the settler started (it would skip fill batches)"),
    }
}

/// Runs a matcher with `store`; its error (it must end by itself).
async fn matcher_refuses(
    h: &Harness,
    b: &BusSettings,
    topics: &Topics,
    store: SnapshotStore,
) -> ServiceError {
    let (_stop, rx) = watch::channel(false);
    let core = MatchingCore::new(h.specs.values().cloned(), h.count);
    let run = run_matching(
        b,
        topics,
        "g_ret_matcher",
        core,
        Some(store),
        Arc::new(Metrics::default()),
        rx,
    );
    match tokio::time::timeout(Duration::from_secs(30), run).await {
        Ok(Err(e)) => e,
        Ok(Ok(())) => panic!("the matcher returned without an error"),
        Err(_) => panic!("the matcher started (it would skip inputs)"),
    }
}

fn store(h: &Harness) -> SnapshotStore {
    SnapshotStore {
        pool: h.env.map.meta().clone(),
        every: 1,
        every_time: Duration::from_secs(60),
        keep: 2,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn positions_past_the_end_of_a_recreated_topic_are_refused() {
    let h = Harness::new("retend", 29).await;
    let (topics, b, tag) = h.topics("retend").await;

    // a settler group whose committed offset lies past the end of its partition (what
    // a recreated `fills` leaves): the batches written next would sit below it, unseen
    commit(&b, &format!("g_retend_{tag}"), &topics.fills(), 1, 1_000);
    let e = settler_refuses(&h, &b, &topics, &format!("g_retend_{tag}")).await;
    assert!(e.contains("past the log end"), "{e}");

    // a matcher snapshot taken after one input, then `orders` recreated
    let relays = h.relays(&b, &topics);
    deposit(&h.env, 1, "BTC", "1").await;
    let (stop, m) = h.spawn_matching(
        &b,
        &topics,
        "g_retend_m",
        Some(store(&h)),
        Default::default(),
    );
    h.placer
        .place(&req(
            1,
            Side::Sell,
            OrderType::Limit,
            Some("50000"),
            Some("0.5"),
            None,
        ))
        .await
        .expect("place")
        .expect("accepted");
    relay_all(&relays).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (n,): (i64,) =
            sqlx::query_as("SELECT COUNT(*) FROM matcher_snapshots WHERE stream = ?")
                .bind(topics.orders())
                .fetch_one(h.env.map.meta())
                .await
                .expect("count");
        if n > 0 {
            break;
        }
        assert!(Instant::now() < deadline, "no snapshot");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.send(true).expect("stop");
    m.await.expect("matcher");
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    admin(&b)
        .delete_topics(&[&topics.orders()], &opts)
        .await
        .expect("delete orders");
    let deadline = Instant::now() + Duration::from_secs(30);
    while ensure_topic(&b, &topics.orders(), 2).await.is_err() {
        assert!(Instant::now() < deadline, "orders not recreated");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let e = matcher_refuses(&h, &b, &topics, store(&h))
        .await
        .to_string();
    assert!(e.contains("past the log end"), "{e}");
    h.env.drop_all().await;
}

/// A tansu broker of this test's own (its own data directory and port), so that its
/// maintenance pass, which deletes records past their retention, can be made to run by
/// restarting it.
struct OwnBroker {
    child: Child,
    dir: PathBuf,
    port: u16,
}

impl OwnBroker {
    fn start(name: &str) -> Self {
        let dir =
            std::env::temp_dir().join(format!("exchange-test-tansu-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dir");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free port");
        let child = Self::spawn(&dir, port);
        Self { child, dir, port }
    }

    fn spawn(dir: &std::path::Path, port: u16) -> Child {
        let bin = std::env::var("EXCHANGE_TANSU_BIN").unwrap_or_else(|_| {
            format!(
                "{}/.cache/exchange/tansu/bin/tansu",
                std::env::var("HOME").unwrap_or_default()
            )
        });
        let url = format!("tcp://127.0.0.1:{port}");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("tansu.log"))
            .expect("log");
        // a relative sqlite URL from the data dir, as scripts/stack.sh runs it
        let child = Command::new(bin)
            .current_dir(dir)
            .env("RUST_LOG", "warn")
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
            ])
            .args(["--storage-engine", "sqlite://tansu.db"])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("tansu (installed by scripts/install.sh)");
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "own tansu did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        child
    }

    fn restart(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.child = Self::spawn(&self.dir, self.port);
    }

    fn bus(&self) -> BusSettings {
        BusSettings::new(format!("127.0.0.1:{}", self.port), "retention-test")
    }
}

impl Drop for OwnBroker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn produce(b: &BusSettings, topic: &str, partition: i32, n: usize) {
    let p = producer(b).expect("producer");
    for i in 0..n {
        let payload = format!("record {i}");
        p.send(
            FutureRecord::<str, _>::to(topic)
                .partition(partition)
                .payload(&payload),
            Duration::from_secs(10),
        )
        .await
        .map_err(|(e, _)| e)
        .expect("produce");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn positions_below_the_log_start_are_refused() {
    const RETENTION_MS: u64 = 4_000;
    let h = Harness::new("retstart", 30).await;
    let mut broker = OwnBroker::start("retstart");
    let b = broker.bus();
    let topics = Topics {
        prefix: format!("t_retstart_{}_", tag()),
    };
    let short = RETENTION_MS.to_string();
    let deleting = [
        ("cleanup.policy", "delete"),
        ("retention.ms", short.as_str()),
    ];
    ensure_topic_with(&b, &topics.orders(), 2, &deleting)
        .await
        .expect("orders");
    ensure_topic_with(&b, &topics.fills(), i32::from(h.count.get()), &deleting)
        .await
        .expect("fills");
    // three records that outlive the retention, then two that do not
    for (topic, partition) in [
        (topics.orders(), 0),
        (topics.orders(), 1),
        (topics.fills(), 1),
    ] {
        produce(&b, &topic, partition, 3).await;
    }
    tokio::time::sleep(Duration::from_millis(RETENTION_MS + 1_500)).await;
    for (topic, partition) in [
        (topics.orders(), 0),
        (topics.orders(), 1),
        (topics.fills(), 1),
    ] {
        produce(&b, &topic, partition, 2).await;
    }
    broker.restart();
    // the maintenance pass at start deletes the first three of each partition
    let c = consumer(&b, "g_retstart_probe").expect("consumer");
    let deadline = Instant::now() + Duration::from_secs(60);
    for (topic, partition) in [
        (topics.orders(), 0),
        (topics.orders(), 1),
        (topics.fills(), 1),
    ] {
        loop {
            let marks = c.fetch_watermarks(&topic, partition, Duration::from_secs(10));
            if marks.as_ref().is_ok_and(|&(low, _)| low == 3) {
                break;
            }
            assert!(Instant::now() < deadline, "{topic}/{partition}: {marks:?}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    // a settler whose committed offset (0) was deleted under it
    let group = "g_retstart_settler";
    commit(&b, group, &topics.fills(), 1, 0);
    let e = settler_refuses(&h, &b, &topics, group).await;
    assert!(e.contains("below the log start 3"), "{e}");

    // a matcher with no snapshot would replay from the log start, past deleted inputs
    let e = matcher_refuses(&h, &b, &topics, store(&h))
        .await
        .to_string();
    assert!(
        e.contains("no position") && e.contains("starts at 3"),
        "{e}"
    );
    h.env.drop_all().await;
}
