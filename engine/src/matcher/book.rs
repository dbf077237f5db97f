//! The order book of one symbol and the matching loop.
//!
//! Storage: each side is a `BTreeMap<ticks, Level>`; a level is a FIFO doubly linked
//! list threaded through a slab of order slots, so cancel is O(1) after the id lookup
//! and the order of iteration that reaches output is always price then time — hash maps
//! are used only for lookups, never iterated into output.

use std::collections::BTreeMap;

use domain::{OrderId, Side, UserId};
use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};

use super::spec::{Lots, Ticks};
use super::types::StpMode;

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

#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Level {
    head: u32,
    tail: u32,
    /// Total remaining lots at this level.
    pub total: Lots,
}

/// Both sides of one symbol's book.
#[derive(Debug, Default, Clone)]
pub(crate) struct Book {
    bids: BTreeMap<Ticks, Level>,
    asks: BTreeMap<Ticks, Level>,
    slots: Vec<Slot>,
    free: Vec<u32>,
    index: FxHashMap<OrderId, u32>,
}

impl Book {
    fn side(&self, side: Side) -> &BTreeMap<Ticks, Level> {
        match side {
            Side::Buy => &self.bids,
            Side::Sell => &self.asks,
        }
    }

    fn side_mut(&mut self, side: Side) -> &mut BTreeMap<Ticks, Level> {
        match side {
            Side::Buy => &mut self.bids,
            Side::Sell => &mut self.asks,
        }
    }

    /// Best (price, total lots) of `side`.
    pub fn best(&self, side: Side) -> Option<(Ticks, Lots)> {
        match side {
            Side::Buy => self.bids.last_key_value(),
            Side::Sell => self.asks.first_key_value(),
        }
        .map(|(p, l)| (*p, l.total))
    }

    /// The resting order `id`, if any.
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
        let level = self
            .side_mut(order.side)
            .entry(order.price)
            .or_insert(Level {
                head: NIL,
                tail: NIL,
                total: 0,
            });
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
        let levels = self.side_mut(order.side);
        let total = match levels.get_mut(&order.price) {
            Some(level) => {
                if level.head == idx {
                    level.head = next;
                }
                if level.tail == idx {
                    level.tail = prev;
                }
                level.total -= order.remaining;
                level.total
            }
            None => 0,
        };
        if total == 0 {
            levels.remove(&order.price);
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
        let level = self.side_mut(side).get_mut(&price)?;
        level.total -= by;
        Some(level.total)
    }

    /// The first order at the best level of `side`, if any.
    pub fn front(&self, side: Side) -> Option<&Resting> {
        let level = match side {
            Side::Buy => self.bids.last_key_value(),
            Side::Sell => self.asks.first_key_value(),
        }?
        .1;
        (level.head != NIL).then(|| &self.slots[level.head as usize].order)
    }

    /// Walks `side` from the best price outward, in priority order, while `f` returns
    /// `true`.
    pub fn walk(&self, side: Side, mut f: impl FnMut(&Resting) -> bool) {
        let mut visit = |level: &Level| {
            let mut i = level.head;
            while i != NIL {
                let slot = &self.slots[i as usize];
                if !f(&slot.order) {
                    return false;
                }
                i = slot.next;
            }
            true
        };
        match side {
            Side::Buy => {
                for level in self.bids.values().rev() {
                    if !visit(level) {
                        return;
                    }
                }
            }
            Side::Sell => {
                for level in self.asks.values() {
                    if !visit(level) {
                        return;
                    }
                }
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
        let it = self.side(side).iter().map(|(p, l)| (*p, l.total));
        match side {
            Side::Buy => it.rev().collect(),
            Side::Sell => it.collect(),
        }
    }
}
