//! The broker properties the order pipeline relies on, checked against the broker the
//! project's scripts run (tansu by default), so an upgrade that breaks one is caught:
//! partitions with stable key → partition placement, idempotent `acks=all` produce,
//! consumer-group offsets that survive a hard broker crash (kill -9) and restart, and
//! sends in flight during such a crash delivered exactly once, in order per key.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use engine::bus::{consumer, ensure_topic, producer, BusSettings};
use rand::distr::{Alphanumeric, SampleString};
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::producer::FutureRecord;
use rdkafka::Message;

const PARTITIONS: i32 = 4;
const MESSAGES: usize = 2_000;
const FIRST_HALF: usize = 1_000;

fn settings() -> BusSettings {
    let port = std::env::var("EXCHANGE_KAFKA_PORT").unwrap_or_else(|_| "9092".into());
    BusSettings::new(format!("127.0.0.1:{port}"), "broker-test")
}

fn stack(args: &[&str]) {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/stack.sh");
    let status = Command::new("bash")
        .arg(script)
        .args(args)
        .status()
        .expect("run stack.sh");
    assert!(status.success(), "stack.sh {args:?} failed");
}

/// (partition, offset, key, payload) of received messages.
type Seen = Vec<(i32, i64, String, String)>;

async fn receive(c: &StreamConsumer, want: usize, deadline: Duration) -> Seen {
    let mut out = Vec::new();
    let until = Instant::now() + deadline;
    while out.len() < want {
        let left = until.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "received only {} of {want} messages",
            out.len()
        );
        match tokio::time::timeout(left, c.recv()).await {
            Ok(Ok(m)) => out.push((
                m.partition(),
                m.offset(),
                String::from_utf8_lossy(m.key().unwrap_or_default()).into_owned(),
                String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned(),
            )),
            Ok(Err(e)) => eprintln!("consumer error (retrying): {e}"),
            Err(_) => panic!("received only {} of {want} messages", out.len()),
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitions_idempotent_produce_and_group_offsets_survive_a_broker_crash() {
    let s = settings();
    let tag = Alphanumeric.sample_string(&mut rand::rng(), 8);
    let topic = format!("t_broker_{tag}");
    let group = format!("g_broker_{tag}");
    ensure_topic(&s, &topic, PARTITIONS)
        .await
        .expect("create topic");
    ensure_topic(&s, &topic, PARTITIONS)
        .await
        .expect("creating twice is fine");

    // keyed, idempotent, acks=all produce: every send is acked with its placement
    let p = producer(&s).expect("producer");
    let mut placed: BTreeMap<String, BTreeSet<i32>> = BTreeMap::new();
    let mut acked = BTreeSet::new();
    for i in 0..MESSAGES {
        let key = format!("SYM{}", i % 8);
        let payload = format!("msg-{i}");
        let rdkafka::producer::future_producer::Delivery {
            partition, offset, ..
        } = p
            .send(
                FutureRecord::to(&topic).key(&key).payload(&payload),
                Duration::from_secs(30),
            )
            .await
            .map_err(|(e, _)| e)
            .expect("acked");
        assert!((0..PARTITIONS).contains(&partition));
        placed.entry(key).or_default().insert(partition);
        assert!(acked.insert((partition, offset)), "two acks for one offset");
    }
    assert_eq!(acked.len(), MESSAGES);
    for (key, parts) in &placed {
        assert_eq!(parts.len(), 1, "key {key} spread over partitions {parts:?}");
    }
    let used: BTreeSet<i32> = placed.values().flatten().copied().collect();
    assert!(
        used.len() > 1,
        "8 keys should use more than one of {PARTITIONS} partitions"
    );
    // per partition, offsets are dense from 0: nothing duplicated, nothing skipped
    for part in &used {
        let offs: Vec<i64> = acked
            .iter()
            .filter(|(p, _)| p == part)
            .map(|(_, o)| *o)
            .collect();
        let n = i64::try_from(offs.len()).expect("len");
        assert_eq!(offs, (0..n).collect::<Vec<_>>(), "partition {part}");
    }

    // a group reads half and commits, manually
    let c = consumer(&s, &group).expect("consumer");
    c.subscribe(&[&topic]).expect("subscribe");
    let first = receive(&c, FIRST_HALF, Duration::from_secs(60)).await;
    c.commit_consumer_state(CommitMode::Sync).expect("commit");
    drop(c);

    // the broker dies hard and comes back
    stack(&["kill", "kafka"]);
    stack(&["start", "kafka"]);

    // the group resumes at its committed offsets: the rest, none twice, none lost
    let c = consumer(&s, &group).expect("consumer after restart");
    c.subscribe(&[&topic]).expect("subscribe");
    let second = receive(&c, MESSAGES - FIRST_HALF, Duration::from_secs(90)).await;
    let extra = receive_quiet(&c, Duration::from_secs(3)).await;
    assert!(extra.is_empty(), "{} messages delivered twice", extra.len());
    let mut all: Vec<String> = first.iter().chain(&second).map(|m| m.3.clone()).collect();
    all.sort();
    all.dedup();
    assert_eq!(
        all.len(),
        MESSAGES,
        "every message exactly once across the restart"
    );
    // the log itself survived: offsets after the restart continue where they were
    let rdkafka::producer::future_producer::Delivery {
        partition, offset, ..
    } = producer(&s)
        .expect("producer")
        .send(
            FutureRecord::to(&topic).key("SYM0").payload("after"),
            Duration::from_secs(30),
        )
        .await
        .map_err(|(e, _)| e)
        .expect("acked after restart");
    let before = acked.iter().filter(|(p, _)| *p == partition).count();
    assert_eq!(
        offset,
        i64::try_from(before).expect("n"),
        "log lost or rewound on partition {partition}"
    );

    in_flight_sends_survive_a_broker_crash(&s, &tag).await;
}

/// Sends in flight while the broker is killed: the idempotent producer's retries must
/// neither lose nor duplicate anything, and per-key order must hold.
async fn in_flight_sends_survive_a_broker_crash(s: &BusSettings, tag: &str) {
    const N: usize = 3_000;
    let topic = format!("t_inflight_{tag}");
    ensure_topic(s, &topic, 2).await.expect("create topic");
    let p = producer(s).expect("producer");
    let mut pending = Vec::with_capacity(N);
    let send = |i: usize| {
        let key = format!("K{}", i % 4);
        let payload = format!("{i}");
        p.send_result(FutureRecord::to(&topic).key(&key).payload(&payload))
            .map_err(|(e, _)| e)
            .expect("queued")
    };
    for i in 0..N / 2 {
        pending.push(send(i));
    }
    // some are acked, many still in flight: kill the broker, queue the rest meanwhile
    pending
        .remove(0)
        .await
        .expect("delivery")
        .map_err(|(e, _)| e)
        .expect("first ack");
    stack(&["kill", "kafka"]);
    for i in N / 2..N {
        pending.push(send(i));
    }
    stack(&["start", "kafka"]);
    for f in pending {
        f.await
            .expect("delivery")
            .map_err(|(e, _)| e)
            .expect("acked after the restart");
    }
    // read everything back
    let c = consumer(s, &format!("g_inflight_{tag}")).expect("consumer");
    c.subscribe(&[&topic]).expect("subscribe");
    let got = receive(&c, N, Duration::from_secs(90)).await;
    let extra = receive_quiet(&c, Duration::from_secs(3)).await;
    assert!(extra.is_empty(), "{} messages duplicated", extra.len());
    let mut per_key: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for (_, _, key, payload) in &got {
        per_key
            .entry(key.clone())
            .or_default()
            .push(payload.parse().expect("payload"));
    }
    let mut all: Vec<usize> = per_key.values().flatten().copied().collect();
    all.sort_unstable();
    assert_eq!(
        all,
        (0..N).collect::<Vec<_>>(),
        "every message exactly once"
    );
    for (key, seq) in &per_key {
        assert!(
            seq.windows(2).all(|w| w[0] < w[1]),
            "key {key} out of order"
        );
    }
}

/// Whatever arrives within `wait` (used to prove nothing more comes).
async fn receive_quiet(c: &StreamConsumer, wait: Duration) -> Seen {
    let mut out = Vec::new();
    while let Ok(Ok(m)) = tokio::time::timeout(wait, c.recv()).await {
        out.push((m.partition(), m.offset(), String::new(), String::new()));
    }
    out
}
