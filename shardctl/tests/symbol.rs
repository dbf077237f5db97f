//! `shardctl symbol list|halt|resume|rules` as a real process against the real shards
//! (issue 13, defect 1: rule changes made explicit and safe): fee and filter changes
//! apply at any time; a grid change is refused while the symbol trades or while any
//! shard holds one of its open orders, and applied once it is halted and empty; a halt
//! reaches placement through `Placer::reload_symbols` (the gateway's periodic reload);
//! bad rules, unknown symbols and no-op changes get clear errors and change nothing.

mod common;

use std::process::Command;

use domain::{OrderType, Side};
use serde_json::Value;
use trading::placement::{load_symbols, Reject};

fn run(mut c: Command, args: &[&str]) -> (Option<i32>, String, String) {
    let out = c.args(args).output().expect("run shardctl");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn json_lines(stdout: &str) -> Vec<Value> {
    stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("JSON line ({e}): {l}")))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn symbol_rules_change_only_at_a_safe_boundary() {
    let p = testkit::placement("ctlsymbol", 12).await;
    let env = &p.env;
    let btc: domain::Symbol = "BTCUSDT".parse().expect("symbol");
    let eth: domain::Symbol = "ETHUSDT".parse().expect("symbol");
    let rules = || async { load_symbols(env.map.meta()).await.expect("symbols") };
    let before = rules().await;

    // an open BTCUSDT order (no matcher here: it stays open in the database)
    common::deposit(env, 5, "USDT", "1000").await;
    let order = p
        .placer
        .place(&testkit::order_request(
            5,
            Side::Buy,
            OrderType::Limit,
            Some("100"),
            Some("1"),
            None,
        ))
        .await
        .expect("place")
        .expect("accepted");

    // list: every symbol, trading, the open order counted
    let (code, out, err) = run(common::shardctl(env), &["--json", "symbol", "list"]);
    assert_eq!(code, Some(0), "{out}{err}");
    let listed = json_lines(&out);
    assert_eq!(listed.len(), before.len());
    let row = |sym: &str| {
        listed
            .iter()
            .find(|l| l["symbol"] == sym)
            .cloned()
            .expect("listed")
    };
    assert_eq!(row("BTCUSDT")["status"], "trading");
    assert_eq!(row("BTCUSDT")["open_orders"], 1);
    assert_eq!(row("BTCUSDT")["step_size"], "0.00001");
    assert_eq!(row("ETHUSDT")["open_orders"], 0);

    // a fee change applies while trading and with open orders
    let (code, out, err) = run(
        common::shardctl(env),
        &[
            "--json",
            "symbol",
            "rules",
            "BTCUSDT",
            "--taker-fee-ppm",
            "2500",
        ],
    );
    assert_eq!(code, Some(0), "{out}{err}");
    let done = &json_lines(&out)[0];
    assert_eq!(done["applied"], true);
    assert_eq!(done["grid_change"], false);
    assert_eq!(done["changes"][0], "taker_fee_ppm 1000 → 2500");
    assert_eq!(rules().await[&btc].spec.taker_fee_ppm, 2500);

    // a grid change while trading: refused, nothing written
    let (code, out, err) = run(
        common::shardctl(env),
        &[
            "symbol",
            "rules",
            "BTCUSDT",
            "--step-size",
            "0.0001",
            "--min-qty",
            "0.0001",
        ],
    );
    assert_eq!(code, Some(1), "{out}{err}");
    assert!(err.contains("halt BTCUSDT first"), "{err}");
    assert_eq!(
        rules().await[&btc].spec.step_size,
        before[&btc].spec.step_size
    );

    // halted: placement refuses new orders once it reloads
    let (code, out, err) = run(common::shardctl(env), &["symbol", "halt", "BTCUSDT"]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("BTCUSDT: halted"), "{out}");
    let changed = p
        .placer
        .reload_symbols(env.map.meta())
        .await
        .expect("reload");
    assert_eq!(changed, vec![btc]);
    let refused = p
        .placer
        .place(&testkit::order_request(
            5,
            Side::Buy,
            OrderType::Limit,
            Some("100"),
            Some("1"),
            None,
        ))
        .await
        .expect("place");
    assert_eq!(refused, Err(Reject::Halted(btc)));

    // halted, but an order is still open on a shard: refused, naming it
    let (code, out, err) = run(
        common::shardctl(env),
        &[
            "symbol",
            "rules",
            "BTCUSDT",
            "--step-size",
            "0.0001",
            "--min-qty",
            "0.0001",
        ],
    );
    assert_eq!(code, Some(1), "{out}{err}");
    assert!(
        err.contains("1 orders of BTCUSDT are still open")
            && err.contains(&format!("order {}", order.order_id)),
        "{err}"
    );
    assert_eq!(
        rules().await[&btc].spec.step_size,
        before[&btc].spec.step_size
    );

    // ETHUSDT: halted and empty, the grid changes; a dry run first writes nothing
    let (code, out, err) = run(common::shardctl(env), &["symbol", "halt", "ETHUSDT"]);
    assert_eq!(code, Some(0), "{out}{err}");
    let change = [
        "symbol",
        "rules",
        "ETHUSDT",
        "--step-size",
        "0.001",
        "--min-qty",
        "0.001",
    ];
    let (code, out, err) = run(
        common::shardctl(env),
        &[&change[..], &["--dry-run"]].concat(),
    );
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("would change (dry run)"), "{out}");
    assert_eq!(
        rules().await[&eth].spec.step_size,
        before[&eth].spec.step_size
    );
    let (code, out, err) = run(common::shardctl(env), &change);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(
        out.contains("step_size 0.0001 → 0.001") && out.contains("min_qty 0.0001 → 0.001"),
        "{out}"
    );
    let now = rules().await;
    assert_eq!(now[&eth].spec.step_size, "0.001".parse().expect("step"));
    assert_eq!(now[&eth].min_qty, "0.001".parse().expect("min"));
    assert!(!now[&eth].trading);
    let (code, out, err) = run(common::shardctl(env), &["symbol", "resume", "ETHUSDT"]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(rules().await[&eth].trading);

    // bad input: rules that do not form a grid, a filter off the grid, an unknown
    // symbol, nothing to change — each a clear error, nothing written
    let after = rules().await;
    for (args, says) in [
        (
            vec!["symbol", "rules", "BTCUSDT", "--tick-size", "0.000000001"],
            "not valid",
        ),
        (
            vec!["symbol", "rules", "BTCUSDT", "--min-qty", "0.000015"],
            "must lie on the step grid",
        ),
        (
            vec!["symbol", "rules", "BTCUSDT", "--maker-fee-ppm", "2000000"],
            "fee above 100 %",
        ),
        (
            vec!["symbol", "rules", "BTCUSDT", "--tick-size=-1"],
            "--tick-size",
        ),
        (
            vec!["symbol", "rules", "NOPE", "--taker-fee-ppm", "1"],
            "no symbol NOPE",
        ),
        (
            vec!["symbol", "rules", "BTCUSDT", "--taker-fee-ppm", "2500"],
            "nothing to change",
        ),
        (vec!["symbol", "halt", "btc'usdt"], "symbol"),
    ] {
        let (code, out, err) = run(common::shardctl(env), &args);
        assert_eq!(code, Some(1), "{args:?}: {out}{err}");
        assert!(err.contains(says), "{args:?}: {err}");
    }
    assert_eq!(rules().await, after, "a refused change wrote something");
    common::audits_hold(env).await;
}
