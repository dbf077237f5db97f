//! Transfers between users against the real shards: TCC across shards with its barrier
//! (idempotent, empty rollback, anti-hanging), one transaction on one shard, every bad
//! input refused with nothing changed, a crash (a real `shardctl transfer` process
//! aborted by a failpoint) at every step boundary finished by recovery, and 1,000
//! concurrent random transfers among 100 users while withdrawals complete and get
//! rejected. After each: the money audits hold.

mod common;

use common::{amt, audits_hold, balance, deposit, uid, users};
use std::collections::BTreeMap;
use std::str::FromStr;
use std::sync::Arc;

use domain::{Amount, Asset};
use ledger::tcc::{BranchOp, BranchResult, Leg, Outcome, Tcc, TransferError};
use router::Snowflake;
use testkit::{global_status, TestEnv};

fn tcc(env: &TestEnv, worker: u8) -> Tcc {
    let ids = Arc::new(Snowflake::new(0, worker).expect("ids"));
    Tcc::new(env.map.clone(), Arc::new(move || ids.next_id()))
}

#[tokio::test]
async fn a_cross_shard_transfer_confirms_both_branches_and_a_same_shard_one_is_local() {
    let env = TestEnv::new("tccok").await;
    users(&env, 5).await;
    deposit(&env, 1, "USDT", "100").await;
    let t = tcc(&env, 1);
    // user 1 (shard 1) → user 2 (shard 2)
    let done = t
        .transfer(uid(1), uid(2), "USDT", "30.5")
        .await
        .expect("transfer");
    assert_eq!((done.local, done.outcome), (false, Outcome::Confirmed));
    assert_eq!(global_status(&env, done.gid).await, "confirmed");
    assert_eq!(balance(&env, 1, "USDT").await, (amt("69.5"), Amount::ZERO));
    assert_eq!(balance(&env, 2, "USDT").await, (amt("30.5"), Amount::ZERO));
    // both branches confirmed, each with its ledger rows
    for (user, branch) in [(1u64, "source"), (2, "target")] {
        let (status,): (String,) = sqlx::query_as(
            "SELECT CAST(status AS CHAR) FROM transfers WHERE gid = ? AND branch = ?",
        )
        .bind(done.gid)
        .bind(branch)
        .fetch_one(env.map.pool_for(uid(user)))
        .await
        .expect("branch row");
        assert_eq!(status, "confirmed");
    }
    let rows: Vec<(String, String, String)> = sqlx::query_as(
        "SELECT CAST(type AS CHAR), CAST(amount AS CHAR), CAST(balance_after AS CHAR) FROM account_transactions \
         WHERE user_id = 1 AND currency = 'USDT' ORDER BY id",
    )
    .fetch_all(env.map.pool_for(uid(1)))
    .await
    .expect("ledger");
    let rows: Vec<(String, Amount, Amount)> = rows
        .into_iter()
        .map(|(t, a, b)| (t, amt(&a), amt(&b)))
        .collect();
    assert_eq!(
        rows,
        vec![
            ("deposit".to_owned(), amt("100"), amt("100")),
            ("freeze".to_owned(), amt("-30.5"), amt("69.5")),
            ("transfer".to_owned(), amt("-30.5"), amt("69.5")),
        ],
        "the transfer row spends the frozen amount; available is unchanged by it"
    );
    // user 1 → user 5: both on shard 1, one local transaction, no global
    let local = t
        .transfer(uid(1), uid(5), "USDT", "9.5")
        .await
        .expect("local");
    assert!(local.local);
    let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM tcc_global WHERE gid = ?")
        .bind(local.gid)
        .fetch_one(env.map.meta())
        .await
        .expect("count");
    assert_eq!(n, 0);
    assert_eq!(balance(&env, 1, "USDT").await, (amt("60"), Amount::ZERO));
    assert_eq!(balance(&env, 5, "USDT").await, (amt("9.5"), Amount::ZERO));
    audits_hold(&env).await;
    env.drop_all().await;
}

