//! Migrations, month tables and routing against the real MariaDB shards.

use chrono::{TimeZone, Utc};
use router::{snowflake, Month, RouterError, TableKind, TableRouter};
use testkit::{tables, TestEnv};

const SHARD_TABLES: [&str; 18] = [
    "_sqlx_migrations",
    "account_balances",
    "account_transactions",
    "applied_seq",
    "client_orders",
    "deposits",
    "orders_template",
    "outbox",
    "outbox_relay",
    "outbox_seq",
    "parked_fills",
    "positions",
    "tcc_branches",
    "trades_template",
    "transfers",
    "users",
    "withdraw_addresses",
    "withdrawals",
];

fn expected_shard_tables() -> Vec<String> {
    SHARD_TABLES.iter().map(|t| (*t).to_owned()).collect()
}

#[tokio::test]
async fn migrate_up_down_up_on_every_shard() {
    let env = TestEnv::unmigrated("migr").await;
    let expected: u16 =
        std::env::var("EXCHANGE_SHARDS").map_or(4, |v| v.parse().expect("EXCHANGE_SHARDS"));
    assert_eq!(env.map.count(), expected, "one pool per configured shard");
    for round in 0..2 {
        env.map.migrate_up().await.expect("up");
        for (id, pool) in env.map.iter() {
            assert_eq!(
                tables(pool).await,
                expected_shard_tables(),
                "shard {id} after up (round {round})"
            );
        }
        let meta = tables(env.map.meta()).await;
        assert_eq!(
            meta,
            [
                "_sqlx_migrations",
                "api_keys",
                "assets",
                "deposit_txids",
                "matcher_snapshots",
                "symbols",
                "tcc_global",
                "user_directory"
            ]
        );

        // month tables made from the templates go down with them
        let router = TableRouter::new(&["BTCUSDT"]).expect("router");
        env.map
            .ensure_tables(&router, Utc::now(), 1)
            .await
            .expect("ensure");
        env.map.migrate_down(0).await.expect("down");
        for (id, pool) in env.map.iter() {
            assert_eq!(
                tables(pool).await,
                ["_sqlx_migrations"],
                "shard {id} after down (round {round})"
            );
        }
        assert_eq!(tables(env.map.meta()).await, ["_sqlx_migrations"]);
    }
    env.map.migrate_up().await.expect("up again");
    env.drop_all().await;
}

#[tokio::test]
async fn ensure_tables_is_idempotent_and_missing_tables_are_errors() {
    let env = TestEnv::new("ensure").await;
    let router = TableRouter::new(&["BTCUSDT", "ETHUSDT"]).expect("router");
    let now = Utc
        .with_ymd_and_hms(2026, 12, 31, 23, 59, 59)
        .single()
        .expect("t");
    let first = env
        .map
        .ensure_tables(&router, now, 2)
        .await
        .expect("ensure");
    // 2 symbols x 3 months x 2 kinds per shard; 3 partitions per shard
    let shards = u32::from(env.map.count());
    assert_eq!(first.tables_created, 12 * shards);
    assert_eq!(first.partitions_added, 3 * shards);
    let again = env
        .map
        .ensure_tables(&router, now, 2)
        .await
        .expect("ensure again");
    assert_eq!((again.tables_created, again.partitions_added), (0, 0));

    for (id, pool) in env.map.iter() {
        let month_tables = env.map.month_tables(id).await.expect("list");
        assert!(month_tables.contains("orders_BTCUSDT_202612"));
        assert!(month_tables.contains("trades_ETHUSDT_202702"));
        assert!(!month_tables.contains("orders_BTCUSDT_202611"));
        let parts: Vec<(String,)> = sqlx::query_as(
            "SELECT CAST(partition_name AS CHAR) FROM information_schema.partitions \
             WHERE table_schema = DATABASE() AND table_name = 'account_transactions' ORDER BY partition_ordinal_position",
        )
        .fetch_all(pool)
        .await
        .expect("partitions");
        let parts: Vec<String> = parts.into_iter().map(|(p,)| p).collect();
        assert_eq!(
            parts,
            ["p_before", "p202612", "p202701", "p202702", "pmax"],
            "shard {id}"
        );
    }

    // a range that reaches a month never created is reported, not skipped
    let btc = router.symbol("BTCUSDT").expect("sym");
    let from = Utc
        .with_ymd_and_hms(2026, 11, 15, 0, 0, 0)
        .single()
        .expect("t");
    let range = router
        .tables_in_range(TableKind::Orders, &btc, from, now)
        .expect("range");
    let shard0 = domain::ShardId::new(0);
    let err = env
        .map
        .tables_in_range(shard0, &router, TableKind::Orders, &btc, from, now)
        .await
        .expect_err("gap must be reported");
    assert!(matches!(err, RouterError::MissingTable { .. }), "{err}");
    let ok = env
        .map
        .tables_in_range(
            shard0,
            &router,
            TableKind::Orders,
            &btc,
            now,
            now + chrono::Duration::days(40),
        )
        .await
        .expect("existing range");
    assert_eq!(ok.len(), 3, "202612, 202701, 202702");
    match env.map.require_tables(shard0, &range).await {
        Err(RouterError::MissingTable { table, shard }) => {
            assert_eq!((table.as_str(), shard), ("orders_BTCUSDT_202611", 0));
        }
        other => panic!("expected MissingTable, got {other:?}"),
    }
    // and so is a query that hits one directly
    let err = sqlx::query("SELECT 1 FROM orders_BTCUSDT_202611")
        .fetch_all(env.map.pool(shard0).expect("pool"))
        .await
        .map_err(|e| RouterError::db_on_shard(0, e))
        .expect_err("missing table");
    assert!(
        matches!(err, RouterError::MissingTable { ref table, shard: 0 } if table == "orders_BTCUSDT_202611"),
        "{err}"
    );
    env.drop_all().await;
}

