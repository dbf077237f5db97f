//! The money audits against the real shards: frozen balances vs open orders and
//! withdrawals, trade halves, the ledger replay, and `shardctl audit` (exit code) on
//! top of them. Each test builds a small clean state (deposits, a freeze held by an
//! open order, one held by a pending withdrawal, each with its ledger row, a trade
//! with its halves on two shards), checks that every audit passes, plants one defect
//! and checks that exactly it is reported. The replay is also run over what the real
//! writers leave: deposits, transfers, withdrawals, placements and settled trades.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::num::NonZeroU16;
use std::str::FromStr;
use std::sync::Arc;

use chrono::Utc;
use domain::{Amount, Asset, OrderType, ShardId, Side, Symbol, UserId};
use engine::settle::{shards_of, FillBatch, Settler};
use ledger::audit::{
    conservation, frozen_vs_open_orders, ledger_replay, replay_on_shard, trade_halves,
    BadLedgerRow, BadOrderHold, FrozenMismatch, HalfProblem, LedgerMismatch, LedgerRowProblem,
    MisplacedHalf, OrderHoldProblem, REPLAY_PAGE_ROWS,
};
use ledger::balances::{credit_deposit, freeze_on, ledger_on, Freeze};
use ledger::funding;
use ledger::tcc::{BranchResult, Leg, Tcc};
use matcher::wire::OrderInput;
use matcher::{Command, Event, Matcher, SymbolSpec};
use router::{Month, Snowflake, TableKind, TableRouter};
use testkit::TestEnv;

const BUYER: u64 = 1;
const SELLER: u64 = 2;
const ATOM: &str = "0.000000000000000001";

fn amt(s: &str) -> Amount {
    Amount::from_str(s).expect("amount")
}

fn uid(u: u64) -> UserId {
    UserId::new(u).expect("user")
}

/// The month tables of this test (`orders_…`, `trades_…` of BTCUSDT this month).
struct Tables {
    orders: String,
    trades: String,
}

fn shard_of(env: &TestEnv, user: u64) -> ShardId {
    env.map.shard_of(uid(user))
}

#[allow(clippy::too_many_arguments)]
async fn insert_order(
    env: &TestEnv,
    table: &str,
    order_id: u64,
    user: u64,
    side: &str,
    status: &str,
    asset: &str,
    frozen: &str,
) {
    sqlx::query(&format!(
        "INSERT INTO `{table}` (order_id, user_id, symbol, side, type, price, quantity, \
           frozen_currency, frozen_amount, status) \
         VALUES (?, ?, 'BTCUSDT', ?, 'limit', '50000', '0.002', ?, ?, ?)"
    ))
    .bind(order_id)
    .bind(user)
    .bind(side)
    .bind(asset)
    .bind(frozen)
    .bind(status)
    .execute(env.map.pool_for(uid(user)))
    .await
    .expect("insert order");
}

/// One half of trade `trade_id`, on the shard of `user`.
#[allow(clippy::too_many_arguments)]
async fn insert_half(
    env: &TestEnv,
    table: &str,
    trade_id: u64,
    side: &str,
    user: u64,
    counter: u64,
    qty: &str,
    amount: &str,
) {
    insert_half_on(env, user, table, trade_id, side, user, counter, qty, amount).await;
}

/// One half of trade `trade_id`, on the shard of user `on` (its own user's, unless a
/// test misplaces it).
#[allow(clippy::too_many_arguments)]
async fn insert_half_on(
    env: &TestEnv,
    on: u64,
    table: &str,
    trade_id: u64,
    side: &str,
    user: u64,
    counter: u64,
    qty: &str,
    amount: &str,
) {
    sqlx::query(&format!(
        "INSERT INTO `{table}` (trade_id, side, symbol, order_id, user_id, counter_order_id, \
           counter_user_id, price, quantity, amount, is_maker, fee, fee_currency, seq) \
         VALUES (?, ?, 'BTCUSDT', ?, ?, ?, ?, '50000', ?, ?, ?, 0, 'USDT', ?)"
    ))
    .bind(trade_id)
    .bind(side)
    .bind(trade_id * 10 + user)
    .bind(user)
    .bind(trade_id * 10 + counter)
    .bind(counter)
    .bind(qty)
    .bind(amount)
    .bind(side == "sell")
    .bind(trade_id)
    .execute(env.map.pool_for(uid(on)))
    .await
    .expect("insert trade half");
}

/// Freezes `amount` of `user`'s `asset` with its `freeze` ledger row (referring to
/// `ref_type` `ref_id`) in one transaction, as placement and withdrawals do.
async fn freeze_with_row(
    env: &TestEnv,
    user: u64,
    asset: &Asset,
    amount: &str,
    ref_type: &str,
    ref_id: u64,
) {
    let u = uid(user);
    let shard = env.map.shard_of(u).get();
    let mut tx = env.map.pool_for(u).begin().await.expect("begin");
    let out = freeze_on(&mut tx, shard, u, asset, amt(amount), 3)
        .await
        .expect("freeze");
    let Freeze::Done(after) = out else {
        panic!("{out:?}")
    };
    ledger_on(
        &mut tx,
        shard,
        u,
        asset,
        "freeze",
        -amt(amount),
        after.available,
        ref_type,
        ref_id,
    )
    .await
    .expect("ledger row");
    tx.commit().await.expect("commit");
}

async fn exec(env: &TestEnv, user: u64, sql: &str) {
    sqlx::query(sql)
        .execute(env.map.pool_for(uid(user)))
        .await
        .expect("plant");
}

