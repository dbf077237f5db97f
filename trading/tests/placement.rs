//! Order placement against the real shards: one local transaction per order, exact
//! freezes, idempotent client order ids, clean rejects, and concurrency.

mod common;

use std::collections::BTreeMap;
use std::str::FromStr;
use std::sync::Arc;

use chrono::Utc;
use common::{amt, balance, limit};
use domain::{Amount, Asset, OrderType, Price, Qty, Side, UserId};
use ledger::balances::credit_deposit;
use matcher::wire::OrderInput;
use matcher::RejectReason;
use router::{Snowflake, TableRouter};
use testkit::TestEnv;
use trading::placement::{load_symbols, PlaceError, PlaceRequest, Placer, Reject};

async fn setup(name: &str) -> (TestEnv, Placer) {
    let h = common::Harness::new(name, 9).await;
    (h.env, h.placer)
}

async fn count(env: &TestEnv, user: u64, sql: &str) -> i64 {
    let user = UserId::new(user).expect("user");
    let (n,): (i64,) = sqlx::query_as(sql)
        .fetch_one(env.map.pool_for(user))
        .await
        .expect("count");
    n
}

#[tokio::test]
async fn a_limit_buy_freezes_exactly_and_writes_order_ledger_and_outbox_together() {
    let (env, placer) = setup("place").await;
    let user = UserId::new(6).expect("user");
    let usdt = Asset::new("USDT").expect("asset");
    assert!(credit_deposit(&env.map, user, &usdt, amt("1000"), "tx-1")
        .await
        .expect("deposit"));
    assert!(
        !credit_deposit(&env.map, user, &usdt, amt("1000"), "tx-1")
            .await
            .expect("again"),
        "deposits are idempotent"
    );

    let mut req = limit(6, Side::Buy, "50000.01", "0.01234");
    req.client_order_id = Some("my-order-1".into());
    let ack = placer.place(&req).await.expect("place").expect("accepted");
    assert_eq!(ack.frozen, amt("617.0001234"), "price x qty, exactly");
    assert_eq!(ack.frozen_asset, usdt);
    assert_eq!(
        balance(&env, 6, "USDT").await,
        (amt("382.9998766"), amt("617.0001234"))
    );

    let table = TableRouter::new(&["BTCUSDT"])
        .expect("r")
        .orders_table(&ack.symbol, ack.order_id)
        .expect("table");
    let (status, price, qty, frozen): (String, String, String, String) = sqlx::query_as(&format!(
        "SELECT CAST(status AS CHAR), CAST(price AS CHAR), CAST(quantity AS CHAR), CAST(frozen_amount AS CHAR) FROM `{table}` WHERE order_id = ?"
    ))
    .bind(ack.order_id.get())
    .fetch_one(env.map.pool_for(user))
    .await
    .expect("order row");
    assert_eq!(status, "new");
    assert_eq!(price, "50000.010000000000000000");
    assert_eq!(qty, "0.012340000000000000");
    assert_eq!(frozen, "617.000123400000000000");
    let (amount, after): (String, String) = sqlx::query_as(
        "SELECT CAST(amount AS CHAR), CAST(balance_after AS CHAR) FROM account_transactions WHERE type = 'freeze' AND ref_id = ?",
    )
    .bind(ack.order_id.get())
    .fetch_one(env.map.pool_for(user))
    .await
    .expect("ledger row");
    assert_eq!(
        (amount.as_str(), after.as_str()),
        ("-617.000123400000000000", "382.999876600000000000")
    );
    let (key, payload): (Vec<u8>, Vec<u8>) = sqlx::query_as("SELECT msg_key, payload FROM outbox")
        .fetch_one(env.map.pool_for(user))
        .await
        .expect("outbox row");
    assert_eq!(key, b"BTCUSDT");
    match OrderInput::decode(&payload).expect("decode") {
        OrderInput::Place { order, .. } => assert_eq!(order.order_id, ack.order_id),
        other => panic!("unexpected {other:?}"),
    }

    // the same client order id again: the original order, nothing else happens
    let again = placer.place(&req).await.expect("place").expect("accepted");
    assert!(again.duplicate);
    assert_eq!((again.order_id, again.frozen), (ack.order_id, ack.frozen));
    assert_eq!(
        balance(&env, 6, "USDT").await,
        (amt("382.9998766"), amt("617.0001234"))
    );
    assert_eq!(count(&env, 6, "SELECT COUNT(*) FROM outbox").await, 1);

    // a sell freezes base; a market buy freezes its quote amount
    let btc = Asset::new("BTC").expect("asset");
    credit_deposit(&env.map, user, &btc, amt("0.5"), "tx-2")
        .await
        .expect("deposit");
    let sell = placer
        .place(&limit(6, Side::Sell, "60000", "0.2"))
        .await
        .expect("place")
        .expect("ok");
    assert_eq!((sell.frozen_asset, sell.frozen), (btc, amt("0.2")));
    let mut mkt = limit(6, Side::Buy, "1", "1");
    mkt.order_type = OrderType::Market;
    mkt.price = None;
    mkt.qty = None;
    mkt.quote_qty = Some(amt("100.5"));
    let m = placer.place(&mkt).await.expect("place").expect("ok");
    assert_eq!(m.frozen, amt("100.5"));
    assert_eq!(
        balance(&env, 6, "USDT").await,
        (amt("282.4998766"), amt("717.5001234"))
    );

    // a market buy by base quantity holds qty × reference × (1 + 5 % band), and the
    // order carries that cap to the matcher (quote_quantity)
    let mut by_qty = limit(6, Side::Buy, "1", "0.001");
    by_qty.order_type = OrderType::Market;
    by_qty.price = None;
    by_qty.market_reference = Some("50000".parse().expect("ref"));
    let b = placer.place(&by_qty).await.expect("place").expect("ok");
    assert_eq!(b.frozen, amt("52.5"));
    let (qty, cap): (String, String) = sqlx::query_as(&format!(
        "SELECT CAST(quantity AS CHAR), CAST(quote_quantity AS CHAR) FROM `{}` WHERE order_id = ?",
        TableRouter::new(&["BTCUSDT"])
            .expect("r")
            .orders_table(&b.symbol, b.order_id)
            .expect("table")
    ))
    .bind(b.order_id.get())
    .fetch_one(env.map.pool_for(user))
    .await
    .expect("order row");
    assert_eq!(
        (qty.as_str(), cap.as_str()),
        ("0.001000000000000000", "52.500000000000000000")
    );
    // a stop-market buy by quantity holds against its stop price
    let mut stop = by_qty.clone();
    stop.order_type = OrderType::StopLoss;
    stop.market_reference = None;
    stop.stop_price = Some("60000".parse().expect("stop"));
    let st = placer.place(&stop).await.expect("place").expect("ok");
    assert_eq!(st.frozen, amt("63"));
    // without a reference (nothing traded, empty book) it cannot be held: refused;
    // the minimum notional applies to qty × reference; a cap past the balance is
    // refused like any hold
    let mut none = by_qty.clone();
    none.market_reference = None;
    assert!(matches!(
        placer.place(&none).await.expect("place"),
        Err(Reject::Unsupported(_))
    ));
    let mut tiny = by_qty.clone();
    tiny.qty = Some("0.00001".parse().expect("q"));
    assert!(matches!(
        placer.place(&tiny).await.expect("place"),
        Err(Reject::Filter {
            filter: "NOTIONAL",
            ..
        })
    ));
    let mut big = by_qty.clone();
    big.qty = Some("0.2".parse().expect("q"));
    assert!(matches!(
        placer.place(&big).await.expect("place"),
        Err(Reject::InsufficientBalance { .. })
    ));
    assert_eq!(
        balance(&env, 6, "USDT").await,
        (amt("166.9998766"), amt("833.0001234"))
    );
    // a market sell by quote amount holds the base that amount needs at the band's
    // worst price: 100 USDT at 50,000 × 0.95 = 0.00210526… → 0.00211 BTC (up to the
    // step); the order carries both, the matcher stops at the amount or the cap
    let mut by_quote = limit(6, Side::Sell, "1", "1");
    by_quote.order_type = OrderType::Market;
    by_quote.price = None;
    by_quote.qty = None;
    by_quote.quote_qty = Some(amt("100"));
    by_quote.market_reference = Some("50000".parse().expect("ref"));
    let q = placer.place(&by_quote).await.expect("place").expect("ok");
    assert_eq!((q.frozen_asset, q.frozen), (btc, amt("0.00211")));
    let mut no_ref = by_quote.clone();
    no_ref.market_reference = None;
    assert!(matches!(
        placer.place(&no_ref).await.expect("place"),
        Err(Reject::Unsupported(_))
    ));
    let mut huge = by_quote.clone();
    huge.quote_qty = Some(amt("1000000000"));
    assert!(matches!(
        placer.place(&huge).await.expect("place"),
        Err(Reject::Filter {
            filter: "LOT_SIZE",
            ..
        })
    ));
    assert_eq!(
        balance(&env, 6, "BTC").await,
        (amt("0.29789"), amt("0.20211"))
    );
    // the cap is rounded up to the quote precision, never down
    let spec = load_symbols(env.map.meta()).await.expect("symbols")[&b.symbol]
        .spec
        .clone();
    assert_eq!(
        trading::placement::market_cap(
            "0.00003".parse().expect("q"),
            "33333.33".parse().expect("p"),
            &spec
        ),
        Some(amt("1.0499999"))
    );
    env.drop_all().await;
}

