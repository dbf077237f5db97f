//! Deposits and withdrawals against the real shards: a deposit is credited once, at
//! its required confirmations, however often it is reported or confirmed; a withdrawal
//! goes request → review → processing → completed (or rejected / failed), every
//! change conditional on the previous status; every bad request is refused with
//! nothing changed; the money audits hold after each step.

mod common;

use common::{amt, audits_hold, balance, uid, users};

use domain::Amount;
use ledger::funding::{self, FundingError};
use testkit::TestEnv;

/// Reports and fully confirms a deposit.
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

#[tokio::test]
async fn a_deposit_is_credited_once_at_its_required_confirmations() {
    let env = TestEnv::new("deposit").await;
    users(&env, 2).await;
    // a refused report (no chain) claims nothing: the txid stays free for the report
    // that is right
    let refused =
        funding::report_deposit(&env.map, uid(2), "BTC", "", "tx-a", "x", "y", "0.5").await;
    assert!(
        matches!(refused, Err(FundingError::InvalidAmount { .. })),
        "{refused:?}"
    );
    // BTC needs 2 confirmations
    let d = funding::report_deposit(
        &env.map,
        uid(1),
        "BTC",
        "BTC",
        "tx-a",
        "bc1from",
        "bc1to",
        "0.5",
    )
    .await
    .expect("report");
    assert_eq!(
        (d.status.as_str(), d.confirmations, d.required),
        ("pending", 0, 2)
    );
    let again = funding::report_deposit(
        &env.map,
        uid(1),
        "BTC",
        "BTC",
        "tx-a",
        "bc1from",
        "bc1to",
        "0.5",
    )
    .await
    .expect("report again");
    assert_eq!(again.id, d.id, "the same deposit, not a second one");
    let c1 = funding::confirm_deposit(&env.map, "tx-a", "BTC", 1)
        .await
        .expect("1 conf");
    assert_eq!((c1.status.as_str(), c1.credited), ("confirming", false));
    assert_eq!(balance(&env, 1, "BTC").await, (Amount::ZERO, Amount::ZERO));
    let c2 = funding::confirm_deposit(&env.map, "tx-a", "BTC", 2)
        .await
        .expect("2 conf");
    assert_eq!((c2.status.as_str(), c2.credited), ("completed", true));
    assert_eq!(balance(&env, 1, "BTC").await, (amt("0.5"), Amount::ZERO));
    // more confirmations, a lower count, a repeated report: nothing more
    for conf in [3, 1, 2] {
        let c = funding::confirm_deposit(&env.map, "tx-a", "BTC", conf)
            .await
            .expect("again");
        assert!(!c.credited);
        assert_eq!(c.confirmations, 3, "never lowered");
    }
    funding::report_deposit(
        &env.map,
        uid(1),
        "BTC",
        "BTC",
        "tx-a",
        "bc1from",
        "bc1to",
        "0.5",
    )
    .await
    .expect("late report");
    assert_eq!(balance(&env, 1, "BTC").await, (amt("0.5"), Amount::ZERO));
    // the same txid for another user is refused; an unknown deposit is not found
    let taken =
        funding::report_deposit(&env.map, uid(2), "BTC", "BTC", "tx-a", "x", "y", "0.5").await;
    assert!(
        matches!(taken, Err(FundingError::TxidTaken { .. })),
        "{taken:?}"
    );
    // another spelling is another txid: recorded for its own user, never mixed up
    let upper = funding::report_deposit(&env.map, uid(2), "BTC", "BTC", "TX-A", "x", "y", "0.25")
        .await
        .expect("other spelling");
    assert_eq!(upper.user_id, 2);
    let c = funding::confirm_deposit(&env.map, "TX-A", "BTC", 2)
        .await
        .expect("confirm");
    assert!(c.credited);
    assert_eq!(balance(&env, 2, "BTC").await, (amt("0.25"), Amount::ZERO));
    assert_eq!(balance(&env, 1, "BTC").await, (amt("0.5"), Amount::ZERO));
    let unknown = funding::confirm_deposit(&env.map, "tx-none", "BTC", 5).await;
    assert!(
        matches!(unknown, Err(FundingError::NotFound(_))),
        "{unknown:?}"
    );
    // bad reports
    for (user, asset, amount) in [
        (1u64, "BTC", "0"),
        (1, "BTC", "-1"),
        (1, "BTC", "0.000000001"),
        (1, "DOGE", "1"),
        (99, "BTC", "1"),
    ] {
        let r = funding::report_deposit(
            &env.map,
            uid(user),
            asset,
            "BTC",
            "tx-bad",
            "x",
            "y",
            amount,
        )
        .await;
        assert!(r.is_err(), "{user} {asset} {amount}");
    }
    audits_hold(&env).await;
    env.drop_all().await;
}

