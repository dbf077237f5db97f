//! Cross-shard match and settlement against the real shards: users on all four shards
//! trade; every balance, order, trade row and ledger row is what was computed by hand;
//! redelivered batches change nothing; the money audit holds.
//!
//! The pipeline is driven in-process here (outbox rows → matcher → per-shard batches →
//! settlers), exactly as the Kafka services will drive it.

mod common;

use std::collections::BTreeMap;
use std::num::NonZeroU16;
use std::sync::Arc;

use chrono::Utc;
use common::{amt, req};
use domain::{Amount, Asset, OrderId, OrderStatus, OrderType, ShardId, Side, Symbol, UserId};
use engine::settle::{shards_of, FillBatch, Settler, UserEvent, FEE_ACCOUNT};
use ledger::audit::conservation;
use ledger::balances::credit_deposit;
use matcher::wire::OrderInput;
use matcher::{Command, Event, Matcher, SymbolSpec};
use router::{Snowflake, TableRouter};
use testkit::TestEnv;
use trading::placement::{load_symbols, PlaceRequest, Placer, Reject};

struct Pipeline {
    env: TestEnv,
    placer: Placer,
    matcher: Matcher,
    settlers: Vec<Settler>,
    sent: BTreeMap<u16, u64>,
    batches: Vec<(ShardId, FillBatch)>,
    user_events: Vec<UserEvent>,
}

impl Pipeline {
    async fn new() -> Self {
        let env = TestEnv::new("settle").await;
        let router = TableRouter::new(&["BTCUSDT"]).expect("router");
        env.map
            .ensure_tables(&router, Utc::now(), 1)
            .await
            .expect("tables");
        let symbols = load_symbols(env.map.meta()).await.expect("symbols");
        let ids = Arc::new(Snowflake::new(0, 12).expect("ids"));
        let placer = Placer::new(
            env.map.clone(),
            router.clone(),
            symbols.clone(),
            Arc::new(move || ids.next_id()),
        );
        let specs: BTreeMap<Symbol, SymbolSpec> =
            symbols.iter().map(|(s, c)| (*s, c.spec.clone())).collect();
        let btc = Symbol::new("BTCUSDT").expect("symbol");
        let matcher = Matcher::new(specs[&btc].clone());
        let count = NonZeroU16::new(env.map.count()).expect("shards");
        let settlers = env
            .map
            .iter()
            .map(|(shard, pool)| {
                Settler::new(shard, count, pool.clone(), router.clone(), specs.clone())
            })
            .collect();
        Self {
            env,
            placer,
            matcher,
            settlers,
            sent: BTreeMap::new(),
            batches: Vec::new(),
            user_events: Vec::new(),
        }
    }

    async fn place(&mut self, r: PlaceRequest) -> OrderId {
        let ack = self
            .placer
            .place(&r)
            .await
            .expect("place")
            .expect("accepted");
        self.pump().await;
        ack.order_id
    }

    /// What the relay + matcher service + settlers do: every new outbox row, in shard
    /// and id order, through the matcher; each shard's share of the events settled.
    async fn pump(&mut self) {
        let mut events = Vec::new();
        for (shard, pool) in self.env.map.iter() {
            let from = self.sent.get(&shard.get()).copied().unwrap_or(0);
            let rows: Vec<(u64, Vec<u8>)> =
                sqlx::query_as("SELECT seq, payload FROM outbox WHERE seq > ? ORDER BY seq")
                    .bind(from)
                    .fetch_all(pool)
                    .await
                    .expect("outbox");
            for (id, payload) in rows {
                let cmd = match OrderInput::decode(&payload).expect("decode") {
                    OrderInput::Place { order, .. } => Command::Place(order),
                    OrderInput::Cancel {
                        order_id, user_id, ..
                    } => Command::Cancel { order_id, user_id },
                };
                assert!(self
                    .matcher
                    .apply_sourced(u32::from(shard.get()), id, &cmd, &mut events));
                self.sent.insert(shard.get(), id);
            }
        }
        self.settle(events).await;
    }

    async fn settle(&mut self, events: Vec<Event>) {
        let count = NonZeroU16::new(self.env.map.count()).expect("count");
        let mut per_shard: BTreeMap<ShardId, Vec<Event>> = BTreeMap::new();
        for e in events {
            for shard in shards_of(&e, count) {
                per_shard.entry(shard).or_default().push(e.clone());
            }
        }
        for (shard, events) in per_shard {
            let batch = FillBatch::new("in-process", self.matcher.spec().clone(), events);
            let applied = self.settlers[usize::from(shard.get())]
                .apply(&batch)
                .await
                .expect("settle");
            assert_eq!(applied.skipped, 0);
            self.user_events.extend(applied.user_events);
            self.batches.push((shard, batch));
        }
    }