#[tokio::test]
async fn bad_requests_are_rejected_and_change_nothing() {
    let (env, placer) = setup("placebad").await;
    let user = UserId::new(3).expect("user");
    common::deposit(&env, user.get(), "USDT", "100").await;
    let with = |f: &dyn Fn(&mut PlaceRequest)| {
        let mut r = limit(3, Side::Buy, "50000", "0.001");
        f(&mut r);
        r
    };
    // a malformed symbol cannot reach the placer any more: `PlaceRequest::symbol` is a
    // `Symbol`, whose parse refuses it (it was `Reject::UnknownSymbol` when the field was
    // a string)
    assert!("BTC;DROP".parse::<domain::Symbol>().is_err());
    type Expect = fn(&Reject) -> bool;
    let cases: Vec<(PlaceRequest, Expect)> = vec![
        (
            with(&|r| r.symbol = "DOGEUSDT".parse().expect("well-formed")),
            |r| matches!(r, Reject::UnknownSymbol(_)),
        ),
        (
            with(&|r| r.price = Some(Price::from_str("50000.001").expect("p"))),
            |r| *r == Reject::Invalid(RejectReason::PriceNotOnTick),
        ),
        (
            with(&|r| r.qty = Some(Qty::from_str("0.000001").expect("q"))),
            |r| *r == Reject::Invalid(RejectReason::QtyNotOnStep),
        ),
        (
            with(&|r| r.qty = Some(Qty::from_str("10000").expect("q"))),
            |r| {
                matches!(
                    r,
                    Reject::Filter {
                        filter: "LOT_SIZE",
                        ..
                    }
                )
            },
        ),
        (
            with(&|r| r.price = Some(Price::from_str("1").expect("p"))),
            |r| {
                matches!(
                    r,
                    Reject::Filter {
                        filter: "NOTIONAL",
                        ..
                    }
                )
            },
        ),
        (with(&|r| r.price = None), |r| {
            *r == Reject::Invalid(RejectReason::MissingPrice)
        }),
        (
            with(&|r| r.client_order_id = Some("no spaces allowed".into())),
            |r| *r == Reject::BadClientOrderId,
        ),
        (
            with(&|r| {
                r.order_type = OrderType::Market;
                r.price = None;
            }),
            |r| matches!(r, Reject::Unsupported(_)),
        ),
        (
            with(&|r| r.qty = Some(Qty::from_str("0.01").expect("q"))),
            |r| matches!(r, Reject::InsufficientBalance { .. }),
        ),
    ];
    for (req, want) in cases {
        let got = placer
            .place(&req)
            .await
            .expect("no infrastructure error")
            .expect_err("rejected");
        assert!(want(&got), "{req:?} -> {got:?}");
    }
    // a halted symbol refuses orders
    sqlx::query("UPDATE symbols SET status = 'halt' WHERE symbol = 'ETHUSDT'")
        .execute(env.map.meta())
        .await
        .expect("halt");
    let halted = Placer::new(
        env.map.clone(),
        TableRouter::new(&["BTCUSDT", "ETHUSDT", "ETHBTC"]).expect("router"),
        load_symbols(env.map.meta()).await.expect("symbols"),
        Arc::new(|| Snowflake::new(0, 10).expect("ids").next_id()),
    );
    let mut eth = limit(3, Side::Buy, "2000", "0.01");
    eth.symbol = "ETHUSDT".parse().expect("symbol");
    let got = halted
        .place(&eth)
        .await
        .expect("place")
        .expect_err("halted");
    assert!(matches!(got, Reject::Halted(_)), "{got:?}");
    assert_eq!(
        balance(&env, 3, "USDT").await,
        (amt("100"), Amount::ZERO),
        "nothing frozen"
    );
    assert_eq!(count(&env, 3, "SELECT COUNT(*) FROM outbox").await, 0);
    assert_eq!(
        count(&env, 3, "SELECT COUNT(*) FROM client_orders").await,
        0
    );
    assert_eq!(
        count(
            &env,
            3,
            "SELECT COUNT(*) FROM account_transactions WHERE type = 'freeze'"
        )
        .await,
        0
    );
    env.drop_all().await;
}