/// A clean state: buyer (shard 1) deposited 1000 USDT and has 100 frozen by an open
/// buy order (and a filled order holding nothing); seller (shard 2) deposited 5 BTC
/// and has 1 frozen by a pending withdrawal; trade 1 has its buy half on the buyer's
/// shard and its sell half on the seller's.
async fn clean_state(name: &str) -> (TestEnv, Tables) {
    let env = TestEnv::new(name).await;
    assert_ne!(
        shard_of(&env, BUYER),
        shard_of(&env, SELLER),
        "needs two shards"
    );
    let router = TableRouter::new(&["BTCUSDT", "ETHUSDT"]).expect("router");
    let now = Utc::now();
    env.map
        .ensure_tables(&router, now, 0)
        .await
        .expect("ensure tables");
    let sym = router.symbol("BTCUSDT").expect("symbol");
    let month = Month::of(now);
    let tables = Tables {
        orders: router
            .table(TableKind::Orders, &sym, month)
            .expect("t")
            .to_string(),
        trades: router
            .table(TableKind::Trades, &sym, month)
            .expect("t")
            .to_string(),
    };
    let (usdt, btc) = (
        Asset::new("USDT").expect("a"),
        Asset::new("BTC").expect("a"),
    );
    credit_deposit(&env.map, uid(BUYER), &usdt, amt("1000"), "tx-buyer")
        .await
        .expect("deposit");
    credit_deposit(&env.map, uid(SELLER), &btc, amt("5"), "tx-seller")
        .await
        .expect("deposit");

    freeze_with_row(&env, BUYER, &usdt, "100", "order", 101).await;
    insert_order(
        &env,
        &tables.orders,
        101,
        BUYER,
        "buy",
        "new",
        "USDT",
        "100",
    )
    .await;
    insert_order(
        &env,
        &tables.orders,
        102,
        BUYER,
        "buy",
        "filled",
        "USDT",
        "0",
    )
    .await;

    freeze_with_row(&env, SELLER, &btc, "1", "withdraw", 9001).await;
    exec(
        &env,
        SELLER,
        "INSERT INTO withdrawals (withdrawal_id, user_id, currency, amount, fee, actual_amount, chain, to_address, status) \
         VALUES (9001, 2, 'BTC', '1', '0.0005', '0.9995', 'BTC', 'bc1q', 'pending')",
    )
    .await;

    insert_half(&env, &tables.trades, 1, "buy", BUYER, SELLER, "0.001", "50").await;
    insert_half(
        &env,
        &tables.trades,
        1,
        "sell",
        SELLER,
        BUYER,
        "0.001",
        "50",
    )
    .await;
    (env, tables)
}

async fn assert_all_hold(env: &TestEnv) {
    for (asset, t) in conservation(&env.map).await.expect("conservation") {
        assert!(t.holds(), "{asset}: {t:?}");
    }
    let frozen = frozen_vs_open_orders(&env.map).await.expect("frozen");
    assert!(frozen.holds(), "{frozen:#?}");
    let halves = trade_halves(&env.map).await.expect("halves");
    assert!(halves.holds(), "{halves:#?}");
    let replay = ledger_replay(&env.map).await.expect("replay");
    assert!(replay.holds(), "{replay:#?}");
}

#[tokio::test]
async fn a_clean_state_passes_every_check() {
    let (env, tables) = clean_state("auditclean").await;
    assert_all_hold(&env).await;

    let frozen = frozen_vs_open_orders(&env.map).await.expect("frozen");
    assert_eq!(frozen.shards, env.map.count());
    // 2 symbols × 1 month on every shard
    assert_eq!(frozen.order_tables, 2 * usize::from(env.map.count()));
    assert_eq!(frozen.open_orders, 1);
    assert_eq!(frozen.holding_withdrawals, 1);
    assert_eq!(
        frozen.pairs_checked, 2,
        "the buyer's USDT and the seller's BTC"
    );

    let halves = trade_halves(&env.map).await.expect("halves");
    assert_eq!(halves.tables.len(), 2, "trades tables of both symbols");
    assert_eq!((halves.buy_halves(), halves.sell_halves()), (1, 1));
    let t = halves.table(&tables.trades).expect("the trades table");
    assert!(!t.checked_per_trade, "{t:?}");
    let buy = t.buy.expect("buy totals");
    assert_eq!(
        (buy.count, buy.quantity, buy.amount),
        (1, amt("0.001"), amt("50"))
    );
    assert_eq!(t.buy, t.sell);

    let replay = ledger_replay(&env.map).await.expect("replay");
    assert_eq!(replay.shards, env.map.count());
    assert_eq!(
        (replay.rows, replay.pairs_checked),
        (4, 2),
        "a deposit and a freeze each of the buyer's USDT and the seller's BTC"
    );
    env.drop_all().await;
}

#[tokio::test]
async fn a_frozen_balance_one_atom_off_its_open_orders_is_reported_exactly() {
    let (env, tables) = clean_state("auditfrozen").await;
    // one atom moves from available to frozen: conservation cannot see it
    exec(
        &env,
        BUYER,
        &format!(
            "UPDATE account_balances SET available = available - {ATOM}, frozen = frozen + {ATOM} \
             WHERE user_id = {BUYER} AND currency = 'USDT'"
        ),
    )
    .await;
    // and an open order holds ETH its user has no balance row for
    insert_order(
        &env,
        &tables.orders,
        201,
        6,
        "sell",
        "partially_filled",
        "ETH",
        "0.002",
    )
    .await;
    for (asset, t) in conservation(&env.map).await.expect("conservation") {
        assert!(t.holds(), "{asset}: {t:?}");
    }

    let frozen = frozen_vs_open_orders(&env.map).await.expect("frozen");
    assert!(frozen.bad_orders.is_empty(), "{frozen:#?}");
    assert_eq!(
        frozen.mismatches,
        vec![
            FrozenMismatch {
                shard: shard_of(&env, BUYER),
                user_id: BUYER,
                asset: "USDT".into(),
                frozen_balance: amt("100.000000000000000001"),
                expected: amt("100"),
                orders_part: amt("100"),
                withdrawals_part: Amount::ZERO,
                transfers_part: Amount::ZERO,
            },
            FrozenMismatch {
                shard: shard_of(&env, 6),
                user_id: 6,
                asset: "ETH".into(),
                frozen_balance: Amount::ZERO,
                expected: amt("0.002"),
                orders_part: amt("0.002"),
                withdrawals_part: Amount::ZERO,
                transfers_part: Amount::ZERO,
            },
        ]
    );
    assert_eq!(frozen.pairs_checked, 3, "two rows + one hold without a row");
    assert!(!frozen.holds());
    env.drop_all().await;
}

