//! Crash tests with real processes: the relays, the matching service and the settlers
//! run as three `engine run --roles …` processes against the real shards and broker,
//! while this test places and cancels orders for users on every shard. Each process
//! is killed with SIGKILL mid-stream and restarted (the matcher resumes from a snapshot
//! taken every 50 inputs). Afterwards: no fill lost or applied
//! twice, the money audit holds, and every open order's frozen funds match exactly
//! what its remaining quantity still needs.

mod common;

use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use common::amt;
use common::EngineProcess;
use domain::{Amount, OrderType, Price, Qty, Side, Symbol, TimeInForce, UserId};
use ledger::audit::{conservation, frozen_vs_open_orders, ledger_replay, trade_halves};
use matcher::StpMode;
use rand::distr::{Alphanumeric, SampleString};
use rand::Rng;
use router::{Month, Snowflake, TableKind, TableRouter};
use testkit::TestEnv;
use trading::placement::{load_symbols, PlaceRequest, Placer};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_relay_matcher_and_settlers_loses_nothing_and_doubles_nothing() {
    let env = TestEnv::new("crash").await;
    let router = TableRouter::new(&["BTCUSDT", "ETHUSDT", "ETHBTC"]).expect("router");
    env.map
        .ensure_tables(&router, Utc::now(), 1)
        .await
        .expect("tables");
    let symbols = load_symbols(env.map.meta()).await.expect("symbols");
    let ids = Arc::new(Snowflake::new(0, 14).expect("ids"));
    let placer = Placer::new(
        env.map.clone(),
        router.clone(),
        symbols,
        Arc::new(move || ids.next_id()),
    );

    let tag = Alphanumeric.sample_string(&mut rand::rng(), 8);
    let mut child_env = common::engine_env(&env, &format!("t_crash_{tag}_"));
    // snapshots every 50 inputs, so the restarted matcher resumes from one
    child_env.push(("EXCHANGE_ENGINE__SNAPSHOT_EVERY".into(), "50".into()));
    let logs = std::env::temp_dir().join(format!("crash-{tag}"));
    std::fs::create_dir_all(&logs).expect("log dir");
    let base_port = 19_500 + u16::from(rand::rng().random::<u8>()) * 3;
    let mut roles: Vec<EngineProcess> = ["relay", "matcher", "settler"]
        .into_iter()
        .enumerate()
        .map(|(i, name)| {
            EngineProcess::new(
                name,
                base_port + u16::try_from(i).expect("i"),
                child_env.clone(),
                logs.join(format!("{name}.log")),
            )
        })
        .collect();
    for r in &mut roles {
        r.start();
    }
    for r in &roles {
        r.ready().await;
    }

    // eight users, two per shard, each with BTC and USDT
    let users: Vec<UserId> = (1..=8).map(|u| UserId::new(u).expect("u")).collect();
    for u in &users {
        for (asset, a) in [("BTC", "5"), ("USDT", "1000000")] {
            common::deposit(&env, u.get(), asset, a).await;
        }
    }
    let mut rng = rand::rng();
    let mut open = Vec::new();
    let total = 600;
    for i in 0..total {
        // kill -9 each role once, at different points of the load, and restart it
        if i == total / 4 {
            roles[1].kill9();
            roles[1].start();
        }
        if i == total / 2 {
            roles[2].kill9();
            roles[2].start();
        }
        if i == 3 * total / 4 {
            roles[0].kill9();
            roles[0].start();
        }
        let user = users[rng.random_range(0..users.len())];
        if !open.is_empty() && rng.random_range(0..4) == 0 {
            let (u, id) = open.swap_remove(rng.random_range(0..open.len()));
            placer
                .cancel(u, "BTCUSDT".parse().expect("symbol"), id)
                .await
                .expect("cancel")
                .ok();
            continue;
        }
        let side = if rng.random_range(0..2) == 0 {
            Side::Buy
        } else {
            Side::Sell
        };
        let ticks = 5_000_000 + rng.random_range(0..200u64); // 50000.00 ..= 50001.99
        let lots = rng.random_range(100..1_000u64); // 0.001 ..= 0.00999
        let price =
            Price::new(domain::Decimal::new(i64::try_from(ticks).expect("t"), 2)).expect("p");
        let qty = Qty::new(domain::Decimal::new(i64::try_from(lots).expect("l"), 5)).expect("q");
        let req = PlaceRequest {
            user_id: user,
            symbol: "BTCUSDT".parse().expect("symbol"),
            side,
            order_type: OrderType::Limit,
            tif: if rng.random_range(0..5) == 0 {
                TimeInForce::Ioc
            } else {
                TimeInForce::Gtc
            },
            price: Some(price),
            qty: Some(qty),
            quote_qty: None,
            stop_price: None,
            stp: StpMode::None,
            client_order_id: None,
            market_reference: None,
        };
        let ack = placer.place(&req).await.expect("place").expect("accepted");
        open.push((user, ack.order_id));
    }
    for r in &roles {
        r.ready().await;
    }

    // a sentinel placed after everything else is published: when the matcher's verdict
    // on it is settled, the matcher has processed every input before it
    let month = Month::of(Utc::now());
    let sym = Symbol::new("BTCUSDT").expect("s");
    let orders = router.table(TableKind::Orders, &sym, month).expect("t");
    let until = Instant::now() + Duration::from_secs(120);
    for (_, pool) in env.map.iter() {
        loop {
            let (unsent,): (i64,) =
                sqlx::query_as("SELECT COUNT(*) FROM outbox o JOIN outbox_relay r ON r.id = 1 WHERE o.seq > r.published_seq")
                    .fetch_one(pool)
                    .await
                    .expect("q");
            if unsent == 0 {
                break;
            }
            assert!(
                Instant::now() < until,
                "relay did not catch up; logs in {}",
                logs.display()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let sentinel_user = users[1];
    let sentinel = placer
        .place(&PlaceRequest {
            user_id: sentinel_user,
            symbol: "BTCUSDT".parse().expect("symbol"),
            side: Side::Buy,
            order_type: OrderType::Limit,
            tif: TimeInForce::Ioc,
            price: Some(Price::from_str("49000").expect("p")),
            qty: Some(Qty::from_str("0.001").expect("q")),
            quote_qty: None,
            stop_price: None,
            stp: StpMode::None,
            client_order_id: Some("sentinel".into()),
            market_reference: None,
        })
        .await
        .expect("place")
        .expect("sentinel accepted")
        .order_id;
    loop {
        let (status,): (String,) = sqlx::query_as(&format!(
            "SELECT CAST(status AS CHAR) FROM `{orders}` WHERE order_id = ?"
        ))
        .bind(sentinel.get())
        .fetch_one(env.map.pool_for(sentinel_user))
        .await
        .expect("sentinel");
        if status != "new" {
            break;
        }
        assert!(
            Instant::now() < until,
            "the sentinel was never settled; logs in {}",
            logs.display()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // then the settlers of the other shards: orders stop changing for 3 s
    let trades = router.table(TableKind::Trades, &sym, month).expect("t");
    let fingerprint = || async {
        let mut f = Vec::new();
        for (_, pool) in env.map.iter() {
            let (unsent,): (i64,) =
                sqlx::query_as("SELECT COUNT(*) FROM outbox o JOIN outbox_relay r ON r.id = 1 WHERE o.seq > r.published_seq")
                    .fetch_one(pool)
                    .await
                    .expect("q");
            let row: (i64, Option<String>, Option<String>) = sqlx::query_as(&format!(
                "SELECT COUNT(*), CAST(SUM(filled_quantity) AS CHAR), CAST(SUM(frozen_amount) AS CHAR) FROM `{orders}` WHERE status IN ('new', 'partially_filled')"
            ))
            .fetch_one(pool)
            .await
            .expect("q");
            f.push((unsent, row));
        }
        f
    };
    let mut last = fingerprint().await;
    let mut stable_since = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let now = fingerprint().await;
        if now != last {
            last = now;
            stable_since = Instant::now();
        } else if last.iter().all(|(unsent, _)| *unsent == 0)
            && stable_since.elapsed() > Duration::from_secs(3)
        {
            break;
        }
        assert!(
            Instant::now() < until,
            "pipeline did not settle; logs in {}",
            logs.display()
        );
    }

    // 1. the money audit
    for (asset, t) in conservation(&env.map).await.expect("audit") {
        assert!(t.holds(), "{asset}: {t:?}");
    }
    for (shard, pool) in env.map.iter() {
        // 2. open orders hold exactly what they still need (what a buy or sell of this
        //    engine freezes: engine-specific, so it stays here)
        type O = (u64, String, String, String, String, String, String);
        let rows: Vec<O> = sqlx::query_as(&format!(
            "SELECT order_id, CAST(side AS CHAR), CAST(status AS CHAR), CAST(price AS CHAR), CAST(quantity AS CHAR), \
                    CAST(filled_quantity AS CHAR), CAST(frozen_amount AS CHAR) FROM `{orders}`"
        ))
        .fetch_all(pool)
        .await
        .expect("orders");
        assert!(!rows.is_empty());
        for (id, side, status, price, qty, filled, frozen) in rows {
            let (price, qty, filled, frozen) = (amt(&price), amt(&qty), amt(&filled), amt(&frozen));
            let rest = qty.checked_sub(filled).expect("rest");
            assert!(!rest.is_negative(), "order {id} overfilled");
            match status.as_str() {
                "new" | "partially_filled" => {
                    let need = if side == "buy" {
                        price.checked_mul(rest.get()).expect("need")
                    } else {
                        rest
                    };
                    assert_eq!(
                        frozen, need,
                        "open order {id} on shard {shard}: frozen {frozen}, needs {need}"
                    );
                }
                "filled" => assert_eq!(rest, Amount::ZERO, "filled order {id} has {rest} left"),
                _ => {}
            }
        }
    }
    // 3. final orders hold nothing; balances' frozen = what open orders (and
    //    withdrawals) hold, per shard, user and asset
    let frozen = frozen_vs_open_orders(&env.map).await.expect("frozen audit");
    assert!(
        frozen.mismatches.is_empty(),
        "frozen balance vs open orders: {:#?}",
        frozen.mismatches
    );
    assert!(
        frozen.bad_orders.is_empty(),
        "orders holding what their status forbids: {:#?}",
        frozen.bad_orders
    );
    // 4. trade halves
    let halves = trade_halves(&env.map).await.expect("trade halves");
    let here = halves.table(trades.as_str()).expect("the trades table");
    let buys = here.buy.map_or(0, |b| b.count);
    assert!(buys > 50, "the load should trade: {here:?}");
    assert!(
        halves.offenders.is_empty(),
        "every trade settled on both sides exactly once: {:#?}",
        halves.offenders
    );
    assert_eq!(
        here.buy, here.sell,
        "every trade settled on both sides exactly once"
    );
    // 5. every ledger replays to its balance, row by row (nothing applied twice or
    //    lost between a balance and its ledger rows across the kills)
    let replay = ledger_replay(&env.map).await.expect("ledger replay");
    assert!(replay.holds(), "ledger replay: {replay:#?}");
    assert!(replay.rows > 100, "{replay:?}");
    drop(roles);
    env.drop_all().await;
}