#[tokio::test]
async fn a_withdrawal_is_reviewed_sent_and_completed_each_step_once() {
    let env = TestEnv::new("withdraw").await;
    users(&env, 2).await;
    fund(&env, 1, "ETH", "10", "eth-1").await;
    funding::add_address(&env.map, uid(1), "ETH", "ETH", "0xabc", Some("cold"))
        .await
        .expect("address");
    // ETH: fee 0.002, minimum 0.01
    let w = funding::request_withdrawal(
        &env.map,
        7001,
        uid(1),
        "ETH",
        "ETH",
        "0xabc",
        "1.5",
        None,
        0,
    )
    .await
    .expect("request");
    assert_eq!(w.status, "reviewing");
    assert_eq!((w.fee, w.actual_amount), (amt("0.002"), amt("1.498")));
    assert_eq!(balance(&env, 1, "ETH").await, (amt("8.5"), amt("1.5")));
    audits_hold(&env).await;
    // approve twice: once
    let a = funding::review(&env.map, 7001, true, 900, "ok")
        .await
        .expect("approve");
    assert!(a.changed);
    let a2 = funding::review(&env.map, 7001, true, 900, "ok again")
        .await
        .expect("again");
    assert!(!a2.changed);
    assert_eq!(a2.withdrawal.comment.as_deref(), Some("ok"));
    // completing before processing does nothing
    assert!(
        !funding::complete(&env.map, 7001, "0xtx")
            .await
            .expect("early")
            .changed
    );
    assert!(
        funding::process(&env.map, 7001)
            .await
            .expect("process")
            .changed
    );
    // once it is being sent it can no longer be rejected
    let late = funding::review(&env.map, 7001, false, 900, "too late")
        .await
        .expect("late reject");
    assert!(!late.changed);
    assert_eq!(late.withdrawal.status, "processing");
    let done = funding::complete(&env.map, 7001, "0xtx")
        .await
        .expect("complete");
    assert!(done.changed);
    assert_eq!(done.withdrawal.txid.as_deref(), Some("0xtx"));
    assert!(
        !funding::complete(&env.map, 7001, "0xtx")
            .await
            .expect("twice")
            .changed
    );
    assert!(
        !funding::fail(&env.map, 7001, "late")
            .await
            .expect("fail")
            .changed
    );
    assert_eq!(balance(&env, 1, "ETH").await, (amt("8.5"), Amount::ZERO));
    // the fee stays in the shard's fee account; the audit counts what was sent
    let (fee,): (String,) = sqlx::query_as(
        "SELECT CAST(available AS CHAR) FROM account_balances WHERE user_id = 0 AND currency = 'ETH'",
    )
    .fetch_one(env.map.pool_for(uid(1)))
    .await
    .expect("fee account");
    assert_eq!(amt(&fee), amt("0.002"));
    audits_hold(&env).await;

    // rejected: unfrozen once
    funding::request_withdrawal(&env.map, 7002, uid(1), "ETH", "ETH", "0xabc", "2", None, 0)
        .await
        .expect("request");
    assert_eq!(balance(&env, 1, "ETH").await, (amt("6.5"), amt("2")));
    assert!(
        funding::review(&env.map, 7002, false, 900, "suspicious")
            .await
            .expect("reject")
            .changed
    );
    assert!(
        !funding::review(&env.map, 7002, false, 900, "again")
            .await
            .expect("again")
            .changed
    );
    assert!(
        !funding::review(&env.map, 7002, true, 900, "approve?")
            .await
            .expect("approve")
            .changed
    );
    // approved, then rejected before it is sent: unfrozen once
    funding::request_withdrawal(&env.map, 7004, uid(1), "ETH", "ETH", "0xabc", "1", None, 0)
        .await
        .expect("request");
    funding::review(&env.map, 7004, true, 900, "ok")
        .await
        .expect("approve");
    assert!(
        funding::review(&env.map, 7004, false, 901, "second look")
            .await
            .expect("reject")
            .changed
    );
    assert!(
        !funding::process(&env.map, 7004)
            .await
            .expect("process")
            .changed
    );
    assert_eq!(balance(&env, 1, "ETH").await, (amt("8.5"), Amount::ZERO));
    // failed on the chain: unfrozen
    funding::request_withdrawal(&env.map, 7003, uid(1), "ETH", "ETH", "0xabc", "1", None, 0)
        .await
        .expect("request");
    funding::review(&env.map, 7003, true, 900, "ok")
        .await
        .expect("approve");
    funding::process(&env.map, 7003).await.expect("process");
    assert!(
        funding::fail(&env.map, 7003, "rpc error")
            .await
            .expect("fail")
            .changed
    );
    assert_eq!(balance(&env, 1, "ETH").await, (amt("8.5"), Amount::ZERO));
    let all = funding::list_withdrawals(&env.map, None)
        .await
        .expect("list");
    assert_eq!(
        all.iter().map(|w| w.status.as_str()).collect::<Vec<_>>(),
        ["completed", "rejected", "failed", "rejected"]
    );
    audits_hold(&env).await;
    env.drop_all().await;
}

