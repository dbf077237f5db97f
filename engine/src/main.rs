//! `engine` — runs the pipeline roles (outbox relays, matching service, settlers, market
//! data, transfer recovery); see [`engine::roles`]. Settings: `router::Settings`
//! (shards, meta, Redis) and `EXCHANGE_ENGINE__*` (brokers, topic prefix, endpoint).

use clap::{Parser, Subcommand};
use engine::roles::Role;

#[derive(Debug, Parser)]
#[command(
    name = "engine",
    version,
    about = "Exchange engine: outbox relays, matching service, settlers, market data, recovery"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Run roles until SIGTERM / Ctrl-C.
    Run {
        /// Roles to host (default: all).
        #[arg(long, value_delimiter = ',')]
        roles: Vec<Role>,
        /// Shards whose relay/settler to host (default: all).
        #[arg(long, value_delimiter = ',')]
        shard: Vec<u16>,
    },
}

fn main() -> std::process::ExitCode {
    router::telemetry::init();
    let cli = Cli::parse();
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
    let res = rt.block_on(async {
        match cli.command {
            Cmd::Run { roles, shard } => engine::roles::run(roles, shard).await,
        }
    });
    match res {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::from(1)
        }
    }
}
