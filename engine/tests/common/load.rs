//! A crossing load for the fault tests (a shard server or the broker killed under it)
//! and the checks after it: every acked order stored, every order matched exactly once,
//! every balance what the filled orders say.
//!
//! Buyers 1..=4 and sellers 5..=8 (one of each per shard: user u lives on shard u % 4)
//! place BTCUSDT limit orders of 0.01 at 50000, each user in a task of its own, so a
//! user whose shard is down does not hold the others up. Every order is at one price,
//! so at the end only one side can rest; [`all_filled_once`] sweeps it with one order
//! of user 10 (a buy) or 11 (a sell), after which every order must be filled.

use std::collections::BTreeMap;
use std::str::FromStr;
use std::time::{Duration, Instant};

use chrono::Utc;
use domain::{Amount, Kinded, OrderType, Price, Qty, Side, Symbol, TimeInForce, UserId};
use matcher::StpMode;
use router::{Month, TableKind, TableRouter};
use testkit::engine::EngineProcess;
use testkit::TestEnv;
use tokio::task::JoinHandle;
use trading::placement::{PlaceRequest, Placer};

/// A GTC limit order.
pub fn limit(user: u64, symbol: &str, side: Side, price: &str, qty: &str) -> PlaceRequest {
    PlaceRequest {
        user_id: UserId::new(user).expect("user"),
        symbol: symbol.parse().expect("symbol"),
        side,
        order_type: OrderType::Limit,
        tif: TimeInForce::Gtc,
        price: Some(Price::from_str(price).expect("price")),
        qty: Some(Qty::from_str(qty).expect("qty")),
        quote_qty: None,
        stop_price: None,
        stp: StpMode::None,
        client_order_id: None,
        market_reference: None,
    }
}

/// What one user's placements got: acked order ids with when, and failures (kind,
/// text, when).
#[derive(Debug, Default)]
pub struct Placed {
    /// Acked orders.
    pub acked: Vec<(u64, Instant)>,
    /// Failed placements.
    pub failed: Vec<(domain::ErrorKind, String, Instant)>,
}

/// Funds the buyers (1 000 000 USDT), the sellers (100 BTC) and the two sweepers.
pub async fn fund(env: &TestEnv) {
    for u in 1..=4u64 {
        super::deposit(env, u, "USDT", "1000000").await;
        super::deposit(env, u + 4, "BTC", "100").await;
    }
    super::deposit(env, 10, "USDT", "1000000").await;
    super::deposit(env, 11, "BTC", "100").await;
}

/// Starts the load: until `start + run`, every user places an order every `pause`
/// (a refusal panics: the funds are enough for the whole run).
pub fn crossing_load(
    placer: &Placer,
    start: Instant,
    run: Duration,
    pause: Duration,
) -> Vec<JoinHandle<(u64, Placed)>> {
    (1..=8u64)
        .map(|u| {
            let placer = placer.clone();
            tokio::spawn(async move {
                let side = if u <= 4 { Side::Buy } else { Side::Sell };
                let mut placed = Placed::default();
                while start.elapsed() < run {
                    match placer
                        .place(&limit(u, "BTCUSDT", side, "50000", "0.01"))
                        .await
                    {
                        Ok(Ok(ack)) => placed.acked.push((ack.order_id.get(), Instant::now())),
                        Ok(Err(reject)) => panic!("user {u}: refused: {reject:?}"),
                        Err(e) => placed
                            .failed
                            .push((e.kind(), e.to_string(), Instant::now())),
                    }
                    tokio::time::sleep(pause).await;
                }
                (u, placed)
            })
        })
        .collect()
}

/// Waits for the load's tasks.
pub async fn placed(load: Vec<JoinHandle<(u64, Placed)>>) -> BTreeMap<u64, Placed> {
    let mut placed = BTreeMap::new();
    for t in load {
        let (u, p) = t.await.expect("load task");
        placed.insert(u, p);
    }
    placed
}