#[tokio::test]
async fn concurrent_placements_never_overdraw_and_retries_never_double_place() {
    let (env, placer) = setup("placerace").await;
    let user = UserId::new(10).expect("user");
    common::deposit(&env, user.get(), "USDT", "1000").await;
    // 64 tasks x 2 placements of 50 USDT each (0.001 @ 50000) = 6400 asked, 1000 there;
    // every task places each client id twice (a retry)
    let tasks: Vec<_> = (0..64)
        .map(|t| {
            let placer = placer.clone();
            tokio::spawn(async move {
                let mut acks = Vec::new();
                for i in 0..2 {
                    let mut r = limit(10, Side::Buy, "50000", "0.001");
                    r.client_order_id = Some(format!("c-{t}-{i}"));
                    let first = placer.place(&r).await.expect("place");
                    let retry = placer.place(&r).await.expect("retry");
                    if let (Ok(a), Ok(b)) = (&first, &retry) {
                        assert_eq!(a.order_id, b.order_id, "a retry returns the same order");
                    }
                    acks.push(first);
                }
                acks
            })
        })
        .collect();
    let mut placed = BTreeMap::new();
    let mut insufficient = 0;
    for t in tasks {
        for r in t.await.expect("task") {
            match r {
                Ok(a) => {
                    placed.insert(a.order_id, a.frozen);
                }
                Err(Reject::InsufficientBalance { .. }) => insufficient += 1,
                Err(other) => panic!("unexpected reject {other:?}"),
            }
        }
    }
    assert_eq!(placed.len(), 20, "exactly 1000 / 50 orders fit");
    assert_eq!(insufficient, 108);
    assert_eq!(balance(&env, 10, "USDT").await, (Amount::ZERO, amt("1000")));
    assert_eq!(count(&env, 10, "SELECT COUNT(*) FROM outbox").await, 20);
    assert_eq!(
        count(&env, 10, "SELECT COUNT(*) FROM client_orders").await,
        20
    );
    // conservation: available + frozen = deposits
    let (a, f) = balance(&env, 10, "USDT").await;
    assert_eq!(a.checked_add(f).expect("sum"), amt("1000"));
    env.drop_all().await;
}

