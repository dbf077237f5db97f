//! `shardctl symbol`: list the symbols, halt and resume trading, and change a symbol's
//! rules at a boundary where no order counts on the old grid (README, "Changing a
//! symbol's rules").
//!
//! Who sees a change when: placement (the gateway) re-reads the symbols every
//! `EXCHANGE_GATEWAY__SYMBOLS_REFRESH_MS`; the matcher puts new rules in force when it
//! starts (a fee or band change on any book, a grid change only on an empty one — it
//! refuses to start otherwise); settlement and market data always use the rules a fill
//! was matched under, which travel with it.

use anyhow::{bail, Context, Result};
use clap::Subcommand;
use domain::{Amount, Price, Qty, Symbol};
use matcher::SymbolSpec;
use router::{Settings, ShardMap};
use serde::Serialize;
use trading::placement::{load_symbols, set_symbol_trading, write_symbol_rules, SymbolConfig};

use crate::emit;

/// `shardctl symbol …`.
#[derive(Debug, Subcommand)]
pub enum SymbolAction {
    /// Every symbol: status, grid, precisions, filters, fees, and its open orders in
    /// the database (every shard, every month table).
    List,
    /// Stop accepting orders for SYMBOL: placement refuses new ones (Binance -1013
    /// style "halted"); open orders stay and can still be cancelled.
    Halt { symbol: String },
    /// Accept orders for SYMBOL again.
    Resume { symbol: String },
    /// Change SYMBOL's rules. Fees, market band and the quantity/notional filters may
    /// change at any time; a grid change (tick size, step size) only while the symbol
    /// is halted and has no open order left on any shard, so no order ever counts on
    /// two grids. Prints what changed; `--dry-run` only checks.
    Rules {
        symbol: String,
        #[arg(long)]
        tick_size: Option<String>,
        #[arg(long)]
        step_size: Option<String>,
        #[arg(long)]
        min_qty: Option<String>,
        #[arg(long)]
        max_qty: Option<String>,
        #[arg(long)]
        min_notional: Option<String>,
        /// Millionths: 1000 = 0.1 %.
        #[arg(long)]
        maker_fee_ppm: Option<u32>,
        #[arg(long)]
        taker_fee_ppm: Option<u32>,
        /// How far (basis points) from the last price a market order may trade.
        #[arg(long)]
        market_band_bps: Option<u32>,
        /// Check and print the change without writing it.
        #[arg(long)]
        dry_run: bool,
    },
}

#[derive(Serialize)]
struct Listed {
    symbol: String,
    status: &'static str,
    base: String,
    quote: String,
    tick_size: String,
    step_size: String,
    base_precision: u32,
    quote_precision: u32,
    min_qty: String,
    max_qty: String,
    min_notional: String,
    maker_fee_ppm: u32,
    taker_fee_ppm: u32,
    market_band_bps: u32,
    open_orders: usize,
}

#[derive(Serialize)]
struct Changed {
    symbol: String,
    changes: Vec<String>,
    grid_change: bool,
    applied: bool,
}

fn text(d: domain::Decimal) -> String {
    d.normalize().to_string()
}

async fn config_of(map: &ShardMap, raw: &str) -> Result<(Symbol, SymbolConfig)> {
    let symbol = Symbol::new(raw).map_err(|e| anyhow::anyhow!("symbol {raw:?}: {e}"))?;
    let mut all = load_symbols(map.meta()).await.context("loading symbols")?;
    let cfg = all
        .remove(&symbol)
        .with_context(|| format!("no symbol {symbol} in meta"))?;
    Ok((symbol, cfg))
}