#[tokio::test]
async fn a_withdrawal_hold_is_counted_and_a_missing_one_is_reported() {
    let (env, _tables) = clean_state("auditwithdraw").await;
    // the withdrawal completes without its funds leaving the frozen balance
    exec(
        &env,
        SELLER,
        "UPDATE withdrawals SET status = 'completed' WHERE withdrawal_id = 9001",
    )
    .await;
    let frozen = frozen_vs_open_orders(&env.map).await.expect("frozen");
    assert_eq!(
        frozen.mismatches,
        vec![FrozenMismatch {
            shard: shard_of(&env, SELLER),
            user_id: SELLER,
            asset: "BTC".into(),
            frozen_balance: amt("1"),
            expected: Amount::ZERO,
            orders_part: Amount::ZERO,
            withdrawals_part: Amount::ZERO,
            transfers_part: Amount::ZERO,
        }]
    );
    assert_eq!(frozen.holding_withdrawals, 0);
    env.drop_all().await;
}

#[tokio::test]
async fn a_final_order_holding_funds_and_a_negative_open_hold_are_reported() {
    let (env, tables) = clean_state("auditorders").await;
    insert_order(
        &env,
        &tables.orders,
        103,
        BUYER,
        "buy",
        "canceled",
        "USDT",
        "3",
    )
    .await;
    let frozen = frozen_vs_open_orders(&env.map).await.expect("frozen");
    assert!(frozen.mismatches.is_empty(), "{frozen:#?}");
    assert_eq!(
        frozen.bad_orders,
        vec![BadOrderHold {
            shard: shard_of(&env, BUYER),
            table: tables.orders.clone(),
            order_id: 103,
            user_id: BUYER,
            status: "canceled".into(),
            asset: "USDT".into(),
            frozen_amount: amt("3"),
            needs: None,
            problem: OrderHoldProblem::FinalStillHolds,
        }]
    );

    // an open order holding a negative amount: reported as such, and its balance too
    insert_order(
        &env,
        &tables.orders,
        104,
        SELLER,
        "sell",
        "new",
        "BTC",
        "-0.5",
    )
    .await;
    let frozen = frozen_vs_open_orders(&env.map).await.expect("frozen");
    let kinds: Vec<(u64, OrderHoldProblem)> = frozen
        .bad_orders
        .iter()
        .map(|o| (o.order_id, o.problem))
        .collect();
    assert_eq!(
        kinds,
        [
            (103, OrderHoldProblem::FinalStillHolds),
            (104, OrderHoldProblem::NegativeOpen)
        ]
    );
    assert_eq!(frozen.mismatches.len(), 1, "{frozen:#?}");
    assert_eq!(frozen.mismatches[0].user_id, SELLER);
    assert_eq!(frozen.mismatches[0].expected, amt("0.5"));
    env.drop_all().await;
}

#[tokio::test]
async fn an_open_order_holding_other_than_its_remaining_quantity_needs_is_reported() {
    let (env, tables) = clean_state("auditneeds").await;
    // 101 (clean state) is a limit buy of 0.002 at 50000 holding 100 USDT: right.
    // A partly filled limit buy holding the whole price × quantity still, and a sell
    // holding an atom more than its remaining base
    for (id, user, side, asset, frozen) in [
        (301u64, BUYER, "buy", "USDT", "100"),
        (302, SELLER, "sell", "BTC", "0.001000000000000001"),
    ] {
        insert_order(
            &env,
            &tables.orders,
            id,
            user,
            side,
            "partially_filled",
            asset,
            frozen,
        )
        .await;
    }
    for (user, id) in [(BUYER, 301), (SELLER, 302)] {
        let sql = format!(
            "UPDATE `{}` SET filled_quantity = 0.001 WHERE order_id = {id}",
            tables.orders
        );
        exec(&env, user, &sql).await;
    }
    let frozen = frozen_vs_open_orders(&env.map).await.expect("frozen");
    let found: Vec<(u64, OrderHoldProblem, Option<Amount>)> = frozen
        .bad_orders
        .iter()
        .map(|o| (o.order_id, o.problem, o.needs))
        .collect();
    assert_eq!(
        found,
        [
            (301, OrderHoldProblem::NotWhatItNeeds, Some(amt("50"))),
            (302, OrderHoldProblem::NotWhatItNeeds, Some(amt("0.001"))),
        ],
        "{frozen:#?}"
    );
    assert!(!frozen.holds());
    // put right, the orders pass (the balances still disagree: another check)
    for (user, id, needs) in [(BUYER, 301, "50"), (SELLER, 302, "0.001")] {
        let sql = format!(
            "UPDATE `{}` SET frozen_amount = {needs} WHERE order_id = {id}",
            tables.orders
        );
        exec(&env, user, &sql).await;
    }
    let frozen = frozen_vs_open_orders(&env.map).await.expect("frozen");
    assert!(frozen.bad_orders.is_empty(), "{frozen:#?}");
    env.drop_all().await;
}

#[tokio::test]
async fn a_trade_half_on_another_shard_than_its_users_is_reported() {
    let (env, tables) = clean_state("auditplace").await;
    // trade 4: both halves agree, but the buyer's half was written on the seller's shard
    insert_half(
        &env,
        &tables.trades,
        4,
        "sell",
        SELLER,
        BUYER,
        "0.001",
        "50",
    )
    .await;
    insert_half_on(
        &env,
        SELLER,
        &tables.trades,
        4,
        "buy",
        BUYER,
        SELLER,
        "0.001",
        "50",
    )
    .await;
    let halves = trade_halves(&env.map).await.expect("halves");
    assert!(
        halves.offenders.is_empty(),
        "the halves pair up: {halves:#?}"
    );
    assert!(!halves.holds());
    assert_eq!(
        halves.misplaced,
        vec![MisplacedHalf {
            shard: shard_of(&env, SELLER),
            table: tables.trades.clone(),
            trade_id: 4,
            side: "buy".into(),
            user_id: BUYER,
            belongs_on: shard_of(&env, BUYER),
        }]
    );
    env.drop_all().await;
}