#[tokio::test]
async fn bad_transfers_are_refused_and_change_nothing() {
    let env = TestEnv::new("tccbad").await;
    users(&env, 4).await;
    deposit(&env, 1, "USDT", "100").await;
    let t = tcc(&env, 2);
    let cases: [(u64, u64, &str, &str, &str); 9] = [
        (1, 1, "USDT", "1", "yourself"),
        (1, 999, "USDT", "1", "unknown user 999"),
        (999, 1, "USDT", "1", "unknown user 999"),
        (1, 2, "USDT", "0", "must be positive"),
        (1, 2, "USDT", "-5", "must be positive"),
        (1, 2, "USDT", "0.000000001", "8 decimal places"),
        (1, 2, "DOGE", "1", "unknown or disabled asset"),
        (1, 2, "USDT", "abc", "invalid amount"),
        (1, 2, "USDT", "100.00000001", "insufficient balance"),
    ];
    for (from, to, asset, amount, why) in cases {
        let r = t.transfer(uid(from), uid(to), asset, amount).await;
        let e = r.expect_err(why);
        assert!(
            e.to_string().contains(why),
            "{from}->{to} {amount} {asset}: {e} (wanted {why:?})"
        );
        assert!(!matches!(e, TransferError::Router(_)), "{e}");
    }
    // the insufficient one went through Try (refused) and Cancel: the global is cancelled
    let (n, cancelled): (i64, i64) = sqlx::query_as(
        "SELECT COUNT(*), CAST(COALESCE(SUM(status = 'cancelled'), 0) AS SIGNED) FROM tcc_global",
    )
    .fetch_one(env.map.meta())
    .await
    .expect("globals");
    assert_eq!((n, cancelled), (1, 1));
    assert_eq!(balance(&env, 1, "USDT").await, (amt("100"), Amount::ZERO));
    assert_eq!(balance(&env, 2, "USDT").await, (Amount::ZERO, Amount::ZERO));
    // a disabled asset does not move (the coordinator re-reads the asset's row)
    sqlx::query("UPDATE assets SET status = 'disabled' WHERE asset = 'USDT'")
        .execute(env.map.meta())
        .await
        .expect("disable");
    let e = tcc(&env, 3)
        .transfer(uid(1), uid(2), "USDT", "1")
        .await
        .expect_err("disabled");
    assert!(matches!(e, TransferError::UnknownAsset(_)), "{e}");
    sqlx::query("UPDATE assets SET status = 'enabled' WHERE asset = 'USDT'")
        .execute(env.map.meta())
        .await
        .expect("enable");
    assert_eq!(balance(&env, 1, "USDT").await, (amt("100"), Amount::ZERO));
    audits_hold(&env).await;
    env.drop_all().await;
}

