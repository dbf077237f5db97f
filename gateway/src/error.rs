//! Every error the gateway answers, in Binance's format `{"code": -1121, "msg": "…"}`
//! with Binance's HTTP status, and the one place where library errors become API errors
//! ([`From`] impls at the bottom). Messages are Binance's exact texts where clients
//! match on them (ccxt maps "Account has insufficient balance for requested action."
//! to `InsufficientFunds`).

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use domain::{ErrorKind, Kinded};
use serde::Serialize;
use trading::placement::{PlaceError, Reject};
use trading::readers::ReadError;

/// An error answer: HTTP status, Binance code and message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ApiError {
    /// HTTP status.
    #[serde(skip)]
    pub status: StatusCode,
    /// Binance error code (negative).
    pub code: i32,
    /// Message.
    pub msg: String,
    /// Seconds for `Retry-After` (429 / 418).
    #[serde(skip)]
    pub retry_after: Option<u64>,
    /// Details some errors carry (`cancelReplace`'s results).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<serde_json::Value>,
}

impl ApiError {
    /// An error with `status`, `code` and `msg`.
    pub fn new(status: StatusCode, code: i32, msg: impl Into<String>) -> Self {
        Self {
            status,
            code,
            msg: msg.into(),
            retry_after: None,
            data: None,
        }
    }

    fn bad(code: i32, msg: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, msg)
    }

    /// -1000: an unknown error (also unknown paths and methods, with their own status).
    pub fn unknown(status: StatusCode, msg: impl Into<String>) -> Self {
        Self::new(status, -1000, msg)
    }

    /// -1001: the backend failed; nothing is known to have happened.
    pub fn internal() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            -1001,
            "Internal error; unable to process your request. Please try again.",
        )
    }

    /// -1007: the write's outcome is unknown (a lost COMMIT reply).
    pub fn outcome_unknown() -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            -1007,
            "Timeout waiting for response from backend server. Send status unknown; execution status unknown.",
        )
    }

    /// -1013: a symbol filter failed.
    pub fn filter(filter: &str) -> Self {
        Self::bad(-1013, format!("Filter failure: {filter}"))
    }

    /// -1014: an order shape this exchange does not take.
    pub fn unsupported_combination() -> Self {
        Self::bad(-1014, "Unsupported order combination.")
    }

    /// -1021: timestamp outside the receive window.
    pub fn outside_recv_window() -> Self {
        Self::bad(
            -1021,
            "Timestamp for this request is outside of the recvWindow.",
        )
    }

    /// -1021: timestamp too far in the future.
    pub fn ahead_of_server(ms: u64) -> Self {
        Self::bad(
            -1021,
            format!("Timestamp for this request was {ms}ms ahead of the server's time."),
        )
    }

    /// -1022: signature does not verify.
    pub fn bad_signature() -> Self {
        Self::bad(-1022, "Signature for this request is not valid.")
    }

    /// -1100: characters outside the parameter's legal range.
    pub fn illegal_chars(param: &str, legal: &str) -> Self {
        Self::bad(
            -1100,
            format!("Illegal characters found in parameter '{param}'; legal range is '{legal}'."),
        )
    }

    /// -1101: a parameter sent twice.
    pub fn duplicate(param: &str) -> Self {
        Self::bad(-1101, format!("Duplicate values for parameter '{param}'."))
    }

    /// -1102: a mandatory parameter missing, empty or malformed.
    pub fn mandatory(param: &str) -> Self {
        Self::bad(
            -1102,
            format!("Mandatory parameter '{param}' was not sent, was empty/null, or malformed."),
        )
    }

    /// -1104: parameters that the endpoint does not read.
    pub fn not_all_read(read: usize, sent: usize) -> Self {
        Self::bad(
            -1104,
            format!("Not all sent parameters were read; read '{read}' parameter(s) but was sent '{sent}'."),
        )
    }

    /// -1106: a parameter sent where the order type does not take it.
    pub fn not_required(param: &str) -> Self {
        Self::bad(
            -1106,
            format!("Parameter '{param}' sent when not required."),
        )
    }

    /// -1111: more decimals than allowed.
    pub fn precision(param: &str) -> Self {
        Self::bad(
            -1111,
            format!("Parameter '{param}' has too much precision."),
        )
    }

    /// -1115 / -1116 / -1117 / -1120 / -1121 / -1130 / -1131: one bad enumerated value.
    pub fn invalid(what: Invalid) -> Self {
        let (code, msg) = match what {
            Invalid::TimeInForce => (-1115, "Invalid timeInForce."),
            Invalid::OrderType => (-1116, "Invalid orderType."),
            Invalid::Side => (-1117, "Invalid side."),
            Invalid::Interval => (-1120, "Invalid interval."),
            Invalid::Symbol => (-1121, "Invalid symbol."),
            Invalid::RecvWindow => (-1131, "recvWindow must be less than 60000"),
            Invalid::Parameter => (-1130, "Invalid data sent for a parameter."),
        };
        Self::bad(code, msg)
    }

    /// -2010: the order was refused (nothing changed).
    pub fn new_order_rejected(msg: impl Into<String>) -> Self {
        Self::bad(-2010, msg)
    }

    /// -2011: the cancel was refused.
    pub fn cancel_rejected(msg: impl Into<String>) -> Self {
        Self::bad(-2011, msg)
    }

    /// -2013: no such order.
    pub fn no_such_order() -> Self {
        Self::bad(-2013, "Order does not exist.")
    }

    /// -2014: an API key that cannot be one.
    pub fn bad_key_format() -> Self {
        Self::new(StatusCode::UNAUTHORIZED, -2014, "API-key format invalid.")
    }

    /// -2015: an unknown key, or one without the permission.
    pub fn rejected_key() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            -2015,
            "Invalid API-key, IP, or permissions for action.",
        )
    }
}

