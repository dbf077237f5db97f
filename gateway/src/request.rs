//! [`Req`]: one request's raw query, raw body and parsed parameters, read by the
//! gateway itself so that an oversized or malformed body is answered in the API's
//! error format (never a framework rejection page).

use axum::extract::{FromRequest, Request};
use axum::http::{HeaderMap, StatusCode};

use crate::error::ApiError;
use crate::params::Params;
use crate::Shared;

/// A request as the handlers see it.
#[derive(Debug)]
pub struct Req {
    /// Headers.
    pub headers: HeaderMap,
    /// The raw query string (what was signed).
    pub query: String,
    /// The raw body, when it is a form (what was signed); empty otherwise.
    pub body: String,
    /// Query and form body, decoded.
    pub params: Params,
}

impl FromRequest<Shared> for Req {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &Shared) -> Result<Self, ApiError> {
        let (parts, body) = req.into_parts();
        let query = parts.uri.query().unwrap_or("").to_owned();
        let limit = state.settings.max_body_bytes;
        let bytes = axum::body::to_bytes(body, limit).await.map_err(|_| {
            ApiError::unknown(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("Request body larger than {limit} bytes."),
            )
        })?;
        // python-binance sends `Content-Type: application/json` with no body on GET;
        // parameters only ever come as a form or in the query
        let is_form = parts
            .headers
            .get(axum::http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_none_or(|v| v.starts_with("application/x-www-form-urlencoded"));
        let body = if bytes.is_empty() {
            String::new()
        } else if !is_form {
            return Err(ApiError::unknown(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "Parameters must be sent in the query string or as an application/x-www-form-urlencoded body.",
            ));
        } else {
            String::from_utf8(bytes.to_vec()).map_err(|_| ApiError::mandatory("body"))?
        };
        let params = Params::parse(&query, body.as_bytes())?;
        Ok(Self {
            headers: parts.headers,
            query,
            body,
            params,
        })
    }
}