#[tokio::test]
async fn group_commit_batches_placements_and_keeps_each_result_separate() {
    let (env, placer) = setup("placegroup").await;
    let user = UserId::new(10).expect("user");
    common::deposit(&env, user.get(), "USDT", "1000").await;
    let writers: Vec<_> = env
        .map
        .iter()
        .map(|(shard, _)| {
            placer.group_writer(
                shard,
                trading::placement::GroupCommit {
                    queue: 1_024,
                    max_batch: 64,
                    max_wait: std::time::Duration::from_millis(5),
                    writers: 2,
                },
            )
        })
        .collect();
    let writers = Arc::new(writers);
    // same shape as the ungrouped race: 64 tasks x 2 placements of 50 USDT, each retried
    let tasks: Vec<_> = (0..64)
        .map(|t| {
            let (placer, writers) = (placer.clone(), writers.clone());
            tokio::spawn(async move {
                let mut acks = Vec::new();
                for i in 0..2 {
                    let mut r = limit(10, Side::Buy, "50000", "0.001");
                    r.client_order_id = Some(format!("g-{t}-{i}"));
                    let first = placer.place_grouped(&writers, &r).await.expect("place");
                    let retry = placer.place_grouped(&writers, &r).await.expect("retry");
                    if let (Ok(a), Ok(b)) = (&first, &retry) {
                        assert_eq!(a.order_id, b.order_id, "a retry returns the same order");
                        assert!(b.duplicate);
                    }
                    acks.push(first);
                }
                acks
            })
        })
        .collect();
    let (mut placed, mut insufficient) = (0, 0);
    for t in tasks {
        for r in t.await.expect("task") {
            match r {
                Ok(_) => placed += 1,
                Err(Reject::InsufficientBalance { .. }) => insufficient += 1,
                Err(other) => panic!("unexpected {other:?}"),
            }
        }
    }
    assert_eq!(
        (placed, insufficient),
        (20, 108),
        "a reject in a batch does not fail the others"
    );
    assert_eq!(balance(&env, 10, "USDT").await, (Amount::ZERO, amt("1000")));
    assert_eq!(count(&env, 10, "SELECT COUNT(*) FROM outbox").await, 20);
    assert_eq!(
        count(&env, 10, "SELECT COUNT(*) FROM client_orders").await,
        20
    );
    let batches: u64 = writers.iter().map(|w| w.batches()).sum();
    assert!(
        batches < 256,
        "256 requests in {batches} transactions: grouped"
    );
    env.drop_all().await;
}