/// The enumerated values whose refusal has a code of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Invalid {
    /// `timeInForce`.
    TimeInForce,
    /// `type`.
    OrderType,
    /// `side`.
    Side,
    /// `interval`.
    Interval,
    /// `symbol`.
    Symbol,
    /// `recvWindow` above 60 000.
    RecvWindow,
    /// Any other parameter's value.
    Parameter,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::to_string(&self).unwrap_or_default();
        let mut resp = (
            self.status,
            [(header::CONTENT_TYPE, "application/json;charset=UTF-8")],
            body,
        )
            .into_response();
        resp.extensions_mut()
            .insert(crate::ops::ErrorCode(self.code));
        if let Some(s) = self.retry_after {
            if let Ok(v) = HeaderValue::from_str(&s.to_string()) {
                resp.headers_mut().insert(header::RETRY_AFTER, v);
            }
        }
        resp
    }
}

/// The message Binance gives a refused order for insufficient funds (ccxt matches it).
pub const INSUFFICIENT_BALANCE: &str = "Account has insufficient balance for requested action.";

impl From<Reject> for ApiError {
    fn from(r: Reject) -> Self {
        match r {
            Reject::UnknownSymbol(_) => Self::invalid(Invalid::Symbol),
            Reject::Halted(_) => Self::new_order_rejected("Market is closed."),
            Reject::Invalid(reason) => invalid_order(reason),
            Reject::Filter { filter, .. } => Self::filter(filter),
            Reject::Unsupported(_) => Self::unsupported_combination(),
            Reject::UnknownOrder => Self::cancel_rejected("Unknown order sent."),
            Reject::BadClientOrderId => {
                Self::illegal_chars("newClientOrderId", "^[\\.A-Z\\:/a-z0-9_-]{1,36}$")
            }
            Reject::InsufficientBalance { .. } => Self::new_order_rejected(INSUFFICIENT_BALANCE),
        }
    }
}

fn invalid_order(reason: matcher::RejectReason) -> ApiError {
    use matcher::RejectReason as R;
    match reason {
        R::PriceNotOnTick => ApiError::filter("PRICE_FILTER"),
        R::QtyNotOnStep | R::InvalidQuantity | R::TooLarge => ApiError::filter("LOT_SIZE"),
        R::AmountNotOnPrecision => ApiError::precision("quoteOrderQty"),
        R::MissingPrice => ApiError::mandatory("price"),
        R::MissingStopPrice => ApiError::mandatory("stopPrice"),
        R::BadQuantityFields => ApiError::mandatory("quantity"),
        R::WouldCross => ApiError::new_order_rejected("Order would immediately match and take."),
        R::WouldTriggerImmediately => {
            ApiError::new_order_rejected("Stop price would trigger immediately.")
        }
        R::DuplicateOrderId | R::UnknownOrder | R::AmendNotLower => {
            ApiError::new_order_rejected(format!("Order rejected: {reason:?}."))
        }
    }
}

impl From<PlaceError> for ApiError {
    fn from(e: PlaceError) -> Self {
        match e.kind() {
            ErrorKind::OutcomeUnknown => Self::outcome_unknown(),
            ErrorKind::Rejected => Self::new_order_rejected(e.to_string()),
            _ => {
                tracing::error!(error = %e, "placement failed");
                Self::internal()
            }
        }
    }
}

impl From<ReadError> for ApiError {
    fn from(e: ReadError) -> Self {
        match e.kind() {
            ErrorKind::NotFound => Self::no_such_order(),
            _ => {
                tracing::error!(error = %e, "read failed");
                Self::internal()
            }
        }
    }
}

impl From<router::RouterError> for ApiError {
    fn from(e: router::RouterError) -> Self {
        tracing::error!(error = %e, "backend failed");
        Self::internal()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_body_is_binance_shaped() {
        let e = ApiError::invalid(Invalid::Symbol);
        assert_eq!(
            serde_json::to_string(&e).expect("json"),
            r#"{"code":-1121,"msg":"Invalid symbol."}"#
        );
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        let r = ApiError::rejected_key().into_response();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        assert!(r.headers()[header::CONTENT_TYPE]
            .to_str()
            .expect("ascii")
            .starts_with("application/json"));
    }
}