#[tokio::test]
async fn concurrent_ensure_tables_runs_are_serialized() {
    let env = TestEnv::new("ensurerace").await;
    let router = TableRouter::new(&["BTCUSDT", "ETHUSDT"]).expect("router");
    let now = Utc
        .with_ymd_and_hms(2027, 3, 10, 0, 0, 0)
        .single()
        .expect("t");
    let runs: Vec<_> = (0..4)
        .map(|_| {
            let (map, router) = (env.map.clone(), router.clone());
            tokio::spawn(async move { map.ensure_tables(&router, now, 3).await })
        })
        .collect();
    let (mut tables, mut parts) = (0, 0);
    for r in runs {
        let rep = r
            .await
            .expect("task")
            .expect("every concurrent run succeeds");
        tables += rep.tables_created;
        parts += rep.partitions_added;
    }
    let shards = u32::from(env.map.count());
    assert_eq!(
        (tables, parts),
        (16 * shards, 4 * shards),
        "each table/partition created exactly once"
    );
    env.drop_all().await;
}

#[tokio::test]
async fn orders_at_month_boundaries_land_in_the_right_table() {
    let env = TestEnv::new("boundary").await;
    let router = TableRouter::new(&["BTCUSDT"]).expect("router");
    let dec = Utc
        .with_ymd_and_hms(2026, 12, 1, 0, 0, 0)
        .single()
        .expect("t");
    env.map
        .ensure_tables(&router, dec - chrono::Duration::days(1), 2)
        .await
        .expect("ensure");
    let btc = router.symbol("BTCUSDT").expect("sym");
    let pool = env.map.pool(domain::ShardId::new(1)).expect("pool");
    let last_nov_ms = u64::try_from(dec.timestamp_millis() - 1).expect("ms");
    let first_dec_ms = last_nov_ms + 1;
    for (ms, want) in [
        (last_nov_ms, "orders_BTCUSDT_202611"),
        (first_dec_ms, "orders_BTCUSDT_202612"),
    ] {
        let id = snowflake::min_id_at(ms).expect("id") | 7;
        let table = router
            .orders_table(&btc, domain::OrderId::new(id).expect("oid"))
            .expect("route");
        assert_eq!(table.as_str(), want);
        assert_eq!(table.month(), Month::of_id(id).expect("month"));
        sqlx::query(&format!(
            "INSERT INTO `{table}` (order_id, user_id, symbol, side, type, price, quantity, frozen_currency, frozen_amount) \
             VALUES (?, 5, 'BTCUSDT', 'buy', 'limit', '1', '1', 'USDT', '1')"
        ))
        .bind(id)
        .execute(pool)
        .await
        .expect("insert");
        let n: (i64,) = sqlx::query_as(&format!(
            "SELECT COUNT(*) FROM `{table}` WHERE order_id = ?"
        ))
        .bind(id)
        .fetch_one(pool)
        .await
        .expect("count");
        assert_eq!(n.0, 1);
    }
    env.drop_all().await;
}