#[tokio::test]
async fn a_failing_job_in_a_batch_fails_alone_and_answers_match_the_data() {
    let env = TestEnv::new("placefail").await;
    let router = TableRouter::new(&["BTCUSDT", "ETHUSDT", "ETHBTC"]).expect("router");
    env.map
        .ensure_tables(&router, Utc::now(), 1)
        .await
        .expect("ensure tables");
    let symbols = load_symbols(env.map.meta()).await.expect("symbols");
    // every third order id is from 2031, a month without tables: its insert fails
    let ids = Arc::new(Snowflake::new(0, 8).expect("ids"));
    let n = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let far = router::snowflake::min_id_at(1_925_000_000_000).expect("2031 id");
    let placer = Placer::new(
        env.map.clone(),
        router,
        symbols,
        Arc::new(move || {
            let i = n.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            if i % 3 == 2 {
                Ok(far + i)
            } else {
                ids.next_id()
            }
        }),
    );
    let user = UserId::new(5).expect("user");
    common::deposit(&env, user.get(), "USDT", "10000").await;
    let writer = Arc::new(vec![placer.group_writer(
        env.map.shard_of(user),
        trading::placement::GroupCommit {
            queue: 64,
            max_batch: 16,
            max_wait: std::time::Duration::from_millis(20),
            writers: 2,
        },
    )]);
    let tasks: Vec<_> = (0..12)
        .map(|i| {
            let (placer, writer) = (placer.clone(), writer.clone());
            tokio::spawn(async move {
                let mut r = limit(5, Side::Buy, "50000", "0.001");
                r.client_order_id = Some(format!("f-{i}"));
                (format!("f-{i}"), placer.place_grouped(&writer, &r).await)
            })
        })
        .collect();
    let (mut acked, mut missing) = (0, 0);
    for t in tasks {
        let (client, res) = t.await.expect("task");
        let exists = count(
            &env,
            5,
            &format!("SELECT COUNT(*) FROM client_orders WHERE client_order_id = '{client}'"),
        )
        .await;
        match res {
            Ok(Ok(_)) => {
                assert_eq!(exists, 1, "{client} acked but not stored");
                acked += 1;
            }
            Ok(Err(r)) => panic!("unexpected reject {r:?}"),
            Err(e) => {
                assert_eq!(exists, 0, "{client} reported failed but stored");
                assert!(
                    matches!(
                        e,
                        PlaceError::Router(router::RouterError::MissingTable { .. })
                    ),
                    "{client}: the cause is named: {e:?}"
                );
                missing += 1;
            }
        }
    }
    // only the orders of 2031 fail; the eight others in their batches succeed
    assert_eq!((acked, missing), (8, 4), "collateral failures");
    assert_eq!(count(&env, 5, "SELECT COUNT(*) FROM outbox").await, acked);
    let frozen = amt("50")
        .checked_mul(domain::Decimal::from(acked))
        .expect("frozen");
    assert_eq!(
        balance(&env, 5, "USDT").await,
        (amt("10000").checked_sub(frozen).expect("rest"), frozen)
    );
    env.drop_all().await;
}