#[tokio::test]
async fn branch_calls_are_idempotent_and_a_cancel_before_try_blocks_the_late_try() {
    let env = TestEnv::new("tccbarrier").await;
    users(&env, 2).await;
    deposit(&env, 1, "BTC", "1").await;
    let t = tcc(&env, 3);
    let leg = |gid| Leg {
        gid,
        from: uid(1),
        to: uid(2),
        asset: Asset::new("BTC").expect("asset"),
        amount: amt("0.25"),
    };
    // repeated Try and Confirm apply once
    let a = leg(1001);
    assert_eq!(t.try_source(&a).await.expect("try"), BranchResult::Done);
    assert_eq!(
        t.try_source(&a).await.expect("again"),
        BranchResult::Repeated
    );
    assert_eq!(balance(&env, 1, "BTC").await, (amt("0.75"), amt("0.25")));
    assert_eq!(t.try_target(&a).await.expect("try"), BranchResult::Done);
    assert_eq!(
        t.try_target(&a).await.expect("again"),
        BranchResult::Repeated
    );
    audits_hold(&env).await; // the frozen 0.25 is the transfer's hold
    assert_eq!(
        t.confirm_source(&a).await.expect("confirm"),
        BranchResult::Done
    );
    assert_eq!(
        t.confirm_source(&a).await.expect("again"),
        BranchResult::Repeated
    );
    assert_eq!(
        t.confirm_target(&a).await.expect("confirm"),
        BranchResult::Done
    );
    assert_eq!(
        t.confirm_target(&a).await.expect("again"),
        BranchResult::Repeated
    );
    assert_eq!(balance(&env, 1, "BTC").await, (amt("0.75"), Amount::ZERO));
    assert_eq!(balance(&env, 2, "BTC").await, (amt("0.25"), Amount::ZERO));

    // Cancel before Try: empty rollback; the late Try does nothing (anti-hanging)
    let b = leg(1002);
    assert_eq!(
        t.cancel_source(&b).await.expect("cancel"),
        BranchResult::EmptyRollback
    );
    assert_eq!(
        t.cancel_target(&b).await.expect("cancel"),
        BranchResult::EmptyRollback
    );
    assert_eq!(
        t.try_source(&b).await.expect("late try"),
        BranchResult::Hanging
    );
    assert_eq!(
        t.try_target(&b).await.expect("late try"),
        BranchResult::Hanging
    );
    assert_eq!(
        t.cancel_source(&b).await.expect("again"),
        BranchResult::Repeated
    );
    assert_eq!(balance(&env, 1, "BTC").await, (amt("0.75"), Amount::ZERO));

    // Try then Cancel (twice): the hold comes back once
    let c = leg(1003);
    assert_eq!(t.try_source(&c).await.expect("try"), BranchResult::Done);
    assert_eq!(
        t.cancel_source(&c).await.expect("cancel"),
        BranchResult::Done
    );
    assert_eq!(
        t.cancel_source(&c).await.expect("again"),
        BranchResult::Repeated
    );
    assert_eq!(
        t.cancel_target(&c).await.expect("cancel"),
        BranchResult::EmptyRollback
    );
    assert_eq!(balance(&env, 1, "BTC").await, (amt("0.75"), Amount::ZERO));
    // a Confirm of a cancelled branch is refused (a coordinator bug), nothing changes
    assert!(t.confirm_source(&c).await.is_err());
    assert_eq!(balance(&env, 1, "BTC").await, (amt("0.75"), Amount::ZERO));
    audits_hold(&env).await;
    env.drop_all().await;
}

