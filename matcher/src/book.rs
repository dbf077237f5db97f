//! The order book of one symbol and its storage.
//!
//! Each side is a *ladder*: a `Vec` of price levels sorted so that the best price is
//! the **last** element (bids ascending, asks descending). Activity clusters at the
//! top of the book, so the best level is found in O(1), a level near the top by a
//! short binary search over contiguous memory, and inserting or removing one moves
//! only the few levels above it. A level is a FIFO doubly linked list threaded through
//! a slab of order slots, so cancel is O(1) after the id lookup. Iteration that reaches
//! output is always price then time; the id → slot hash map is only looked up, never
//! iterated.

use domain::{OrderId, Side, UserId};
use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};

use super::types::StpMode;
use super::units::{Lots, Ticks};

const NIL: u32 = u32::MAX;

/// A resting order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Resting {
    pub order_id: OrderId,
    pub user_id: UserId,
    pub side: Side,
    pub price: Ticks,
    pub remaining: Lots,
    pub stp: StpMode,
}

#[derive(Debug, Clone, Copy)]
struct Slot {
    order: Resting,
    prev: u32,
    next: u32,
}

#[derive(Debug, Clone, Copy)]
struct Level {
    price: Ticks,
    head: u32,
    tail: u32,
    /// Total remaining lots at this level.
    total: Lots,
}

/// One side's levels, best last.
#[derive(Debug, Clone)]
struct Ladder {
    levels: Vec<Level>,
    /// Bids: ascending (best = highest = last). Asks: descending.
    ascending: bool,
}

impl Ladder {
    fn new(ascending: bool) -> Self {
        Self {
            levels: Vec::with_capacity(256),
            ascending,
        }
    }

    /// Position of `price`, or where it would go (same contract as `binary_search`).
    #[inline]
    fn find(&self, price: Ticks) -> Result<usize, usize> {
        // fast path: the best level
        if let Some(last) = self.levels.last() {
            if last.price == price {
                return Ok(self.levels.len() - 1);
            }
        }
        let asc = self.ascending;
        self.levels.binary_search_by(|l| {
            let o = l.price.cmp(&price);
            if asc {
                o
            } else {
                o.reverse()
            }
        })
    }

    #[inline]
    fn get_mut(&mut self, price: Ticks) -> Option<&mut Level> {
        match self.find(price) {
            Ok(i) => Some(&mut self.levels[i]),
            Err(_) => None,
        }
    }

    #[inline]
    fn best(&self) -> Option<&Level> {
        self.levels.last()
    }

    /// Levels from the best outward.
    fn iter_best_first(&self) -> impl Iterator<Item = &Level> {
        self.levels.iter().rev()
    }
}

/// Both sides of one symbol's book.
#[derive(Debug, Clone)]
pub(crate) struct Book {
    bids: Ladder,
    asks: Ladder,
    slots: Vec<Slot>,
    free: Vec<u32>,
    index: FxHashMap<OrderId, u32>,
}

impl Default for Book {
    fn default() -> Self {
        Self {
            bids: Ladder::new(true),
            asks: Ladder::new(false),
            slots: Vec::new(),
            free: Vec::new(),
            index: FxHashMap::default(),
        }
    }
}

impl Book {
    #[inline]
    fn ladder(&self, side: Side) -> &Ladder {
        match side {
            Side::Buy => &self.bids,
            Side::Sell => &self.asks,
        }
    }

    #[inline]
    fn ladder_mut(&mut self, side: Side) -> &mut Ladder {
        match side {
            Side::Buy => &mut self.bids,
            Side::Sell => &mut self.asks,
        }
    }

    /// Best (price, total lots) of `side`.
    #[inline]
    pub fn best(&self, side: Side) -> Option<(Ticks, Lots)> {
        self.ladder(side).best().map(|l| (l.price, l.total))
    }

    /// The resting order `id`, if any.
    #[inline]
    pub fn get(&self, id: OrderId) -> Option<&Resting> {
        self.index.get(&id).map(|&s| &self.slots[s as usize].order)
    }

    /// Number of resting orders.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// Appends an order at the back of its level. Returns the level's new total.
    pub fn insert(&mut self, order: Resting) -> Lots {
        let slot = Slot {
            order,
            prev: NIL,
            next: NIL,
        };
        let idx = match self.free.pop() {
            Some(i) => {
                self.slots[i as usize] = slot;
                i
            }
            None => {
                self.slots.push(slot);
                u32::try_from(self.slots.len() - 1).unwrap_or(NIL)
            }
        };
        self.index.insert(order.order_id, idx);
        let ladder = self.ladder_mut(order.side);
        let pos = match ladder.find(order.price) {
            Ok(i) => i,
            Err(i) => {
                ladder.levels.insert(
                    i,
                    Level {
                        price: order.price,
                        head: NIL,
                        tail: NIL,
                        total: Lots::ZERO,
                    },
                );
                i
            }
        };
        let level = &mut ladder.levels[pos];
        let tail = level.tail;
        level.tail = idx;
        if tail == NIL {
            level.head = idx;
        }
        level.total += order.remaining;
        let total = level.total;
        if tail != NIL {
            self.slots[tail as usize].next = idx;
        }
        self.slots[idx as usize].prev = tail;
        total
    }