/// User 1 asks for 1 BTC to the allowlisted `bc1ok`, with 2FA `code`, at `now`.
async fn one_btc(
    env: &TestEnv,
    id: u64,
    code: Option<&str>,
    now: u64,
) -> Result<funding::Withdrawal, FundingError> {
    funding::request_withdrawal(&env.map, id, uid(1), "BTC", "BTC", "bc1ok", "1", code, now).await
}

#[tokio::test]
async fn bad_withdrawals_are_refused_and_change_nothing() {
    let env = TestEnv::new("withdrawbad").await;
    users(&env, 2).await;
    fund(&env, 1, "BTC", "20", "btc-1").await;
    funding::add_address(&env.map, uid(1), "BTC", "BTC", "bc1ok", None)
        .await
        .expect("address");
    // BTC: fee 0.0002, minimum 0.001, daily limit 10
    let req = |amount: &'static str, address: &'static str, code: Option<&'static str>| {
        let map = env.map.clone();
        async move {
            funding::request_withdrawal(&map, 8000, uid(1), "BTC", "BTC", address, amount, code, 0)
                .await
        }
    };
    let refusals: [(&str, &str, &str); 9] = [
        ("1", "bc1other", "allowlist"),
        // PAD SPACE would make these equal to `bc1ok` in SQL: refused before any query
        ("1", "bc1ok ", "allowlist"),
        ("1", "bc1ok\t", "allowlist"),
        ("1", " bc1ok", "allowlist"),
        ("0", "bc1ok", "must be positive"),
        ("-1", "bc1ok", "must be positive"),
        ("0.000000001", "bc1ok", "8 decimal places"),
        ("0.0005", "bc1ok", "minimum"),
        ("10.5", "bc1ok", "daily withdrawal limit"),
    ];
    for (amount, address, why) in refusals {
        let e = req(amount, address, None).await.expect_err(why);
        assert!(e.to_string().contains(why), "{amount} {address}: {e}");
    }
    // addresses with spaces, controls, unicode or no length are never allowlisted
    let long = "a".repeat(129);
    for bad in [
        "bc1ok ",
        " bc1ok",
        "bc1 ok",
        "bc1\u{0}ok",
        "bc1ök",
        "",
        long.as_str(),
    ] {
        let e = funding::add_address(&env.map, uid(1), "BTC", "BTC", bad, None).await;
        assert!(
            matches!(e, Err(FundingError::AddressNotAllowed(_))),
            "{bad:?}: {e:?}"
        );
    }
    // within the limit, then over it in total
    funding::request_withdrawal(&env.map, 8001, uid(1), "BTC", "BTC", "bc1ok", "6", None, 0)
        .await
        .expect("6");
    let over = funding::request_withdrawal(
        &env.map,
        8002,
        uid(1),
        "BTC",
        "BTC",
        "bc1ok",
        "4.5",
        None,
        0,
    )
    .await;
    assert!(
        matches!(over, Err(FundingError::DailyLimit { .. })),
        "{over:?}"
    );
    // insufficient: user 2 has nothing
    funding::add_address(&env.map, uid(2), "BTC", "BTC", "bc1two", None)
        .await
        .expect("address");
    let poor =
        funding::request_withdrawal(&env.map, 8003, uid(2), "BTC", "BTC", "bc1two", "1", None, 0)
            .await;
    assert!(
        matches!(poor, Err(FundingError::Insufficient { .. })),
        "{poor:?}"
    );
    assert_eq!(balance(&env, 1, "BTC").await, (amt("14"), amt("6")));

    // 2FA enabled: no code, a wrong code, then the right one
    let secret = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ";
    sqlx::query("UPDATE users SET is_2fa_enabled = TRUE, totp_secret = ? WHERE id = 1")
        .bind(secret)
        .execute(env.map.pool_for(uid(1)))
        .await
        .expect("2fa");
    let now = 1_234_567_890u64;
    let right = format!("{:06}", funding::totp_at(secret, now / 30).expect("code"));
    let none = one_btc(&env, 8004, None, now).await;
    assert!(
        matches!(none, Err(FundingError::TwoFactorRequired)),
        "{none:?}"
    );
    let wrong = one_btc(&env, 8004, Some("000000"), now).await;
    assert!(
        matches!(wrong, Err(FundingError::TwoFactorInvalid)),
        "{wrong:?}"
    );
    assert_eq!(
        balance(&env, 1, "BTC").await,
        (amt("14"), amt("6")),
        "nothing changed"
    );
    one_btc(&env, 8004, Some(&right), now)
        .await
        .expect("with the code");
    assert_eq!(balance(&env, 1, "BTC").await, (amt("13"), amt("7")));
    // the same code again (a replay) is refused; the next step's code is accepted
    let replay = one_btc(&env, 8005, Some(&right), now).await;
    assert!(
        matches!(replay, Err(FundingError::TwoFactorInvalid)),
        "{replay:?}"
    );
    let next = format!(
        "{:06}",
        funding::totp_at(secret, now / 30 + 1).expect("code")
    );
    one_btc(&env, 8005, Some(&next), now + 30)
        .await
        .expect("a fresh code");
    assert_eq!(balance(&env, 1, "BTC").await, (amt("12"), amt("8")));
    // wrong codes: the fifth in a row locks 2FA actions, even for the right code
    let later = now + 3_600;
    for i in 0..funding::TWO_FACTOR_ATTEMPTS {
        let wrong = one_btc(&env, 8100 + u64::from(i), Some("000000"), later).await;
        assert!(
            matches!(wrong, Err(FundingError::TwoFactorInvalid)),
            "attempt {i}: {wrong:?}"
        );
    }
    let good = format!("{:06}", funding::totp_at(secret, later / 30).expect("code"));
    let locked = one_btc(&env, 8200, Some(&good), later).await;
    assert!(
        matches!(locked, Err(FundingError::TwoFactorLocked)),
        "{locked:?}"
    );
    assert_eq!(
        balance(&env, 1, "BTC").await,
        (amt("12"), amt("8")),
        "nothing changed"
    );
    // the lock expires
    sqlx::query("UPDATE users SET totp_locked_until = CURRENT_TIMESTAMP(3) - INTERVAL 1 SECOND WHERE id = 1")
        .execute(env.map.pool_for(uid(1)))
        .await
        .expect("expire");
    one_btc(&env, 8201, Some(&good), later)
        .await
        .expect("after the lock");
    assert_eq!(balance(&env, 1, "BTC").await, (amt("11"), amt("9")));
    audits_hold(&env).await;
    env.drop_all().await;
}

