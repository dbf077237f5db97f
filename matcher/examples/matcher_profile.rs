//! Runs only our matcher over the benchmark workload, for profiling:
//! `cargo build --release -p engine --example matcher_profile && perf record -g target/release/examples/matcher_profile`.

#[path = "../benches/common/mod.rs"]
#[allow(dead_code)] // the peers' adapters are only used by the bench
mod common;

use common::adapters::{ours::OursAdapter as Ours, Adapter};
use common::workload::{generate, Params};

fn main() {
    let n: usize = std::env::var("MATCHER_BENCH_COMMANDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let w = generate(Params::standard(n, 0x5eed_0000_0000_0005));
    let native = Ours::convert(&w.cmds);
    let mut best = f64::MAX;
    for _ in 0..20 {
        let mut e = Ours::fresh();
        let t = std::time::Instant::now();
        for c in &native {
            Ours::apply(&mut e, c);
        }
        best = best.min(t.elapsed().as_secs_f64());
    }
    println!("ours: {:.0} commands/s (best of 20)", n as f64 / best);
}
