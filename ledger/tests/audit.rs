//! The money audits against the real shards: frozen balances vs open orders and
//! withdrawals, trade halves, and `shardctl audit` (exit code) on top of them. Each
//! test builds a small clean state (deposits, a freeze held by an open order, one held
//! by a pending withdrawal, a trade with its halves on two shards), checks that every
//! audit passes, plants one defect and checks that exactly it is reported.

mod common;

use std::str::FromStr;

use chrono::Utc;
use domain::{Amount, Asset, ShardId, UserId};
use ledger::audit::{
    conservation, frozen_vs_open_orders, trade_halves, BadOrderHold, FrozenMismatch, HalfProblem,
    MisplacedHalf, OrderHoldProblem,
};
use ledger::balances::{credit_deposit, freeze, Freeze};
use router::{Month, TableKind, TableRouter};
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

    let out = freeze(&env.map, uid(BUYER), &usdt, amt("100"), 3)
        .await
        .expect("freeze");
    assert!(matches!(out, Freeze::Done(_)), "{out:?}");
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

    let out = freeze(&env.map, uid(SELLER), &btc, amt("1"), 3)
        .await
        .expect("freeze");
    assert!(matches!(out, Freeze::Done(_)), "{out:?}");
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
    assert!(!stdout.contains("BROKEN"), "{stdout}");
    // not a terminal: the progress of each scan is a line per shard
    for shard in 0..4 {
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
    env.drop_all().await;
}
