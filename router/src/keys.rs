//! The Redis key layout of market data and private user events: one typed layout that
//! the writers (the engine's market-data role and settlers) and the readers (the
//! gateway's REST and WebSocket streams) share, so the two can never disagree on a
//! string format. What each key holds is documented in `engine::market`.
//!
//! Every key is under the deployment's prefix (`redis.key_prefix`, `ex:` by default).
//! Symbols come from [`Symbol`], which only holds `[A-Z0-9]{2,20}`.

use domain::{Side, Symbol, UserId};

/// A book side's sorted set or quantity hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Book {
    /// Buy orders.
    Bids,
    /// Sell orders.
    Asks,
}

impl Book {
    /// The book a resting order of `side` is on.
    pub fn of(side: Side) -> Self {
        match side {
            Side::Buy => Self::Bids,
            Side::Sell => Self::Asks,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Self::Bids => "bids",
            Self::Asks => "asks",
        }
    }
}

/// The key layout under one prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    /// The layout under `prefix` (e.g. `ex:`).
    pub fn new(prefix: impl Into<String>) -> Self {
        Self {
            prefix: prefix.into(),
        }
    }

    /// The prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    fn md(&self, symbol: &Symbol, what: &str) -> String {
        format!("{}md:{symbol}:{what}", self.prefix)
    }

    /// `md:SYM:seq`: the last matcher event applied.
    pub fn seq(&self, symbol: &Symbol) -> String {
        self.md(symbol, "seq")
    }

    /// `md:SYM:bids` / `md:SYM:asks`: depth, member = price, score = price in ticks.
    pub fn book(&self, symbol: &Symbol, book: Book) -> String {
        self.md(symbol, book.as_str())
    }

    /// `md:SYM:bids:qty` / `md:SYM:asks:qty`: price → quantity.
    pub fn book_qty(&self, symbol: &Symbol, book: Book) -> String {
        format!("{}:qty", self.book(symbol, book))
    }

    /// `md:SYM:trades`: the recent trades, newest first.
    pub fn trades(&self, symbol: &Symbol) -> String {
        self.md(symbol, "trades")
    }

    /// `md:SYM:last`: the last trade price.
    pub fn last_price(&self, symbol: &Symbol) -> String {
        self.md(symbol, "last")
    }

    /// `md:SYM:kline:{interval}`: bucket start (ms) → candle.
    pub fn kline(&self, symbol: &Symbol, interval: &str) -> String {
        self.md(symbol, &format!("kline:{interval}"))
    }

    /// `md:SYM:ticker`: the 24 h rolling ticker.
    pub fn ticker(&self, symbol: &Symbol) -> String {
        self.md(symbol, "ticker")
    }

    /// Channel `md:SYM`: one message per applied batch.
    pub fn market_channel(&self, symbol: &Symbol) -> String {
        format!("{}md:{symbol}", self.prefix)
    }

    /// Channel `user:{id}`: a user's order and balance events.
    pub fn user_channel(&self, user: UserId) -> String {
        format!("{}user:{user}", self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_layout_is_the_documented_one() {
        let k = Keys::new("ex:");
        let s: Symbol = "BTCUSDT".parse().unwrap();
        assert_eq!(k.seq(&s), "ex:md:BTCUSDT:seq");
        assert_eq!(k.book(&s, Book::Bids), "ex:md:BTCUSDT:bids");
        assert_eq!(
            k.book_qty(&s, Book::of(Side::Sell)),
            "ex:md:BTCUSDT:asks:qty"
        );
        assert_eq!(k.trades(&s), "ex:md:BTCUSDT:trades");
        assert_eq!(k.last_price(&s), "ex:md:BTCUSDT:last");
        assert_eq!(k.kline(&s, "1m"), "ex:md:BTCUSDT:kline:1m");
        assert_eq!(k.ticker(&s), "ex:md:BTCUSDT:ticker");
        assert_eq!(k.market_channel(&s), "ex:md:BTCUSDT");
        assert_eq!(k.user_channel(UserId::new(7).unwrap()), "ex:user:7");
    }
}
