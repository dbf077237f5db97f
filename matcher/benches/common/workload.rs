//! The seeded workload every matcher bench runs: one neutral command stream that each
//! engine's adapter converts to its own native commands before any timing starts.
//!
//! Mix (shares of all commands, approximately):
//! * ~60 % GTC limit places: 75 % of them 1–4 ticks from a drifting mid on their own
//!   side, 25 % deeper (5–100 ticks). The mid does a reflected random walk (one tick
//!   every ~200 commands), so some places land on orders left behind and trade (about
//!   a fifth of all places cross).
//! * ~30 % cancels of orders that are resting at that moment (of two random resting
//!   orders, the one farther from the mid: stale quotes are the ones pulled). The share
//!   moves between 27 % and 33 % to hold the book near 5 000 resting orders: with a
//!   fixed mix nothing restores the book's size, it drains or grows without bound.
//! * ~10 % takers, half MARKET by base quantity, half IOC limits priced at the k-th
//!   opposite level, k = 1–4, sized to walk into that level but capped at 1–1 500 lots.
//!
//! Quantities are 1–1 000 lots, users 1–1 000, ids 1, 2, 3, ... over places and markets.
//!
//! The generator keeps its own reference book (plain price-time FIFO, fills at the
//! maker's price, no self-trade prevention, no price band) so that cancels name orders
//! that really rest and takers know how deep the book is. It also counts the lots that
//! book traded, which the bench compares with what every engine reports.

use std::collections::{BTreeMap, HashMap, VecDeque};

/// Order side, engine-neutral.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Buy,
    Sell,
}

/// One engine-neutral command. Ids are > 0 and unique over places and markets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cmd {
    /// Limit order: GTC (rests the remainder) or IOC (expires it).
    Place {
        id: u64,
        user: u64,
        side: Side,
        price_ticks: u64,
        qty_lots: u64,
        ioc: bool,
    },
    /// Market order by base quantity.
    Market {
        id: u64,
        user: u64,
        side: Side,
        qty_lots: u64,
    },
    /// Cancel of an order of `user` that is resting when the command is issued.
    Cancel { id: u64, user: u64 },
}

/// Generator settings.
#[derive(Debug, Clone, Copy)]
pub struct Params {
    /// Number of commands.
    pub commands: usize,
    /// PRNG seed.
    pub seed: u64,
    /// Starting mid in ticks (tick 0.01: 5_000_000 = 50 000.00).
    pub start_mid: u64,
    /// The mid does a reflected random walk within `start_mid ± mid_range` ticks.
    pub mid_range: u64,
    /// Per-command probability (in 1/1000) that the mid moves one tick.
    pub drift_per_mille: u64,
    /// Users are 1..=users.
    pub users: u64,
    /// Place quantities are 1..=max_place_lots lots.
    pub max_place_lots: u64,
    /// Most places land 1..=near_levels ticks from the mid on their own side ...
    pub near_levels: u64,
    /// ... and this share (in 1/1000) lands deeper, near_levels+1..=deep_levels ticks.
    pub deep_per_mille: u64,
    pub deep_levels: u64,
    /// A taker's quantity is at most 1..=max_taker_lots (and at most what its 1..=4
    /// levels hold).
    pub max_taker_lots: u64,
    /// The cancel share moves between 27 % and 33 % to keep the book near this many
    /// resting orders (the restoring force a fixed mix lacks).
    pub target_resting: usize,
}

impl Params {
    /// The benchmark's workload: `commands` commands from `seed`.
    pub fn standard(commands: usize, seed: u64) -> Self {
        Self {
            commands,
            seed,
            start_mid: 5_000_000,
            mid_range: 2_000,
            drift_per_mille: 5,
            users: 1_000,
            max_place_lots: 1_000,
            near_levels: 4,
            deep_per_mille: 250,
            deep_levels: 100,
            max_taker_lots: 1_500,
            target_resting: 5_000,
        }
    }
}

/// What the reference book saw while generating.
#[derive(Debug, Clone, Copy, Default)]
pub struct Stats {
    pub places: usize,
    pub ioc_places: usize,
    pub markets: usize,
    pub cancels: usize,
    /// Places (GTC or IOC) that traded at least one lot on arrival.
    pub crossing_places: usize,
    /// Lots traded in total (each fill counted once).
    pub filled_lots: u128,
    /// Fills (maker orders touched).
    pub fills: usize,
    /// Price levels traded at, summed over takers (MARKET and IOC).
    pub taker_levels: usize,
    /// Takers that found the opposite side empty.
    pub takers_on_empty_side: usize,
    pub resting_at_end: usize,
    pub max_resting: usize,
    /// Resting orders averaged over all commands.
    pub mean_resting: usize,
    pub levels_at_end: usize,
}