#[tokio::test]
async fn missing_and_disagreeing_trade_halves_are_reported() {
    let (env, tables) = clean_state("audithalves").await;
    // trade 2: only the buy half was written
    insert_half(&env, &tables.trades, 2, "buy", BUYER, SELLER, "0.001", "50").await;
    // trade 3: the halves disagree on the quantity (equal amounts)
    insert_half(&env, &tables.trades, 3, "buy", BUYER, SELLER, "0.001", "50").await;
    insert_half(
        &env,
        &tables.trades,
        3,
        "sell",
        SELLER,
        BUYER,
        "0.002",
        "50",
    )
    .await;

    let halves = trade_halves(&env.map).await.expect("halves");
    assert!(!halves.holds());
    let found: Vec<(&str, u64, HalfProblem)> = halves
        .offenders
        .iter()
        .map(|o| (o.table.as_str(), o.trade_id, o.problem))
        .collect();
    assert_eq!(
        found,
        [
            (tables.trades.as_str(), 2, HalfProblem::MissingSell),
            (tables.trades.as_str(), 3, HalfProblem::Disagree)
        ]
    );
    let t3 = &halves.offenders[1];
    let rows: Vec<(ShardId, &str, Amount)> = t3
        .halves
        .iter()
        .map(|h| (h.shard, h.side.as_str(), h.quantity))
        .collect();
    assert!(rows.contains(&(shard_of(&env, BUYER), "buy", amt("0.001"))));
    assert!(rows.contains(&(shard_of(&env, SELLER), "sell", amt("0.002"))));
    assert_eq!((halves.buy_halves(), halves.sell_halves()), (3, 2));
    assert!(
        halves
            .table(&tables.trades)
            .expect("table")
            .checked_per_trade
    );
    env.drop_all().await;
}

// ---------------------------------------------------------------- ledger replay ---

/// The in-process pipeline of `engine/tests/settlement.rs`: every new outbox row of
/// every shard through one BTCUSDT matcher, each shard's share of the events settled
/// by that shard's real settler.
struct Pipe {
    matcher: Matcher,
    settlers: Vec<Settler>,
    sent: BTreeMap<u16, u64>,
    symbol: Symbol,
}

impl Pipe {
    fn new(p: &testkit::Placement) -> Self {
        let specs: BTreeMap<Symbol, SymbolSpec> = p
            .symbols
            .iter()
            .map(|(s, c)| (*s, c.spec.clone()))
            .collect();
        let symbol = Symbol::new("BTCUSDT").expect("symbol");
        let count = NonZeroU16::new(p.env.map.count()).expect("count");
        let settlers = p
            .env
            .map
            .iter()
            .map(|(shard, pool)| {
                Settler::new(shard, count, pool.clone(), p.router.clone(), specs.clone())
            })
            .collect();
        Self {
            matcher: Matcher::new(specs[&symbol].clone()),
            settlers,
            sent: BTreeMap::new(),
            symbol,
        }
    }

    async fn pump(&mut self, env: &TestEnv) {
        let mut events = Vec::new();
        for (shard, pool) in env.map.iter() {
            let from = self.sent.get(&shard.get()).copied().unwrap_or(0);
            let rows: Vec<(u64, Vec<u8>)> =
                sqlx::query_as("SELECT seq, payload FROM outbox WHERE seq > ? ORDER BY seq")
                    .bind(from)
                    .fetch_all(pool)
                    .await
                    .expect("outbox");
            for (seq, payload) in rows {
                let cmd = match OrderInput::decode(&payload).expect("decode") {
                    OrderInput::Place { order, .. } => Command::Place(order),
                    OrderInput::Cancel {
                        order_id, user_id, ..
                    } => Command::Cancel { order_id, user_id },
                };
                assert!(self
                    .matcher
                    .apply_sourced(u32::from(shard.get()), seq, &cmd, &mut events));
                self.sent.insert(shard.get(), seq);
            }
        }
        let count = NonZeroU16::new(env.map.count()).expect("count");
        let mut per_shard: BTreeMap<ShardId, Vec<Event>> = BTreeMap::new();
        for e in events {
            for shard in shards_of(&e, count) {
                per_shard.entry(shard).or_default().push(e.clone());
            }
        }
        for (shard, events) in per_shard {
            let batch = FillBatch::new("in-process", self.matcher.spec().clone(), events);
            self.settlers[usize::from(shard.get())]
                .apply(&batch)
                .await
                .expect("settle");
        }
    }
}

/// Reports and fully confirms a deposit (`ledger::funding`).
async fn fund(env: &TestEnv, user: u64, asset: &str, amount: &str, txid: &str) {
    funding::report_deposit(
        &env.map,
        uid(user),
        asset,
        "SIM",
        txid,
        "from",
        "to",
        amount,
    )
    .await
    .expect("report");
    let d = funding::confirm_deposit(&env.map, txid, asset, 100)
        .await
        .expect("confirm");
    assert_eq!(d.status, "completed");
}

/// (rows, distinct (user, asset)) of the spot ledger over every shard.
async fn ledger_size(env: &TestEnv) -> (u64, u64) {
    let mut total = (0, 0);
    for (_, pool) in env.map.iter() {
        let (rows, pairs): (i64, i64) = sqlx::query_as(
            "SELECT COUNT(*), COUNT(DISTINCT user_id, currency) FROM account_transactions",
        )
        .fetch_one(pool)
        .await
        .expect("count");
        total.0 += u64::try_from(rows).expect("rows");
        total.1 += u64::try_from(pairs).expect("pairs");
    }
    total
}

/// Every shard replayed in pages of 1, 2, 3 and 7 rows gives what the default page
/// gives (rows of one statement share a millisecond: such a group larger than a page
/// makes the page grow).
async fn pages_agree(env: &TestEnv) {
    for (shard, _) in env.map.iter() {
        let whole = replay_on_shard(&env.map, shard, REPLAY_PAGE_ROWS)
            .await
            .expect("replay");
        for page in [1, 2, 3, 7] {
            let paged = replay_on_shard(&env.map, shard, page)
                .await
                .expect("replay");
            assert_eq!(paged, whole, "shard {shard}, pages of {page}");
        }
    }
}

/// (id, created_at, ref_id) of `user`'s ledger rows of `asset`, by id.
async fn rows_of(env: &TestEnv, user: u64, asset: &str) -> Vec<(u64, String, Option<u64>)> {
    sqlx::query_as(
        "SELECT id, CAST(created_at AS CHAR), ref_id FROM account_transactions \
         WHERE user_id = ? AND currency = ? ORDER BY id",
    )
    .bind(user)
    .bind(asset)
    .fetch_all(env.map.pool_for(uid(user)))
    .await
    .expect("ledger rows")
}