#[tokio::test]
async fn one_batch_decides_in_arrival_order_nets_freezes_and_answers_in_batch_retries() {
    let (env, placer) = setup("placeset").await;
    // users 10 and 14 share a shard (10 % 4 == 14 % 4)
    common::deposit(&env, 10, "USDT", "120").await;
    common::deposit(&env, 14, "USDT", "60").await;
    let user = UserId::new(10).expect("user");
    let writer = Arc::new(vec![placer.group_writer(
        env.map.shard_of(user),
        trading::placement::GroupCommit {
            queue: 64,
            max_batch: 64,
            max_wait: std::time::Duration::from_millis(200),
            writers: 1,
        },
    )]);
    let with_id = |u: u64, qty: &str, id: &str| {
        let mut r = limit(u, Side::Buy, "50000", qty);
        r.client_order_id = Some(id.to_owned());
        r
    };
    // 50, 100 (only 70 left), 50, the first again, and another user's 50
    let reqs = [
        with_id(10, "0.001", "a"),
        with_id(10, "0.002", "b"),
        with_id(10, "0.001", "c"),
        with_id(10, "0.001", "a"),
        with_id(14, "0.001", "z"),
    ];
    let futs: Vec<_> = reqs
        .iter()
        .map(|r| placer.place_grouped(&writer, r))
        .collect();
    let out: Vec<_> = futures_util::future::join_all(futs)
        .await
        .into_iter()
        .map(|r| r.expect("place"))
        .collect();
    assert_eq!(writer[0].batches(), 1, "all five in one transaction");
    let a = out[0].as_ref().expect("a placed");
    assert!(!a.duplicate);
    assert_eq!(
        out[1],
        Err(Reject::InsufficientBalance {
            asset: Asset::new("USDT").expect("asset"),
            available: amt("70"),
        })
    );
    assert!(out[2].is_ok(), "c fits what b could not take");
    let again = out[3].as_ref().expect("retry of a");
    assert_eq!(again.order_id, a.order_id);
    assert!(
        again.duplicate,
        "the retry in the same batch is the original order"
    );
    assert!(out[4].is_ok());
    assert_eq!(balance(&env, 10, "USDT").await, (amt("20"), amt("100")));
    assert_eq!(balance(&env, 14, "USDT").await, (amt("10"), amt("50")));
    // ledger: one freeze row per order, balance_after running in arrival order
    let pool = env.map.pool_for(user);
    let rows: Vec<(u64, String, String)> = sqlx::query_as(
        "SELECT user_id, CAST(amount AS CHAR), CAST(balance_after AS CHAR) FROM account_transactions \
         WHERE type = 'freeze' ORDER BY id",
    )
    .fetch_all(pool)
    .await
    .expect("ledger");
    let rows: Vec<(u64, Amount, Amount)> = rows
        .into_iter()
        .map(|(u, a, b)| {
            (
                u,
                Amount::from_db_str(&a).expect("a"),
                Amount::from_db_str(&b).expect("b"),
            )
        })
        .collect();
    assert_eq!(
        rows,
        vec![
            (10, amt("-50"), amt("70")),
            (10, amt("-50"), amt("20")),
            (14, amt("-50"), amt("10")),
        ]
    );
    assert_eq!(count(&env, 10, "SELECT COUNT(*) FROM outbox").await, 3);
    env.drop_all().await;
}