/// Branch calls queued together on one shard share one transaction, but each is
/// judged alone, against the balances the calls before it left: a payer's second Try
/// that no longer fits is refused (and leaves no barrier), a repeat is a repeat, a
/// late Try after its Cancel hangs, and a call that is not allowed (Confirm without
/// Try) fails without taking the others in its batch down.
#[tokio::test]
async fn batched_branch_calls_are_judged_one_by_one() {
    let env = TestEnv::new("tccbatch").await;
    users(&env, 6).await;
    deposit(&env, 1, "BTC", "1").await;
    deposit(&env, 5, "BTC", "0.1").await;
    let t = tcc(&env, 4);
    let leg = |gid, from, amount: &str| Leg {
        gid,
        from: uid(from),
        to: uid(2),
        asset: Asset::new("BTC").expect("asset"),
        amount: amt(amount),
    };
    let (a, b, e) = (
        leg(2001, 1, "0.75"),
        leg(2002, 1, "0.5"),
        leg(2003, 5, "0.1"),
    );
    // users 1 and 5 live on shard 1: the four calls are queued before the shard's
    // batch task runs (one runtime thread), so they form one batch
    let (ra, rb, ra2, re) = tokio::join!(
        t.branch(BranchOp::TrySource, &a),
        t.branch(BranchOp::TrySource, &b),
        t.branch(BranchOp::TrySource, &a),
        t.branch(BranchOp::TrySource, &e),
    );
    assert_eq!(
        t.batch_stats(),
        (1, 4),
        "one transaction for the four calls"
    );
    assert_eq!(ra.expect("a"), BranchResult::Done);
    match rb {
        Err(TransferError::Insufficient { available, .. }) => {
            assert_eq!(available, amt("0.25"), "b is judged after a")
        }
        other => panic!("b must be refused, got {other:?}"),
    }
    assert_eq!(ra2.expect("a again"), BranchResult::Repeated);
    assert_eq!(re.expect("e"), BranchResult::Done);
    assert_eq!(balance(&env, 1, "BTC").await, (amt("0.25"), amt("0.75")));
    assert_eq!(balance(&env, 5, "BTC").await, (Amount::ZERO, amt("0.1")));
    // the refused Try left nothing: with the funds there, the same call goes through
    deposit(&env, 1, "BTC", "0.25").await;
    assert_eq!(
        t.branch(BranchOp::TrySource, &b).await.expect("b"),
        BranchResult::Done
    );
    assert_eq!(balance(&env, 1, "BTC").await, (Amount::ZERO, amt("1.25")));

    // a Try after its Cancel hangs, next to a call that goes through
    let c = leg(2004, 1, "0.1");
    assert_eq!(
        t.cancel_target(&c).await.expect("cancel"),
        BranchResult::EmptyRollback
    );
    let (rc, ra) = tokio::join!(
        t.branch(BranchOp::TryTarget, &c),
        t.branch(BranchOp::TryTarget, &a),
    );
    assert_eq!(rc.expect("late try"), BranchResult::Hanging);
    assert_eq!(ra.expect("a"), BranchResult::Done);

    // a Confirm without its Try (a coordinator bug) fails alone; the payee's first
    // credit creates the balance row
    let d = leg(2005, 1, "0.3");
    let (rd, ra) = tokio::join!(
        t.branch(BranchOp::ConfirmTarget, &d),
        t.branch(BranchOp::ConfirmTarget, &a),
    );
    assert!(rd.is_err(), "a Confirm without Try is refused: {rd:?}");
    assert_eq!(ra.expect("a"), BranchResult::Done);
    assert_eq!(balance(&env, 2, "BTC").await, (amt("0.75"), Amount::ZERO));
    assert_eq!(
        t.branch(BranchOp::ConfirmSource, &a).await.expect("a"),
        BranchResult::Done
    );
    assert_eq!(
        t.branch(BranchOp::ConfirmSource, &a).await.expect("again"),
        BranchResult::Repeated
    );
    assert_eq!(balance(&env, 1, "BTC").await, (Amount::ZERO, amt("0.5")));
    // what is left: b and e hold their Tries, counted by the frozen audit
    audits_hold(&env).await;
    for l in [b, e] {
        assert_eq!(
            t.cancel_source(&l).await.expect("cancel"),
            BranchResult::Done
        );
    }
    assert_eq!(balance(&env, 1, "BTC").await, (amt("0.5"), Amount::ZERO));
    assert_eq!(balance(&env, 5, "BTC").await, (amt("0.1"), Amount::ZERO));
    audits_hold(&env).await;

    // a payee's first credit (no balance row yet) and that payee's own Try in one
    // batch: the new row carries both the credit and the hold
    let f = Leg {
        gid: 2006,
        to: uid(3),
        ..leg(2006, 1, "0.2")
    };
    for op in [
        BranchOp::TrySource,
        BranchOp::TryTarget,
        BranchOp::ConfirmSource,
    ] {
        assert_eq!(t.branch(op, &f).await.expect("f"), BranchResult::Done);
    }
    let h = Leg {
        gid: 2007,
        from: uid(3),
        to: uid(2),
        ..leg(2007, 3, "0.15")
    };
    let (rf, rh) = tokio::join!(
        t.branch(BranchOp::ConfirmTarget, &f),
        t.branch(BranchOp::TrySource, &h),
    );
    assert_eq!(rf.expect("f"), BranchResult::Done);
    assert_eq!(rh.expect("h"), BranchResult::Done);
    assert_eq!(balance(&env, 3, "BTC").await, (amt("0.05"), amt("0.15")));
    audits_hold(&env).await;

    // two assets of one user in one batch, and a refused call queued twice: both
    // copies are refused and nothing of it stays
    deposit(&env, 5, "USDT", "100").await;
    let usdt = Leg {
        gid: 2008,
        asset: Asset::new("USDT").expect("asset"),
        ..leg(2008, 5, "60")
    };
    let x = leg(2009, 5, "0.2");
    let (ru, rx1, rx2) = tokio::join!(
        t.branch(BranchOp::TrySource, &usdt),
        t.branch(BranchOp::TrySource, &x),
        t.branch(BranchOp::TrySource, &x),
    );
    assert_eq!(ru.expect("usdt"), BranchResult::Done);
    for r in [rx1, rx2] {
        assert!(
            matches!(r, Err(TransferError::Insufficient { .. })),
            "both copies refused: {r:?}"
        );
    }
    assert_eq!(balance(&env, 5, "USDT").await, (amt("40"), amt("60")));
    assert_eq!(balance(&env, 5, "BTC").await, (amt("0.1"), Amount::ZERO));
    let (barriers,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM tcc_branches WHERE gid = 2009")
        .fetch_one(env.map.pool_for(uid(5)))
        .await
        .expect("barriers");
    assert_eq!(barriers, 0, "a refused Try leaves no barrier row");
    audits_hold(&env).await;
    env.drop_all().await;
}

/// A Try that does not finish within the Try timeout (here: the payer's balance row
/// is held by another transaction) cancels the transfer: the caller is told, and once
/// the Try does commit, the Cancel releases what it froze. Nothing moves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_try_slower_than_its_timeout_cancels_the_transfer() {
    let env = TestEnv::new("tcctimeout").await;
    users(&env, 2).await;
    deposit(&env, 1, "USDT", "100").await;
    let mut t = tcc(&env, 6);
    t.try_timeout = std::time::Duration::from_millis(300);
    // another transaction holds the payer's balance row
    let mut blocker = env.map.pool_for(uid(1)).begin().await.expect("begin");
    sqlx::query(
        "SELECT available FROM account_balances WHERE user_id = 1 AND currency = 'USDT' FOR UPDATE",
    )
    .fetch_one(&mut *blocker)
    .await
    .expect("lock");
    let coordinator = t.clone();
    let transfer =
        tokio::spawn(async move { coordinator.transfer(uid(1), uid(2), "USDT", "40").await });
    tokio::time::sleep(std::time::Duration::from_millis(1_000)).await;
    blocker.rollback().await.expect("release");
    match transfer.await.expect("task") {
        Err(e) => assert!(e.to_string().contains("timed out"), "{e}"),
        Ok(r) => panic!("a timed-out Try must cancel the transfer: {r:?}"),
    }
    let (gid, status): (u64, String) = sqlx::query_as(
        "SELECT gid, CAST(status AS CHAR) FROM tcc_global ORDER BY gid DESC LIMIT 1",
    )
    .fetch_one(env.map.meta())
    .await
    .expect("global");
    assert_eq!(status, "cancelled");
    // the late Try did freeze, and the Cancel gave it back
    let (tried,): (String,) = sqlx::query_as(
        "SELECT CAST(status AS CHAR) FROM transfers WHERE gid = ? AND branch = 'source'",
    )
    .bind(gid)
    .fetch_one(env.map.pool_for(uid(1)))
    .await
    .expect("source branch");
    assert_eq!(tried, "cancelled");
    assert_eq!(balance(&env, 1, "USDT").await, (amt("100"), Amount::ZERO));
    assert_eq!(balance(&env, 2, "USDT").await, (Amount::ZERO, Amount::ZERO));
    audits_hold(&env).await;
    env.drop_all().await;
}

