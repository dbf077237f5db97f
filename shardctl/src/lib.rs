//! `shardctl` — the operator's shard admin CLI.
//!
//! Configuration comes from the same layered settings as every service
//! (`EXCHANGE_CONFIG`, `EXCHANGE_*` env, defaults). Exit code 0 on success, 1 when a
//! check fails (e.g. a shard is down in `status`), 2 on usage errors.
//!
//! Every command prints human tables by default; with the global `--json` (before or
//! after the subcommand) it prints JSON on stdout instead: one object for `status`,
//! `audit` and `locate`, one object per result line for the others. Money amounts are
//! exact decimal strings. Refusals and progress stay on stderr.

use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};

mod symbol;
use domain::{Amount, OrderId, ShardId, UserId};
use router::directory::{redis_pool, NO_PASSWORD};
use router::status::{probe, Counted, Probe};
use router::{decode, Settings, ShardMap, TableRouter, UserDirectory, WorkerLease};
use serde::Serialize;

#[derive(Debug, Parser)]
#[command(
    name = "shardctl",
    version,
    about = "Shard admin for the exchange: status, migrations, month tables, locating users and orders"
)]
/// The command line.
pub struct Cli {
    /// Machine-readable output: JSON on stdout instead of the human tables.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Every shard, meta and Redis: reachable, version, migration level, row counts.
    Status,
    /// Apply (default) or revert migrations on meta and every shard.
    Migrate {
        #[command(subcommand)]
        action: Option<MigrateAction>,
    },
    /// Create month tables and ledger partitions ahead of time (idempotent).
    EnsureTables {
        /// Months after the current one to create (default: config `months_ahead`).
        #[arg(long)]
        months_ahead: Option<u32>,
    },
    /// Where something lives.
    Locate {
        #[command(subcommand)]
        what: Locate,
    },
    /// Money audits (exit 1 if any fails): the money invariant per asset
    /// (Σ(available + frozen) over all shards, fee accounts included, = Σ completed
    /// deposits − Σ completed withdrawals); per shard, every frozen balance = what its
    /// open orders and withdrawals hold; every trade has one buy and one sell half;
    /// per shard, every (user, asset)'s ledger rows replay to its balance; the
    /// matcher's open orders (its latest snapshot) = the order tables' open orders.
    /// Conservation and trade halves are exact only while the pipeline is quiescent;
    /// the matcher check is skipped (and says so) when the snapshot does not cover
    /// every input written.
    Audit,
    /// Issue snowflake ids (worker id from config, else leased in Redis) and decode them.
    Ids {
        /// How many.
        #[arg(long, default_value_t = 3)]
        count: u32,
    },
    /// User directory operations.
    User {
        #[command(subcommand)]
        action: UserAction,
    },
    /// Transfer between two users (TCC across shards, one transaction on one shard).
    /// `EXCHANGE_FAILPOINT=tcc.after_try` (etc.) aborts the process at that step.
    Transfer {
        from: u64,
        to: u64,
        asset: String,
        amount: String,
    },
    /// TCC global transactions: list, finish, recover.
    Tcc {
        #[command(subcommand)]
        action: TccAction,
    },
    /// Chain simulator: report deposits and their confirmations (the crediting path is
    /// the real one).
    Chain {
        #[command(subcommand)]
        action: ChainAction,
    },
    /// Withdrawals: allowlist, request, review, send, complete.
    Withdraw {
        #[command(subcommand)]
        action: WithdrawAction,
    },
    /// Symbols: list them (with their open orders), halt and resume trading, change
    /// their rules at a safe boundary.
    Symbol {
        #[command(subcommand)]
        action: symbol::SymbolAction,
    },
    /// Fill batches a settler parked (failed too often, or held behind one of their
    /// symbol): list them, retry them once the cause is fixed.
    Fills {
        #[command(subcommand)]
        action: FillsAction,
    },
}

#[derive(Debug, Subcommand)]
enum FillsAction {
    /// Every parked batch, every shard, oldest first (`--json`: one object per line).
    Parked,
    /// Ask the settler of each shard (or `--shard N`) to apply its parked batches again,
    /// oldest first per symbol, removing each once applied; waits for its answer.
    /// Exit 1 when a batch failed again or no settler answered within the wait (the
    /// request stays and is served when the shard's settler runs).
    Retry {
        #[arg(long)]
        shard: Option<u16>,
        /// Seconds to wait for the settlers' answer.
        #[arg(long, default_value_t = 60)]
        wait_s: u64,
    },
}

#[derive(Debug, Subcommand)]
enum ChainAction {
    /// Report a deposit seen on the chain (pending until confirmed).
    Deposit {
        user: u64,
        asset: String,
        amount: String,
        /// Default: a fresh random txid.
        #[arg(long)]
        txid: Option<String>,
        #[arg(long, default_value = "SIM")]
        chain: String,
    },
    /// Report confirmations of a deposit (credited once they reach the asset's
    /// requirement).
    Confirm {
        txid: String,
        asset: String,
        /// Default: the asset's requirement.
        #[arg(long)]
        confirmations: Option<u32>,
    },
}

#[derive(Debug, Subcommand)]
enum WithdrawAction {
    /// Allow an address for a user's withdrawals of an asset on a chain.
    Address {
        user: u64,
        asset: String,
        chain: String,
        address: String,
    },
    /// Request a withdrawal (frozen, queued for review).
    Request {
        user: u64,
        asset: String,
        chain: String,
        address: String,
        amount: String,
        /// 2FA code, when the user enabled 2FA.
        #[arg(long)]
        code: Option<String>,
    },
    /// Withdrawals (optionally in one status), every shard.
    /// `--json`: one JSON object per line.
    List {
        #[arg(long)]
        status: Option<String>,
    },
    /// Approve a withdrawal under review.
    Approve {
        id: u64,
        #[arg(long, default_value_t = 0)]
        reviewer: u64,
        #[arg(long)]
        comment: String,
    },
    /// Reject a withdrawal under review (its funds are unfrozen).
    Reject {
        id: u64,
        #[arg(long, default_value_t = 0)]
        reviewer: u64,
        #[arg(long)]
        comment: String,
    },
    /// Mark an approved withdrawal as being sent.
    Process { id: u64 },
    /// Complete a withdrawal being sent, with the chain's txid.
    Complete {
        id: u64,
        #[arg(long)]
        txid: String,
    },
    /// Fail a withdrawal being sent (its funds are unfrozen).
    Fail {
        id: u64,
        #[arg(long)]
        reason: String,
    },
}

#[derive(Debug, Subcommand)]
enum TccAction {
    /// Unfinished globals (`--stuck`: older than 60 s or already retried); `--json`:
    /// one JSON object per line.
    List {
        #[arg(long)]
        stuck: bool,
    },
    /// Finish one global now: confirming → confirmed, cancelling → cancelled, trying →
    /// cancelled once older than the Try timeout (5 s).
    Resolve { gid: u64 },
    /// Recovery: finish every unfinished global whose retry time has come (a `trying`
    /// one once older than the Try timeout). Once, or every second with `--watch`.
    Recover {
        #[arg(long, default_value_t = 5_000)]
        try_timeout_ms: u64,
        #[arg(long)]
        watch: bool,
    },
}

#[derive(Debug, Subcommand)]
enum MigrateAction {
    /// Apply pending migrations (creating the databases if needed).
    Up,
    /// Revert migrations above `--to` (0 = all; month tables are dropped with their template).
    Down {
        #[arg(long, default_value_t = 0)]
        to: i64,
    },
}

