//! `shardctl --json` as a real process against the real shards: `status` and `locate`
//! print one JSON object with the same facts as their tables, the other commands one
//! object per result line; amounts are exact decimal strings. (`--json audit` is in
//! `audit.rs`, next to the state it checks.)

mod common;

use std::process::Command;

use chrono::Utc;
use common::{amt, audits_hold, balance, uid, users};
use domain::{Amount, OrderId};
use router::config::redact_url;
use router::TableRouter;
use serde_json::Value;
use testkit::TestEnv;

/// The worker id the CLI issues ids with in these tests.
const WORKER: u8 = 27;

/// `shardctl` against `env` (its databases and Redis prefix); add args and run.
fn shardctl(env: &TestEnv) -> Command {
    let mut c = common::shardctl(env);
    c.env("EXCHANGE_SNOWFLAKE__WORKER_ID", WORKER.to_string());
    c
}

struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Run {
    /// stdout as one JSON object.
    fn object(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "one JSON object expected ({e}):\n{}\n{}",
                self.stdout, self.stderr
            )
        })
    }

    /// stdout as one JSON object per line.
    fn lines(&self) -> Vec<Value> {
        self.stdout
            .lines()
            .map(|l| {
                serde_json::from_str(l)
                    .unwrap_or_else(|e| panic!("a JSON line expected ({e}): {l}\n{}", self.stderr))
            })
            .collect()
    }

    /// The only JSON line, after a successful run.
    fn one(&self) -> Value {
        assert_eq!(self.code, Some(0), "{}{}", self.stdout, self.stderr);
        let lines = self.lines();
        assert_eq!(lines.len(), 1, "{}", self.stdout);
        lines.into_iter().next().expect("line")
    }
}

