//! The outbox relay against real shards and the real broker: every placed order is
//! published once per shard sequence, in order; a crash between publish and mark
//! re-publishes with the same sequence, which the matcher drops.

mod common;

use std::collections::BTreeMap;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use domain::{Amount, Asset, OrderType, Price, Qty, Side, TimeInForce, UserId};
use engine::bus::{consumer, ensure_topic, producer};
use engine::relay::{unframe, Relay};
use ledger::balances::credit_deposit;
use matcher::wire::{OrderInput, ORDERS_TOPIC};
use matcher::{Command, Event, Matcher, StpMode};
use rand::distr::{Alphanumeric, SampleString};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::Message;
use router::{Snowflake, TableRouter};
use testkit::TestEnv;
use trading::placement::{load_symbols, PlaceRequest, Placer};

fn buy(user: u64, client: String) -> PlaceRequest {
    PlaceRequest {
        user_id: UserId::new(user).expect("user"),
        symbol: "BTCUSDT".parse().expect("symbol"),
        side: Side::Buy,
        order_type: OrderType::Limit,
        tif: TimeInForce::Gtc,
        price: Some(Price::from_str("100").expect("price")),
        qty: Some(Qty::from_str("0.1").expect("qty")),
        quote_qty: None,
        stop_price: None,
        stp: StpMode::None,
        client_order_id: Some(client),
        market_reference: None,
    }
}

