//! Matcher benchmark: our `matcher` against the Rust peers `matchcore` and
//! `orderbook-rs`, in one process, on one seeded workload (see `common/workload.rs`
//! and `README.md` beside this file).
//!
//! `cargo bench -p engine --bench matcher` runs
//! 1. the criterion groups (a 100 000-command prefix of the workload per engine, and
//!    snapshot restore + replay for ours), then
//! 2. plain timed passes over the full 1 000 000-command workload per engine, and prints
//!    the final table: commands/s, ratio to the fastest peer, per-command latency
//!    percentiles (hdrhistogram), the cross-check that every engine traded the same
//!    lots, and ours' snapshot + replay throughput.
//!
//! Without `--bench` (e.g. `cargo test --benches`) everything runs once on a small
//! workload. Environment: `MATCHER_BENCH_COMMANDS` (table workload size),
//! `MATCHER_BENCH_SEED`, `MATCHER_BENCH_SKIP_CRITERION=1`, `MATCHER_BENCH_SKIP_TABLE=1`.

#![allow(missing_debug_implementations)]

mod common;

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{BatchSize, Criterion, SamplingMode, Throughput};
use hdrhistogram::Histogram;
use matcher::{Command, Matcher};

use common::adapters::matchcore_adapter::MatchcoreAdapter;
use common::adapters::orderbook_rs_adapter::OrderbookRsAdapter;
use common::adapters::ours::{Ours, OursAdapter};
use common::adapters::{Adapter, Outcome};
use common::workload::{generate, Cmd, Params, Workload};

const DEFAULT_SEED: u64 = 0x5EED_0000_0000_0005;
const FULL_COMMANDS: usize = 1_000_000;
const CRITERION_COMMANDS: usize = 100_000;
const TIMED_PASSES: usize = 5;

fn env_usize(name: &str) -> Option<usize> {
    std::env::var(name)
        .ok()
        .and_then(|v| v.replace('_', "").parse().ok())
}