fn run(mut c: Command, args: &[&str]) -> Run {
    let out = c.args(args).output().expect("run shardctl");
    Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// An exact decimal string (never a JSON number).
fn money(v: &Value) -> Amount {
    amt(v
        .as_str()
        .unwrap_or_else(|| panic!("a decimal string: {v}")))
}

/// The time of an id as `shardctl` prints it.
fn iso_time(d: &router::Decoded) -> String {
    d.time().format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}

async fn count(pool: &sqlx::MySqlPool, sql: &str) -> i64 {
    let (n,): (i64,) = sqlx::query_as(sql).fetch_one(pool).await.expect(sql);
    n
}

#[tokio::test]
async fn json_status_reports_meta_every_shard_tcc_and_redis() {
    let env = TestEnv::new("ctlstatus").await;
    users(&env, 2).await;
    let router = TableRouter::new(&env.settings.symbols).expect("router");
    env.map
        .ensure_tables(&router, Utc::now(), 1)
        .await
        .expect("ensure tables");
    // a withdrawal waiting for review on user 2's shard
    sqlx::query(
        "INSERT INTO withdrawals (withdrawal_id, user_id, currency, amount, fee, actual_amount, chain, to_address, status) \
         VALUES (7001, 2, 'USDT', '100', '1', '99', 'TRX', 'Taddr', 'reviewing')",
    )
    .execute(env.map.pool_for(uid(2)))
    .await
    .expect("withdrawal");
    let migrations = "SELECT CAST(MAX(version) AS SIGNED) FROM _sqlx_migrations WHERE success = 1";

    // the flag before or after the subcommand
    let before = run(shardctl(&env), &["--json", "status"]);
    let after = run(shardctl(&env), &["status", "--json"]);
    assert_eq!(before.code, Some(0), "{}{}", before.stdout, before.stderr);
    assert_eq!(after.code, Some(0), "{}{}", after.stdout, after.stderr);
    for s in [before.object(), after.object()] {
        assert_eq!(s["ok"], true, "{s:#}");
        let meta = &s["meta"];
        assert_eq!(meta["place"], "meta");
        assert_eq!(meta["state"], "up");
        assert_eq!(meta["url"], redact_url(&env.settings.meta));
        assert!(
            meta["url"].as_str().expect("url").contains(":***@"),
            "{meta}"
        );
        assert!(
            meta["version"]
                .as_str()
                .expect("version")
                .contains("MariaDB"),
            "{meta}"
        );
        assert_eq!(meta["migration"], count(env.map.meta(), migrations).await);
        assert_eq!(meta["users"], 2, "directory entries");
        assert_eq!(meta["month_tables"], Value::Null);
        assert_eq!(meta["error"], Value::Null);

        let shards = s["shards"].as_array().expect("shards");
        assert_eq!(shards.len(), usize::from(env.map.count()));
        for ((id, pool), sh) in env.map.iter().zip(shards) {
            let i = usize::from(id.get());
            assert_eq!(sh["shard"], id.get(), "{sh}");
            assert_eq!(sh["place"], format!("shard{i}"));
            assert_eq!(sh["state"], "up", "{sh}");
            assert_eq!(sh["url"], redact_url(&env.settings.shards[i]));
            assert_eq!(sh["migration"], count(pool, migrations).await);
            assert_eq!(sh["users"], count(pool, "SELECT COUNT(*) FROM users").await);
            assert_eq!(
                sh["month_tables"],
                env.map.month_tables(id).await.expect("tables").len()
            );
            assert_eq!(
                sh["relay_backlog"],
                count(
                    pool,
                    "SELECT COUNT(*) FROM outbox o JOIN outbox_relay r ON r.id = 1 WHERE o.seq > r.published_seq"
                )
                .await
            );
            let reviewing = u8::from(id == env.map.shard_of(uid(2)));
            assert_eq!(sh["withdrawals_reviewing"], reviewing, "{sh}");
            assert_eq!(sh["replication_lag"], Value::Null, "no replica");
            assert_eq!(sh["error"], Value::Null);
        }
        // users 1 and 2 live on shards 1 and 2
        assert_eq!(shards[1]["users"], 1);
        assert_eq!(shards[2]["users"], 1);
        assert_eq!(shards[0]["users"], 0);
        assert!(shards[0]["month_tables"].as_u64().expect("n") > 0);

        assert_eq!(s["tcc"]["unfinished"], 0, "{s:#}");
        assert_eq!(s["tcc"]["stuck"], 0);
        assert_eq!(s["tcc"]["error"], Value::Null);
        assert_eq!(s["redis"]["state"], "up", "{s:#}");
        assert_eq!(s["redis"]["reply"], "PONG");
        assert_eq!(s["redis"]["url"], redact_url(&env.settings.redis.url));
    }

    // the tables stay the default
    let human = run(shardctl(&env), &["status"]);
    assert_eq!(human.code, Some(0), "{}", human.stderr);
    assert!(
        human.stdout.starts_with("place  state url"),
        "{}",
        human.stdout
    );
    assert!(human.stdout.contains("no replica"), "{}", human.stdout);
    assert!(
        human.stdout.contains("0 unfinished transfers"),
        "{}",
        human.stdout
    );

    // a shard that does not answer: down, with the reason, exit 1
    let mut urls = env.settings.shards.clone();
    urls[3] = "mysql://exchange:exchange@127.0.0.1:1/nowhere".into();
    let mut c = shardctl(&env);
    c.env("EXCHANGE_SHARD_URLS", urls.join(","));
    let down = run(c, &["--json", "status"]);
    assert_eq!(down.code, Some(1), "{}{}", down.stdout, down.stderr);
    let s = down.object();
    assert_eq!(s["ok"], false);
    assert_eq!(s["meta"]["state"], "up");
    assert_eq!(s["shards"][0]["state"], "up");
    let dead = &s["shards"][3];
    assert_eq!(dead["state"], "down", "{dead}");
    assert_eq!(dead["url"], "mysql://exchange:***@127.0.0.1:1/nowhere");
    assert!(!dead["error"].as_str().expect("error").is_empty(), "{dead}");
    assert_eq!(dead["version"], Value::Null);
    assert_eq!(dead["users"], Value::Null);
    assert_eq!(dead["relay_backlog"], Value::Null, "unknown");
    env.drop_all().await;
}

#[tokio::test]
async fn json_locate_user_email_order_and_id() {
    let env = TestEnv::new("ctllocate").await;
    users(&env, 2).await;
    let shard2 = env.map.shard_of(uid(2));

    let r = run(shardctl(&env), &["--json", "locate", "user", "2"]);
    assert_eq!(r.code, Some(0), "{}{}", r.stdout, r.stderr);
    let u = r.object();
    assert_eq!(u["user_id"], 2);
    assert_eq!(u["shard"], shard2.get());
    assert_eq!(
        u["url"],
        redact_url(&env.settings.shards[usize::from(shard2.get())])
    );
    assert_eq!(u["present"], true);
    assert!(u.get("email").is_none(), "{u}");

    let r = run(
        shardctl(&env),
        &["locate", "email", "u2@money.test", "--json"],
    );
    assert_eq!(r.code, Some(0), "{}{}", r.stdout, r.stderr);
    let e = r.object();
    assert_eq!(e["email"], "u2@money.test");
    assert_eq!((&e["user_id"], &e["shard"]), (&u["user_id"], &u["shard"]));

    // user 7 was never registered: its shard has no row, exit 1
    let r = run(shardctl(&env), &["--json", "locate", "user", "7"]);
    assert_eq!(r.code, Some(1), "{}{}", r.stdout, r.stderr);
    let missing = r.object();
    assert_eq!(missing["shard"], env.map.shard_of(uid(7)).get());
    assert_eq!(missing["present"], false);

    // an order of user 2 in this month's table
    let router = TableRouter::new(&env.settings.symbols).expect("router");
    env.map
        .ensure_tables(&router, Utc::now(), 0)
        .await
        .expect("ensure tables");
    let ids = router::Snowflake::new(0, WORKER).expect("snowflake");
    let (order_id, absent_id) = (ids.next_id().expect("id"), ids.next_id().expect("id"));
    let sym = router.symbol("BTCUSDT").expect("symbol");
    let table = router
        .orders_table(&sym, OrderId::new(order_id).expect("order id"))
        .expect("table");
    sqlx::query(&format!(
        "INSERT INTO `{}` (order_id, user_id, symbol, side, type, price, quantity, \
           frozen_currency, frozen_amount, status) \
         VALUES (?, 2, 'BTCUSDT', 'buy', 'limit', '50000', '0.002', 'USDT', '100', 'new')",
        table.as_str()
    ))
    .bind(order_id)
    .execute(env.map.pool(shard2).expect("pool"))
    .await
    .expect("insert order");
    let decoded = router::decode(order_id).expect("decode");

    let oid = order_id.to_string();
    let r = run(
        shardctl(&env),
        &["--json", "locate", "order", &oid, "--symbol", "BTCUSDT"],
    );
    assert_eq!(r.code, Some(0), "{}{}", r.stdout, r.stderr);
    let o = r.object();
    assert_eq!(o["order_id"], order_id);
    assert_eq!(o["symbol"], "BTCUSDT");
    assert_eq!(o["table"], table.as_str());
    assert_eq!(o["issued"], iso_time(&decoded));
    assert_eq!(o["shards_searched"], serde_json::json!([0, 1, 2, 3]));
    assert_eq!(o["found"], true);
    assert_eq!(
        o["rows"],
        serde_json::json!([{"shard": shard2.get(), "user_id": 2, "status": "new"}])
    );
    // only the user's shard with --user
    let r = run(
        shardctl(&env),
        &[
            "locate", "order", &oid, "--symbol", "BTCUSDT", "--user", "2", "--json",
        ],
    );
    let o = r.object();
    assert_eq!(o["shards_searched"], serde_json::json!([shard2.get()]));
    assert_eq!(o["rows"].as_array().expect("rows").len(), 1);
    // an id nobody placed: not found, exit 1
    let r = run(
        shardctl(&env),
        &[
            "--json",
            "locate",
            "order",
            &absent_id.to_string(),
            "--symbol",
            "BTCUSDT",
        ],
    );
    assert_eq!(r.code, Some(1), "{}{}", r.stdout, r.stderr);
    let o = r.object();
    assert_eq!(o["found"], false);
    assert_eq!(o["rows"], serde_json::json!([]));
    // and the human form still says where it is
    let r = run(
        shardctl(&env),
        &["locate", "order", &oid, "--symbol", "BTCUSDT"],
    );
    assert!(
        r.stdout
            .contains(&format!("shard       {shard2} (user 2, status new)")),
        "{}",
        r.stdout
    );

    let r = run(shardctl(&env), &["--json", "locate", "id", &oid]);
    let d = r.object();
    assert_eq!(d["id"], order_id);
    assert_eq!(d["unix_ms"], decoded.unix_ms);
    assert_eq!(d["worker"], WORKER);
    assert_eq!(d["datacenter"], 0);
    assert_eq!(d["sequence"], decoded.sequence);
    assert_eq!(d["month"], decoded.month().to_string());
    assert_eq!(d["time"], iso_time(&decoded));
    env.drop_all().await;
}

#[tokio::test]
async fn json_users_funding_transfers_tcc_and_ids_print_an_object_per_result_line() {
    let env = TestEnv::new("ctllines").await;

    let r = run(
        shardctl(&env),
        &["--json", "user", "add", "u1@money.test", "u2@money.test"],
    );
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    let added = r.lines();
    assert_eq!(added.len(), 2, "{}", r.stdout);
    for (i, a) in (1u64..).zip(&added) {
        assert_eq!(a["email"], format!("u{i}@money.test"));
        assert_eq!(a["user_id"], i);
        assert_eq!(a["shard"], env.map.shard_of(uid(i)).get());
        assert_eq!(a["created"], true);
    }
    let again = run(shardctl(&env), &["user", "add", "u1@money.test", "--json"]).one();
    assert_eq!(
        (&again["user_id"], &again["created"]),
        (&1.into(), &false.into())
    );

    let d = run(
        shardctl(&env),
        &[
            "--json", "chain", "deposit", "1", "USDT", "250.25", "--txid", "json-1",
        ],
    )
    .one();
    assert_eq!(money(&d["amount"]), amt("250.25"));
    assert_eq!(
        (&d["txid"], &d["status"], &d["credited"]),
        (&"json-1".into(), &"pending".into(), &false.into())
    );
    assert_eq!(
        (&d["confirmations"], &d["required"]),
        (&0.into(), &12.into())
    );
    let d = run(
        shardctl(&env),
        &["--json", "chain", "confirm", "json-1", "USDT"],
    )
    .one();
    assert_eq!(
        (&d["status"], &d["credited"]),
        (&"completed".into(), &true.into())
    );
    assert_eq!(
        balance(&env, 1, "USDT").await,
        (amt("250.25"), Amount::ZERO)
    );

    let a = run(
        shardctl(&env),
        &["--json", "withdraw", "address", "1", "USDT", "TRX", "Taddr"],
    )
    .one();
    assert_eq!(
        a,
        serde_json::json!({"user_id": 1, "asset": "USDT", "chain": "TRX", "address": "Taddr"})
    );
    let w = run(
        shardctl(&env),
        &[
            "--json", "withdraw", "request", "1", "USDT", "TRX", "Taddr", "100.5",
        ],
    )
    .one();
    assert_eq!(w["status"], "reviewing", "{w}");
    assert_eq!(money(&w["amount"]), amt("100.5"));
    assert_eq!(money(&w["fee"]), amt("1"));
    assert_eq!(money(&w["actual_amount"]), amt("99.5"));
    let id = w["withdrawal_id"].as_u64().expect("id").to_string();
    // `withdraw list --json` as before: one object per line
    let listed = run(
        shardctl(&env),
        &["withdraw", "list", "--status", "reviewing", "--json"],
    )
    .one();
    assert_eq!(listed, w);
    let t = run(
        shardctl(&env),
        &["--json", "withdraw", "approve", &id, "--comment", "ok"],
    )
    .one();
    assert_eq!(
        (&t["status"], &t["changed"]),
        (&"approved".into(), &true.into())
    );
    assert_eq!(t["withdrawal_id"], w["withdrawal_id"]);
    // a repeated step: nothing changed, exit 1, still said on stdout and stderr
    let r = run(
        shardctl(&env),
        &["--json", "withdraw", "approve", &id, "--comment", "again"],
    );
    assert_eq!(r.code, Some(1));
    assert!(r.stderr.contains("nothing changed"), "{}", r.stderr);
    let t = &r.lines()[0];
    assert_eq!(
        (&t["status"], &t["changed"]),
        (&"approved".into(), &false.into())
    );

    // users 1 and 2 live on two shards: a TCC transfer
    let t = run(
        shardctl(&env),
        &["--json", "transfer", "1", "2", "USDT", "30.5"],
    )
    .one();
    assert_eq!(
        (&t["from"], &t["to"], &t["asset"]),
        (&1.into(), &2.into(), &"USDT".into())
    );
    assert_eq!(money(&t["amount"]), amt("30.5"));
    assert_eq!(
        (&t["local"], &t["outcome"]),
        (&false.into(), &"confirmed".into())
    );
    assert_eq!(balance(&env, 2, "USDT").await, (amt("30.5"), Amount::ZERO));
    let gid = t["gid"].as_u64().expect("gid");
    let r = run(
        shardctl(&env),
        &["--json", "tcc", "resolve", &gid.to_string()],
    )
    .one();
    assert_eq!(
        r,
        serde_json::json!({"gid": gid, "result": "nothing_to_do"})
    );
    let r = run(shardctl(&env), &["tcc", "recover", "--json"]).one();
    assert_eq!(
        r,
        serde_json::json!({"confirmed": 0, "cancelled": 0, "failed": 0})
    );
    let r = run(shardctl(&env), &["tcc", "list", "--json"]);
    assert_eq!(
        (r.code, r.stdout.as_str()),
        (Some(0), ""),
        "nothing unfinished"
    );

    let r = run(shardctl(&env), &["--json", "ids", "--count", "2"]);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    let ids = r.lines();
    assert_eq!(ids.len(), 2, "{}", r.stdout);
    for i in &ids {
        let id = i["id"].as_u64().expect("id");
        let d = router::decode(id).expect("decode");
        assert_eq!(i["worker"], WORKER);
        assert_eq!(i["unix_ms"], d.unix_ms);
        assert_eq!(i["sequence"], d.sequence);
        assert_eq!(i["worker_id_source"], "config");
    }
    assert_ne!(ids[0]["id"], ids[1]["id"]);
    audits_hold(&env).await;
    env.drop_all().await;
}