/// Runs a `symbol` action; `Ok(false)` when a requested change was refused.
///
/// # Errors
/// Settings, meta or a shard unreachable; an unknown symbol; a value that does not
/// parse.
pub async fn run(settings: &Settings, action: SymbolAction, json: bool) -> Result<bool> {
    let map = ShardMap::connect_lazy(settings)?;
    match action {
        SymbolAction::List => {
            let all = load_symbols(map.meta()).await.context("loading symbols")?;
            if !json {
                println!(
                    "{:<10} {:<8} {:>12} {:>12} {:>5} {:>10} {:>10} {:>12} {:>6} {:>6} {:>5} {:>6}",
                    "symbol",
                    "status",
                    "tick",
                    "step",
                    "prec",
                    "min_qty",
                    "max_qty",
                    "min_notional",
                    "maker",
                    "taker",
                    "band",
                    "open"
                );
            }
            for (symbol, c) in &all {
                let open = ledger::audit::open_orders_of(&map, symbol).await?.len();
                let s = &c.spec;
                let l = Listed {
                    symbol: symbol.to_string(),
                    status: if c.trading { "trading" } else { "halted" },
                    base: s.base.to_string(),
                    quote: s.quote.to_string(),
                    tick_size: text(s.tick_size.get()),
                    step_size: text(s.step_size.get()),
                    base_precision: s.base_precision,
                    quote_precision: s.quote_precision,
                    min_qty: text(c.min_qty.get()),
                    max_qty: text(c.max_qty.get()),
                    min_notional: text(c.min_notional.get()),
                    maker_fee_ppm: s.maker_fee_ppm,
                    taker_fee_ppm: s.taker_fee_ppm,
                    market_band_bps: s.market_band_bps,
                    open_orders: open,
                };
                emit(json, &l, |l| {
                    println!(
                        "{:<10} {:<8} {:>12} {:>12} {:>5} {:>10} {:>10} {:>12} {:>6} {:>6} {:>5} {:>6}",
                        l.symbol,
                        l.status,
                        l.tick_size,
                        l.step_size,
                        format!("{}/{}", l.base_precision, l.quote_precision),
                        l.min_qty,
                        l.max_qty,
                        l.min_notional,
                        l.maker_fee_ppm,
                        l.taker_fee_ppm,
                        l.market_band_bps,
                        l.open_orders
                    );
                })?;
            }
            Ok(true)
        }
        SymbolAction::Halt { symbol } => set_status(&map, &symbol, false, json).await,
        SymbolAction::Resume { symbol } => set_status(&map, &symbol, true, json).await,
        SymbolAction::Rules {
            symbol,
            tick_size,
            step_size,
            min_qty,
            max_qty,
            min_notional,
            maker_fee_ppm,
            taker_fee_ppm,
            market_band_bps,
            dry_run,
        } => {
            let (symbol, old) = config_of(&map, &symbol).await?;
            let s = &old.spec;
            let price = |v: &Option<String>, what: &str, cur: Price| -> Result<Price> {
                v.as_deref().map_or(Ok(cur), |t| {
                    t.parse().with_context(|| format!("--{what} {t:?}"))
                })
            };
            let qty = |v: &Option<String>, what: &str, cur: Qty| -> Result<Qty> {
                v.as_deref().map_or(Ok(cur), |t| {
                    t.parse().with_context(|| format!("--{what} {t:?}"))
                })
            };
            let spec = SymbolSpec::new(
                symbol,
                s.base,
                s.quote,
                price(&tick_size, "tick-size", s.tick_size)?,
                qty(&step_size, "step-size", s.step_size)?,
                s.base_precision,
                s.quote_precision,
                maker_fee_ppm.unwrap_or(s.maker_fee_ppm),
                taker_fee_ppm.unwrap_or(s.taker_fee_ppm),
                market_band_bps.unwrap_or(s.market_band_bps),
            )
            .map_err(|e| anyhow::anyhow!("the new rules are not valid: {e}"))?;
            let min_q = qty(&min_qty, "min-qty", old.min_qty)?;
            let max_q = qty(&max_qty, "max-qty", old.max_qty)?;
            let min_n: Amount = match &min_notional {
                Some(t) => t.parse().with_context(|| format!("--min-notional {t:?}"))?,
                None => old.min_notional,
            };
            if min_q.get() > max_q.get() {
                bail!("min_qty {min_q} is above max_qty {max_q}");
            }
            if spec.lots(min_q).is_err() || spec.lots(max_q).is_err() {
                bail!(
                    "min_qty {min_q} and max_qty {max_q} must lie on the step grid {}",
                    text(spec.step_size.get())
                );
            }
            if min_n.is_negative() {
                bail!("min_notional must not be negative");
            }
            let mut changes = s.changes(&spec);
            for (name, a, b) in [
                ("min_qty", old.min_qty.get(), min_q.get()),
                ("max_qty", old.max_qty.get(), max_q.get()),
                ("min_notional", old.min_notional.get(), min_n.get()),
            ] {
                if a.normalize() != b.normalize() {
                    changes.push(format!("{name} {} → {}", text(a), text(b)));
                }
            }
            let grid_change = !s.same_grid(&spec);
            let refuse = |why: String| -> Result<bool> {
                let c = Changed {
                    symbol: symbol.to_string(),
                    changes: changes.clone(),
                    grid_change,
                    applied: false,
                };
                if json {
                    println!("{}", serde_json::to_string(&c)?);
                }
                eprintln!("refused: {why}");
                Ok(false)
            };
            if changes.is_empty() {
                return refuse(format!("nothing to change for {symbol}"));
            }
            if grid_change {
                if old.trading {
                    return refuse(format!(
                        "{} changes the grid: halt {symbol} first (`shardctl symbol halt {symbol}`), \
                         let its open orders be cancelled, then run this again",
                        changes.join(", ")
                    ));
                }
                let open = ledger::audit::open_orders_of(&map, &symbol).await?;
                if !open.is_empty() {
                    return refuse(format!(
                        "{} changes the grid, but {} orders of {symbol} are still open \
                         (first: order {} of user {} on shard {}); cancel them and wait \
                         until `shardctl symbol list` shows 0 open",
                        changes.join(", "),
                        open.len(),
                        open[0].order_id,
                        open[0].user_id,
                        open[0].shard
                    ));
                }
            }
            if !dry_run {
                let cfg = SymbolConfig {
                    spec,
                    min_qty: min_q,
                    max_qty: max_q,
                    min_notional: min_n,
                    trading: old.trading,
                };
                write_symbol_rules(map.meta(), &cfg)
                    .await
                    .context("writing the rules")?;
            }
            let c = Changed {
                symbol: symbol.to_string(),
                changes,
                grid_change,
                applied: !dry_run,
            };
            emit(json, &c, |c| {
                let verb = if c.applied {
                    "changed"
                } else {
                    "would change (dry run)"
                };
                println!("{}: {verb}: {}", c.symbol, c.changes.join(", "));
                if c.applied {
                    println!(
                        "placement takes it within EXCHANGE_GATEWAY__SYMBOLS_REFRESH_MS; the matcher at its \
                         next start (restart the engine's matcher role){}",
                        if c.grid_change {
                            format!("; resume trading afterwards: shardctl symbol resume {}", c.symbol)
                        } else {
                            String::new()
                        }
                    );
                }
            })?;
            Ok(true)
        }
    }
}

async fn set_status(map: &ShardMap, raw: &str, trading: bool, json: bool) -> Result<bool> {
    #[derive(Serialize)]
    struct Status {
        symbol: String,
        status: &'static str,
    }
    let (symbol, _) = config_of(map, raw).await?;
    set_symbol_trading(map.meta(), &symbol, trading)
        .await
        .context("writing the status")?;
    let s = Status {
        symbol: symbol.to_string(),
        status: if trading { "trading" } else { "halted" },
    };
    emit(json, &s, |s| {
        println!(
            "{}: {} (placement takes it within EXCHANGE_GATEWAY__SYMBOLS_REFRESH_MS)",
            s.symbol, s.status
        );
    })?;
    Ok(true)
}