#[derive(Debug, Subcommand)]
enum Locate {
    /// A user by id: shard and whether its row is there.
    User { user_id: u64 },
    /// A user by email.
    Email { email: String },
    /// An order: decoded id and its table on... every shard holds that symbol's table;
    /// with `--user` the one shard.
    Order {
        order_id: u64,
        #[arg(long)]
        symbol: String,
        #[arg(long)]
        user: Option<u64>,
    },
    /// Decode any snowflake id (time, datacenter, worker, sequence, month).
    Id { id: u64 },
}

#[derive(Debug, Subcommand)]
enum UserAction {
    /// Register users by email (idempotent) and print where they landed.
    Add {
        #[arg(required = true)]
        emails: Vec<String>,
    },
    /// Create an HMAC API key for a user (the gateway's `X-MBX-APIKEY`); the secret is
    /// printed once and cannot be shown again.
    Key {
        user_id: u64,
        #[arg(long, default_value = "shardctl")]
        label: String,
    },
    /// Revoke an API key (effective at once: the gateway's cache entry goes too).
    RevokeKey { api_key: String },
}

/// Prints `value` as one line of JSON (`json`), or the human way.
fn emit<T: Serialize>(json: bool, value: &T, human: impl FnOnce(&T)) -> Result<()> {
    if json {
        println!("{}", serde_json::to_string(value)?);
    } else {
        human(value);
    }
    Ok(())
}

/// Returns `Ok(false)` when a check ran and failed.
///
/// # Errors
/// Settings, the services or the command itself failing.
pub async fn run(cli: Cli) -> Result<bool> {
    let settings = Settings::load().context("loading settings")?;
    tracing::debug!(settings = ?settings.redacted(), "effective settings");
    let json = cli.json;
    match cli.command {
        Command::Status => status(&settings, json).await,
        Command::Migrate { action } => {
            #[derive(Serialize)]
            struct Migrated {
                action: &'static str,
                to: Option<i64>,
                shards: u16,
            }
            let map = ShardMap::connect_creating(&settings).await?;
            let done = match action.unwrap_or(MigrateAction::Up) {
                MigrateAction::Up => {
                    map.migrate_up().await?;
                    Migrated {
                        action: "up",
                        to: None,
                        shards: map.count(),
                    }
                }
                MigrateAction::Down { to } => {
                    map.migrate_down(to).await?;
                    Migrated {
                        action: "down",
                        to: Some(to),
                        shards: map.count(),
                    }
                }
            };
            emit(json, &done, |m| match m.to {
                None => println!("migrations applied on meta and {} shards", m.shards),
                Some(to) => println!(
                    "migrations reverted to version {to} on {} shards and meta",
                    m.shards
                ),
            })?;
            Ok(true)
        }
        Command::EnsureTables { months_ahead } => {
            #[derive(Serialize)]
            struct Ensured {
                symbols: usize,
                months: u32,
                shards: u16,
                tables_created: u32,
                partitions_added: u32,
            }
            let map = ShardMap::connect_lazy(&settings)?;
            let router = TableRouter::new(&settings.symbols)?;
            let ahead = months_ahead.unwrap_or(settings.months_ahead);
            if ahead > 24 {
                bail!("--months-ahead must be at most 24, got {ahead}");
            }
            let report = map
                .ensure_tables(&router, chrono::Utc::now(), ahead)
                .await?;
            let done = Ensured {
                symbols: settings.symbols.len(),
                months: ahead + 1,
                shards: map.count(),
                tables_created: report.tables_created,
                partitions_added: report.partitions_added,
            };
            emit(json, &done, |e| {
                println!(
                    "ensure-tables: {} symbols x {} months on {} shards: {} tables created, {} ledger partitions added",
                    e.symbols, e.months, e.shards, e.tables_created, e.partitions_added
                );
            })?;
            Ok(true)
        }
        Command::Locate { what } => locate(&settings, what, json).await,
        Command::Ids { count } => issue_ids(&settings, count, json).await,
        Command::Transfer {
            from,
            to,
            asset,
            amount,
        } => transfer(&settings, from, to, &asset, &amount, json).await,
        Command::Tcc { action } => tcc(&settings, action, json).await,
        Command::Chain { action } => chain(&settings, action, json).await,
        Command::Withdraw { action } => withdraw(&settings, action, json).await,
        Command::Fills { action } => fills(&settings, action, json).await,
        Command::Symbol { action } => symbol::run(&settings, action, json).await,
        Command::Audit => audit(&settings, json).await,
        Command::User {
            action: UserAction::Add { emails },
        } => {
            #[derive(Serialize)]
            struct Added {
                email: String,
                #[serde(flatten)]
                registered: router::directory::Registered,
            }
            let dir = directory(&settings)?;
            if !json {
                println!("{:<32} {:>8} {:>6} new", "email", "user_id", "shard");
            }
            for email in emails {
                let registered = dir.register(&email, NO_PASSWORD).await?;
                emit(json, &Added { email, registered }, |a| {
                    println!(
                        "{:<32} {:>8} {:>6} {}",
                        a.email,
                        a.registered.user_id,
                        a.registered.shard,
                        if a.registered.created {
                            "yes"
                        } else {
                            "no (existed)"
                        }
                    );
                })?;
            }
            Ok(true)
        }
        Command::User {
            action: UserAction::Key { user_id, label },
        } => {
            #[derive(Serialize)]
            struct Created {
                user_id: u64,
                api_key: String,
                secret: router::directory::Secret,
            }
            let user = UserId::new(user_id)?;
            let key = directory(&settings)?.create_api_key(user, &label).await?;
            emit(
                json,
                &Created {
                    user_id,
                    api_key: key.key,
                    secret: key.secret,
                },
                |c| {
                    println!("user_id {}", c.user_id);
                    println!("api_key {}", c.api_key);
                    println!("secret  {}   (shown once)", c.secret.expose());
                },
            )?;
            Ok(true)
        }
        Command::User {
            action: UserAction::RevokeKey { api_key },
        } => {
            let revoked = directory(&settings)?.revoke_api_key(&api_key).await?;
            emit(json, &serde_json::json!({ "revoked": revoked }), |_| {
                println!(
                    "{}",
                    if revoked {
                        "revoked"
                    } else {
                        "no such active key"
                    }
                );
            })?;
            Ok(revoked)
        }
    }
}

/// Progress of a scan over the shards, on stderr: a bar redrawn in place on a
/// terminal, one line per step otherwise (CI logs, pipes).
struct Progress {
    bar: indicatif::ProgressBar,
    what: &'static str,
}