    /// Removes `id` from the book. Returns the order and its level's new total.
    pub fn remove(&mut self, id: OrderId) -> Option<(Resting, Lots)> {
        let idx = self.index.remove(&id)?;
        let Slot { order, prev, next } = self.slots[idx as usize];
        if prev != NIL {
            self.slots[prev as usize].next = next;
        }
        if next != NIL {
            self.slots[next as usize].prev = prev;
        }
        self.free.push(idx);
        let ladder = self.ladder_mut(order.side);
        let Ok(pos) = ladder.find(order.price) else {
            return Some((order, Lots::ZERO));
        };
        let level = &mut ladder.levels[pos];
        if level.head == idx {
            level.head = next;
        }
        if level.tail == idx {
            level.tail = prev;
        }
        level.total -= order.remaining;
        let total = level.total;
        if total.is_zero() {
            ladder.levels.remove(pos);
        }
        Some((order, total))
    }

    /// Lowers a resting order's remaining quantity in place (priority kept). Returns
    /// the level's new total.
    pub fn reduce(&mut self, id: OrderId, by: Lots) -> Option<Lots> {
        let idx = *self.index.get(&id)?;
        let order = &mut self.slots[idx as usize].order;
        order.remaining -= by;
        let (side, price) = (order.side, order.price);
        let level = self.ladder_mut(side).get_mut(price)?;
        level.total -= by;
        Some(level.total)
    }

    /// The first order at the best level of `side`, if any.
    #[inline]
    pub fn front(&self, side: Side) -> Option<&Resting> {
        let level = self.ladder(side).best()?;
        (level.head != NIL).then(|| &self.slots[level.head as usize].order)
    }

    /// Walks `side` from the best price outward, in priority order, while `f` returns
    /// `true`.
    pub fn walk(&self, side: Side, mut f: impl FnMut(&Resting) -> bool) {
        for level in self.ladder(side).iter_best_first() {
            let mut i = level.head;
            while i != NIL {
                let slot = &self.slots[i as usize];
                if !f(&slot.order) {
                    return;
                }
                i = slot.next;
            }
        }
    }

    /// Every resting order of `side` in priority order (for snapshots and tests).
    pub fn orders(&self, side: Side) -> Vec<Resting> {
        let mut v = Vec::new();
        self.walk(side, |o| {
            v.push(*o);
            true
        });
        v
    }

    /// Levels of `side`, best first: (price, total).
    pub fn levels(&self, side: Side) -> Vec<(Ticks, Lots)> {
        self.ladder(side)
            .iter_best_first()
            .map(|l| (l.price, l.total))
            .collect()
    }
}

/// The ladder's order, for tests: is `a` better than `b` on `side`?
#[cfg(test)]
pub(crate) fn better(side: Side, a: Ticks, b: Ticks) -> bool {
    match side {
        Side::Buy => a > b,
        Side::Sell => a < b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resting(id: u64, side: Side, price: Ticks, lots: Lots) -> Resting {
        Resting {
            order_id: OrderId::new(id).expect("id"),
            user_id: UserId::new(1).expect("user"),
            side,
            price,
            remaining: lots,
            stp: StpMode::None,
        }
    }

    proptest::proptest! {
        /// Random inserts/removes keep both ladders sorted best-last, totals right,
        /// and FIFO within each level.
        #[test]
        fn ladder_stays_sorted_with_exact_totals(ops in proptest::collection::vec((0u8..3, 90u64..110, 1u64..5, proptest::bool::ANY), 1..400)) {
            let mut book = Book::default();
            let mut live: Vec<Resting> = Vec::new();
            let mut next = 1u64;
            for (op, price, lots, buy) in ops {
                let side = if buy { Side::Buy } else { Side::Sell };
                if op < 2 || live.is_empty() {
                    let r = resting(next, side, Ticks(price), Lots(lots));
                    next += 1;
                    book.insert(r);
                    live.push(r);
                } else {
                    let victim = live.remove(usize::try_from(price).unwrap_or(0) % live.len());
                    book.remove(victim.order_id).expect("present");
                }
                for side in [Side::Buy, Side::Sell] {
                    let levels = book.levels(side);
                    for w in levels.windows(2) {
                        proptest::prop_assert!(better(side, w[0].0, w[1].0), "{:?} not sorted: {:?}", side, levels);
                    }
                    for (price, total) in &levels {
                        let want: u64 = live.iter().filter(|r| r.side == side && r.price == *price).map(|r| r.remaining.get()).sum();
                        proptest::prop_assert_eq!(total.get(), want);
                    }
                    // FIFO: orders at a level come out in insertion (= id) order
                    let ids: Vec<(Ticks, u64)> = book.orders(side).iter().map(|o| (o.price, o.order_id.get())).collect();
                    for w in ids.windows(2) {
                        if w[0].0 == w[1].0 {
                            proptest::prop_assert!(w[0].1 < w[1].1);
                        }
                    }
                }
            }
        }
    }
}
