"""Schemathesis hooks for the gateway's API fuzzing (gateway/tests/fuzz.rs runs
`schemathesis run` against gateway/openapi.json with SCHEMATHESIS_HOOKS pointing here).

* `binance_error_format`, a check: every 4xx/5xx answer is JSON
  `{"code": <negative int>, "msg": <non-empty string>}` (Binance's error format), never a
  framework page.
* Signing: with FUZZ_API_KEY and FUZZ_API_SECRET set, an operation that declares the
  `ApiKey` security scheme sends that key where the generated case has the
  `X-MBX-APIKEY` header, and one that declares a `signature` parameter is signed the way
  gateway/src/auth.rs verifies it: at send time (a `requests` auth, which runs after the
  URL and body are encoded) the generated `timestamp` and `signature` become the current
  time and the hex HMAC-SHA256 of the exact query string followed by the exact body. So
  the fuzzer's other parameters reach the handlers instead of stopping at -1021 / -1022;
  negative cases that leave the key, timestamp or signature out or malformed are sent as
  generated.
* A tally of answers by operation and status, printed to stderr at exit (how many
  generated requests got past the checks to a 2xx).
"""

import atexit
import collections
import hashlib
import hmac
import json
import os
import re
import sys
import time

import requests
import schemathesis

API_KEY = os.environ.get("FUZZ_API_KEY", "")
API_SECRET = os.environ.get("FUZZ_API_SECRET", "")

TALLY = collections.Counter()


SIGNATURE = re.compile(r"[0-9a-f]{64}")
TIMESTAMP = re.compile(r"[0-9]{1,19}")


class BinanceSignature(requests.auth.AuthBase):
    """Signs a prepared request over the bytes actually sent: a generated `timestamp`
    of the documented shape becomes now and a generated `signature` of the documented
    shape becomes the valid one. A missing or malformed one (a negative case) is sent
    as generated, so that the refusal the fuzzer expects still comes."""

    def __call__(self, r):
        url, _, query = r.url.partition("?")
        pairs = [p for p in query.split("&") if p]
        values = dict(p.partition("=")[::2] for p in pairs)
        if not (
            SIGNATURE.fullmatch(values.get("signature", ""))
            and TIMESTAMP.fullmatch(values.get("timestamp", ""))
        ):
            return r
        now = int(time.time() * 1000)
        query = "&".join(
            f"timestamp={now}" if name == "timestamp" else p
            for p in pairs
            if (name := p.partition("=")[0]) != "signature"
        )
        body = r.body or b""
        if isinstance(body, str):
            body = body.encode()
        sig = hmac.new(API_SECRET.encode(), query.encode() + body, hashlib.sha256).hexdigest()
        r.url = f"{url}?{query}&signature={sig}"
        return r


def _declares_signature(operation):
    return any(
        p.get("name") == "signature" or p.get("$ref", "").endswith("/signature")
        for p in operation.definition.raw.get("parameters", [])
    )


@schemathesis.hook
def before_call(ctx, case, kwargs):
    if not API_KEY or not case.operation.definition.raw.get("security"):
        return
    # the key goes where the generated case has one (a case without it tests -2014)
    for name in list(case.headers or {}):
        if name.lower() == "x-mbx-apikey":
            case.headers[name] = API_KEY
    if _declares_signature(case.operation):
        kwargs["auth"] = BinanceSignature()


@schemathesis.hook
def after_call(ctx, case, response):
    TALLY[(f"{case.method} {case.path}", response.status_code)] += 1


@schemathesis.check
def binance_error_format(ctx, response, case):
    """A 4xx/5xx answer is Binance's `{"code": <negative int>, "msg": <non-empty>}`."""
    if response.status_code < 400:
        return None
    ctype = (response.headers.get("content-type") or [""])[0]
    if not ctype.startswith("application/json"):
        raise AssertionError(f"error answer {response.status_code} with content type {ctype!r}")
    try:
        body = json.loads(response.content)
    except ValueError as e:
        raise AssertionError(f"error answer {response.status_code} is not JSON: {e}") from None
    code = body.get("code") if isinstance(body, dict) else None
    if not isinstance(code, int) or isinstance(code, bool) or code >= 0:
        raise AssertionError(f"error answer without a negative integer code: {body!r}")
    msg = body.get("msg")
    if not isinstance(msg, str) or not msg:
        raise AssertionError(f"error answer without a message: {body!r}")
    return None


@atexit.register
def _print_tally():
    if not TALLY:
        return
    by_op = collections.defaultdict(dict)
    for (op, status), n in TALLY.items():
        by_op[op][status] = n
    # the probes of undocumented methods (all 405) in one line
    probes = sorted(op for op, counts in by_op.items() if set(counts) == {405})
    print("answers by operation and status:", file=sys.stderr)
    if probes:
        print(f"  {len(probes)} probes of undocumented methods, all 405", file=sys.stderr)
    for op in sorted(set(by_op) - set(probes)):
        counts = " ".join(f"{s}:{n}" for s, n in sorted(by_op[op].items()))
        print(f"  {op:45} {counts}", file=sys.stderr)