fn env_flag(name: &str) -> bool {
    std::env::var(name).is_ok_and(|v| !v.is_empty() && v != "0")
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` does not (criterion then
    // runs each benchmark once, and the table runs once on a small workload).
    let full = std::env::args().any(|a| a == "--bench");
    let seed = std::env::var("MATCHER_BENCH_SEED")
        .ok()
        .and_then(|s| u64::from_str_radix(s.trim_start_matches("0x"), 16).ok())
        .unwrap_or(DEFAULT_SEED);
    let n =
        env_usize("MATCHER_BENCH_COMMANDS").unwrap_or(if full { FULL_COMMANDS } else { 20_000 });
    let n_crit = n.min(if full { CRITERION_COMMANDS } else { 5_000 });

    let t = Instant::now();
    let w = generate(Params::standard(n, seed));
    println!(
        "workload: {} commands, seed {seed:#x}, generated in {:.2?}\n{:#?}",
        w.cmds.len(),
        t.elapsed(),
        w.stats
    );

    if !env_flag("MATCHER_BENCH_SKIP_CRITERION") {
        let mut c = Criterion::default()
            .sample_size(10)
            .warm_up_time(Duration::from_secs(1))
            .measurement_time(Duration::from_secs(3))
            .configure_from_args();
        criterion_groups(&mut c, &w.cmds[..n_crit]);
        c.final_summary();
    }

    if !env_flag("MATCHER_BENCH_SKIP_TABLE") {
        table(&w, if full { TIMED_PASSES } else { 1 });
    }
}

// ---------------------------------------------------------------------------------
// criterion part

fn criterion_groups(c: &mut Criterion, cmds: &[Cmd]) {
    let n = cmds.len();
    let mut g = c.benchmark_group(format!("matcher_mixed_{n}"));
    g.sampling_mode(SamplingMode::Flat)
        .throughput(Throughput::Elements(n as u64));
    bench_engine::<OursAdapter>(&mut g, "ours", cmds);
    bench_engine::<MatchcoreAdapter>(&mut g, "matchcore", cmds);
    bench_engine::<OrderbookRsAdapter>(&mut g, "orderbook-rs", cmds);
    g.finish();

    // Snapshot taken after the first half; restore (setup, untimed) + replay of the rest.
    let native = OursAdapter::convert(cmds);
    let (head, tail) = native.split_at(n / 2);
    let snap = run_ours_head(head).m.snapshot();
    let mut g = c.benchmark_group(format!("matcher_replay_{}", tail.len()));
    g.sampling_mode(SamplingMode::Flat)
        .throughput(Throughput::Elements(tail.len() as u64));
    g.bench_function("ours/replay_after_restore", |b| {
        b.iter_batched(
            || Ours::from_matcher(Matcher::restore(&snap).expect("restore")),
            |mut e| {
                for cmd in tail {
                    OursAdapter::apply(&mut e, cmd);
                }
                e
            },
            BatchSize::PerIteration,
        );
    });
    g.throughput(Throughput::Bytes(snap.len() as u64));
    g.bench_function("ours/restore", |b| {
        b.iter_with_large_drop(|| Matcher::restore(black_box(&snap)).expect("restore"));
    });
    g.finish();
}

fn bench_engine<A: Adapter>(
    g: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    id: &str,
    cmds: &[Cmd],
) {
    let native = A::convert(cmds);
    g.bench_function(id, |b| {
        b.iter_batched(
            A::fresh,
            |mut e| {
                for cmd in &native {
                    A::apply(&mut e, cmd);
                }
                e // dropped outside the measurement
            },
            BatchSize::PerIteration,
        );
    });
}

fn run_ours_head(head: &[Command]) -> Ours {
    let mut e = OursAdapter::fresh();
    for cmd in head {
        OursAdapter::apply(&mut e, cmd);
    }
    e
}

// ---------------------------------------------------------------------------------
// table part

struct Row {
    name: &'static str,
    peer: bool,
    median_cps: f64,
    best_cps: f64,
    hist: Histogram<u64>,
    filled: u128,
    rejected: usize,
    outcomes: Vec<Outcome>,
}

fn cps(n: usize, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64()
}

/// A timed pass over the whole stream on a fresh engine (dropped after timing).
type TimedPass = Box<dyn FnMut() -> Duration>;

/// Converts, cross-checks and latency-profiles one engine; returns its row (timings
/// filled in later) and a closure that runs one timed pass.
fn prepare<A: Adapter + 'static>(cmds: &[Cmd], peer: bool) -> (Row, TimedPass)
where
    A::Native: 'static,
{
    eprintln!("table: {} ...", A::NAME);
    let native = A::convert(cmds);

    // Cross-check (untimed): what the engine traded and refused, per command.
    let mut outcomes = Vec::with_capacity(native.len());
    {
        let mut e = A::fresh();
        for cmd in &native {
            outcomes.push(A::apply_checked(&mut e, cmd));
        }
    }
    let filled = outcomes.iter().map(|o| u128::from(o.filled)).sum();
    let rejected = outcomes.iter().filter(|o| o.rejected).count();

    // Latency pass: every command timed alone.
    let mut hist = new_hist();
    {
        let mut e = A::fresh();
        for cmd in &native {
            let t = Instant::now();
            A::apply(&mut e, cmd);
            let ns = t.elapsed().as_nanos() as u64;
            hist.record(ns.max(1)).expect("record");
        }
    }
    let pass: TimedPass = Box::new(move || {
        let mut e = A::fresh();
        let t = Instant::now();
        for cmd in &native {
            A::apply(&mut e, cmd);
        }
        let d = t.elapsed();
        black_box(&mut e);
        drop(e);
        d
    });
    let row = Row {
        name: A::NAME,
        peer,
        median_cps: 0.0,
        best_cps: 0.0,
        hist,
        filled,
        rejected,
        outcomes,
    };
    (row, pass)
}

/// Runs one warm-up round and `passes` timed rounds; each round runs every engine once,
/// in turn, so noise from the shared machine falls on all engines alike.
fn time_interleaved(rows: &mut [Row], runs: &mut [TimedPass], n: usize, passes: usize) {
    let mut times: Vec<Vec<Duration>> = vec![Vec::with_capacity(passes); runs.len()];
    for round in 0..=passes {
        for (i, run) in runs.iter_mut().enumerate() {
            let d = run();
            if round > 0 {
                times[i].push(d);
            }
        }
    }
    for (row, mut t) in rows.iter_mut().zip(times) {
        t.sort();
        row.median_cps = cps(n, t[t.len() / 2]);
        row.best_cps = cps(n, t[0]);
    }
}

fn new_hist() -> Histogram<u64> {
    Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3).expect("histogram")
}

/// Cost of an empty `Instant::now()` pair, p50 in ns (included in every latency figure).
fn timer_overhead() -> u64 {
    let mut h = new_hist();
    for _ in 0..200_000 {
        let t = Instant::now();
        let ns = black_box(t).elapsed().as_nanos() as u64;
        h.record(ns.max(1)).expect("record");
    }
    h.value_at_quantile(0.5)
}

struct Replay {
    snapshot_bytes: usize,
    snapshot_time: Duration,
    restore_best: Duration,
    replay_cmds: usize,
    replay_events: u64,
    replay_best: Duration,
    replay_median: Duration,
    identical: bool,
}

fn measure_replay(cmds: &[Cmd], passes: usize) -> Replay {
    eprintln!("table: ours snapshot + replay ...");
    let native = OursAdapter::convert(cmds);
    let (head, tail) = native.split_at(native.len() / 2);
    let mut orig = run_ours_head(head);
    let t = Instant::now();
    let snap = orig.m.snapshot();
    let snapshot_time = t.elapsed();

    // Correctness (untimed): the restored matcher emits exactly what the original does.
    let mut identical = true;
    {
        let mut copy = Ours::from_matcher(Matcher::restore(&snap).expect("restore"));
        for cmd in tail {
            orig.m.apply(cmd, &mut orig.out);
            copy.m.apply(cmd, &mut copy.out);
            if orig.out != copy.out {
                identical = false;
                break;
            }
            orig.out.clear();
            copy.out.clear();
        }
    }
    drop(orig);

    let mut restores = Vec::new();
    let mut replays = Vec::new();
    let mut replay_events = 0;
    for pass in 0..=passes {
        let t = Instant::now();
        let m = Matcher::restore(&snap).expect("restore");
        let r = t.elapsed();
        let mut e = Ours::from_matcher(m);
        let t = Instant::now();
        for cmd in tail {
            OursAdapter::apply(&mut e, cmd);
        }
        let d = t.elapsed();
        replay_events = e.events;
        drop(e);
        if pass > 0 {
            restores.push(r);
            replays.push(d);
        }
    }
    restores.sort();
    replays.sort();
    Replay {
        snapshot_bytes: snap.len(),
        snapshot_time,
        restore_best: restores[0],
        replay_cmds: tail.len(),
        replay_events,
        replay_best: replays[0],
        replay_median: replays[replays.len() / 2],
        identical,
    }
}

fn fmt_rate(x: f64) -> String {
    let s = format!("{:.0}", x);
    let mut out = String::new();
    for (i, ch) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

fn table(w: &Workload, passes: usize) {
    let cmds = &w.cmds;
    let n = cmds.len();
    let overhead = timer_overhead();
    let (mut rows, mut runs): (Vec<Row>, Vec<TimedPass>) = [
        prepare::<OursAdapter>(cmds, false),
        prepare::<MatchcoreAdapter>(cmds, true),
        prepare::<OrderbookRsAdapter>(cmds, true),
    ]
    .into_iter()
    .unzip();
    time_interleaved(&mut rows, &mut runs, n, passes);
    let replay = measure_replay(cmds, passes);
    let fastest_peer = rows
        .iter()
        .filter(|r| r.peer)
        .map(|r| r.median_cps)
        .fold(0.0, f64::max);

    println!();
    println!("==================== matcher bench: final table ====================");
    println!(
        "workload: {n} commands (seed {:#x}): {} GTC places, {} IOC limits, {} markets, {} cancels",
        w.params.seed, w.stats.places, w.stats.ioc_places, w.stats.markets, w.stats.cancels
    );
    let takers = (w.stats.ioc_places + w.stats.markets).max(1);
    println!(
        "book: {} resting orders on average (max {}), {} levels at the end; {} of the places \
         traded on arrival; takers traded at {:.2} price levels on average",
        w.stats.mean_resting,
        w.stats.max_resting,
        w.stats.levels_at_end,
        w.stats.crossing_places,
        w.stats.taker_levels as f64 / takers as f64
    );
    println!("single thread; commands pre-converted to each engine's native type before timing.");
    println!(
        "commands/s = commands / wall time of one pass over the whole stream on a fresh engine \
         (median of {passes} timed rounds after 1 warm-up round; each round runs every engine once, in turn; best pass in the next column)."
    );
    println!("ratio = this engine's median commands/s / the fastest peer's median commands/s.");
    println!(
        "latency = a separate pass timing each command alone with Instant::now(); \
         every figure includes ~{overhead} ns of timer overhead."
    );
    println!();
    println!(
        "| {:<24} | {:>14} | {:>14} | {:>15} | {:>8} | {:>8} | {:>8} | {:>10} |",
        "engine",
        "commands/s",
        "best pass",
        "ratio vs peer",
        "p50 ns",
        "p99 ns",
        "p99.9 ns",
        "max ns"
    );
    println!(
        "|{:-<26}|{:->16}|{:->16}|{:->17}|{:->10}|{:->10}|{:->10}|{:->12}|",
        "", "", "", "", "", "", "", ""
    );
    for r in &rows {
        println!(
            "| {:<24} | {:>14} | {:>14} | {:>15} | {:>8} | {:>8} | {:>8} | {:>10} |",
            r.name,
            fmt_rate(r.median_cps),
            fmt_rate(r.best_cps),
            format!("{:.2}x", r.median_cps / fastest_peer),
            r.hist.value_at_quantile(0.50),
            r.hist.value_at_quantile(0.99),
            r.hist.value_at_quantile(0.999),
            r.hist.max(),
        );
    }
    println!();
    println!("cross-check (untimed pass): lots traded and commands refused per engine");
    println!(
        "| {:<26} | {:>16} | {:>9} |",
        "engine", "lots traded", "refused"
    );
    println!(
        "| {:<26} | {:>16} | {:>9} |",
        "reference book (generator)", w.stats.filled_lots, 0
    );
    for r in &rows {
        let mark = if r.filled == w.stats.filled_lots {
            ""
        } else {
            "  <-- differs from the reference"
        };
        println!(
            "| {:<26} | {:>16} | {:>9} |{mark}",
            r.name, r.filled, r.rejected
        );
    }
    // Where a peer first disagrees with ours, command by command.
    for r in rows.iter().filter(|r| r.peer) {
        let first = rows[0]
            .outcomes
            .iter()
            .zip(&r.outcomes)
            .position(|(a, b)| a.filled != b.filled || a.rejected != b.rejected);
        if let Some(i) = first {
            let diverging = rows[0]
                .outcomes
                .iter()
                .zip(&r.outcomes)
                .filter(|(a, b)| a.filled != b.filled || a.rejected != b.rejected)
                .count();
            println!(
                "  {}: {diverging} commands differ from ours; first at #{i} {:?}: ours {:?}, {} {:?}",
                r.name, cmds[i], rows[0].outcomes[i], r.name, r.outcomes[i]
            );
        }
    }
    println!();
    let rate = |k: f64, d: Duration| fmt_rate(k / d.as_secs_f64());
    println!(
        "replay (ours): snapshot after {} commands = {} bytes (taken in {:.2?}); restore {:.2?} (best); \
         replay of the remaining {} commands -> {} events: {} events/s = {} commands/s (median), \
         {} events/s (best); restore + replay: {} events/s (best); output identical to an uninterrupted run: {}",
        n - replay.replay_cmds,
        replay.snapshot_bytes,
        replay.snapshot_time,
        replay.restore_best,
        replay.replay_cmds,
        replay.replay_events,
        rate(replay.replay_events as f64, replay.replay_median),
        rate(replay.replay_cmds as f64, replay.replay_median),
        rate(replay.replay_events as f64, replay.replay_best),
        rate(replay.replay_events as f64, replay.replay_best + replay.restore_best),
        if replay.identical { "yes" } else { "NO" },
    );
    let ours = &rows[0];
    let ratio = ours.median_cps / fastest_peer;
    let verdict = |ok: bool| if ok { "met" } else { "MISSED" };
    println!(
        "goals: ratio >= 1.0 vs fastest peer: {:.2}x {}; >= 3,000,000 commands/s: {} {}; \
         replay >= 1,000,000 events/s: {} {}",
        ratio,
        verdict(ratio >= 1.0),
        fmt_rate(ours.median_cps),
        verdict(ours.median_cps >= 3_000_000.0),
        rate(replay.replay_events as f64, replay.replay_median),
        verdict(replay.replay_events as f64 / replay.replay_median.as_secs_f64() >= 1_000_000.0),
    );
    println!("=====================================================================");
}