#[tokio::test]
async fn the_ledger_replays_to_every_balance_after_funding_transfers_and_settled_trades() {
    let p = testkit::placement("auditreplay", 21).await;
    let env = &p.env;
    testkit::users(env, 8).await;
    let (btc, eth) = (Asset::new("BTC").expect("a"), Asset::new("ETH").expect("a"));
    // deposits: internal credits and chain deposits through their confirmations
    testkit::deposit(env, 1, "USDT", "20000").await;
    testkit::deposit(env, 2, "BTC", "1").await;
    fund(env, 1, "BTC", "0.5", "chain-btc-1").await;
    fund(env, 3, "ETH", "2", "chain-eth-3").await;

    // transfers: across shards (freeze, spend, credit), within one (debit, credit), a
    // refused one (nothing), a cancelled one (freeze, unfreeze), one left tried (held)
    let ids = Arc::new(Snowflake::new(0, 22).expect("ids"));
    let tcc = Tcc::new(env.map.clone(), Arc::new(move || ids.next_id()));
    let done = tcc
        .transfer(uid(1), uid(2), "USDT", "500")
        .await
        .expect("cross-shard");
    assert!(!done.local);
    assert!(
        tcc.transfer(uid(1), uid(5), "USDT", "100")
            .await
            .expect("local")
            .local
    );
    assert!(tcc
        .transfer(uid(1), uid(2), "USDT", "1000000")
        .await
        .is_err());
    let cancelled = Leg {
        gid: 4242,
        from: uid(2),
        to: uid(3),
        asset: btc,
        amount: amt("0.1"),
    };
    assert_eq!(
        tcc.try_source(&cancelled).await.expect("try"),
        BranchResult::Done
    );
    tcc.cancel_source(&cancelled).await.expect("cancel");
    tcc.cancel_target(&cancelled).await.expect("cancel");
    let held = Leg {
        gid: 4343,
        from: uid(3),
        to: uid(1),
        asset: eth,
        amount: amt("0.5"),
    };
    assert_eq!(
        tcc.try_source(&held).await.expect("try"),
        BranchResult::Done
    );

    // withdrawals: completed (spent, the fee to the fee account), rejected
    // (unfrozen), one still under review (held)
    funding::add_address(&env.map, uid(3), "ETH", "ETH", "0xabc", None)
        .await
        .expect("address");
    for (id, amount) in [(7001u64, "0.5"), (7002, "0.2"), (7003, "0.1")] {
        funding::request_withdrawal(&env.map, id, uid(3), "ETH", "ETH", "0xabc", amount, None, 0)
            .await
            .expect("request");
    }
    funding::review(&env.map, 7001, true, 900, "ok")
        .await
        .expect("approve");
    funding::process(&env.map, 7001).await.expect("process");
    assert!(
        funding::complete(&env.map, 7001, "0xsent")
            .await
            .expect("complete")
            .changed
    );
    assert!(
        funding::review(&env.map, 7002, false, 900, "no")
            .await
            .expect("reject")
            .changed
    );

    // trades: two resting sells, a buy above both (price improvement released, fees on
    // both sides, the fee accounts credited), a resting buy cancelled
    let mut pipe = Pipe::new(&p);
    let place = |user, side, price: &str, qty: &str| {
        testkit::order_request(user, side, OrderType::Limit, Some(price), Some(qty), None)
    };
    for r in [
        place(2, Side::Sell, "50000", "0.01"),
        place(2, Side::Sell, "50100", "0.01"),
    ] {
        p.placer.place(&r).await.expect("place").expect("accepted");
    }
    pipe.pump(env).await;
    p.placer
        .place(&place(1, Side::Buy, "50200", "0.015"))
        .await
        .expect("place")
        .expect("accepted");
    pipe.pump(env).await;
    let rest = p
        .placer
        .place(&place(1, Side::Buy, "49000", "0.002"))
        .await
        .expect("place")
        .expect("accepted");
    pipe.pump(env).await;
    p.placer
        .cancel(uid(1), pipe.symbol, rest.order_id)
        .await
        .expect("cancel")
        .expect("accepted");
    pipe.pump(env).await;
    // 500 + 250.5 spent of the 753 frozen, 2.5 back at once; the buyer's BTC less
    // 0.1 % of 0.015
    assert_eq!(
        testkit::balance(env, 1, "USDT").await,
        (amt("18649.5"), Amount::ZERO)
    );
    assert_eq!(
        testkit::balance(env, 1, "BTC").await,
        (amt("0.514985"), Amount::ZERO)
    );

    testkit::all_audits_hold(env).await;
    let replay = ledger_replay(&env.map).await.expect("replay");
    assert!(replay.holds(), "{replay:#?}");
    assert_eq!(
        (replay.rows, replay.pairs_checked),
        ledger_size(env).await,
        "every row replayed, every pair compared"
    );
    // every kind of row the writers write is among them
    let mut kinds = BTreeSet::new();
    for (_, pool) in env.map.iter() {
        let rows: Vec<(String, String)> = sqlx::query_as(
            "SELECT DISTINCT CAST(type AS CHAR), ref_type FROM account_transactions",
        )
        .fetch_all(pool)
        .await
        .expect("kinds");
        kinds.extend(rows);
    }
    let want: BTreeSet<(String, String)> = [
        ("deposit", "deposit"),
        ("fee", "fills:BTCUSDT"),
        ("fee", "trade"),
        ("fee", "withdraw"),
        ("freeze", "order"),
        ("freeze", "transfer"),
        ("freeze", "withdraw"),
        ("trade", "trade"),
        ("transfer", "transfer"),
        ("unfreeze", "order"),
        ("unfreeze", "trade"),
        ("unfreeze", "transfer"),
        ("unfreeze", "withdraw"),
        ("withdraw", "withdraw"),
    ]
    .into_iter()
    .map(|(a, b)| (a.to_owned(), b.to_owned()))
    .collect();
    assert_eq!(kinds, want);
    // a settler batch writes several rows of one pair in one statement (one
    // millisecond): a group larger than the small pages below
    let mut largest = 0i64;
    for (_, pool) in env.map.iter() {
        let (n,): (Option<i64>,) = sqlx::query_as(
            "SELECT MAX(n) FROM (SELECT COUNT(*) AS n FROM account_transactions \
             GROUP BY user_id, currency, created_at) g",
        )
        .fetch_one(pool)
        .await
        .expect("groups");
        largest = largest.max(n.unwrap_or(0));
    }
    assert!(largest > 3, "largest group {largest}");
    pages_agree(env).await;
    p.env.drop_all().await;
}

