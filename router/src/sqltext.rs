//! SQL text with literal values, sent over the text protocol: one round trip carries
//! several statements, and the server prepares nothing (the hot paths' statements have
//! a different number of rows each time, so prepared statements would mostly be
//! prepared once and thrown away).
//!
//! Only values of known shape become literals: integers; exact decimals
//! ([`Amount::to_db_string`]: digits, one point, an optional minus) as bare DECIMAL
//! literals (exact in MariaDB, no CAST needed); strings of printable ASCII without
//! quotes or backslashes as `'…'`, anything else as `_utf8mb4 X'…'`; bytes as `X'…'`.
//! Nothing a client sends is ever spliced in verbatim.

use domain::Amount;
use futures_util::TryStreamExt;
use sqlx::mysql::MySqlRow;
use sqlx::{Either, MySqlConnection};

/// A multi-statement SQL text under construction.
#[derive(Debug, Default, Clone)]
pub struct Sql(String);

impl Sql {
    /// Empty text.
    pub fn new() -> Self {
        Self(String::with_capacity(4096))
    }

    /// SQL syntax (a constant of the caller's, or a validated table name).
    pub fn raw(&mut self, s: &str) -> &mut Self {
        self.0.push_str(s);
        self
    }

    /// An integer literal.
    pub fn int(&mut self, v: impl Into<i128>) -> &mut Self {
        self.0.push_str(&v.into().to_string());
        self
    }

    /// An exact decimal literal, without trailing fraction zeros (`1.5`, `50000`: the
    /// server parses fewer digits; an integer literal converts exactly too).
    pub fn dec(&mut self, a: Amount) -> &mut Self {
        let s = a.to_db_string();
        if s.bytes()
            .all(|b| b.is_ascii_digit() || b == b'.' || b == b'-')
        {
            let short = if s.contains('.') {
                s.trim_end_matches('0').trim_end_matches('.')
            } else {
                &s
            };
            self.0.push_str(short);
        } else {
            // unreachable for an Amount; quoted text still converts exactly on insert
            self.str(&s);
        }
        self
    }

    /// An exact decimal literal or `NULL`.
    pub fn opt_dec(&mut self, a: Option<Amount>) -> &mut Self {
        match a {
            Some(a) => self.dec(a),
            None => self.raw("NULL"),
        }
    }

    /// A string literal.
    pub fn str(&mut self, s: &str) -> &mut Self {
        if s.bytes()
            .all(|b| (0x20..0x7f).contains(&b) && b != b'\'' && b != b'\\')
        {
            self.0.push('\'');
            self.0.push_str(s);
            self.0.push('\'');
        } else {
            self.0.push_str("_utf8mb4 ");
            self.hex(s.as_bytes());
        }
        self
    }

    /// A byte-string literal.
    pub fn bytes(&mut self, b: &[u8]) -> &mut Self {
        self.hex(b)
    }

    fn hex(&mut self, b: &[u8]) -> &mut Self {
        use std::fmt::Write;
        self.0.push_str("X'");
        for byte in b {
            let _ = write!(self.0, "{byte:02x}");
        }
        self.0.push('\'');
        self
    }

    /// `(a, b), (c, d)` over `items`, each rendered by `row` (which writes the values
    /// without the parentheses).
    pub fn tuples<T>(
        &mut self,
        items: impl IntoIterator<Item = T>,
        mut row: impl FnMut(&mut Self, T),
    ) -> &mut Self {
        for (i, item) in items.into_iter().enumerate() {
            self.0.push_str(if i == 0 { "(" } else { ", (" });
            row(self, item);
            self.0.push(')');
        }
        self
    }