/// A generated command stream.
#[derive(Debug, Clone)]
pub struct Workload {
    pub params: Params,
    pub cmds: Vec<Cmd>,
    pub stats: Stats,
}

/// splitmix64: tiny, fast, good enough for a workload.
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (Lemire's multiply-shift; the bias is irrelevant here).
    pub fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    pub fn side(&mut self) -> Side {
        if self.next_u64() & 1 == 0 {
            Side::Buy
        } else {
            Side::Sell
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct RefOrder {
    side: Side,
    price: u64,
    remaining: u64,
    user: u64,
    /// Index in `RefBook::live`.
    live_idx: usize,
}

/// Reference book: price-time FIFO with lazy deletion of cancelled ids in the queues.
#[derive(Debug, Default)]
struct RefBook {
    bids: BTreeMap<u64, VecDeque<u64>>,
    asks: BTreeMap<u64, VecDeque<u64>>,
    orders: HashMap<u64, RefOrder>,
    /// Ids of resting orders, for uniform picks.
    live: Vec<u64>,
    filled_lots: u128,
    fills: usize,
    /// Price levels the last `take` traded at.
    last_levels: usize,
}

impl RefBook {
    fn queue(&mut self, side: Side) -> &mut BTreeMap<u64, VecDeque<u64>> {
        match side {
            Side::Buy => &mut self.bids,
            Side::Sell => &mut self.asks,
        }
    }

    fn best(&self, side: Side) -> Option<u64> {
        match side {
            Side::Buy => self.bids.keys().next_back().copied(),
            Side::Sell => self.asks.keys().next().copied(),
        }
    }

    fn forget(&mut self, id: u64) -> Option<RefOrder> {
        let o = self.orders.remove(&id)?;
        self.live.swap_remove(o.live_idx);
        if let Some(&moved) = self.live.get(o.live_idx) {
            if let Some(m) = self.orders.get_mut(&moved) {
                m.live_idx = o.live_idx;
            }
        }
        Some(o)
    }

    /// Total resting lots on `side` at its best `k` levels, and the k-th level's price
    /// (fewer if the side has fewer levels). Cancelled ids still queued are skipped.
    fn depth(&self, side: Side, k: usize) -> Vec<(u64, u64)> {
        let level_qty = |q: &VecDeque<u64>| -> u64 {
            q.iter()
                .filter_map(|id| self.orders.get(id))
                .map(|o| o.remaining)
                .sum()
        };
        let mut v = Vec::with_capacity(k);
        let mut push = |(p, q): (&u64, &VecDeque<u64>)| {
            let lots = level_qty(q);
            if lots > 0 && v.len() < k {
                v.push((*p, lots));
            }
        };
        match side {
            Side::Buy => self.bids.iter().rev().take(k + 8).for_each(&mut push),
            Side::Sell => self.asks.iter().take(k + 8).for_each(&mut push),
        }
        v
    }

    /// Matches a taker; returns lots filled. `limit` None = market.
    fn take(&mut self, side: Side, limit: Option<u64>, mut qty: u64) -> u64 {
        let opp = match side {
            Side::Buy => Side::Sell,
            Side::Sell => Side::Buy,
        };
        let mut filled = 0;
        self.last_levels = 0;
        while qty > 0 {
            let Some(price) = self.best(opp) else { break };
            let crosses = match (side, limit) {
                (_, None) => true,
                (Side::Buy, Some(l)) => price <= l,
                (Side::Sell, Some(l)) => price >= l,
            };
            if !crosses {
                break;
            }
            let mut level = self.queue(opp).remove(&price).unwrap_or_default();
            self.last_levels += 1;
            while qty > 0 {
                let Some(&maker) = level.front() else { break };
                let Some(o) = self.orders.get_mut(&maker) else {
                    level.pop_front(); // cancelled earlier
                    continue;
                };
                let q = qty.min(o.remaining);
                o.remaining -= q;
                qty -= q;
                filled += q;
                self.fills += 1;
                if o.remaining == 0 {
                    level.pop_front();
                    self.forget(maker);
                }
            }
            // drop cancelled ids at the front so an empty level disappears
            while let Some(&id) = level.front() {
                if self.orders.contains_key(&id) {
                    break;
                }
                level.pop_front();
            }
            if !level.is_empty() {
                self.queue(opp).insert(price, level);
            }
        }
        self.filled_lots += u128::from(filled);
        filled
    }

    fn rest(&mut self, id: u64, user: u64, side: Side, price: u64, remaining: u64) {
        let live_idx = self.live.len();
        self.live.push(id);
        self.orders.insert(
            id,
            RefOrder {
                side,
                price,
                remaining,
                user,
                live_idx,
            },
        );
        self.queue(side).entry(price).or_default().push_back(id);
    }

    fn cancel(&mut self, id: u64) -> Option<RefOrder> {
        let o = self.forget(id)?;
        // Remove the id from its level now if the level becomes empty; otherwise
        // leave it for lazy skipping.
        let q = self.queue(o.side);
        if let Some(level) = q.get_mut(&o.price) {
            if let Some(pos) = level.iter().position(|&x| x == id) {
                level.remove(pos);
            }
            if level.is_empty() {
                q.remove(&o.price);
            }
        }
        Some(o)
    }
}

/// Generates the workload. Same `params` ⇒ same commands.
pub fn generate(params: Params) -> Workload {
    let mut rng = SplitMix64::new(params.seed);
    let mut book = RefBook::default();
    let mut cmds = Vec::with_capacity(params.commands);
    let mut stats = Stats::default();
    let mut mid = params.start_mid;
    let (lo, hi) = (
        params.start_mid - params.mid_range,
        params.start_mid + params.mid_range,
    );
    let mut next_id = 1u64;
    let mut resting_sum = 0usize;

    for _ in 0..params.commands {
        if rng.below(1000) < params.drift_per_mille {
            mid = if rng.next_u64() & 1 == 0 {
                mid + 1
            } else {
                mid - 1
            }
            .clamp(lo, hi);
        }
        let roll = rng.below(100);
        let n = book.live.len();
        let cancel_share = if n < params.target_resting * 9 / 10 {
            27
        } else if n > params.target_resting * 11 / 10 {
            33
        } else {
            30
        };
        if roll < cancel_share && !book.live.is_empty() {
            // Cancel: of two random resting orders, the one farther from the mid
            // (stale quotes are the ones traders pull).
            let a = book.live[rng.below(book.live.len() as u64) as usize];
            let b = book.live[rng.below(book.live.len() as u64) as usize];
            let dist = |id: u64| book.orders[&id].price.abs_diff(mid);
            let id = if dist(b) > dist(a) { b } else { a };
            let o = book.cancel(id).expect("live order");
            cmds.push(Cmd::Cancel { id, user: o.user });
            stats.cancels += 1;
        } else if roll >= 90 {
            // Taker walking 1..=4 levels of the opposite side.
            let side = rng.side();
            let opp = if side == Side::Buy {
                Side::Sell
            } else {
                Side::Buy
            };
            let k = 1 + rng.below(4) as usize;
            let levels = book.depth(opp, k);
            let user = 1 + rng.below(params.users);
            let id = next_id;
            next_id += 1;
            let (qty, limit) = if levels.is_empty() {
                stats.takers_on_empty_side += 1;
                (1 + rng.below(params.max_place_lots), mid)
            } else {
                let before: u64 = levels[..levels.len() - 1].iter().map(|l| l.1).sum();
                let last = levels[levels.len() - 1];
                let walk = before + 1 + rng.below(last.1);
                (walk.min(1 + rng.below(params.max_taker_lots)), last.0)
            };
            if rng.next_u64() & 1 == 0 {
                book.take(side, None, qty);
                stats.taker_levels += book.last_levels;
                cmds.push(Cmd::Market {
                    id,
                    user,
                    side,
                    qty_lots: qty,
                });
                stats.markets += 1;
            } else {
                let filled = book.take(side, Some(limit), qty);
                stats.taker_levels += book.last_levels;
                if filled > 0 {
                    stats.crossing_places += 1;
                }
                cmds.push(Cmd::Place {
                    id,
                    user,
                    side,
                    price_ticks: limit,
                    qty_lots: qty,
                    ioc: true,
                });
                stats.ioc_places += 1;
            }
        } else {
            // GTC place 1..=4 ticks from the mid on its own side; the drifting mid
            // makes some of them cross what was left behind.
            let side = rng.side();
            let d = if rng.below(1000) < params.deep_per_mille {
                params.near_levels + 1 + rng.below(params.deep_levels - params.near_levels)
            } else {
                1 + rng.below(params.near_levels)
            };
            let price = match side {
                Side::Buy => mid - d,
                Side::Sell => mid + d,
            };
            let qty = 1 + rng.below(params.max_place_lots);
            let user = 1 + rng.below(params.users);
            let id = next_id;
            next_id += 1;
            let filled = book.take(side, Some(price), qty);
            if filled > 0 {
                stats.crossing_places += 1;
            }
            if filled < qty {
                book.rest(id, user, side, price, qty - filled);
            }
            cmds.push(Cmd::Place {
                id,
                user,
                side,
                price_ticks: price,
                qty_lots: qty,
                ioc: false,
            });
            stats.places += 1;
        }
        stats.max_resting = stats.max_resting.max(book.live.len());
        resting_sum += book.live.len();
    }
    stats.filled_lots = book.filled_lots;
    stats.fills = book.fills;
    stats.resting_at_end = book.live.len();
    stats.mean_resting = resting_sum / params.commands.max(1);
    stats.levels_at_end = book.bids.len() + book.asks.len();
    Workload {
        params,
        cmds,
        stats,
    }
}