#[tokio::test]
async fn each_ledger_defect_is_reported_exactly_with_the_first_row_that_fails() {
    let (env, _tables) = clean_state("auditreplaybad").await;
    let (usdt, eth) = (
        Asset::new("USDT").expect("a"),
        Asset::new("ETH").expect("a"),
    );
    // user 1 (shard 1): a balance changed without a ledger row, then a real deposit,
    // whose balance_after (read from the balance) shows where the drift came in
    exec(
        &env,
        BUYER,
        &format!("UPDATE account_balances SET available = available + {ATOM} WHERE user_id = 1 AND currency = 'USDT'"),
    )
    .await;
    credit_deposit(&env.map, uid(BUYER), &usdt, amt("10"), "tx-late")
        .await
        .expect("deposit");
    let late = rows_of(&env, BUYER, "USDT").await.pop().expect("row");
    // user 2 (shard 2): a ledger row without the balance change
    exec(
        &env,
        SELLER,
        "INSERT INTO account_transactions (user_id, currency, type, amount, balance_after, ref_type, ref_id) \
         VALUES (2, 'BTC', 'deposit', 1, 5, 'deposit', 77)",
    )
    .await;
    // user 6 (shard 2): a row whose balance_after is an atom off (the balance is right)
    for (amount, tx) in [("3", "tx-6a"), ("4", "tx-6b")] {
        credit_deposit(&env.map, uid(6), &eth, amt(amount), tx)
            .await
            .expect("deposit");
    }
    let off = rows_of(&env, 6, "ETH").await[0].clone();
    exec(
        &env,
        6,
        &format!(
            "UPDATE account_transactions SET balance_after = balance_after + {ATOM} WHERE id = {}",
            off.0
        ),
    )
    .await;
    // user 7 (shard 3): a balance without any ledger row
    exec(
        &env,
        7,
        "INSERT INTO account_balances (user_id, currency, available) VALUES (7, 'ETH', 2)",
    )
    .await;
    // user 3 (shard 3): the clock went back an hour between two rows (consistent
    // otherwise): by time the later row comes first
    exec(
        &env,
        3,
        "INSERT INTO account_balances (user_id, currency, available) VALUES (3, 'BTC', 3)",
    )
    .await;
    exec(
        &env,
        3,
        "INSERT INTO account_transactions (user_id, currency, type, amount, balance_after, ref_type, ref_id) \
         VALUES (3, 'BTC', 'deposit', 1, 3, 'deposit', 31)",
    )
    .await;
    exec(
        &env,
        3,
        "INSERT INTO account_transactions (user_id, currency, type, amount, balance_after, ref_type, ref_id, created_at) \
         VALUES (3, 'BTC', 'deposit', 2, 2, 'deposit', 32, CURRENT_TIMESTAMP(3) - INTERVAL 1 HOUR)",
    )
    .await;
    let clock = rows_of(&env, 3, "BTC").await[0].clone();
    // user 5 (shard 1): the deposit row before a withdrawal's freeze deleted
    credit_deposit(&env.map, uid(5), &eth, amt("2"), "tx-5")
        .await
        .expect("deposit");
    freeze_with_row(&env, 5, &eth, "1.5", "withdraw", 9100).await;
    let [deposit5, freeze5] = <[_; 2]>::try_from(rows_of(&env, 5, "ETH").await).expect("2 rows");
    exec(
        &env,
        5,
        &format!("DELETE FROM account_transactions WHERE id = {}", deposit5.0),
    )
    .await;

    let bad = |row: &(u64, String, Option<u64>),
               kind: &str,
               amount: &str,
               after: &str,
               replayed: (&str, &str),
               problem| BadLedgerRow {
        id: row.0,
        created_at: row.1.clone(),
        kind: kind.into(),
        ref_type: Some(
            if kind == "freeze" {
                "withdraw"
            } else {
                "deposit"
            }
            .into(),
        ),
        ref_id: row.2,
        amount: amt(amount),
        balance_after: amt(after),
        replayed_available: amt(replayed.0),
        replayed_frozen: amt(replayed.1),
        problem,
    };
    #[allow(clippy::too_many_arguments)]
    let mismatch = |user: u64,
                    asset: &str,
                    rows: u64,
                    expected: (&str, &str),
                    actual: (&str, &str),
                    first_bad_row| LedgerMismatch {
        shard: shard_of(&env, user),
        user_id: user,
        asset: asset.into(),
        rows,
        expected_available: amt(expected.0),
        expected_frozen: amt(expected.1),
        available: amt(actual.0),
        frozen: amt(actual.1),
        balance_row: true,
        first_bad_row,
    };
    let replay = ledger_replay(&env.map).await.expect("replay");
    assert!(!replay.holds());
    let want = vec![
        // shard 1
        mismatch(
            BUYER,
            "USDT",
            3,
            ("910", "100"),
            ("910.000000000000000001", "100"),
            Some(bad(
                &late,
                "deposit",
                "10",
                "910.000000000000000001",
                ("910", "100"),
                LedgerRowProblem::BalanceAfter,
            )),
        ),
        mismatch(
            5,
            "ETH",
            1,
            ("-1.5", "1.5"),
            ("0.5", "1.5"),
            Some(bad(
                &freeze5,
                "freeze",
                "-1.5",
                "0.5",
                ("-1.5", "1.5"),
                LedgerRowProblem::Negative,
            )),
        ),
        // shard 2
        mismatch(SELLER, "BTC", 3, ("5", "1"), ("4", "1"), None),
        mismatch(
            6,
            "ETH",
            2,
            ("7", "0"),
            ("7", "0"),
            Some(bad(
                &off,
                "deposit",
                "3",
                "3.000000000000000001",
                ("3", "0"),
                LedgerRowProblem::BalanceAfter,
            )),
        ),
        // shard 3
        mismatch(
            3,
            "BTC",
            2,
            ("3", "0"),
            ("3", "0"),
            Some(bad(
                &clock,
                "deposit",
                "1",
                "3",
                ("3", "0"),
                LedgerRowProblem::OutOfOrder,
            )),
        ),
        mismatch(7, "ETH", 0, ("0", "0"), ("2", "0"), None),
    ];
    assert_eq!(replay.mismatches, want, "{replay:#?}");
    assert_eq!(replay.mismatched_pairs, 6);
    assert!(replay.mismatches[3].balance_matches());
    assert!(!replay.mismatches[0].balance_matches());
    // rows: 4 clean + 1 late deposit + 1 planted + 2 + 2 + 1 (one of user 5's deleted);
    // pairs: 5 with rows + user 7's balance without any
    assert_eq!((replay.rows, replay.pairs_checked), (11, 6));
    pages_agree(&env).await;
    env.drop_all().await;
}