    /// A separator between values.
    pub fn comma(&mut self) -> &mut Self {
        self.0.push_str(", ");
        self
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether nothing was written.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Runs every statement in one round trip; returns each statement's affected-row
    /// count (in order) and all rows returned (tag them with a first column to tell
    /// several SELECTs apart). The server stops at the first failing statement.
    ///
    /// # Errors
    /// The first statement's error.
    pub fn run<'c>(
        &'c self,
        conn: &'c mut MySqlConnection,
    ) -> futures_util::future::BoxFuture<'c, Result<Ran, sqlx::Error>> {
        // boxed with explicit lifetimes: the executor's stream borrows `conn`, and an
        // `async fn` here would not be `Send` for every lifetime inside `tokio::spawn`
        Box::pin(async move {
            let mut ran = Ran::default();
            let mut stream = sqlx::Executor::fetch_many(conn, sqlx::raw_sql(&self.0));
            while let Some(item) = stream.try_next().await? {
                match item {
                    Either::Left(done) => ran.affected.push(done.rows_affected()),
                    Either::Right(row) => ran.rows.push(row),
                }
            }
            Ok(ran)
        })
    }
}

/// Runs one constant statement (`COMMIT`, `ROLLBACK`) over the text protocol.
///
/// # Errors
/// The statement's error.
pub fn exec<'c>(
    conn: &'c mut MySqlConnection,
    sql: &'static str,
) -> futures_util::future::BoxFuture<'c, Result<(), sqlx::Error>> {
    Box::pin(async move {
        sqlx::Executor::execute(conn, sqlx::raw_sql(sql))
            .await
            .map(|_| ())
    })
}

/// What a multi-statement text did.
#[derive(Debug, Default)]
pub struct Ran {
    /// Affected rows per statement, in order.
    pub affected: Vec<u64>,
    /// Rows of every SELECT, in order.
    pub rows: Vec<MySqlRow>,
}

/// A pooled connection inside a transaction begun in SQL text. Dropped before
/// [`TextTx::finish`] (an error, a cancelled future), the connection is detached and
/// closed, which rolls the transaction back on the server; it never goes back to the
/// pool mid-transaction.
pub struct TextTx {
    conn: Option<sqlx::pool::PoolConnection<sqlx::MySql>>,
}

impl TextTx {
    /// Wraps a pooled connection; the caller's SQL text starts the transaction.
    pub fn new(conn: sqlx::pool::PoolConnection<sqlx::MySql>) -> Self {
        Self { conn: Some(conn) }
    }

    /// Acquires a connection from `pool`.
    ///
    /// # Errors
    /// The pool's error.
    pub async fn acquire(pool: &sqlx::MySqlPool) -> Result<Self, sqlx::Error> {
        Ok(Self::new(pool.acquire().await?))
    }

    pub fn conn(&mut self) -> Result<&mut sqlx::MySqlConnection, sqlx::Error> {
        self.conn
            .as_deref_mut()
            .ok_or_else(|| sqlx::Error::Protocol("transaction already ended".into()))
    }

    /// The transaction ended (committed or rolled back in the text): the connection
    /// may go back to the pool.
    pub fn finish(&mut self) {
        self.conn.take();
    }

    /// Rolls back if it can; otherwise closes the connection.
    pub async fn abandon(&mut self) {
        if let Some(mut c) = self.conn.take() {
            if exec(&mut c, "ROLLBACK").await.is_err() {
                drop(c.detach());
            }
        }
    }
}

impl std::fmt::Debug for TextTx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TextTx")
            .field("open", &self.conn.is_some())
            .finish()
    }
}

impl Drop for TextTx {
    fn drop(&mut self) {
        if let Some(c) = self.conn.take() {
            drop(c.detach());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    #[test]
    fn literals_are_exact_and_quoted_safely() {
        let mut s = Sql::new();
        s.dec(Amount::from_str("-0.000000000000000001").expect("a"))
            .comma()
            .dec(Amount::from_str("50000.000").expect("a"))
            .comma()
            .dec(Amount::from_str("10.50").expect("a"))
            .comma()
            .dec(Amount::ZERO)
            .comma()
            .str("BTCUSDT")
            .comma()
            .str("it's")
            .comma()
            .str("a\\b")
            .comma()
            .bytes(&[0, 255])
            .comma()
            .int(7u64)
            .comma()
            .opt_dec(None);
        assert_eq!(
            s.as_str(),
            "-0.000000000000000001, 50000, 10.5, 0, 'BTCUSDT', _utf8mb4 X'69742773', _utf8mb4 X'615c62', X'00ff', 7, NULL"
        );
    }
}
