//! [`ErrorKind`]: what a caller can do about an error, carried by type.
//!
//! Every library error of the exchange implements [`Kinded`]; the gateway turns the
//! kind into an HTTP status and an API error code in one place, and a caller decides
//! whether to retry from [`ErrorKind::is_retryable`], never from message text.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The class of an error, as a client or an operator must act on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The request is wrong or not allowed as it stands (bad input, a rule, not
    /// enough balance): retrying the same request gives the same answer.
    Rejected,
    /// What the request names does not exist.
    NotFound,
    /// The request conflicts with current state (a duplicate id, a state that moved
    /// on).
    Conflict,
    /// A dependency is down or overloaded, or a transient database condition (a
    /// deadlock, a lock-wait timeout, an optimistic-lock loss that outlived its
    /// retries) rolled the work back: nothing happened, and the same request may be
    /// retried.
    Unavailable,
    /// The work may or may not have happened (a COMMIT whose reply was lost): the
    /// caller must look it up before retrying.
    OutcomeUnknown,
    /// A bug or a broken invariant: report it.
    Internal,
}

impl ErrorKind {
    /// Whether retrying the same request is safe and may succeed.
    #[must_use]
    pub const fn is_retryable(self) -> bool {
        matches!(self, Self::Unavailable)
    }

    /// The lowercase name (`rejected`, `not_found`, …).
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Rejected => "rejected",
            Self::NotFound => "not_found",
            Self::Conflict => "conflict",
            Self::Unavailable => "unavailable",
            Self::OutcomeUnknown => "outcome_unknown",
            Self::Internal => "internal",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An error that knows its [`ErrorKind`].
pub trait Kinded {
    /// The kind of this error.
    fn kind(&self) -> ErrorKind;

    /// Whether the failed operation may simply be retried.
    fn is_retryable(&self) -> bool {
        self.kind().is_retryable()
    }
}

impl Kinded for crate::MoneyError {
    fn kind(&self) -> ErrorKind {
        ErrorKind::Rejected
    }
}

impl Kinded for crate::IdError {
    fn kind(&self) -> ErrorKind {
        ErrorKind::Rejected
    }
}

impl Kinded for crate::SymbolError {
    fn kind(&self) -> ErrorKind {
        ErrorKind::Rejected
    }
}

impl Kinded for crate::EnumError {
    fn kind(&self) -> ErrorKind {
        ErrorKind::Rejected
    }
}

impl Kinded for crate::MonthError {
    fn kind(&self) -> ErrorKind {
        ErrorKind::Rejected
    }
}

impl Kinded for crate::SnowflakeIdError {
    fn kind(&self) -> ErrorKind {
        ErrorKind::Rejected
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_unavailable_is_retryable() {
        let all = [
            ErrorKind::Rejected,
            ErrorKind::NotFound,
            ErrorKind::Conflict,
            ErrorKind::Unavailable,
            ErrorKind::OutcomeUnknown,
            ErrorKind::Internal,
        ];
        let retryable: Vec<_> = all.into_iter().filter(|k| k.is_retryable()).collect();
        assert_eq!(retryable, [ErrorKind::Unavailable]);
        assert_eq!(ErrorKind::OutcomeUnknown.to_string(), "outcome_unknown");
    }
}