    async fn balance(&self, user: u64, asset: &str) -> (Amount, Amount) {
        let shard = if user == FEE_ACCOUNT {
            unreachable!()
        } else {
            UserId::new(user).expect("u")
        };
        let row: Option<(String, String)> = sqlx::query_as(
            "SELECT CAST(available AS CHAR), CAST(frozen AS CHAR) FROM account_balances WHERE user_id = ? AND currency = ?",
        )
        .bind(user)
        .bind(asset)
        .fetch_optional(self.env.map.pool_for(shard))
        .await
        .expect("balance");
        row.map_or((Amount::ZERO, Amount::ZERO), |(a, f)| (amt(&a), amt(&f)))
    }

    async fn fees(&self, shard: u16, asset: &str) -> Amount {
        let row: Option<(String,)> = sqlx::query_as(
            "SELECT CAST(available AS CHAR) FROM account_balances WHERE user_id = ? AND currency = ?",
        )
        .bind(FEE_ACCOUNT)
        .bind(asset)
        .fetch_optional(self.env.map.pool(ShardId::new(shard)).expect("pool"))
        .await
        .expect("fees");
        row.map_or(Amount::ZERO, |(a,)| amt(&a))
    }
}

#[tokio::test]
async fn users_on_four_shards_trade_and_every_unit_is_accounted_for() {
    let mut p = Pipeline::new().await;
    let (btc, usdt) = (
        Asset::new("BTC").expect("a"),
        Asset::new("USDT").expect("a"),
    );
    // users 4, 1, 2, 3 live on shards 0, 1, 2, 3
    for (user, asset, amount) in [
        (1u64, btc, "1"),
        (4, btc, "0.5"),
        (2, usdt, "10000"),
        (3, usdt, "5000"),
    ] {
        credit_deposit(
            &p.env.map,
            UserId::new(user).expect("u"),
            &asset,
            amt(amount),
            &format!("dep-{user}"),
        )
        .await
        .expect("deposit");
    }
    let sell1 = p
        .place(req(
            1,
            Side::Sell,
            OrderType::Limit,
            Some("50000"),
            Some("0.5"),
            None,
        ))
        .await;
    let sell4 = p
        .place(req(
            4,
            Side::Sell,
            OrderType::Limit,
            Some("50100"),
            Some("0.2"),
            None,
        ))
        .await;
    // user 2 buys 0.15 @ up to 50200 (freezes 7530): fills at 50000 (price improvement)
    let buy2 = p
        .place(req(
            2,
            Side::Buy,
            OrderType::Limit,
            Some("50200"),
            Some("0.15"),
            None,
        ))
        .await;
    // user 3 spends exactly 5000 USDT at market: 0.1 BTC at 50000
    let buy3 = p
        .place(req(
            3,
            Side::Buy,
            OrderType::Market,
            None,
            None,
            Some("5000"),
        ))
        .await;
    // nobody else can cancel user 1's order; finished orders cannot be cancelled
    let u = |id| UserId::new(id).expect("u");
    assert_eq!(
        p.placer
            .cancel(u(2), "BTCUSDT".parse().expect("symbol"), sell1)
            .await
            .expect("cancel"),
        Err(Reject::UnknownOrder)
    );
    assert_eq!(
        p.placer
            .cancel(u(2), "BTCUSDT".parse().expect("symbol"), buy2)
            .await
            .expect("cancel"),
        Err(Reject::UnknownOrder),
        "already filled"
    );
    // user 1 cancels the rest of its sell, through the outbox and the matcher
    p.placer
        .cancel(u(1), "BTCUSDT".parse().expect("symbol"), sell1)
        .await
        .expect("cancel")
        .expect("accepted");
    p.pump().await;

    // balances, by hand (fees 0.1 % maker and taker, in the asset received)
    assert_eq!(
        p.balance(2, "USDT").await,
        (amt("2500"), Amount::ZERO),
        "7530 frozen, 7500 spent, 30 back"
    );
    assert_eq!(
        p.balance(2, "BTC").await,
        (amt("0.14985"), Amount::ZERO),
        "0.15 minus 0.00015 fee"
    );
    assert_eq!(p.balance(3, "USDT").await, (Amount::ZERO, Amount::ZERO));
    assert_eq!(p.balance(3, "BTC").await, (amt("0.0999"), Amount::ZERO));
    assert_eq!(
        p.balance(1, "BTC").await,
        (amt("0.75"), Amount::ZERO),
        "0.25 sold, 0.25 released by the cancel"
    );
    assert_eq!(
        p.balance(1, "USDT").await,
        (amt("12487.5"), Amount::ZERO),
        "12500 minus 12.5 maker fees"
    );
    assert_eq!(
        p.balance(4, "BTC").await,
        (amt("0.3"), amt("0.2")),
        "order still open"
    );
    assert_eq!(p.fees(2, "BTC").await, amt("0.00015"));
    assert_eq!(p.fees(3, "BTC").await, amt("0.0001"));
    assert_eq!(p.fees(1, "USDT").await, amt("12.5"));

    // private events: user 2's buy filled at 50000 (maker sell1), fee 0.00015 BTC; the
    // last balance event of each of its assets is the balance on the shard
    let buy2_reports: Vec<_> = p
        .user_events
        .iter()
        .filter(|e| matches!(e, UserEvent::Order { order_id, .. } if *order_id == buy2))
        .collect();
    let Some(UserEvent::Order {
        status,
        filled_qty,
        filled_quote,
        fills,
        user_id,
        ..
    }) = buy2_reports.last()
    else {
        panic!("no execution report for user 2's buy: {:?}", p.user_events);
    };
    assert_eq!(
        (*user_id, *status, *filled_qty, *filled_quote),
        (2, OrderStatus::Filled, amt("0.15"), amt("7500"))
    );
    assert_eq!(fills.len(), 1);
    assert_eq!(
        (
            fills[0].price,
            fills[0].qty,
            fills[0].fee,
            fills[0].is_maker
        ),
        (amt("50000"), amt("0.15"), amt("0.00015"), false)
    );
    // (user 4 only froze funds at placement: the placer's caller reports that)
    for (user, asset) in [(2u64, "USDT"), (2, "BTC"), (1, "BTC"), (1, "USDT")] {
        let last = p.user_events.iter().rev().find_map(|e| match e {
            UserEvent::Balance {
                user_id,
                asset: a,
                available,
                frozen,
            } if *user_id == user && a.as_str() == asset => Some((*available, *frozen)),
            _ => None,
        });
        assert_eq!(
            last,
            Some(p.balance(user, asset).await),
            "balance event of user {user} {asset}"
        );
    }
    assert!(
        p.user_events.iter().all(|e| e.user_id() != FEE_ACCOUNT),
        "fee accounts have no stream"
    );

    // orders
    let router = TableRouter::new(&["BTCUSDT"]).expect("r");
    let sym = Symbol::new("BTCUSDT").expect("s");
    for (user, id, status, filled, frozen) in [
        (1u64, sell1, "canceled", "0.25", "0"),
        (4, sell4, "new", "0", "0.2"),
        (2, buy2, "filled", "0.15", "0"),
        (3, buy3, "filled", "0.1", "0"),
    ] {
        let table = router.orders_table(&sym, id).expect("table");
        let (s, f, fr): (String, String, String) = sqlx::query_as(&format!(
            "SELECT CAST(status AS CHAR), CAST(filled_quantity AS CHAR), CAST(frozen_amount AS CHAR) FROM `{table}` WHERE order_id = ?"
        ))
        .bind(id.get())
        .fetch_one(p.env.map.pool_for(UserId::new(user).expect("u")))
        .await
        .expect("order");
        assert_eq!(
            (s.as_str(), amt(&f), amt(&fr)),
            (status, amt(filled), amt(frozen)),
            "order of user {user}"
        );
    }
    // trade rows: one per side on each side's shard
    let mut trade_rows = 0;
    for (_, pool) in p.env.map.iter() {
        let table = router
            .table(
                router::TableKind::Trades,
                &sym,
                router::Month::of_id(buy2.get()).expect("m"),
            )
            .expect("t");
        let (n,): (i64,) = sqlx::query_as(&format!("SELECT COUNT(*) FROM `{table}`"))
            .fetch_one(pool)
            .await
            .expect("n");
        trade_rows += n;
    }
    assert_eq!(trade_rows, 4, "two trades, two halves each");
    // the ledger explains the balances: Σ available changes per user/asset = available
    let (sum,): (String,) = sqlx::query_as(
        "SELECT CAST(SUM(amount) AS CHAR) FROM account_transactions WHERE user_id = 2 AND currency = 'USDT' AND type <> 'trade'",
    )
    .fetch_one(p.env.map.pool_for(UserId::new(2).expect("u")))
    .await
    .expect("ledger");
    assert_eq!(amt(&sum), amt("2500"), "deposit - freeze + unfreeze");

    // redelivery: every batch again changes nothing
    let before = conservation(&p.env.map).await.expect("audit");
    for (shard, batch) in p.batches.clone() {
        let r = p.settlers[usize::from(shard.get())]
            .apply(&batch)
            .await
            .expect("again");
        assert_eq!((r.applied, r.skipped), (0, batch.events.len()));
    }
    assert_eq!(p.balance(2, "BTC").await, (amt("0.14985"), Amount::ZERO));
    let audit = conservation(&p.env.map).await.expect("audit");
    assert_eq!(audit, before);
    for (asset, t) in &audit {
        assert!(t.holds(), "{asset}: {t:?}");
    }
    assert_eq!(audit["BTC"].balances, amt("1.5"));
    // a batch of another matcher stream (e.g. a second matcher for the same symbol) is
    // refused loudly, never skipped or applied
    let (shard, mut other) = p.batches[0].clone();
    other.stream = "another-stream".into();
    let err = p.settlers[usize::from(shard.get())]
        .apply(&other)
        .await
        .expect_err("refused");
    assert!(
        matches!(err, engine::settle::SettleError::Inconsistent(_)),
        "{err}"
    );
    assert_eq!(conservation(&p.env.map).await.expect("audit"), audit);
    assert_eq!(audit["USDT"].balances, amt("15000"));
    // every user's ledger (and each shard's fee account's) replays to its balance
    let replay = ledger::audit::ledger_replay(&p.env.map)
        .await
        .expect("ledger replay");
    assert!(replay.holds(), "ledger replay: {replay:#?}");
    p.env.drop_all().await;
}
