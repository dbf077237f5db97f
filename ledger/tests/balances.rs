//! Optimistic-lock balance updates and exact DECIMAL(36,18) handling against MariaDB.

use std::str::FromStr;
use std::sync::Arc;

use domain::{Amount, Asset, MoneyError, UserId};
use ledger::balances::{balance, freeze, Freeze};
use router::{get_amount, RouterError};
use testkit::TestEnv;

async fn seed_balance(env: &TestEnv, user: UserId, asset: &str, available: &str) {
    sqlx::query("INSERT INTO account_balances (user_id, currency, available) VALUES (?, ?, ?)")
        .bind(user.get())
        .bind(asset)
        .bind(available)
        .execute(env.map.pool_for(user))
        .await
        .expect("seed balance");
}

#[tokio::test]
async fn concurrent_freezes_never_overdraw_and_conserve_the_sum() {
    let env = TestEnv::new("freeze").await;
    let user = UserId::new(7).expect("user");
    let usdt = Asset::new("USDT").expect("asset");
    // 1000 available, 64 tasks each freezing 0.5 three times: 96 of 192 fit... all fit;
    // then 64 tasks each trying 30: only 31 more fit (1000 - 96 = 904 → 30 x 30 = 900)
    seed_balance(&env, user, "USDT", "1000").await;
    let shards = Arc::new(env.map.clone());
    let pool = env.map.pool_for(user).clone();
    let shard = env.map.shard_of(user).get();
    let start = balance(&pool, shard, user, &usdt)
        .await
        .expect("read")
        .expect("row");
    assert_eq!(start.version, 0);

    let mut successes = 0u64;
    let mut insufficient = 0u64;
    for (per_task, amount) in [(3, "0.5"), (1, "30")] {
        let amount = Amount::from_str(amount).expect("amount");
        let tasks: Vec<_> = (0..64)
            .map(|_| {
                let (shards, usdt) = (shards.clone(), usdt);
                tokio::spawn(async move {
                    let mut out = Vec::new();
                    for _ in 0..per_task {
                        out.push(
                            freeze(&shards, user, &usdt, amount, 1_000)
                                .await
                                .expect("freeze"),
                        );
                    }
                    out
                })
            })
            .collect();
        for t in tasks {
            for outcome in t.await.expect("task") {
                match outcome {
                    Freeze::Done(b) => {
                        assert!(!b.available.is_negative());
                        successes += 1;
                    }
                    Freeze::Insufficient { available } => {
                        assert!(available.get() < amount.get());
                        insufficient += 1;
                    }
                }
            }
        }
    }
    let end = balance(&pool, shard, user, &usdt)
        .await
        .expect("read")
        .expect("row");
    assert_eq!(
        successes,
        192 + 30,
        "192 small freezes and exactly 30 of the large ones fit"
    );
    assert_eq!(insufficient, 34);
    assert_eq!(
        end.version, successes,
        "version counts successful updates exactly"
    );
    assert_eq!(end.available, Amount::from_str("4").expect("4"));
    assert_eq!(end.frozen, Amount::from_str("996").expect("996"));
    assert_eq!(
        end.available.checked_add(end.frozen).expect("sum"),
        Amount::from_str("1000").expect("1000"),
        "conserved"
    );

    // bad input changes nothing
    assert!(matches!(
        freeze(&shards, user, &usdt, Amount::ZERO, 3).await,
        Err(RouterError::InvalidInput(_))
    ));
    let after = balance(&pool, shard, user, &usdt)
        .await
        .expect("read")
        .expect("row");
    assert_eq!(after, end);
    env.drop_all().await;
}

#[tokio::test]
async fn freezes_are_exact_to_the_last_digit() {
    // amounts that are not exact in binary floating point, on a balance with 28
    // significant digits: any DOUBLE on the way would show in the last digits
    let env = TestEnv::new("exactfreeze").await;
    let user = UserId::new(11).expect("user");
    let usdt = Asset::new("USDT").expect("asset");
    seed_balance(&env, user, "USDT", "1234567890.123456789012345678").await;
    for a in [
        "0.1",
        "0.2",
        "0.000000000000000001",
        "1234567889.823456789012345677",
    ] {
        let out = freeze(
            &env.map,
            user,
            &usdt,
            Amount::from_str(a).expect("amount"),
            3,
        )
        .await
        .expect("freeze");
        assert!(matches!(out, Freeze::Done(_)), "{a}: {out:?}");
    }
    // exactly 0 left: one more atom is refused
    let one_atom = Amount::from_str("0.000000000000000001").expect("atom");
    let out = freeze(&env.map, user, &usdt, one_atom, 3)
        .await
        .expect("freeze");
    assert_eq!(
        out,
        Freeze::Insufficient {
            available: Amount::ZERO
        }
    );
    let (available, frozen): (String, String) = sqlx::query_as(
        "SELECT CAST(available AS CHAR), CAST(frozen AS CHAR) FROM account_balances WHERE user_id = ?",
    )
    .bind(user.get())
    .fetch_one(env.map.pool_for(user))
    .await
    .expect("row");
    assert_eq!(available, "0.000000000000000000");
    assert_eq!(frozen, "1234567890.123456789012345678");
    env.drop_all().await;
}