/// Runs `shardctl` against `env` with a fixed worker id and `failpoint` armed.
fn shardctl(env: &TestEnv, args: &[&str], failpoint: Option<&str>) -> std::process::Output {
    let mut c = common::shardctl(env);
    c.args(args).env("EXCHANGE_SNOWFLAKE__WORKER_ID", "29");
    if let Some(f) = failpoint {
        c.env("EXCHANGE_FAILPOINT", f);
    }
    c.output().expect("run shardctl")
}

#[tokio::test]
async fn a_crash_at_every_step_boundary_is_finished_by_recovery() {
    let env = TestEnv::new("tcccrash").await;
    users(&env, 2).await;
    deposit(&env, 1, "ETH", "10").await;
    // (failpoint, amount, the transfer's end state after recovery)
    let cases = [
        ("tcc.after_global", "1", "cancelled"),
        ("tcc.after_try", "1", "cancelled"),
        ("tcc.after_confirm_source", "1", "confirmed"),
        // an insufficient-funds Try leads to Cancel, which crashes half-way
        ("tcc.during_cancel", "1000", "cancelled"),
    ];
    let mut expected_2 = Amount::ZERO;
    for (failpoint, amount, end) in cases {
        let out = shardctl(
            &env,
            &["transfer", "1", "2", "ETH", amount],
            Some(failpoint),
        );
        assert!(
            !out.status.success(),
            "{failpoint}: the process must die: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            String::from_utf8_lossy(&out.stderr).contains(&format!("failpoint {failpoint}")),
            "{failpoint}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        // the global is left unfinished; `tcc list` shows it
        let list = shardctl(&env, &["tcc", "list", "--json"], None);
        let listed = String::from_utf8_lossy(&list.stdout);
        assert_eq!(listed.lines().count(), 1, "{failpoint}: {listed}");
        let g: serde_json::Value =
            serde_json::from_str(listed.lines().next().expect("line")).expect("json");
        let gid = g["gid"].as_u64().expect("gid");
        // recovery (Try timeout 0: whatever is still trying is cancelled)
        let rec = shardctl(&env, &["tcc", "recover", "--try-timeout-ms", "0"], None);
        assert!(
            rec.status.success(),
            "{failpoint}: {}",
            String::from_utf8_lossy(&rec.stderr)
        );
        assert_eq!(global_status(&env, gid).await, end, "{failpoint}");
        if end == "confirmed" {
            expected_2 = expected_2.checked_add(amt(amount)).expect("sum");
        }
        assert_eq!(
            balance(&env, 1, "ETH").await,
            (
                amt("10").checked_sub(expected_2).expect("left"),
                Amount::ZERO
            ),
            "{failpoint}"
        );
        assert_eq!(
            balance(&env, 2, "ETH").await,
            (expected_2, Amount::ZERO),
            "{failpoint}"
        );
        audits_hold(&env).await;
        // recovering again changes nothing
        let again = shardctl(&env, &["tcc", "recover", "--try-timeout-ms", "0"], None);
        assert!(String::from_utf8_lossy(&again.stdout).contains("0 confirmed, 0 cancelled"));
    }
    // and without a failpoint the CLI transfer completes
    let ok = shardctl(&env, &["transfer", "1", "2", "ETH", "2"], None);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert_eq!(balance(&env, 2, "ETH").await, (amt("3"), Amount::ZERO));
    audits_hold(&env).await;
    env.drop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_concurrent_random_transfers_among_a_hundred_users_keep_every_unit() {
    let env = TestEnv::new("tccmany").await;
    users(&env, 100).await;
    for u in 1..=100u64 {
        deposit(&env, u, "USDT", "100").await;
    }
    for u in 1..=100u64 {
        ledger::funding::add_address(&env.map, uid(u), "USDT", "TRX", &format!("T{u}"), None)
            .await
            .expect("address");
    }
    let t = tcc(&env, 4);
    // withdrawals race the transfers: requested, then completed or rejected
    let withdrawals: Vec<_> = (0..4u64)
        .map(|task| {
            let map = env.map.clone();
            tokio::spawn(async move {
                let mut done = Vec::new();
                for i in 0..16u64 {
                    let user = 1 + (task * 16 + i) * 7 % 100;
                    let id = 50_000 + task * 100 + i;
                    let r = ledger::funding::request_withdrawal(
                        &map,
                        id,
                        uid(user),
                        "USDT",
                        "TRX",
                        &format!("T{user}"),
                        "20",
                        None,
                        0,
                    )
                    .await;
                    match r {
                        Ok(_) => {}
                        Err(ledger::funding::FundingError::Insufficient { .. }) => continue,
                        Err(e) => panic!("withdrawal of {user}: {e}"),
                    }
                    if i % 3 == 0 {
                        ledger::funding::review(&map, id, false, 1, "no")
                            .await
                            .expect("reject");
                    } else {
                        ledger::funding::review(&map, id, true, 1, "ok")
                            .await
                            .expect("approve");
                        ledger::funding::process(&map, id).await.expect("process");
                        ledger::funding::complete(&map, id, "tx")
                            .await
                            .expect("complete");
                        done.push(id);
                    }
                }
                done
            })
        })
        .collect();
    let tasks: Vec<_> = (0..32u64)
        .map(|task| {
            let t = t.clone();
            tokio::spawn(async move {
                let mut rng = task.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
                let mut next = move || {
                    rng ^= rng << 13;
                    rng ^= rng >> 7;
                    rng ^= rng << 17;
                    rng
                };
                let mut outcome = BTreeMap::<&'static str, u64>::new();
                for _ in 0..32 {
                    let from = 1 + next() % 100;
                    let mut to = 1 + next() % 100;
                    if to == from {
                        to = 1 + to % 100;
                    }
                    // up to 60 USDT with cents: some users run dry, some get refused
                    let amount = format!("{}.{:02}", next() % 60, next() % 100);
                    let key = match t.transfer(uid(from), uid(to), "USDT", &amount).await {
                        Ok(x) if x.local => "local",
                        Ok(_) => "tcc",
                        Err(TransferError::Insufficient { .. }) => "insufficient",
                        Err(TransferError::InvalidAmount { .. }) => "zero",
                        Err(e) => panic!("{from}->{to} {amount}: {e}"),
                    };
                    *outcome.entry(key).or_default() += 1;
                }
                outcome
            })
        })
        .collect();
    let mut total = BTreeMap::<&'static str, u64>::new();
    for task in tasks {
        for (k, v) in task.await.expect("task") {
            *total.entry(k).or_default() += v;
        }
    }
    let mut completed = 0u64;
    for w in withdrawals {
        completed += u64::try_from(w.await.expect("withdrawals").len()).expect("n");
    }
    assert!(
        completed > 10,
        "withdrawals completed meanwhile: {completed}"
    );
    assert_eq!(total.values().sum::<u64>(), 1_024);
    assert!(total.get("tcc").copied().unwrap_or(0) > 500, "{total:?}");
    // nobody negative (the CHECK constraint), nothing frozen, every unit still there
    let mut sum = Amount::ZERO;
    for u in 1..=100u64 {
        let (a, f) = balance(&env, u, "USDT").await;
        assert!(!a.is_negative() && f.is_zero(), "user {u}: {a} / {f}");
        sum = sum.checked_add(a).expect("sum");
    }
    // each completed withdrawal took 20 (19 sent, 1 to the fee account)
    let sent = Amount::from_str(&(20 * completed).to_string()).expect("sent");
    assert_eq!(
        sum.checked_add(sent).expect("sum"),
        amt("10000"),
        "{total:?}, {completed} withdrawals"
    );
    let unfinished = t.list(None).await.expect("list");
    assert!(unfinished.is_empty(), "{unfinished:?}");
    audits_hold(&env).await;
    env.drop_all().await;
}