impl Progress {
    fn new(what: &'static str, shards: u64) -> Self {
        use std::io::IsTerminal;
        let bar = if std::io::stderr().is_terminal() {
            indicatif::ProgressBar::new(shards)
        } else {
            indicatif::ProgressBar::hidden()
        };
        if let Ok(style) = indicatif::ProgressStyle::with_template(
            "[{prefix}] {elapsed_precise} [{bar:24}] {pos}/{len} shards  {wide_msg}",
        ) {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_prefix(what);
        bar.tick();
        Self { bar, what }
    }

    /// One shard done (`step`), or a note about the scan in between.
    fn report(&self, shard: ShardId, msg: &str, step: bool) {
        if self.bar.is_hidden() {
            eprintln!("[{}] shard {shard}: {msg}", self.what);
            return;
        }
        if step {
            self.bar.set_message(format!("shard {shard}: {msg}"));
            self.bar.inc(1);
        } else {
            self.bar
                .println(format!("[{}] shard {shard}: {msg}", self.what));
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.bar.finish_and_clear();
    }
}

/// What `shardctl audit` found.
#[derive(Debug, Serialize)]
struct AuditReport {
    /// All five checks hold (else exit 1).
    holds: bool,
    conservation: ConservationSection,
    frozen: FrozenSection,
    trade_halves: HalvesSection,
    ledger_replay: ReplaySection,
    books: BooksSection,
}

/// The matcher's open orders (its latest snapshot) against the order tables'.
#[derive(Debug, Serialize)]
struct BooksSection {
    holds: bool,
    /// `compared`, or why not: `no snapshot`, `not covered` (inputs written after the
    /// snapshot: the pipeline is not quiet, or the matcher has not saved yet).
    state: &'static str,
    snapshot_id: Option<u64>,
    snapshot_at: Option<String>,
    #[serde(flatten)]
    report: Option<trading::books_audit::BooksReport>,
}

#[derive(Debug, Serialize)]
struct ReplaySection {
    holds: bool,
    #[serde(flatten)]
    report: ledger::audit::LedgerReplayReport,
}

#[derive(Debug, Serialize)]
struct ConservationSection {
    holds: bool,
    /// Per asset.
    assets: std::collections::BTreeMap<String, AssetConservation>,
}

#[derive(Debug, Serialize)]
struct AssetConservation {
    balances: Amount,
    deposits: Amount,
    withdrawals: Amount,
    holds: bool,
}

#[derive(Debug, Serialize)]
struct FrozenSection {
    holds: bool,
    #[serde(flatten)]
    report: ledger::audit::FrozenReport,
}

#[derive(Debug, Serialize)]
struct HalvesSection {
    holds: bool,
    tables: usize,
    buy_halves: u64,
    sell_halves: u64,
    tables_checked_per_trade: usize,
    offenders: Vec<ledger::audit::TradeHalfOffender>,
    misplaced: Vec<ledger::audit::MisplacedHalf>,
}

/// `shardctl audit`: the three money checks; `Ok(false)` when one fails.
async fn audit(settings: &Settings, json: bool) -> Result<bool> {
    let map = ShardMap::connect_lazy(settings)?;
    let shards = u64::from(map.count());

    // 1. conservation
    let assets: std::collections::BTreeMap<_, _> = ledger::audit::conservation(&map)
        .await?
        .into_iter()
        .map(|(asset, t)| {
            let line = AssetConservation {
                balances: t.balances,
                deposits: t.deposits,
                withdrawals: t.withdrawals,
                holds: t.holds(),
            };
            (asset, line)
        })
        .collect();
    let conservation = ConservationSection {
        holds: assets.values().all(|a| a.holds),
        assets,
    };

    // 2. frozen balances vs open orders and withdrawals, per shard
    let frozen = {
        let bar = Progress::new("audit frozen", shards);
        ledger::audit::frozen_vs_open_orders_with(&map, |s, m| bar.report(s, m, true)).await?
    };

    // 3. trade halves
    let halves = {
        let bar = Progress::new("audit trades", shards);
        // a step per shard's totals; a mismatching table's per-trade check is a note
        ledger::audit::trade_halves_with(&map, |s, m| {
            bar.report(s, m, m.starts_with("trade halves:"))
        })
        .await?
    };

    // 4. every (user, asset)'s ledger replayed against its balance, per shard
    let replay = {
        let bar = Progress::new("audit ledger", shards);
        ledger::audit::ledger_replay_with(&map, |s, m| bar.report(s, m, true)).await?
    };

    // 5. the matcher's open orders (latest snapshot) vs the order tables'
    let books = match trading::books_audit::latest_snapshot(&map).await? {
        None => BooksSection {
            holds: true,
            state: "no snapshot",
            snapshot_id: None,
            snapshot_at: None,
            report: None,
        },
        Some((id, at, books)) => {
            let r = trading::books_audit::compare(&map, &books).await?;
            BooksSection {
                holds: !r.covered() || r.holds(),
                state: if r.covered() {
                    "compared"
                } else {
                    "not covered"
                },
                snapshot_id: Some(id),
                snapshot_at: Some(at),
                report: Some(r),
            }
        }
    };

    let report = AuditReport {
        holds: conservation.holds
            && frozen.holds()
            && halves.holds()
            && replay.holds()
            && books.holds,
        conservation,
        frozen: FrozenSection {
            holds: frozen.holds(),
            report: frozen,
        },
        trade_halves: HalvesSection {
            holds: halves.holds(),
            tables: halves.tables.len(),
            buy_halves: halves.buy_halves(),
            sell_halves: halves.sell_halves(),
            tables_checked_per_trade: halves.tables.iter().filter(|t| t.checked_per_trade).count(),
            offenders: halves.offenders,
            misplaced: halves.misplaced,
        },
        ledger_replay: ReplaySection {
            holds: replay.holds(),
            report: replay,
        },
        books,
    };
    emit(json, &report, AuditReport::print)?;
    Ok(report.holds)
}

impl AuditReport {
    fn print_books(&self) {
        let b = &self.books;
        println!();
        let at = b.snapshot_at.as_deref().unwrap_or("-");
        match (&b.report, b.state) {
            (None, _) => println!("matcher vs database: no matcher snapshot in meta: skipped"),
            (Some(r), "not covered") => {
                println!(
                    "matcher vs database: snapshot {} ({at}) does not cover every input written: skipped (exact only when the pipeline is quiet)",
                    b.snapshot_id.unwrap_or(0)
                );
                for c in r.coverage.iter().filter(|c| c.applied < c.written) {
                    println!(
                        "  shard {}: applied up to seq {}, written up to {}",
                        c.shard, c.applied, c.written
                    );
                }
            }
            (Some(r), _) => {
                println!(
                    "matcher vs database: snapshot {} ({at}), {} symbols, {} open in the matcher, {} open in the database, {} differences: {}",
                    b.snapshot_id.unwrap_or(0),
                    r.symbols,
                    r.matcher_open,
                    r.db_open,
                    r.diffs.len(),
                    if b.holds { "holds" } else { "BROKEN" }
                );
                for d in &r.diffs {
                    let show =
                        |a: &Option<Amount>| a.map_or_else(|| "-".to_owned(), |a| a.to_string());
                    println!(
                        "  BOOK {} order {} user {}: {} (matcher remaining {}, database remaining {})",
                        d.symbol,
                        d.order_id,
                        d.user_id,
                        d.what,
                        show(&d.matcher_remaining),
                        show(&d.db_remaining)
                    );
                }
            }
        }
    }

    fn print_replay(&self) {
        let r = &self.ledger_replay.report;
        println!();
        println!(
            "ledger replay: {} ledger rows replayed into {} (user, asset) on {} shards, {} offenders: {}",
            r.rows,
            r.pairs_checked,
            r.shards,
            r.mismatched_pairs,
            if self.ledger_replay.holds { "holds" } else { "BROKEN" }
        );
        for m in &r.mismatches {
            let row = m.first_bad_row.as_ref().map_or_else(String::new, |b| {
                format!(
                    "; first bad row {} ({} {} {} ref {}:{}, balance_after {}, replayed available {} frozen {}): {:?}",
                    b.id,
                    b.created_at,
                    b.kind,
                    b.amount,
                    b.ref_type.as_deref().unwrap_or("-"),
                    b.ref_id.map_or_else(|| "-".to_owned(), |i| i.to_string()),
                    b.balance_after,
                    b.replayed_available,
                    b.replayed_frozen,
                    b.problem
                )
            });
            println!(
                "  LEDGER shard {} user {} {}: {} rows replay to available {} frozen {}, balance is available {} frozen {}{}{row}",
                m.shard,
                m.user_id,
                m.asset,
                m.rows,
                m.expected_available,
                m.expected_frozen,
                m.available,
                m.frozen,
                if m.balance_row { "" } else { " (no balance row)" },
            );
        }
        if r.mismatched_pairs > r.mismatches.len() as u64 {
            println!(
                "  … and {} more (at most {} listed per shard)",
                r.mismatched_pairs - r.mismatches.len() as u64,
                ledger::audit::REPLAY_MAX_LISTED
            );
        }
    }

    fn print(&self) {
        let verdict = |holds: bool| if holds { "holds" } else { "BROKEN" };
        println!("conservation: Σ(available + frozen) = Σ deposits − Σ withdrawals, per asset");
        println!(
            "{:<8} {:>30} {:>30} {:>30}  verdict",
            "asset", "balances", "deposits", "withdrawals"
        );
        for (asset, t) in &self.conservation.assets {
            println!(
                "{:<8} {:>30} {:>30} {:>30}  {}",
                asset,
                t.balances.to_string(),
                t.deposits.to_string(),
                t.withdrawals.to_string(),
                verdict(t.holds)
            );
        }
        if self.conservation.assets.is_empty() {
            println!("no balances yet");
        }

        let frozen = &self.frozen.report;
        println!();
        println!(
            "frozen vs open orders: {} (user, asset) checked on {} shards ({} order tables, {} open orders, {} withdrawals and {} transfers holding funds): {}",
            frozen.pairs_checked,
            frozen.shards,
            frozen.order_tables,
            frozen.open_orders,
            frozen.holding_withdrawals,
            frozen.holding_transfers,
            verdict(self.frozen.holds)
        );
        for m in &frozen.mismatches {
            println!(
                "  MISMATCH shard {} user {} {}: frozen {}, expected {} (orders {}, withdrawals {}, transfers {})",
                m.shard,
                m.user_id,
                m.asset,
                m.frozen_balance,
                m.expected,
                m.orders_part,
                m.withdrawals_part,
                m.transfers_part
            );
        }
        for o in &frozen.bad_orders {
            let what = match o.problem {
                ledger::audit::OrderHoldProblem::NegativeOpen => {
                    "open order holds a negative amount".to_owned()
                }
                ledger::audit::OrderHoldProblem::FinalStillHolds => {
                    "final order still holds funds".to_owned()
                }
                ledger::audit::OrderHoldProblem::NotWhatItNeeds => match o.needs {
                    Some(n) => format!("its remaining quantity needs {n}"),
                    None => "its fields do not say what it needs".to_owned(),
                },
            };
            println!(
                "  BAD ORDER shard {} {} order {} user {} ({}): frozen {} {}: {what}",
                o.shard, o.table, o.order_id, o.user_id, o.status, o.frozen_amount, o.asset
            );
        }

        let halves = &self.trade_halves;
        println!();
        println!(
            "trade halves: {} trades tables, {} buy halves, {} sell halves, {} tables checked trade by trade: {}",
            halves.tables,
            halves.buy_halves,
            halves.sell_halves,
            halves.tables_checked_per_trade,
            verdict(halves.holds)
        );
        for o in &halves.offenders {
            let rows: Vec<String> = o
                .halves
                .iter()
                .map(|h| {
                    format!(
                        "{} on shard {} user {} price {} qty {} amount {}",
                        h.side, h.shard, h.user_id, h.price, h.quantity, h.amount
                    )
                })
                .collect();
            println!(
                "  TRADE {} {}: {:?}: {}",
                o.table,
                o.trade_id,
                o.problem,
                rows.join("; ")
            );
        }
        for m in &halves.misplaced {
            println!(
                "  MISPLACED {} trade {} {} half of user {} is on shard {}, belongs on shard {}",
                m.table, m.trade_id, m.side, m.user_id, m.shard, m.belongs_on
            );
        }
        self.print_replay();
        self.print_books();
        if !self.holds {
            println!();
            println!(
                "the audit FAILED (conservation and trade halves are exact only while the pipeline is quiescent: rerun once the settlers have caught up)"
            );
        }
    }
}

fn directory(settings: &Settings) -> Result<UserDirectory> {
    let map = ShardMap::connect_lazy(settings)?;
    let redis = redis_pool(&settings.redis)?;
    Ok(UserDirectory::new(
        map,
        redis,
        settings.redis.key_prefix.clone(),
        settings.redis.cache_ttl_s,
    ))
}

type IdSource = std::sync::Arc<dyn Fn() -> Result<u64, router::SnowflakeError> + Send + Sync>;

/// Ids from the configured worker id, else from a worker id leased in Redis (release
/// the lease when done).
async fn id_source(settings: &Settings) -> Result<(Option<WorkerLease>, IdSource)> {
    let sf = &settings.snowflake;
    // a leased worker id issues through its lease (stops if the lease is lost)
    let lease = match sf.worker_id {
        Some(_) => None,
        None => Some(
            WorkerLease::acquire(
                redis_pool(&settings.redis)?,
                &settings.redis.key_prefix,
                sf.datacenter_id,
                Duration::from_millis(sf.lease_ttl_ms),
            )
            .await
            .context("leasing a worker id")?,
        ),
    };
    let next: IdSource = match (&lease, sf.worker_id) {
        (Some(l), _) => {
            let g = l.generator()?;
            std::sync::Arc::new(move || g.next_id())
        }
        (None, w) => {
            let g = router::Snowflake::new(sf.datacenter_id, w.unwrap_or_default())?;
            std::sync::Arc::new(move || g.next_id())
        }
    };
    Ok((lease, next))
}

/// The fields of a snowflake id, as `ids` and `locate id` print them.
#[derive(Debug, Serialize)]
struct IdFields {
    id: u64,
    /// UTC, RFC 3339 with milliseconds.
    time: String,
    unix_ms: u64,
    datacenter: u8,
    worker: u8,
    sequence: u16,
    /// `YYYY-MM`: the month of its order/trade table.
    month: String,
}

impl From<router::Decoded> for IdFields {
    fn from(d: router::Decoded) -> Self {
        Self {
            id: d.id,
            time: d.time().format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string(),
            unix_ms: d.unix_ms,
            datacenter: d.datacenter,
            worker: d.worker,
            sequence: d.sequence,
            month: d.month().to_string(),
        }
    }
}

async fn issue_ids(settings: &Settings, count: u32, json: bool) -> Result<bool> {
    #[derive(Serialize)]
    struct Issued {
        #[serde(flatten)]
        fields: IdFields,
        /// `leased` (in Redis) or `config`.
        worker_id_source: &'static str,
    }
    let (lease, next) = id_source(settings).await?;
    let (source, told) = if lease.is_some() {
        ("leased", "leased in redis")
    } else {
        ("config", "from config")
    };
    if !json {
        println!(
            "{:<20} {:<24} {:>3} {:>3} {:>5} month",
            "id", "time (UTC)", "dc", "wk", "seq"
        );
    }
    for _ in 0..count {
        let fields = IdFields::from(decode(next()?)?);
        let issued = Issued {
            fields,
            worker_id_source: source,
        };
        emit(json, &issued, |i| {
            let d = &i.fields;
            println!(
                "{:<20} {:<24} {:>3} {:>3} {:>5} {}",
                d.id, d.time, d.datacenter, d.worker, d.sequence, d.month
            );
        })?;
    }
    if !json {
        println!("worker id {told}");
    }
    drop(next);
    if let Some(lease) = lease {
        lease.release().await?;
    }
    Ok(true)
}

async fn transfer(
    settings: &Settings,
    from: u64,
    to: u64,
    asset: &str,
    amount: &str,
    json: bool,
) -> Result<bool> {
    #[derive(Serialize)]
    struct Transferred<'a> {
        gid: u64,
        /// Both users on one shard: one local transaction, no TCC.
        local: bool,
        from: u64,
        to: u64,
        asset: &'a str,
        amount: &'a str,
        /// `confirmed`, or `confirming` (the recovery loop finishes it).
        outcome: &'static str,
    }
    let map = ShardMap::connect_lazy(settings)?;
    let (lease, next) = id_source(settings).await?;
    let tcc = ledger::tcc::Tcc::new(map, next);
    let result = tcc
        .transfer(UserId::new(from)?, UserId::new(to)?, asset, amount)
        .await;
    if let Some(lease) = lease {
        lease.release().await?;
    }
    match result {
        Ok(t) => {
            let done = Transferred {
                gid: t.gid,
                local: t.local,
                from,
                to,
                asset,
                amount,
                outcome: match t.outcome {
                    ledger::tcc::Outcome::Confirmed => "confirmed",
                    ledger::tcc::Outcome::Confirming => "confirming",
                },
            };
            emit(json, &done, |t| {
                println!(
                    "transfer {} {} {} {} from user {} to user {}: {}",
                    t.gid,
                    if t.local { "(one shard)" } else { "(TCC)" },
                    t.amount,
                    t.asset,
                    t.from,
                    t.to,
                    match t.outcome {
                        "confirming" => "confirming (the recovery loop finishes it)",
                        other => other,
                    }
                );
            })?;
            Ok(true)
        }
        Err(ledger::tcc::TransferError::Router(e)) => Err(e.into()),
        Err(refused) => {
            eprintln!("refused: {refused}");
            Ok(false)
        }
    }
}

async fn tcc(settings: &Settings, action: TccAction, json: bool) -> Result<bool> {
    let map = ShardMap::connect_lazy(settings)?;
    // resolving and recovering issue no ids
    let no_ids: IdSource = std::sync::Arc::new(|| Err(router::SnowflakeError::LeaseLost));
    let mut tcc = ledger::tcc::Tcc::new(map, no_ids);
    match action {
        TccAction::List { stuck } => {
            let globals = tcc.list(stuck.then_some(Duration::from_secs(60))).await?;
            if json {
                for g in &globals {
                    println!("{}", serde_json::to_string(g)?);
                }
            } else {
                println!(
                    "{:<20} {:<11} {:>8} {:>8} {:<6} {:>24} {:>7} created (UTC)",
                    "gid", "status", "from", "to", "asset", "amount", "retries"
                );
                for g in &globals {
                    println!(
                        "{:<20} {:<11} {:>8} {:>8} {:<6} {:>24} {:>7} {}",
                        g.gid, g.status, g.from, g.to, g.asset, g.amount, g.retries, g.created_at
                    );
                }
                println!("{} unfinished", globals.len());
            }
            Ok(true)
        }
        TccAction::Resolve { gid } => {
            #[derive(Serialize)]
            struct Resolved {
                gid: u64,
                /// `confirmed`, `cancelled`, or `nothing_to_do` (unknown, final, or
                /// moved on meanwhile).
                result: &'static str,
            }
            let result = match tcc.resolve(gid).await? {
                Some(true) => "confirmed",
                Some(false) => "cancelled",
                None => "nothing_to_do",
            };
            emit(json, &Resolved { gid, result }, |r| match r.result {
                "nothing_to_do" => println!(
                    "transfer {}: nothing to do (unknown, final, or moved on meanwhile)",
                    r.gid
                ),
                done => println!("transfer {}: {done}", r.gid),
            })?;
            Ok(true)
        }
        TccAction::Recover {
            try_timeout_ms,
            watch,
        } => {
            #[derive(Serialize)]
            struct Pass {
                confirmed: u64,
                cancelled: u64,
                /// Retried later, with backoff.
                failed: u64,
            }
            tcc.try_timeout = Duration::from_millis(try_timeout_ms);
            loop {
                let r = match tcc.recover().await {
                    Ok(r) => r,
                    // the loop outlives a meta hiccup; a single pass reports it
                    Err(e) if watch => {
                        eprintln!("recovery pass failed: {e}; retrying in 1 s");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        continue;
                    }
                    Err(e) => return Err(e.into()),
                };
                if r != ledger::tcc::Recovered::default() || !watch {
                    let pass = Pass {
                        confirmed: r.confirmed,
                        cancelled: r.cancelled,
                        failed: r.failed,
                    };
                    emit(json, &pass, |p| {
                        println!(
                            "recovered: {} confirmed, {} cancelled, {} failed (retried later)",
                            p.confirmed, p.cancelled, p.failed
                        );
                    })?;
                }
                if !watch {
                    return Ok(r.failed == 0);
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

/// Reachable or not.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
enum State {
    Up,
    Down,
}

/// What `shardctl status` found.
#[derive(Debug, Serialize)]
struct StatusReport {
    /// Meta, every shard and Redis are up (else exit 1).
    ok: bool,
    meta: PlaceStatus,
    shards: Vec<ShardStatus>,
    tcc: TccStatus,
    redis: RedisStatus,
}

/// A database: reachable?, version, migration level, row counts.
#[derive(Debug, Serialize)]
struct PlaceStatus {
    /// `meta`, `shard0`, …
    place: String,
    state: State,
    /// Password masked.
    url: String,
    version: Option<String>,
    /// Highest applied migration (`null`: unknown).
    migration: Option<i64>,
    /// Users (meta: directory entries).
    users: Option<i64>,
    month_tables: Option<usize>,
    /// Why it is down.
    error: Option<String>,
}

#[derive(Debug, Serialize)]
struct ShardStatus {
    shard: ShardId,
    #[serde(flatten)]
    db: PlaceStatus,
    /// Outbox events the relay has not published yet (`null`: unknown).
    relay_backlog: Option<i64>,
    /// Withdrawals waiting for review (`null`: unknown).
    withdrawals_reviewing: Option<i64>,
    /// See [`replication_lag`] (`null`: no replica).
    replication_lag: Option<String>,
    /// The configured replica (`null`: none).
    replica: Option<ReplicaInfo>,
    /// Fill batches parked on the shard, oldest first (`null`: unknown); any makes
    /// `ok` false.
    parked_fills: Option<Vec<trading::parked::ParkedBatch>>,
}

#[derive(Debug, Serialize)]
struct TccStatus {
    /// Unfinished transfers (`null`: meta could not be read, see `error`).
    unfinished: Option<usize>,
    /// Older than 60 s or already retried.
    stuck: Option<usize>,
    error: Option<String>,
}

#[derive(Debug, Serialize)]
struct RedisStatus {
    state: State,
    /// Password masked.
    url: String,
    /// The answer to `PING`.
    reply: Option<String>,
    error: Option<String>,
}

/// A shard's configured read replica, as `status` found it.
#[derive(Debug, Serialize)]
struct ReplicaInfo {
    /// Password masked.
    url: String,
    /// What the replica reports (`null`: unreachable, or not a replica).
    status: Option<router::replication::ReplicaStatus>,
    /// Why there is no status.
    error: Option<String>,
}

impl ReplicaInfo {
    /// Replicating, both threads running.
    fn healthy(&self) -> bool {
        self.status
            .as_ref()
            .is_some_and(router::replication::ReplicaStatus::replicating)
    }
}

/// The replication lag of shard `index` for `status`, from its configured replica
/// (`EXCHANGE_REPLICA_URLS`): `(None, None)` without one, printed as `no replica`
/// (JSON `null`); otherwise the lag cell (`0 s`, `stopped (sql)`, `down: …`, `not a
/// replica`) and what the replica said.
async fn replication_lag(
    settings: &Settings,
    index: usize,
) -> (Option<String>, Option<ReplicaInfo>) {
    let Some(url) = settings.replica(index) else {
        return (None, None);
    };
    let shown = router::config::redact_url(url);
    match router::replication::replica_status(url, Duration::from_secs(2)).await {
        Ok(Some(st)) => (
            Some(st.describe()),
            Some(ReplicaInfo {
                url: shown,
                status: Some(st),
                error: None,
            }),
        ),
        Ok(None) => (
            Some("not a replica".to_owned()),
            Some(ReplicaInfo {
                url: shown,
                status: None,
                error: Some("the server has no primary configured".to_owned()),
            }),
        ),
        Err(e) => (
            Some(format!("down: {e}")),
            Some(ReplicaInfo {
                url: shown,
                status: None,
                error: Some(e.to_string()),
            }),
        ),
    }
}

async fn status(settings: &Settings, json: bool) -> Result<bool> {
    let mut short = settings.clone();
    short.pool.acquire_timeout_ms = 2_000;
    let map = ShardMap::connect_lazy(&short)?;
    let meta = probe(map.meta(), Counted::Directory).await;
    let meta = PlaceStatus::new("meta".into(), map.meta_url(), meta, None);
    let mut shards = Vec::new();
    for (id, pool) in map.iter() {
        let p = probe(pool, Counted::Users).await;
        let tables = match &p {
            Ok(_) => map.month_tables(id).await.ok().map(|t| t.len()),
            Err(_) => None,
        };
        let db = PlaceStatus::new(format!("shard{}", id.get()), map.url(id), p, tables);
        let (lag, replica) = replication_lag(settings, usize::from(id.get())).await;
        // the flow: what the relay still has to publish, withdrawals waiting for review
        shards.push(ShardStatus {
            shard: id,
            db,
            relay_backlog: trading::outbox::unsent(pool)
                .await
                .ok()
                .and_then(|n| i64::try_from(n).ok()),
            withdrawals_reviewing: ledger::funding::reviewing(pool)
                .await
                .ok()
                .and_then(|n| i64::try_from(n).ok()),
            replication_lag: lag,
            replica,
            parked_fills: trading::parked::list(pool).await.ok(),
        });
    }
    let tcc = ledger::tcc::Tcc::new(
        map.clone(),
        std::sync::Arc::new(|| Err(router::SnowflakeError::LeaseLost)),
    );
    let tcc = match (
        tcc.list(None).await,
        tcc.list(Some(Duration::from_secs(60))).await,
    ) {
        (Ok(all), Ok(stuck)) => TccStatus {
            unfinished: Some(all.len()),
            stuck: Some(stuck.len()),
            error: None,
        },
        (Err(e), _) | (_, Err(e)) => TccStatus {
            unfinished: None,
            stuck: None,
            error: Some(e.to_string()),
        },
    };
    let redis = router::status::ping_redis(&settings.redis, Duration::from_secs(2)).await;
    let url = router::config::redact_url(&settings.redis.url);
    let redis = match redis {
        Ok(reply) => RedisStatus {
            state: State::Up,
            url,
            reply: Some(reply),
            error: None,
        },
        Err(e) => RedisStatus {
            state: State::Down,
            url,
            reply: None,
            error: Some(format!("{e:#}")),
        },
    };
    let report = StatusReport {
        ok: meta.state == State::Up
            && shards.iter().all(|s| s.db.state == State::Up)
            && shards
                .iter()
                .all(|s| s.replica.as_ref().is_none_or(ReplicaInfo::healthy))
            && shards
                .iter()
                .all(|s| s.parked_fills.as_ref().is_none_or(Vec::is_empty))
            && redis.state == State::Up,
        meta,
        shards,
        tcc,
        redis,
    };
    emit(json, &report, StatusReport::print)?;
    Ok(report.ok)
}

impl StatusReport {
    fn print(&self) {
        println!(
            "{:<6} {:<5} {:<52} {:<22} {:>9} {:>7} {:>12}",
            "place", "state", "url", "version", "migration", "users", "month_tables"
        );
        self.meta.print();
        for s in &self.shards {
            s.db.print();
        }
        println!();
        println!(
            "{:<6} {:>13} {:>22} {:>16} {:>12}",
            "place", "relay_backlog", "withdrawals_reviewing", "replication_lag", "parked_fills"
        );
        let show = |v: Option<i64>| v.map_or_else(|| "?".to_owned(), |n| n.to_string());
        for s in &self.shards {
            println!(
                "{:<6} {:>13} {:>22} {:>16} {:>12}",
                s.db.place,
                show(s.relay_backlog),
                show(s.withdrawals_reviewing),
                s.replication_lag.as_deref().unwrap_or("no replica"),
                s.parked_fills
                    .as_ref()
                    .map_or_else(|| "?".to_owned(), |p| p.len().to_string())
            );
        }
        for s in &self.shards {
            let Some(parked) = s.parked_fills.as_ref().filter(|p| !p.is_empty()) else {
                continue;
            };
            let mut symbols: Vec<&str> = parked.iter().map(|b| b.symbol.as_str()).collect();
            symbols.sort_unstable();
            symbols.dedup();
            println!(
                "PARKED {}: {} fill batches of {} held back (their settlement stopped): shardctl fills parked",
                s.db.place,
                parked.len(),
                symbols.join(", ")
            );
            if let Some(b) = parked
                .iter()
                .find(|b| b.state == trading::parked::ParkState::Failed)
            {
                println!(
                    "       oldest failure: {} seqs {}..{}, {} attempts: {}",
                    b.symbol, b.first_seq, b.last_seq, b.attempts, b.last_error
                );
            }
        }
        match (self.tcc.unfinished, self.tcc.stuck) {
            (Some(all), Some(stuck)) => println!(
                "tcc    {all} unfinished transfers, {stuck} stuck (older than 60 s or retried): shardctl tcc list"
            ),
            _ => println!(
                "tcc    ? ({})",
                self.tcc.error.as_deref().unwrap_or("unknown")
            ),
        }
        println!();
        let r = &self.redis;
        let (state, detail) = match r.state {
            State::Up => ("up", r.reply.as_deref()),
            State::Down => ("DOWN", r.error.as_deref()),
        };
        println!(
            "{:<6} {:<5} {:<52} {}",
            "redis",
            state,
            r.url,
            detail.unwrap_or("")
        );
    }
}

impl PlaceStatus {
    fn new(
        place: String,
        url: &str,
        p: Result<Probe, router::RouterError>,
        month_tables: Option<usize>,
    ) -> Self {
        match p {
            Ok(p) => Self {
                place,
                state: State::Up,
                url: url.to_owned(),
                version: Some(p.version),
                migration: p.migration,
                users: p.rows,
                month_tables,
                error: None,
            },
            Err(e) => Self {
                place,
                state: State::Down,
                url: url.to_owned(),
                version: None,
                migration: None,
                users: None,
                month_tables: None,
                error: Some(format!("{e:#}")),
            },
        }
    }

    fn print(&self) {
        let dash = || "-".to_owned();
        let (place, url) = (&self.place, &self.url);
        match self.state {
            State::Up => println!(
                "{:<6} {:<5} {:<52} {:<22} {:>9} {:>7} {:>12}",
                place,
                "up",
                url,
                self.version
                    .as_deref()
                    .unwrap_or_default()
                    .chars()
                    .take(22)
                    .collect::<String>(),
                self.migration
                    .map_or_else(|| "none".into(), |v| v.to_string()),
                self.users.map_or_else(dash, |v| v.to_string()),
                self.month_tables.map_or_else(dash, |v| v.to_string()),
            ),
            State::Down => println!(
                "{place:<6} {:<5} {url:<52} {}",
                "DOWN",
                self.error.as_deref().unwrap_or_default()
            ),
        }
    }
}

/// Where a user lives (`locate user`, `locate email`).
#[derive(Debug, Serialize)]
struct UserLocation {
    user_id: UserId,
    #[serde(skip_serializing_if = "Option::is_none")]
    email: Option<String>,
    shard: ShardId,
    /// The shard's URL, password masked.
    url: String,
    /// Its row is on that shard (else exit 1).
    present: bool,
}

/// Where an order lives (`locate order`).
#[derive(Debug, Serialize)]
struct OrderLocation {
    order_id: u64,
    /// When its id was issued (UTC).
    issued: String,
    symbol: String,
    table: String,
    /// The shards searched (all, or the `--user`'s).
    shards_searched: Vec<ShardId>,
    /// Found at least once (else exit 1).
    found: bool,
    rows: Vec<OrderRow>,
}

#[derive(Debug, Serialize)]
struct OrderRow {
    shard: ShardId,
    user_id: u64,
    status: String,
}

async fn locate(settings: &Settings, what: Locate, json: bool) -> Result<bool> {
    match what {
        Locate::Id { id } => {
            emit(json, &IdFields::from(decode(id)?), |d| {
                println!("id          {}", d.id);
                println!("time        {} ({} ms)", d.time, d.unix_ms);
                println!("datacenter  {}", d.datacenter);
                println!("worker      {}", d.worker);
                println!("sequence    {}", d.sequence);
                println!("month       {}", d.month);
            })?;
            Ok(true)
        }
        Locate::Order {
            order_id,
            symbol,
            user,
        } => {
            let router = TableRouter::new(&settings.symbols)?;
            let sym = router.symbol(&symbol)?;
            let oid = OrderId::new(order_id)?;
            let table = router.orders_table(&sym, oid)?;
            let d = decode(order_id)?;
            let map = ShardMap::connect_lazy(settings)?;
            let shards: Vec<ShardId> = match user {
                Some(u) => vec![map.shard_of(UserId::new(u)?)],
                None => map.iter().map(|(s, _)| s).collect(),
            };
            let rows: Vec<OrderRow> = trading::readers::order(
                &map,
                &router,
                sym,
                oid,
                user.map(UserId::new).transpose()?,
            )
            .await?
            .into_iter()
            .map(|(shard, o)| OrderRow {
                shard,
                user_id: o.user_id.get(),
                status: o.status.as_db_str().to_owned(),
            })
            .collect();
            let located = OrderLocation {
                order_id,
                issued: d.time().format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string(),
                symbol: sym.to_string(),
                table: table.to_string(),
                shards_searched: shards,
                found: !rows.is_empty(),
                rows,
            };
            emit(json, &located, |o| {
                println!("order_id    {}", o.order_id);
                println!("issued      {}", o.issued);
                println!("table       {}", o.table);
                for r in &o.rows {
                    println!(
                        "shard       {} (user {}, status {})",
                        r.shard, r.user_id, r.status
                    );
                }
                if !o.found {
                    println!(
                        "shard       not found in {} on the shards searched",
                        o.table
                    );
                }
            })?;
            Ok(located.found)
        }
        Locate::User { user_id } => {
            let dir = directory(settings)?;
            let uid = UserId::new(user_id)?;
            locate_user(&dir, uid, None, json).await
        }
        Locate::Email { email } => {
            let dir = directory(settings)?;
            match dir.lookup_email(&email).await? {
                Some(uid) => locate_user(&dir, uid, Some(email), json).await,
                None => bail!("no user with email {email:?}"),
            }
        }
    }
}

async fn locate_user(
    dir: &UserDirectory,
    uid: UserId,
    email: Option<String>,
    json: bool,
) -> Result<bool> {
    let shard = dir.shards().shard_of(uid);
    let located = UserLocation {
        user_id: uid,
        email,
        shard,
        url: dir.shards().url(shard).to_owned(),
        present: dir.exists_on_shard(uid).await?,
    };
    emit(json, &located, |u| {
        println!("user_id     {}", u.user_id);
        println!("shard       {} ({})", u.shard, u.url);
        println!(
            "row         {}",
            if u.present {
                "present"
            } else {
                "MISSING on its shard"
            }
        );
    })?;
    Ok(located.present)
}

/// A refusal is printed and exits 1; infrastructure errors propagate.
fn refused(e: ledger::funding::FundingError) -> Result<bool> {
    match e {
        ledger::funding::FundingError::Router(e) => Err(e.into()),
        other => {
            eprintln!("refused: {other}");
            Ok(false)
        }
    }
}

async fn chain(settings: &Settings, action: ChainAction, json: bool) -> Result<bool> {
    use ledger::funding;
    let map = ShardMap::connect_lazy(settings)?;
    let result = match action {
        ChainAction::Deposit {
            user,
            asset,
            amount,
            txid,
            chain,
        } => {
            let txid = txid.unwrap_or_else(|| {
                use rand::Rng;
                format!("sim-{:016x}", rand::rng().random::<u64>())
            });
            funding::report_deposit(
                &map,
                UserId::new(user)?,
                &asset,
                &chain,
                &txid,
                "sim-sender",
                &format!("sim-deposit-address-{user}"),
                &amount,
            )
            .await
        }
        ChainAction::Confirm {
            txid,
            asset,
            confirmations,
        } => {
            let n = match confirmations {
                Some(n) => n,
                None => match funding::asset_params(map.meta(), &asset).await {
                    Ok(p) => p.required_confirmations,
                    Err(e) => return refused(e),
                },
            };
            funding::confirm_deposit(&map, &txid, &asset, n).await
        }
    };
    match result {
        Ok(d) => {
            emit(json, &d, |d| {
                println!(
                    "deposit {} {} {} for user {}: {} ({}/{} confirmations){}",
                    d.txid,
                    d.amount,
                    d.asset,
                    d.user_id,
                    d.status,
                    d.confirmations,
                    d.required,
                    if d.credited { ", credited now" } else { "" }
                );
            })?;
            Ok(true)
        }
        Err(e) => refused(e),
    }
}

/// A parked batch with its shard (`fills parked`, `fills retry`).
#[derive(Debug, Serialize)]
struct ShardParked<'a> {
    shard: ShardId,
    #[serde(flatten)]
    batch: &'a trading::parked::ParkedBatch,
}

fn print_parked_header() {
    println!(
        "{:<5} {:>6} {:<8} {:<7} {:>21} {:>6} {:>8} {:<23} last error",
        "shard", "id", "symbol", "state", "seqs", "events", "attempts", "parked (UTC)"
    );
}

fn print_parked(p: &ShardParked<'_>) {
    let b = p.batch;
    println!(
        "{:<5} {:>6} {:<8} {:<7} {:>21} {:>6} {:>8} {:<23} {}",
        p.shard.get(),
        b.id,
        b.symbol,
        match b.state {
            trading::parked::ParkState::Failed => "failed",
            trading::parked::ParkState::Queued => "queued",
        },
        format!("{}..{}", b.first_seq, b.last_seq),
        b.events,
        b.attempts,
        b.parked_at,
        b.last_error
    );
}

async fn fills(settings: &Settings, action: FillsAction, json: bool) -> Result<bool> {
    let map = ShardMap::connect_lazy(settings)?;
    match action {
        FillsAction::Parked => {
            if !json {
                print_parked_header();
            }
            let mut n = 0usize;
            for (shard, pool) in map.iter() {
                let parked = trading::parked::list(pool)
                    .await
                    .with_context(|| format!("parked fill batches on shard {shard}"))?;
                n += parked.len();
                for batch in &parked {
                    emit(json, &ShardParked { shard, batch }, print_parked)?;
                }
            }
            if !json {
                println!("{n} parked");
            }
            Ok(true)
        }
        FillsAction::Retry { shard, wait_s } => {
            #[derive(Serialize)]
            struct Retried<'a> {
                shard: ShardId,
                /// Batches parked when the retry was asked for.
                requested: u64,
                /// Still parked (a failure stopped them, or no answer yet).
                remaining: usize,
                /// The settler answered within the wait.
                answered: bool,
                /// What is still parked.
                batches: &'a [trading::parked::ParkedBatch],
            }
            let shards: Vec<ShardId> = match shard {
                Some(n) => {
                    let id = ShardId::new(n);
                    map.pool(id)?;
                    vec![id]
                }
                None => map.iter().map(|(s, _)| s).collect(),
            };
            let mut ok = true;
            for id in shards {
                let pool = map.pool(id)?;
                if trading::parked::count(pool).await? == 0 {
                    emit(
                        json,
                        &Retried {
                            shard: id,
                            requested: 0,
                            remaining: 0,
                            answered: true,
                            batches: &[],
                        },
                        |r| println!("shard {}: nothing parked", r.shard),
                    )?;
                    continue;
                }
                let out = trading::parked::retry(pool, Duration::from_secs(wait_s))
                    .await
                    .with_context(|| format!("retrying parked fill batches on shard {id}"))?;
                ok &= out.applied_all();
                emit(
                    json,
                    &Retried {
                        shard: id,
                        requested: out.requested,
                        remaining: out.remaining.len(),
                        answered: out.answered,
                        batches: &out.remaining,
                    },
                    |r| {
                        if r.remaining == 0 {
                            println!("shard {}: {} parked batches applied", r.shard, r.requested);
                        } else if r.answered {
                            println!(
                                "shard {}: {} of {} still parked (a batch failed again):",
                                r.shard, r.remaining, r.requested
                            );
                        } else {
                            println!(
                                "shard {}: no answer within {wait_s} s; {} still parked and the retry stays asked for \
                                 (is the engine's settler for shard {} running?)",
                                r.shard, r.remaining, r.shard
                            );
                        }
                        if r.remaining > 0 {
                            print_parked_header();
                            for batch in r.batches {
                                print_parked(&ShardParked {
                                    shard: r.shard,
                                    batch,
                                });
                            }
                        }
                    },
                )?;
            }
            Ok(ok)
        }
    }
}

async fn withdraw(settings: &Settings, action: WithdrawAction, json: bool) -> Result<bool> {
    use ledger::funding;
    #[derive(Serialize)]
    struct Allowed<'a> {
        user_id: u64,
        asset: &'a str,
        chain: &'a str,
        address: &'a str,
    }
    #[derive(Serialize)]
    struct Changed<'a> {
        #[serde(flatten)]
        withdrawal: &'a funding::Withdrawal,
        /// `false`: it was not in the required status; nothing changed (exit 1).
        changed: bool,
    }
    let map = ShardMap::connect_lazy(settings)?;
    let show = |w: &funding::Withdrawal| {
        println!(
            "{:<20} {:>8} {:<6} {:>24} {:>12} {:<10} {:<11} {}",
            w.withdrawal_id,
            w.user_id,
            w.asset,
            w.amount.to_string(),
            w.fee.to_string(),
            w.chain,
            w.status,
            w.address
        );
    };
    let transition = |r: Result<funding::Transition, funding::FundingError>| match r {
        Ok(t) => {
            let w = &t.withdrawal;
            if t.changed {
                emit(
                    json,
                    &Changed {
                        withdrawal: w,
                        changed: true,
                    },
                    |c| {
                        println!(
                            "withdrawal {}: now {}",
                            c.withdrawal.withdrawal_id, c.withdrawal.status
                        );
                    },
                )?;
                Ok(true)
            } else {
                if json {
                    let unchanged = Changed {
                        withdrawal: w,
                        changed: false,
                    };
                    println!("{}", serde_json::to_string(&unchanged)?);
                }
                eprintln!(
                    "withdrawal {} is {}: nothing changed",
                    w.withdrawal_id, w.status
                );
                Ok(false)
            }
        }
        Err(e) => refused(e),
    };
    match action {
        WithdrawAction::Address {
            user,
            asset,
            chain,
            address,
        } => match funding::add_address(&map, UserId::new(user)?, &asset, &chain, &address, None)
            .await
        {
            Ok(()) => {
                let allowed = Allowed {
                    user_id: user,
                    asset: &asset,
                    chain: &chain,
                    address: &address,
                };
                emit(json, &allowed, |a| {
                    println!(
                        "user {} may withdraw {} on {} to {}",
                        a.user_id, a.asset, a.chain, a.address
                    );
                })?;
                Ok(true)
            }
            Err(e) => refused(e),
        },
        WithdrawAction::Request {
            user,
            asset,
            chain,
            address,
            amount,
            code,
        } => {
            let (lease, next) = id_source(settings).await?;
            let id = next()?;
            let now = u64::try_from(chrono::Utc::now().timestamp()).unwrap_or(0);
            let r = funding::request_withdrawal(
                &map,
                id,
                UserId::new(user)?,
                &asset,
                &chain,
                &address,
                &amount,
                code.as_deref(),
                now,
            )
            .await;
            if let Some(lease) = lease {
                lease.release().await?;
            }
            match r {
                Ok(w) => {
                    emit(json, &w, show)?;
                    Ok(true)
                }
                Err(e) => refused(e),
            }
        }
        WithdrawAction::List { status } => {
            let all = match funding::list_withdrawals(&map, status.as_deref()).await {
                Ok(all) => all,
                Err(e) => return refused(e),
            };
            if json {
                for w in &all {
                    println!("{}", serde_json::to_string(w)?);
                }
            } else {
                println!(
                    "{:<20} {:>8} {:<6} {:>24} {:>12} {:<10} {:<11} address",
                    "withdrawal_id", "user", "asset", "amount", "fee", "chain", "status"
                );
                all.iter().for_each(show);
                println!("{} withdrawals", all.len());
            }
            Ok(true)
        }
        WithdrawAction::Approve {
            id,
            reviewer,
            comment,
        } => transition(funding::review(&map, id, true, reviewer, &comment).await),
        WithdrawAction::Reject {
            id,
            reviewer,
            comment,
        } => transition(funding::review(&map, id, false, reviewer, &comment).await),
        WithdrawAction::Process { id } => transition(funding::process(&map, id).await),
        WithdrawAction::Complete { id, txid } => {
            transition(funding::complete(&map, id, &txid).await)
        }
        WithdrawAction::Fail { id, reason } => transition(funding::fail(&map, id, &reason).await),
    }
}
