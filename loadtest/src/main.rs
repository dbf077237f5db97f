//! `loadtest` — load generators and the demo over the libraries:
//! `bench` (the order pipeline), `transfers` (cross-shard TCC transfers), `demo`
//! (users on every shard trade against a running `engine run`), `accounts` (funded
//! traders with API keys for a load test through the gateway).

mod accounts;
mod pipeline;
mod transfers;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "loadtest",
    version,
    about = "Exchange load generators and demo"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Users on every shard deposit and trade; prints balances, trades and the audit.
    /// Needs `engine run` running.
    Demo,
    /// Throughput of the whole pipeline on the real shards: concurrent crossing
    /// placements through group commit, relays, matcher and settlers hosted in this
    /// process on their own topics; prints settled orders/s and ack latency.
    Bench {
        /// Seconds of load.
        #[arg(long, default_value_t = 20)]
        seconds: u64,
        /// Concurrent placing tasks.
        #[arg(long, default_value_t = 128)]
        concurrency: usize,
        /// Distinct users placing (spread over the shards; each task places for one).
        #[arg(long, default_value_t = 1_000)]
        users: usize,
        /// Open loop at this many placements/s in total (latency measured from each
        /// placement's scheduled time, so a stall counts for every order it delays);
        /// without it, each task places as fast as it gets answers (closed loop).
        #[arg(long)]
        rate: Option<u32>,
    },
    /// Cross-shard transfer throughput and latency (own databases).
    Transfers {
        /// Seconds of load.
        #[arg(long, default_value_t = 20)]
        seconds: u64,
        /// Concurrent transferring tasks.
        #[arg(long, default_value_t = 64)]
        concurrency: u64,
        /// Users (a multiple of 4; at least 8).
        #[arg(long, default_value_t = 1_000)]
        users: u64,
    },
    /// Registers and funds traders and creates an API key for each (for
    /// `scripts/bench-gateway.sh`); prints `user_id api_key secret` per trader.
    Accounts {
        /// Traders (dense ids: they spread over every shard).
        #[arg(long, default_value_t = 1_000)]
        users: usize,
        /// Email prefix: `{prefix}{i}@bench.exchange`.
        #[arg(long, default_value = "gwbench")]
        prefix: String,
    },
}

fn main() -> std::process::ExitCode {
    router::telemetry::init();
    let cli = Cli::parse();
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if matches!(cli.command, Cmd::Transfers { .. }) {
        // as measured before the move: two workers, one per core
        builder.worker_threads(2);
    }
    let rt = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: runtime: {e}");
            return std::process::ExitCode::from(1);
        }
    };
    let res = rt.block_on(async {
        match cli.command {
            Cmd::Demo => pipeline::demo().await,
            Cmd::Bench {
                seconds,
                concurrency,
                users,
                rate,
            } => pipeline::bench(seconds, concurrency, users, rate).await,
            Cmd::Transfers {
                seconds,
                concurrency,
                users,
            } => transfers::bench(seconds, concurrency, users).await,
            Cmd::Accounts { users, prefix } => accounts::run(users, &prefix).await,
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
