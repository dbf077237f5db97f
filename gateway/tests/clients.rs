//! Conformance with the real Python clients (ccxt, python-binance, binance-sdk-spot),
//! which judge the gateway's compatibility: for each one, a gateway and an `engine
//! run` process (relay, matcher, settlers, market data) over fresh databases, a maker
//! holding BTC and a taker holding USDT, and the client's scenario script
//! (`clients/<client>_scenario.py`, run in the venv `scripts/clients-venv.sh` keeps)
//! trading through them; the script asserts every answer and the money audits must
//! hold afterwards.
//!
//! Needs the engine binary: `cargo build -p engine --bin engine` first when this test
//! is run alone.

mod common;

use std::time::{Duration, Instant};

use common::{python, workspace, Gw};

/// What a scenario may take, engine start and client venv excluded (it takes a few
/// seconds; each of its waits gives up after 60 s).
const SCENARIO_TIMEOUT: Duration = Duration::from_secs(180);

/// Everything `pipe` gives until it closes, as text.
async fn read_all(pipe: Option<impl tokio::io::AsyncRead + Unpin>) -> String {
    let mut buf = Vec::new();
    if let Some(mut p) = pipe {
        let _ = tokio::io::AsyncReadExt::read_to_end(&mut p, &mut buf).await;
    }
    String::from_utf8_lossy(&buf).into_owned()
}

/// A port nothing listens on now (for the engine's `/metrics`, `/ready`).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// Runs `clients/<client>_scenario.py` against a fresh gateway + engine and asserts
/// that it passes and that the audits hold afterwards.
async fn scenario(client: &str, worker: u8) {
    let started = Instant::now();
    let python = python().await;
    // RESULT / FULL answers wait for the matcher's outcome (a bound a loaded CI
    // machine does not reach; at the bound the answer would say NEW)
    let gw = Gw::start_full(
        &format!("gwcli{client}"),
        worker,
        2,
        gateway::limits::Limits::default(),
        15_000,
    )
    .await;
    let env = &gw.p.env;
    // user 1 (shard 1) makes, user 2 (shard 2) takes: every trade settles across shards
    testkit::deposit(env, 1, "BTC", "1").await;
    testkit::deposit(env, 2, "USDT", "100000").await;
    let (maker, taker) = (gw.key(1).await, gw.key(2).await);
    let tag = format!("{:08x}", common::now_ms() % 0xffff_ffff);
    let logs = std::env::temp_dir().join(format!("gwcli-{client}-{tag}"));
    std::fs::create_dir_all(&logs).expect("logs");
    let mut engine = testkit::engine::EngineProcess::new(
        "relay,matcher,settler,market",
        free_port(),
        testkit::engine::engine_env(env, &format!("t_gwcli_{client}_{tag}_")),
        logs.join("engine.log"),
    );
    engine.start();
    engine.ready().await;
    let ready = started.elapsed();

    let script = workspace().join(format!("clients/{client}_scenario.py"));
    let mut child = tokio::process::Command::new(python)
        .arg(&script)
        .current_dir(workspace().join("clients"))
        .env("GATEWAY_URL", &gw.base)
        .env("MAKER_KEY", &maker.key)
        .env("MAKER_SECRET", &maker.secret)
        .env("TAKER_KEY", &taker.key)
        .env("TAKER_SECRET", &taker.secret)
        // as long as the other gateway tests wait for the engine (a consumer-group
        // rejoin on a loaded broker alone takes 10 s and more)
        .env("SETTLE_TIMEOUT_S", "60")
        .env("PYTHONUNBUFFERED", "1")
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .kill_on_drop(true)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn the scenario");
    // both pipes read while it runs: a scenario killed for its time still shows how
    // far it got
    let out = tokio::spawn(read_all(child.stdout.take()));
    let err = tokio::spawn(read_all(child.stderr.take()));
    let status = match tokio::time::timeout(SCENARIO_TIMEOUT, child.wait()).await {
        Ok(status) => Some(status.expect("scenario status")),
        Err(_) => {
            let _ = child.kill().await;
            None
        }
    };
    let (stdout, stderr) = (out.await.expect("stdout"), err.await.expect("stderr"));
    if !status.is_some_and(|s| s.success()) {
        let log = std::fs::read_to_string(&engine.log).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(20).collect();
        panic!(
            "{client} scenario {}\n--- stdout\n{stdout}\n--- stderr\n{stderr}\n\
             --- engine log {} (last lines)\n{}",
            status.map_or_else(
                || format!("ran over {SCENARIO_TIMEOUT:?}"),
                |s| format!("failed ({s})")
            ),
            engine.log.display(),
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        );
    }
    println!("{stdout}");
    if !stderr.trim().is_empty() {
        eprintln!("{client} stderr:\n{stderr}");
    }
    // both halves of every trade settled (each on its own shard) before the audits
    testkit::settle_quiet(env, Duration::from_secs(60)).await;
    testkit::all_audits_hold(env).await;
    println!(
        "{client}: engine ready after {:.1} s, passed after {:.1} s",
        ready.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
    drop(engine);
    gw.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ccxt_trades_through_the_gateway() {
    scenario("ccxt", 27).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_binance_trades_through_the_gateway() {
    scenario("python_binance", 28).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binance_sdk_spot_trades_through_the_gateway() {
    scenario("sdk", 29).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ccxt_pro_watches_through_the_gateway() {
    scenario("ccxt_pro", 30).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binance_sdk_spot_websocket_api_trades_through_the_gateway() {
    scenario("sdk_ws", 31).await;
}