async fn drain(c: &StreamConsumer, want: usize) -> Vec<(u32, u64, OrderInput)> {
    let mut out = Vec::new();
    while out.len() < want {
        let m = tokio::time::timeout(Duration::from_secs(60), c.recv())
            .await
            .unwrap_or_else(|_| panic!("only {} of {want} messages", out.len()))
            .expect("message");
        let (source, rows) = unframe(m.payload().expect("payload")).expect("frame");
        for (seq, payload) in rows {
            out.push((source, seq, OrderInput::decode(payload).expect("decode")));
        }
    }
    // and nothing more arrives
    assert!(
        tokio::time::timeout(Duration::from_secs(2), c.recv())
            .await
            .is_err(),
        "unexpected extra message"
    );
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_order_is_published_in_shard_order_and_redeliveries_are_dropped() {
    let env = TestEnv::new("relay").await;
    let router = TableRouter::new(&["BTCUSDT"]).expect("router");
    env.map
        .ensure_tables(&router, Utc::now(), 1)
        .await
        .expect("tables");
    let ids = Arc::new(Snowflake::new(0, 11).expect("ids"));
    let placer = Placer::new(
        env.map.clone(),
        router,
        load_symbols(env.map.meta()).await.expect("symbols"),
        Arc::new(move || ids.next_id()),
    );
    let usdt = Asset::new("USDT").expect("asset");
    // users 4, 1, 2, 3 live on shards 0, 1, 2, 3: five orders each
    let mut placed = Vec::new();
    for user in [4u64, 1, 2, 3] {
        let uid = UserId::new(user).expect("user");
        credit_deposit(
            &env.map,
            uid,
            &usdt,
            Amount::from_str("1000").expect("a"),
            &format!("dep-{user}"),
        )
        .await
        .expect("deposit");
        for i in 0..5 {
            placed.push(
                placer
                    .place(&buy(user, format!("u{user}-{i}")))
                    .await
                    .expect("place")
                    .expect("ok")
                    .order_id,
            );
        }
    }

    let tag = Alphanumeric.sample_string(&mut rand::rng(), 8);
    let prefix = format!("t_relay_{tag}_");
    let topic = format!("{prefix}{ORDERS_TOPIC}");
    let s = common::bus("relay-test");
    ensure_topic(&s, &topic, 2).await.expect("topic");
    let relays: Vec<Relay> = env
        .map
        .iter()
        .map(|(shard, pool)| {
            Relay::new(
                shard,
                pool.clone(),
                producer(&s).expect("producer"),
                prefix.clone(),
                100,
            )
        })
        .collect();
    let marks = |pool: sqlx::MySqlPool| async move {
        sqlx::query_as::<_, (u64, u64)>(
            "SELECT durable_seq, published_seq FROM outbox_relay WHERE id = 1",
        )
        .fetch_one(&pool)
        .await
        .expect("marks")
    };
    for (r, (_, pool)) in relays.iter().zip(env.map.iter()) {
        assert_eq!(marks(pool.clone()).await, (0, 0));
        let round = r.round().await.expect("round");
        assert_eq!(round.published, 5);
        // the durability barrier was committed for the five rows before they went out
        assert_eq!(marks(pool.clone()).await, (5, 5));
        assert_eq!(
            r.round().await.expect("idle round").published,
            0,
            "sent rows are not sent again"
        );
    }
    let c = consumer(&s, &format!("g_relay_{tag}")).expect("consumer");
    c.subscribe(&[&topic]).expect("subscribe");
    let first = drain(&c, 20).await;
    let mut per_source: BTreeMap<u32, Vec<u64>> = BTreeMap::new();
    for (source, seq, _) in &first {
        per_source.entry(*source).or_default().push(*seq);
    }
    assert_eq!(per_source.len(), 4);
    for (source, seqs) in &per_source {
        assert_eq!(seqs, &[1, 2, 3, 4, 5], "shard {source}: gap-free, in order");
    }

    // shard 0's relay publishes 3 more, then "crashes" before marking them sent
    for i in 5..8 {
        placed.push(
            placer
                .place(&buy(4, format!("u4-{i}")))
                .await
                .expect("place")
                .expect("ok")
                .order_id,
        );
    }
    assert_eq!(
        relays[0]
            .round_without_mark()
            .await
            .expect("publish")
            .published,
        3
    );
    assert_eq!(
        relays[0].round().await.expect("retry").published,
        3,
        "unmarked rows are sent again"
    );
    let again = drain(&c, 6).await;
    let seqs: Vec<u64> = again.iter().map(|m| m.1).collect();
    assert_eq!(
        seqs,
        [6, 7, 8, 6, 7, 8],
        "the redelivery carries the same sequence numbers"
    );

    // the matcher applies each order exactly once
    let symbols = load_symbols(env.map.meta()).await.expect("symbols");
    let spec = symbols
        .values()
        .find(|c| c.spec.symbol.as_str() == "BTCUSDT")
        .expect("spec")
        .spec
        .clone();
    let mut m = Matcher::new(spec);
    let mut out = Vec::new();
    let mut applied = 0;
    for (source, seq, input) in first.iter().chain(&again) {
        let OrderInput::Place { order, .. } = input else {
            panic!("cancel?")
        };
        if m.apply_sourced(*source, *seq, &Command::Place(order.clone()), &mut out) {
            applied += 1;
        }
    }
    assert_eq!(applied, 23);
    let accepted: Vec<_> = out
        .iter()
        .filter(|e| matches!(e, Event::Accepted { .. }))
        .collect();
    assert_eq!(
        accepted.len(),
        placed.len(),
        "every placed order accepted exactly once"
    );
    let (unsent,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM outbox o JOIN outbox_relay r ON r.id = 1 WHERE o.seq > r.published_seq")
        .fetch_one(env.map.pool(domain::ShardId::new(0)).expect("pool"))
        .await
        .expect("count");
    assert_eq!(unsent, 0);
    env.drop_all().await;
}

#[tokio::test]
async fn outbox_seqs_follow_commit_order_without_gaps() {
    let env = TestEnv::new("outboxseq").await;
    let pool = env.map.pool(domain::ShardId::new(1)).expect("pool").clone();
    let row = |p: u8| engine::relay::OutboxRow {
        topic: ORDERS_TOPIC,
        key: b"BTCUSDT".to_vec(),
        payload: vec![p],
    };
    // T1 takes seqs 1..=2 and holds the counter
    let mut t1 = pool.begin().await.expect("t1");
    assert_eq!(
        engine::relay::insert_outbox(&mut t1, &[row(1), row(2)])
            .await
            .expect("t1 rows"),
        1
    );
    // T2 waits for T1's end
    let p2 = pool.clone();
    let t2 = tokio::spawn(async move {
        let mut t2 = p2.begin().await.expect("t2");
        let first = engine::relay::insert_outbox(&mut t2, &[row(3)])
            .await
            .expect("t2 row");
        t2.commit().await.expect("commit t2");
        first
    });
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(
        !t2.is_finished(),
        "the second writer waits for the first to end"
    );
    // T1 rolls back: no gap, T2 gets seq 1
    t1.rollback().await.expect("rollback");
    assert_eq!(t2.await.expect("t2"), 1);
    let mut t3 = pool.begin().await.expect("t3");
    assert_eq!(
        engine::relay::insert_outbox(&mut t3, &[row(4), row(5), row(6)])
            .await
            .expect("t3"),
        2
    );
    t3.commit().await.expect("commit t3");
    let rows: Vec<(u64, Vec<u8>)> = sqlx::query_as("SELECT seq, payload FROM outbox ORDER BY seq")
        .fetch_all(&pool)
        .await
        .expect("rows");
    assert_eq!(
        rows,
        vec![(1, vec![3]), (2, vec![4]), (3, vec![5]), (4, vec![6])]
    );
    assert_eq!(engine::relay::unsent(&pool).await.expect("unsent"), 4);

    // one relay per shard: a second one is refused while the first holds the lock,
    // and takes over once it lets go
    let s = common::bus("relay-lock");
    let tag = Alphanumeric.sample_string(&mut rand::rng(), 8);
    let prefix = format!("t_relaylock_{tag}_");
    ensure_topic(&s, &format!("{prefix}{ORDERS_TOPIC}"), 2)
        .await
        .expect("topic");
    let relay = |p: &str| {
        Relay::new(
            domain::ShardId::new(1),
            pool.clone(),
            producer(&s).expect("producer"),
            p.to_owned(),
            100,
        )
    };
    let (first, second) = (relay(&prefix), relay(&prefix));
    assert_eq!(first.round().await.expect("first").published, 4);
    assert!(matches!(
        second.round().await,
        Err(engine::relay::RelayError::Busy(1))
    ));
    assert_eq!(first.round().await.expect("first again").published, 0);
    first.release().await;
    assert_eq!(
        second.round().await.expect("second takes over").published,
        0,
        "the first one's progress is kept"
    );
    second.release().await;
    env.drop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_relay_never_skips_a_seq_it_cannot_see_yet() {
    let env = TestEnv::new("relaygap").await;
    let pool = env.map.pool(domain::ShardId::new(2)).expect("pool").clone();
    let row = |p: u8| engine::relay::OutboxRow {
        topic: ORDERS_TOPIC,
        key: b"BTCUSDT".to_vec(),
        payload: vec![p],
    };
    let mut t = pool.begin().await.expect("tx");
    engine::relay::insert_outbox(&mut t, &[row(1), row(2)])
        .await
        .expect("rows");
    t.commit().await.expect("commit");
    // seq 4 visible while seq 3 is not (yet): what a read view may show for a moment
    let raw = |seq: u64, p: u8| {
        let pool = pool.clone();
        async move {
            sqlx::query("INSERT INTO outbox (seq, topic, msg_key, payload) VALUES (?, ?, ?, ?)")
                .bind(seq)
                .bind(ORDERS_TOPIC)
                .bind(&b"BTCUSDT"[..])
                .bind(vec![p])
                .execute(&pool)
                .await
                .expect("raw row");
        }
    };
    raw(4, 4).await;
    let s = common::bus("relay-gap");
    let tag = Alphanumeric.sample_string(&mut rand::rng(), 8);
    let prefix = format!("t_relaygap_{tag}_");
    let topic = format!("{prefix}{ORDERS_TOPIC}");
    ensure_topic(&s, &topic, 1).await.expect("topic");
    let relay = Relay::new(
        domain::ShardId::new(2),
        pool.clone(),
        producer(&s).expect("producer"),
        prefix.clone(),
        100,
    );
    assert_eq!(
        relay.round().await.expect("round").published,
        2,
        "1 and 2 only"
    );
    assert_eq!(
        relay.round().await.expect("round").published,
        0,
        "4 waits for 3"
    );
    raw(3, 3).await;
    assert_eq!(relay.round().await.expect("round").published, 2, "3 and 4");
    relay.release().await;
    let c = consumer(&s, &format!("g_relaygap_{tag}")).expect("consumer");
    c.subscribe(&[&topic]).expect("subscribe");
    let got: Vec<(u64, u8)> = drain_rows(&c, 4).await;
    assert_eq!(
        got,
        vec![(1, 1), (2, 2), (3, 3), (4, 4)],
        "every seq once, in order"
    );
    env.drop_all().await;
}

/// (seq, first payload byte) of `want` rows.
async fn drain_rows(c: &StreamConsumer, want: usize) -> Vec<(u64, u8)> {
    let mut out = Vec::new();
    while out.len() < want {
        let m = tokio::time::timeout(Duration::from_secs(60), c.recv())
            .await
            .expect("message in time")
            .expect("message");
        let (_, rows) = unframe(m.payload().expect("payload")).expect("frame");
        out.extend(rows.into_iter().map(|(seq, p)| (seq, p[0])));
    }
    out
}