/// A COMMIT that happened on the server but whose reply never came back (the
/// connection broke right after): the retry inside the writer finds the order by its
/// client order id and answers with it; if no retry gets an answer either, the caller
/// gets "outcome unknown" with the order id, never "not committed" and never a second
/// order when it retries with the same client order id.
#[tokio::test]
async fn a_lost_commit_reply_is_resolved_by_the_client_order_id_or_reported_unknown() {
    let (env, placer) = setup("lostcommit").await;
    let user = UserId::new(13).expect("user");
    common::deposit(&env, user.get(), "USDT", "1000").await;
    let shard = env.map.shard_of(user);
    let writer = placer.group_writer(
        shard,
        trading::placement::GroupCommit {
            queue: 64,
            max_batch: 8,
            max_wait: std::time::Duration::from_millis(1),
            writers: 1,
        },
    );
    let writers = [writer];
    let orders = |cid: &str| {
        let mut r = limit(13, Side::Buy, "50000", "0.002");
        r.client_order_id = Some(cid.into());
        r
    };
    let rows = || count(&env, 13, "SELECT COUNT(*) FROM client_orders");

    // one reply lost: the writer's retry sees the committed order and answers with it,
    // as this placement (not a duplicate of another one)
    placer.faults().lose_commit_replies(1);
    let ack = placer
        .place_grouped(&writers, &orders("lost-1"))
        .await
        .expect("resolved by the retry")
        .expect("accepted");
    assert!(
        !ack.duplicate,
        "the order the lost COMMIT wrote is this placement"
    );
    assert_eq!(rows().await, 1);
    assert_eq!(balance(&env, 13, "USDT").await, (amt("900"), amt("100")));

    // the reply lost and the retries failing before they could look: outcome unknown,
    // with the id the order has
    placer.faults().lose_commit_replies(1);
    placer.faults().fail_attempts(2);
    let err = placer
        .place_grouped(&writers, &orders("lost-2"))
        .await
        .expect_err("no attempt got an answer");
    let PlaceError::OutcomeUnknown {
        order_id,
        client_order_id,
        ..
    } = &err
    else {
        panic!("want outcome unknown, got {err:?}");
    };
    assert_eq!(client_order_id, "lost-2");
    assert_eq!(
        domain::Kinded::kind(&err),
        domain::ErrorKind::OutcomeUnknown
    );
    // it did commit, once; the client's retry with the same id gets that order back
    assert_eq!(rows().await, 2);
    let again = placer
        .place_grouped(&writers, &orders("lost-2"))
        .await
        .expect("retry")
        .expect("accepted");
    assert_eq!((again.order_id, again.duplicate), (*order_id, true));
    assert_eq!(rows().await, 2, "the retry placed nothing new");
    assert_eq!(balance(&env, 13, "USDT").await, (amt("800"), amt("200")));

    // the same through the ungrouped path
    placer.faults().lose_commit_replies(1);
    placer.faults().fail_attempts(2);
    match placer.place(&orders("lost-3")).await {
        Err(PlaceError::OutcomeUnknown {
            client_order_id, ..
        }) => {
            assert_eq!(client_order_id, "lost-3")
        }
        other => panic!("want outcome unknown, got {other:?}"),
    }
    assert_eq!(rows().await, 3);
    testkit::audits_hold(&env).await;
    env.drop_all().await;
}

