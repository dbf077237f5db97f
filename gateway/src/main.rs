//! `gateway` — the Binance-compatible REST API; see [`gateway`]. Settings:
//! `router::Settings` (shards, meta, Redis, ids) and `EXCHANGE_GATEWAY__*`.

fn main() -> std::process::ExitCode {
    router::telemetry::init();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: runtime: {e}");
            return std::process::ExitCode::from(1);
        }
    };
    match rt.block_on(gateway::run()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::from(1)
        }
    }
}