/// Waits (`within`) until `p`'s `/ready` is 200; panics with its last answer.
pub async fn green(p: &EngineProcess, within: Duration) {
    let until = Instant::now() + within;
    loop {
        let r = p.readiness().await;
        if r.as_ref().map(|r| r.0) == Some(200) {
            return;
        }
        assert!(
            Instant::now() < until,
            "not ready {within:?} after the fault ended: {r:?}; log {}",
            p.log.display()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// How often `p`'s supervisor restarted `role` (`exchange_role_restarts_total`).
pub async fn restarts(p: &EngineProcess, role: &str) -> u64 {
    let (_, body) = testkit::engine::http_get(p.port, "/metrics")
        .await
        .expect("/metrics answers");
    let line = format!("exchange_role_restarts_total{{role=\"{role}\"}} ");
    body.lines()
        .find_map(|l| l.strip_prefix(line.as_str()))
        .unwrap_or_else(|| panic!("no {role} in /metrics"))
        .trim()
        .parse()
        .expect("count")
}

/// `n` hundredths as a decimal (`0.01` × n).
pub fn lots(n: u64) -> String {
    format!("{}.{:02}", n / 100, n % 100)
}

/// (order id, user, side, status, quantity, filled, frozen) of a BTCUSDT order.
type Row = (u64, u64, String, String, String, String, String);

async fn stored(env: &TestEnv, router: &TableRouter) -> Vec<(domain::ShardId, Row)> {
    let btc = Symbol::new("BTCUSDT").expect("s");
    let orders = router
        .table(TableKind::Orders, &btc, Month::of(Utc::now()))
        .expect("t");
    let mut all = Vec::new();
    for (shard, pool) in env.map.iter() {
        let rows: Vec<Row> = sqlx::query_as(&format!(
            "SELECT order_id, user_id, CAST(side AS CHAR), CAST(status AS CHAR), \
             CAST(quantity AS CHAR), CAST(filled_quantity AS CHAR), \
             CAST(frozen_amount AS CHAR) FROM `{orders}`"
        ))
        .fetch_all(pool)
        .await
        .expect("orders");
        all.extend(rows.into_iter().map(|r| (shard, r)));
    }
    all
}

/// After the load: every acked order is stored on its user's shard; once the pipeline
/// is quiet what rests is swept, and then every BTCUSDT order is filled to its
/// quantity and holds nothing (each reached the matcher, and only once: a duplicate
/// in the book would leave a real order unfilled after the sweep); each buyer spent
/// exactly 500 USDT per filled order (plus `extra_usdt` of its own), each seller 0.01
/// BTC. Returns the BTCUSDT trades there must be (one per 0.01 sold), for the trade
/// halves audit.
pub async fn all_filled_once(
    env: &TestEnv,
    router: &TableRouter,
    placer: &Placer,
    placed: &BTreeMap<u64, Placed>,
    extra_usdt: &[(u64, u64)],
) -> u64 {
    let in_db: BTreeMap<u64, (domain::ShardId, Row)> = stored(env, router)
        .await
        .into_iter()
        .map(|(s, r)| (r.0, (s, r)))
        .collect();
    let mut acked = 0;
    for (u, p) in placed {
        for (id, _) in &p.acked {
            let (shard, row) = in_db
                .get(id)
                .unwrap_or_else(|| panic!("acked order {id} of user {u} lost"));
            assert_eq!((row.1, shard.get()), (*u, (*u % 4) as u16), "order {id}");
            acked += 1;
        }
    }
    assert!(acked > 200, "the load placed {acked} orders");

    testkit::settle_quiet(env, Duration::from_secs(90)).await;
    let mut open = (0u64, 0u64);
    for (_, row) in stored(env, router).await {
        if row.3 != "filled" {
            assert_eq!(row.3, "new", "order {row:?}");
            if row.2 == "buy" {
                open.0 += 1;
            } else {
                open.1 += 1;
            }
        }
    }
    println!(
        "acked {acked}, stored {}, resting (buys, sells) {open:?}",
        in_db.len()
    );
    assert!(
        open.0 == 0 || open.1 == 0,
        "both sides rest at one price: {open:?}"
    );
    for (n, user, side) in [(open.1, 10, Side::Buy), (open.0, 11, Side::Sell)] {
        if n > 0 {
            placer
                .place(&limit(user, "BTCUSDT", side, "50000", &lots(n)))
                .await
                .expect("place")
                .expect("sweep");
        }
    }
    testkit::settle_quiet(env, Duration::from_secs(60)).await;

    let mut filled: BTreeMap<u64, u64> = BTreeMap::new();
    let mut trades = 0u64;
    for (shard, (id, user, side, status, qty, done, frozen)) in stored(env, router).await {
        assert_eq!(
            status, "filled",
            "order {id} of user {user} on shard {shard}"
        );
        assert_eq!(super::amt(&qty), super::amt(&done), "order {id}");
        assert_eq!(super::amt(&frozen), Amount::ZERO, "order {id}");
        *filled.entry(user).or_default() += 1;
        if side == "sell" {
            let n = domain::Decimal::from_str(&qty).expect("qty") * domain::Decimal::from(100);
            trades += n.normalize().to_string().parse::<u64>().expect("lots");
        }
    }
    // by hand: fees are taken from what is received
    for u in 1..=4u64 {
        let n = filled.get(&u).copied().unwrap_or(0);
        let extra = extra_usdt
            .iter()
            .filter(|(x, _)| *x == u)
            .map(|(_, a)| a)
            .sum::<u64>();
        assert_eq!(
            super::balance(env, u, "USDT").await,
            (
                super::amt(&(1_000_000 - 500 * n - extra).to_string()),
                Amount::ZERO
            ),
            "buyer {u}, {n} orders filled"
        );
        let m = filled.get(&(u + 4)).copied().unwrap_or(0);
        assert_eq!(
            super::balance(env, u + 4, "BTC").await,
            (super::amt(&lots(10_000 - m)), Amount::ZERO),
            "seller {}, {m} orders filled",
            u + 4
        );
    }
    trades
}