#[tokio::test]
async fn the_replay_reads_a_pair_across_month_partitions_in_pages() {
    let (env, _tables) = clean_state("auditreplaymonths").await;
    let eth = Asset::new("ETH").expect("a");
    // user 6: a deposit now and one dated 40 days ahead (this month's partition and a
    // later one: `ensure_tables` made only this month, the rest is `pmax`), a freeze
    // between them, then seven rows in one statement (one millisecond); all
    // consistent
    credit_deposit(&env.map, uid(6), &eth, amt("1"), "tx-m1")
        .await
        .expect("deposit");
    freeze_with_row(&env, 6, &eth, "0.25", "order", 601).await;
    exec(
        &env,
        6,
        "INSERT INTO account_transactions (user_id, currency, type, amount, balance_after, ref_type, ref_id, created_at) \
         VALUES (6, 'ETH', 'deposit', 2, 2.75, 'deposit', 62, CURRENT_TIMESTAMP(3) + INTERVAL 40 DAY)",
    )
    .await;
    let mut seven = String::from(
        "INSERT INTO account_transactions (user_id, currency, type, amount, balance_after, ref_type, ref_id, created_at) VALUES ",
    );
    for i in 0..7u32 {
        if i > 0 {
            seven.push_str(", ");
        }
        seven.push_str(&format!(
            "(6, 'ETH', 'deposit', 1, {}, 'deposit', {}, CURRENT_TIMESTAMP(3) + INTERVAL 41 DAY)",
            f64::from(i) + 3.75,
            70 + i
        ));
    }
    exec(&env, 6, &seven).await;
    exec(
        &env,
        6,
        "UPDATE account_balances SET available = available + 9 WHERE user_id = 6 AND currency = 'ETH'",
    )
    .await;
    assert_eq!(
        testkit::balance(&env, 6, "ETH").await,
        (amt("9.75"), amt("0.25"))
    );
    let replay = ledger_replay(&env.map).await.expect("replay");
    assert!(replay.holds(), "{replay:#?}");
    assert_eq!((replay.rows, replay.pairs_checked), (4 + 10, 3));
    pages_agree(&env).await;
    // one atom off in the last of the seven: found however the pages fall
    exec(
        &env,
        6,
        &format!("UPDATE account_balances SET available = available - {ATOM} WHERE user_id = 6 AND currency = 'ETH'"),
    )
    .await;
    for page in [1, 2, 3, 7, REPLAY_PAGE_ROWS] {
        let r = replay_on_shard(&env.map, shard_of(&env, 6), page)
            .await
            .expect("replay");
        let found: Vec<(u64, Amount, Amount)> = r
            .mismatches
            .iter()
            .map(|m| (m.user_id, m.expected_available, m.available))
            .collect();
        assert_eq!(
            found,
            [(6, amt("9.75"), amt("9.749999999999999999"))],
            "pages of {page}"
        );
    }
    env.drop_all().await;
}

fn shardctl_audit(env: &TestEnv) -> std::process::Output {
    common::shardctl(env)
        .arg("audit")
        .output()
        .expect("run shardctl")
}

#[tokio::test]
async fn shardctl_audit_exits_zero_when_clean_and_non_zero_on_a_defect() {
    let (env, tables) = clean_state("auditcli").await;
    let out = shardctl_audit(&env);
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(
        out.status.success(),
        "clean state: {:?}\n{stdout}\n{stderr}",
        out.status
    );
    assert!(stdout.contains("frozen vs open orders"), "{stdout}");
    assert!(stdout.contains("trade halves"), "{stdout}");
    assert!(
        stdout.contains("ledger replay: 4 ledger rows replayed into 2 (user, asset) on 4 shards, 0 offenders: holds"),
        "{stdout}"
    );
    assert!(!stdout.contains("BROKEN"), "{stdout}");
    // not a terminal: the progress of each scan is a line per shard
    for shard in 0..4 {
        assert!(
            stderr.contains(&format!("[audit ledger] shard {shard}: ledger replay:")),
            "{stderr}"
        );
        assert!(
            stderr.contains(&format!("[audit frozen] shard {shard}: frozen:")),
            "{stderr}"
        );
        assert!(
            stderr.contains(&format!("[audit trades] shard {shard}: trade halves:")),
            "{stderr}"
        );
    }

    insert_order(
        &env,
        &tables.orders,
        105,
        BUYER,
        "buy",
        "expired",
        "USDT",
        ATOM,
    )
    .await;
    let out = shardctl_audit(&env);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("BAD ORDER"), "{stdout}");
    assert!(stdout.contains("order 105"), "{stdout}");
    env.drop_all().await;
}

#[tokio::test]
async fn shardctl_audit_fails_on_a_ledger_row_only_the_replay_sees() {
    let (env, _tables) = clean_state("auditclireplay").await;
    // the buyer's freeze row says an atom more was left available than was: every
    // balance is right, so conservation, frozen and trade halves hold
    let (freeze_row, created_at, _) = rows_of(&env, BUYER, "USDT").await[1].clone();
    exec(
        &env,
        BUYER,
        &format!(
            "UPDATE account_transactions SET balance_after = balance_after + {ATOM} WHERE id = {freeze_row}"
        ),
    )
    .await;
    let out = shardctl_audit(&env);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert_eq!(stdout.matches("BROKEN").count(), 1, "{stdout}");
    assert!(
        stdout.contains(&format!(
            "  LEDGER shard 1 user 1 USDT: 2 rows replay to available 900.000000000000000000 \
             frozen 100.000000000000000000, balance is available 900.000000000000000000 \
             frozen 100.000000000000000000; first bad row {freeze_row} ({created_at} freeze \
             -100.000000000000000000 ref order:101, balance_after 900.000000000000000001, \
             replayed available 900.000000000000000000 frozen 100.000000000000000000): BalanceAfter"
        )),
        "{stdout}"
    );

    let out = common::shardctl(&env)
        .args(["--json", "audit"])
        .output()
        .expect("run shardctl");
    assert_eq!(out.status.code(), Some(1));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(
        (
            &r["holds"],
            &r["conservation"]["holds"],
            &r["frozen"]["holds"],
            &r["trade_halves"]["holds"]
        ),
        (
            &serde_json::json!(false),
            &serde_json::json!(true),
            &serde_json::json!(true),
            &serde_json::json!(true)
        ),
        "{r:#}"
    );
    let l = &r["ledger_replay"];
    assert_eq!(l["holds"], false, "{l:#}");
    assert_eq!(l["mismatched_pairs"], 1);
    let bad = &l["mismatches"][0]["first_bad_row"];
    assert_eq!(bad["id"], freeze_row, "{l:#}");
    assert_eq!(bad["problem"], "balance_after");
    assert_eq!(bad["balance_after"], "900.000000000000000001");
    assert_eq!(bad["replayed_available"], "900.000000000000000000");
    env.drop_all().await;
}

