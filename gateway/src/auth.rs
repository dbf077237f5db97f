//! Signed requests (Binance `SIGNED` endpoints): the `X-MBX-APIKEY` header names the
//! key; `signature` is the hex HMAC-SHA256, under the key's secret, of the exact
//! query string followed by the exact body, with the `signature` pair itself taken
//! out of whichever of the two carries it (python-binance signs a form body, the
//! official SDK a query string, ccxt either). `timestamp` is mandatory; `recvWindow`
//! (default 5,000 ms, at most 60,000; up to three decimals, i.e. to the microsecond, as
//! Binance takes it and binance-sdk-spot documents and sends it: `6000.5`) bounds its
//! age: `timestamp + recvWindow` is the last instant accepted, and a timestamp more
//! than 1 s ahead of the server's clock is refused. Checks run in Binance's order: key
//! format, key, timestamp, signature.

use hmac::{Hmac, Mac};
use router::directory::KeyAuth;
use sha2::Sha256;

use crate::error::{ApiError, Invalid};
use crate::params::Params;

/// Default `recvWindow`, ms.
pub const DEFAULT_RECV_WINDOW: u64 = 5_000;
/// Largest `recvWindow`, ms.
pub const MAX_RECV_WINDOW: u64 = 60_000;
/// How far ahead of the server's clock a timestamp may be, ms.
pub const FUTURE_TOLERANCE: u64 = 1_000;

/// `signature=…` removed from `raw` (a query string or a form body), and its value.
pub fn split_signature(raw: &str) -> (String, Option<String>) {
    let mut rest = Vec::new();
    let mut sig = None;
    for pair in raw.split('&') {
        match pair.strip_prefix("signature=") {
            Some(v) if sig.is_none() => sig = Some(v.to_owned()),
            _ => rest.push(pair),
        }
    }
    (rest.join("&"), sig)
}

/// What was signed: the query (without the signature) then the body (without it).
/// Binance concatenates the two with nothing between.
pub fn signed_payload(query: &str, body: &str) -> (String, Option<String>) {
    let (q, qs) = split_signature(query);
    let (b, bs) = split_signature(body);
    (format!("{q}{b}"), qs.or(bs))
}

/// Whether `signature` (hex) is the HMAC-SHA256 of `payload` under `secret`
/// (constant-time comparison).
pub fn verify_hmac(secret: &[u8], payload: &[u8], signature: &str) -> bool {
    let Ok(sig) = hex::decode(signature) else {
        return false;
    };
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret) else {
        return false;
    };
    mac.update(payload);
    mac.verify_slice(&sig).is_ok()
}

/// The hex HMAC-SHA256 of `payload` (what a client sends; used by tests and tools).
pub fn sign_hmac(secret: &[u8], payload: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(payload);
    hex::encode(mac.finalize().into_bytes())
}