#[tokio::test]
async fn decimal_36_18_extremes_round_trip_exactly_or_are_rejected() {
    let env = TestEnv::new("decimal").await;
    let pool = env.map.pool(domain::ShardId::new(0)).expect("pool");
    sqlx::query("CREATE TABLE dec_probe (k VARCHAR(40) PRIMARY KEY, v DECIMAL(36,18) NOT NULL)")
        .execute(pool)
        .await
        .expect("create");
    let cases = [
        // (stored literal, expected: Ok(text read back) or the error)
        (
            "999999999999999999.999999999999999999",
            Err(MoneyError::NotRepresentable),
        ),
        (
            "-999999999999999999.999999999999999999",
            Err(MoneyError::NotRepresentable),
        ),
        (
            "123456789012.123456789012345678",
            Err(MoneyError::NotRepresentable),
        ),
        (
            "999999999999999999",
            Ok("999999999999999999.000000000000000000"),
        ),
        (
            "-999999999999999999",
            Ok("-999999999999999999.000000000000000000"),
        ),
        ("0.000000000000000001", Ok("0.000000000000000001")),
        ("-0.000000000000000001", Ok("-0.000000000000000001")),
        (
            "1234567890.123456789012345678",
            Ok("1234567890.123456789012345678"),
        ),
        ("0", Ok("0.000000000000000000")),
    ];
    for (literal, _) in &cases {
        sqlx::query("INSERT INTO dec_probe (k, v) VALUES (?, ?)")
            .bind(literal)
            .bind(literal)
            .execute(pool)
            .await
            .expect("insert");
    }
    for (literal, want) in cases {
        let row = sqlx::query("SELECT v FROM dec_probe WHERE k = ?")
            .bind(literal)
            .fetch_one(pool)
            .await
            .expect("row");
        match (get_amount(&row, "v"), want) {
            (Ok(a), Ok(text)) => {
                assert_eq!(a.to_db_string(), text, "{literal}");
                // and back: writing the value stores exactly the same number
                let (same,): (i64,) = sqlx::query_as(
                    "SELECT COUNT(*) FROM dec_probe WHERE k = ? AND v = CAST(? AS DECIMAL(36,18))",
                )
                .bind(literal)
                .bind(a.to_db_string())
                .fetch_one(pool)
                .await
                .expect("compare");
                assert_eq!(same, 1, "{literal} did not round-trip");
            }
            (Err(RouterError::Decimal(e)), Err(w)) => assert_eq!(e, w, "{literal}"),
            (got, want) => panic!("{literal}: got {got:?}, want {want:?}"),
        }
    }
    // a non-DECIMAL column is refused rather than guessed at
    let row = sqlx::query("SELECT k FROM dec_probe LIMIT 1")
        .fetch_one(pool)
        .await
        .expect("row");
    assert!(get_amount(&row, "k").is_err());
    // values the domain refuses never reach SQL: no silent rounding on either side
    assert!(Amount::from_str("0.0000000000000000001").is_err());
    assert!(Amount::from_str("1000000000000000000").is_err());
    env.drop_all().await;
}

#[tokio::test]
async fn the_audit_holds_after_deposits_and_catches_money_made_from_nothing() {
    let env = TestEnv::new("audit").await;
    let usdt = Asset::new("USDT").expect("asset");
    for (user, amount) in [(1u64, "100.5"), (2, "0.000000000000000001"), (7, "42")] {
        let u = UserId::new(user).expect("user");
        ledger::balances::credit_deposit(
            &env.map,
            u,
            &usdt,
            Amount::from_str(amount).expect("a"),
            &format!("tx{user}"),
        )
        .await
        .expect("deposit");
    }
    let totals = ledger::audit::conservation(&env.map).await.expect("audit");
    let t = totals["USDT"];
    assert!(t.holds(), "{t:?}");
    assert_eq!(
        t.balances,
        Amount::from_str("142.500000000000000001").expect("sum")
    );
    // one unit appears out of nowhere on one shard: the audit must notice
    let u = UserId::new(7).expect("user");
    sqlx::query("UPDATE account_balances SET available = available + 0.000000000000000001 WHERE user_id = 7")
        .execute(env.map.pool_for(u))
        .await
        .expect("tamper");
    let broken = ledger::audit::conservation(&env.map).await.expect("audit")["USDT"];
    assert!(!broken.holds(), "{broken:?}");
    env.drop_all().await;
}

#[tokio::test]
async fn all_balances_of_a_user_come_from_one_read_of_its_shard_exactly() {
    let env = TestEnv::new("allof").await;
    let (u, other) = (
        UserId::new(6).expect("user"),
        UserId::new(10).expect("user"),
    );
    seed_balance(&env, u, "USDT", "1000.000000000000000001").await;
    seed_balance(&env, u, "BTC", "0.5").await;
    seed_balance(&env, other, "ETH", "3").await;
    let f = freeze(
        &env.map,
        u,
        &Asset::new("BTC").expect("asset"),
        Amount::from_str("0.2").expect("a"),
        3,
    )
    .await
    .expect("freeze");
    assert!(matches!(f, Freeze::Done(_)));
    let all = ledger::balances::all_of(&env.map, u).await.expect("all");
    let a = |s: &str| Amount::from_str(s).expect("amount");
    let shown: Vec<(String, Amount, Amount)> = all
        .iter()
        .map(|(asset, b)| (asset.to_string(), b.available, b.frozen))
        .collect();
    assert_eq!(
        shown,
        [
            ("BTC".to_owned(), a("0.3"), a("0.2")),
            ("USDT".to_owned(), a("1000.000000000000000001"), a("0")),
        ]
    );
    assert!(
        ledger::balances::all_of(&env.map, UserId::new(99).expect("u"))
            .await
            .expect("none")
            .is_empty()
    );
    env.drop_all().await;
}