fn shardctl(env: &TestEnv, args: &[&str]) -> (bool, String, String) {
    let out = common::shardctl(env)
        .args(args)
        .env("EXCHANGE_SNOWFLAKE__WORKER_ID", "28")
        .output()
        .expect("run shardctl");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn the_chain_simulator_and_the_withdrawal_commands_work_without_a_gateway() {
    let env = TestEnv::new("fundcli").await;
    users(&env, 1).await;
    let (ok, out, err) = shardctl(
        &env,
        &["chain", "deposit", "1", "USDT", "250", "--txid", "cli-1"],
    );
    assert!(ok, "{out}{err}");
    assert!(out.contains("pending (0/12 confirmations)"), "{out}");
    let (ok, out, _) = shardctl(
        &env,
        &["chain", "confirm", "cli-1", "USDT", "--confirmations", "5"],
    );
    assert!(ok && out.contains("confirming (5/12"), "{out}");
    assert_eq!(balance(&env, 1, "USDT").await, (Amount::ZERO, Amount::ZERO));
    let (ok, out, _) = shardctl(&env, &["chain", "confirm", "cli-1", "USDT"]);
    assert!(ok && out.contains("credited now"), "{out}");
    assert_eq!(balance(&env, 1, "USDT").await, (amt("250"), Amount::ZERO));
    // not allowlisted yet: refused, exit 1
    let (ok, _, err) = shardctl(
        &env,
        &["withdraw", "request", "1", "USDT", "TRX", "Taddr", "100"],
    );
    assert!(!ok && err.contains("allowlist"), "{err}");
    assert!(shardctl(&env, &["withdraw", "address", "1", "USDT", "TRX", "Taddr"]).0);
    let (ok, out, err) = shardctl(
        &env,
        &["withdraw", "request", "1", "USDT", "TRX", "Taddr", "100"],
    );
    assert!(ok, "{out}{err}");
    assert_eq!(balance(&env, 1, "USDT").await, (amt("150"), amt("100")));
    let (_, list, _) = shardctl(
        &env,
        &["withdraw", "list", "--status", "reviewing", "--json"],
    );
    let w: serde_json::Value =
        serde_json::from_str(list.lines().next().expect("one")).expect("json");
    let id = w["withdrawal_id"].as_u64().expect("id").to_string();
    assert!(shardctl(&env, &["withdraw", "approve", &id, "--comment", "ok"]).0);
    let (ok, _, err) = shardctl(&env, &["withdraw", "approve", &id, "--comment", "again"]);
    assert!(!ok && err.contains("nothing changed"), "{err}");
    assert!(shardctl(&env, &["withdraw", "process", &id]).0);
    assert!(shardctl(&env, &["withdraw", "complete", &id, "--txid", "0xsent"]).0);
    // USDT fee 1: 99 sent, 1 to the fee account
    assert_eq!(balance(&env, 1, "USDT").await, (amt("150"), Amount::ZERO));
    let (ok, out, _) = shardctl(&env, &["audit"]);
    assert!(ok, "{out}");
    env.drop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_hundred_parallel_wrong_codes_are_judged_one_by_one_and_lock_after_five() {
    let env = TestEnv::new("totprace").await;
    users(&env, 1).await;
    fund(&env, 1, "BTC", "20", "btc-race").await;
    funding::add_address(&env.map, uid(1), "BTC", "BTC", "bc1ok", None)
        .await
        .expect("address");
    let secret = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ";
    sqlx::query("UPDATE users SET is_2fa_enabled = TRUE, totp_secret = ? WHERE id = 1")
        .bind(secret)
        .execute(env.map.pool_for(uid(1)))
        .await
        .expect("2fa");
    let now = 1_700_000_000u64;
    let right = funding::totp_at(secret, now / 30).expect("code");
    // 500 guesses at once, none of them the right code
    let tasks: Vec<_> = (0..500u32)
        .map(|i| {
            let map = env.map.clone();
            let guess = format!("{:06}", (right + 1 + i) % 1_000_000);
            tokio::spawn(async move {
                funding::request_withdrawal(
                    &map,
                    10_000 + u64::from(i),
                    uid(1),
                    "BTC",
                    "BTC",
                    "bc1ok",
                    "1",
                    Some(&guess),
                    now,
                )
                .await
            })
        })
        .collect();
    let (mut invalid, mut locked) = (0, 0);
    for t in tasks {
        match t.await.expect("task") {
            Err(FundingError::TwoFactorInvalid) => invalid += 1,
            Err(FundingError::TwoFactorLocked) => locked += 1,
            other => panic!("a wrong code must be refused: {other:?}"),
        }
    }
    assert_eq!(
        (invalid, locked),
        (5, 495),
        "five codes evaluated, then the lock holds for every other guess"
    );
    // locked: even the right code is refused now, and nothing moved
    let r = funding::request_withdrawal(
        &env.map,
        20_000,
        uid(1),
        "BTC",
        "BTC",
        "bc1ok",
        "1",
        Some(&format!("{right:06}")),
        now,
    )
    .await;
    assert!(matches!(r, Err(FundingError::TwoFactorLocked)), "{r:?}");
    assert_eq!(balance(&env, 1, "BTC").await, (amt("20"), Amount::ZERO));
    audits_hold(&env).await;
    env.drop_all().await;
}