/// The API key's shape: 1–128 ASCII letters and digits (anything else is -2014).
pub fn key_format_ok(key: &str) -> bool {
    (1..=128).contains(&key.len()) && key.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// Checks `timestamp` and `recvWindow` of `params` against `now_ms`.
///
/// # Errors
/// -1102 without a timestamp, -1100 for a malformed timestamp or window, -1131 for a
/// window above 60 s, -1021 outside the window or more than 1 s ahead.
pub fn check_time(params: &Params, now_ms: u64) -> Result<(), ApiError> {
    let ts = params
        .u64_opt("timestamp")?
        .ok_or_else(|| ApiError::mandatory("timestamp"))?;
    let window_us = match params.get("recvWindow") {
        None => DEFAULT_RECV_WINDOW * 1_000,
        Some(v) => recv_window_us(v)?,
    };
    if window_us > MAX_RECV_WINDOW * 1_000 {
        return Err(ApiError::invalid(Invalid::RecvWindow));
    }
    if ts > now_ms + FUTURE_TOLERANCE {
        return Err(ApiError::ahead_of_server(FUTURE_TOLERANCE));
    }
    // in microseconds: the server's clock is whole ms, a window may not be
    let (now_us, ts_us) = (u128::from(now_ms) * 1_000, u128::from(ts) * 1_000);
    if now_us > ts_us + u128::from(window_us) {
        return Err(ApiError::outside_recv_window());
    }
    Ok(())
}

/// The legal range of `recvWindow`: ms with at most three decimals.
pub const RECV_WINDOW_RANGE: &str = "^[0-9]{1,20}(\\.[0-9]{1,3})?$";

/// `recvWindow` (ms, up to three decimals) in µs.
///
/// # Errors
/// -1100 for anything but digits with at most three decimals.
fn recv_window_us(v: &str) -> Result<u64, ApiError> {
    let bad = || ApiError::illegal_chars("recvWindow", RECV_WINDOW_RANGE);
    let (ms, frac) = match v.split_once('.') {
        Some((_, "")) => return Err(bad()),
        Some(parts) => parts,
        None => (v, ""),
    };
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if !(1..=20).contains(&ms.len()) || !digits(ms) || frac.len() > 3 || !digits(frac) {
        return Err(bad());
    }
    let ms: u64 = ms.parse().map_err(|_| bad())?;
    let us: u64 = format!("{frac:0<3}").parse().map_err(|_| bad())?;
    // beyond u64 µs is beyond the 60 s maximum anyway
    Ok(ms.saturating_mul(1_000).saturating_add(us))
}

/// Verifies a signed request whose key resolved to `auth`.
///
/// # Errors
/// -1102 without a signature, -1022 when it does not verify.
pub fn check_signature(auth: &KeyAuth, query: &str, body: &str) -> Result<(), ApiError> {
    let (payload, sig) = signed_payload(query, body);
    let sig = sig
        .filter(|s| !s.is_empty())
        .ok_or_else(|| ApiError::mandatory("signature"))?;
    if verify_hmac(auth.secret.expose().as_bytes(), payload.as_bytes(), &sig) {
        Ok(())
    } else {
        Err(ApiError::bad_signature())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binance_documented_example_verifies() {
        // the example of Binance's "SIGNED endpoint examples for POST /api/v3/order"
        let secret = b"NhqPtmdSJYdKjVHjA7PZj4Mge3R5YNiP1e3UZjInClVN65XAbvqqM6A7H5fATj0j";
        let query = "symbol=LTCBTC&side=BUY&type=LIMIT&timeInForce=GTC&quantity=1&price=0.1&recvWindow=5000&timestamp=1499827319559";
        let want = "c8db56825ae71d6d79447849e617115f4a920fa2acdcab2b053c4b2838bd6b71";
        assert_eq!(sign_hmac(secret, query.as_bytes()), want);
        assert!(verify_hmac(secret, query.as_bytes(), want));
        // query and body: signed as their concatenation
        let (q, b) = query.split_at(40);
        let (payload, _) = signed_payload(q, b);
        assert_eq!(payload, query);
        // the signature pair is taken out wherever it is
        let (p, s) = signed_payload(&format!("{query}&signature={want}"), "");
        assert_eq!((p.as_str(), s.as_deref()), (query, Some(want)));
        let (p, s) = signed_payload("", &format!("{query}&signature={want}"));
        assert_eq!((p.as_str(), s.as_deref()), (query, Some(want)));
        // one changed byte, a wrong key, non-hex: refused
        assert!(!verify_hmac(secret, b"symbol=LTCBTC&side=SELL", want));
        assert!(!verify_hmac(b"other", query.as_bytes(), want));
        assert!(!verify_hmac(secret, query.as_bytes(), "zz"));
    }

    #[test]
    fn the_window_is_exact_to_the_millisecond() {
        let p = |q: &str| Params::parse(q, b"").expect("params");
        let now = 1_000_000;
        assert!(
            check_time(&p("timestamp=995000"), now).is_ok(),
            "last instant"
        );
        assert_eq!(
            check_time(&p("timestamp=994999"), now)
                .expect_err("old")
                .code,
            -1021
        );
        assert!(check_time(&p("timestamp=990000&recvWindow=10000"), now).is_ok());
        assert!(
            check_time(&p("timestamp=1001000"), now).is_ok(),
            "1 s ahead"
        );
        assert_eq!(
            check_time(&p("timestamp=1001001"), now)
                .expect_err("ahead")
                .code,
            -1021
        );
        assert_eq!(
            check_time(&p("recvWindow=1"), now).expect_err("none").code,
            -1102
        );
        assert_eq!(
            check_time(&p("timestamp=1&recvWindow=60001"), now)
                .expect_err("window")
                .code,
            -1131
        );
        assert_eq!(
            check_time(&p("timestamp=1.5"), now).expect_err("bad").code,
            -1100
        );
    }

    #[test]
    fn the_window_takes_microseconds() {
        // binance-sdk-spot documents and sends `recvWindow=6000.5` (up to 3 decimals)
        let p = |q: &str| Params::parse(q, b"").expect("params");
        let now = 1_000_000;
        assert!(check_time(&p("timestamp=994000&recvWindow=6000.5"), now).is_ok());
        assert!(check_time(&p("timestamp=994000&recvWindow=6000.000"), now).is_ok());
        assert_eq!(
            check_time(&p("timestamp=994000&recvWindow=5999.999"), now)
                .expect_err("one µs short")
                .code,
            -1021
        );
        assert!(check_time(&p("timestamp=940000&recvWindow=60000.000"), now).is_ok());
        assert_eq!(
            check_time(&p("timestamp=940000&recvWindow=60000.001"), now)
                .expect_err("above 60 s")
                .code,
            -1131
        );
        for bad in ["6000.1234", "6000.", ".5", "1e3", "-1", "6000.5.1", "6 000"] {
            let e =
                check_time(&p(&format!("timestamp=994000&recvWindow={bad}")), now).expect_err(bad);
            assert_eq!(e.code, -1100, "{bad}");
        }
    }

    #[test]
    fn key_shapes() {
        assert!(key_format_ok("abcDEF123"));
        assert!(!key_format_ok(""));
        assert!(!key_format_ok("a b"));
        assert!(!key_format_ok("ключ"));
    }
}