/// The race behind a lost COMMIT reply: the earlier attempt's transaction is still
/// being committed by the server (it holds the balance row and its client order id is
/// not visible yet) when the retry starts. The retry must wait for it and answer with
/// that order, not read the balance the order already froze and refuse it as
/// "insufficient balance" (it locks the balances before it looks the client id up).
#[tokio::test]
async fn a_retry_racing_the_commit_of_its_own_earlier_attempt_answers_with_that_order() {
    let (env, placer) = setup("commitrace").await;
    let user = UserId::new(17).expect("user");
    common::deposit(&env, user.get(), "USDT", "100").await;
    let router = TableRouter::new(&["BTCUSDT"]).expect("router");
    let btc: domain::Symbol = "BTCUSDT".parse().expect("symbol");
    let earlier = domain::OrderId::new(
        router::snowflake::min_id_at(u64::try_from(Utc::now().timestamp_millis()).expect("ms"))
            .expect("id")
            | 7,
    )
    .expect("id");
    let table = router.orders_table(&btc, earlier).expect("table");
    // the earlier attempt, written but not committed: all of the 100 USDT frozen, with
    // the freeze's ledger row (as placement writes it)
    let mut held = env.map.pool_for(user).begin().await.expect("begin");
    for sql in [
        "UPDATE account_balances SET available = available - 100, frozen = frozen + 100, \
         version = version + 1 WHERE user_id = 17 AND currency = 'USDT'"
            .to_owned(),
        format!(
            "INSERT INTO account_transactions (user_id, currency, type, amount, balance_after, ref_type, ref_id) \
             VALUES (17, 'USDT', 'freeze', -100, 0, 'order', {})",
            earlier.get()
        ),
        format!(
            "INSERT INTO client_orders (user_id, client_order_id, symbol, order_id) \
             VALUES (17, 'race-1', 'BTCUSDT', {})",
            earlier.get()
        ),
        format!(
            "INSERT INTO `{table}` (order_id, client_order_id, user_id, symbol, side, type, \
             time_in_force, price, quantity, frozen_currency, frozen_amount) \
             VALUES ({}, 'race-1', 17, 'BTCUSDT', 'buy', 'limit', 'gtc', '50000', '0.002', 'USDT', '100')",
            earlier.get()
        ),
    ] {
        sqlx::query(&sql).execute(&mut *held).await.expect("earlier attempt");
    }
    let mut req = limit(17, Side::Buy, "50000", "0.002");
    req.client_order_id = Some("race-1".into());
    let retry = {
        let placer = placer.clone();
        tokio::spawn(async move { placer.place(&req).await })
    };
    // the retry is now waiting for the balance row; the earlier attempt commits
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert!(
        !retry.is_finished(),
        "the retry must wait for the row the commit holds"
    );
    held.commit().await.expect("commit");
    let ack = retry
        .await
        .expect("task")
        .expect("place")
        .expect("answered with the committed order, not refused");
    assert_eq!(ack.order_id, earlier);
    assert_eq!(balance(&env, 17, "USDT").await, (amt("0"), amt("100")));
    assert_eq!(
        count(&env, 17, "SELECT COUNT(*) FROM client_orders").await,
        1
    );
    testkit::audits_hold(&env).await;
    env.drop_all().await;
}