#[tokio::test]
async fn shardctl_json_audit_holds_when_clean_and_names_the_offenders_of_a_corrupted_balance() {
    let (env, _tables) = clean_state("auditjson").await;
    let run = |args: &[&str]| {
        let out = common::shardctl(&env)
            .args(args)
            .output()
            .expect("run shardctl");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let report: serde_json::Value = serde_json::from_str(&stdout)
            .unwrap_or_else(|e| panic!("one JSON object on stdout ({e}): {stdout}"));
        (out.status.code(), report, stdout)
    };
    // an exact decimal string (never a JSON number)
    let money = |v: &serde_json::Value| amt(v.as_str().unwrap_or_else(|| panic!("string: {v}")));

    let (code, r, stdout) = run(&["--json", "audit"]);
    assert_eq!(code, Some(0), "{stdout}");
    assert_eq!(r["holds"], true, "{r:#}");
    let c = &r["conservation"];
    assert_eq!(c["holds"], true, "{c:#}");
    let btc = &c["assets"]["BTC"];
    assert_eq!(
        (
            money(&btc["balances"]),
            money(&btc["deposits"]),
            money(&btc["withdrawals"])
        ),
        (amt("5"), amt("5"), Amount::ZERO)
    );
    assert_eq!(btc["holds"], true);
    assert_eq!(money(&c["assets"]["USDT"]["balances"]), amt("1000"));
    let f = &r["frozen"];
    assert_eq!(f["holds"], true, "{f:#}");
    assert_eq!(f["shards"], env.map.count());
    assert_eq!(f["pairs_checked"], 2);
    assert_eq!(f["open_orders"], 1);
    assert_eq!(f["holding_withdrawals"], 1);
    assert_eq!(f["mismatches"], serde_json::json!([]));
    assert_eq!(f["bad_orders"], serde_json::json!([]));
    let h = &r["trade_halves"];
    assert_eq!(h["holds"], true, "{h:#}");
    assert_eq!(h["tables"], 2, "trades tables of both symbols");
    assert_eq!(h["buy_halves"], 1);
    assert_eq!(h["sell_halves"], 1);
    assert_eq!(h["offenders"], serde_json::json!([]));
    let l = &r["ledger_replay"];
    assert_eq!(l["holds"], true, "{l:#}");
    assert_eq!((&l["rows"], &l["pairs_checked"]), (&4.into(), &2.into()));
    assert_eq!(l["mismatches"], serde_json::json!([]));
    // the flag after the subcommand works as well
    let (code, after, _) = run(&["audit", "--json"]);
    assert_eq!((code, &after), (Some(0), &r));

    // one atom moves from the buyer's available to frozen (no open order holds it),
    // and the seller's BTC gains an atom out of nowhere
    exec(
        &env,
        BUYER,
        &format!(
            "UPDATE account_balances SET available = available - {ATOM}, frozen = frozen + {ATOM} \
             WHERE user_id = {BUYER} AND currency = 'USDT'"
        ),
    )
    .await;
    exec(
        &env,
        SELLER,
        &format!(
            "UPDATE account_balances SET available = available + {ATOM} \
             WHERE user_id = {SELLER} AND currency = 'BTC'"
        ),
    )
    .await;
    let (code, r, stdout) = run(&["--json", "audit"]);
    assert_eq!(code, Some(1), "{stdout}");
    assert_eq!(r["holds"], false, "{r:#}");
    let c = &r["conservation"];
    assert_eq!(c["holds"], false, "{c:#}");
    let btc = &c["assets"]["BTC"];
    assert_eq!(btc["holds"], false);
    assert_eq!(money(&btc["balances"]), amt("5.000000000000000001"));
    assert_eq!(money(&btc["deposits"]), amt("5"));
    assert_eq!(c["assets"]["USDT"]["holds"], true, "{c:#}");
    let f = &r["frozen"];
    assert_eq!(f["holds"], false, "{f:#}");
    let mismatches = f["mismatches"].as_array().expect("mismatches");
    assert_eq!(mismatches.len(), 1, "{f:#}");
    let m = &mismatches[0];
    assert_eq!(m["shard"], shard_of(&env, BUYER).get());
    assert_eq!(m["user_id"], BUYER);
    assert_eq!(m["asset"], "USDT");
    assert_eq!(money(&m["frozen_balance"]), amt("100.000000000000000001"));
    assert_eq!(money(&m["expected"]), amt("100"));
    assert_eq!(money(&m["orders_part"]), amt("100"));
    assert_eq!(r["trade_halves"]["holds"], true);
    // neither change has a ledger row: the replay names both balances
    let l = &r["ledger_replay"];
    assert_eq!(l["holds"], false, "{l:#}");
    let found: Vec<(u64, String, Amount, Amount, Amount, Amount)> = l["mismatches"]
        .as_array()
        .expect("mismatches")
        .iter()
        .map(|m| {
            assert_eq!(m["first_bad_row"], serde_json::Value::Null, "{m:#}");
            (
                m["user_id"].as_u64().expect("user"),
                m["asset"].as_str().expect("asset").to_owned(),
                money(&m["expected_available"]),
                money(&m["available"]),
                money(&m["expected_frozen"]),
                money(&m["frozen"]),
            )
        })
        .collect();
    assert_eq!(
        found,
        [
            (
                BUYER,
                "USDT".to_owned(),
                amt("900"),
                amt("899.999999999999999999"),
                amt("100"),
                amt("100.000000000000000001")
            ),
            (
                SELLER,
                "BTC".to_owned(),
                amt("4"),
                amt("4.000000000000000001"),
                amt("1"),
                amt("1")
            ),
        ]
    );
    env.drop_all().await;
}
