"""What the three client scenarios share: the environment, the scenario's numbers,
checks that fail with a clear message, polling, and the exit codes.

A scenario runs with a real client library against the gateway at GATEWAY_URL, as two
users: the maker (MAKER_KEY / MAKER_SECRET, holds BTC) and the taker (TAKER_KEY /
TAKER_SECRET, holds USDT). It exits 0 when every check held, 1 on the first mismatch
(the message says what was expected and what came), 2 on an unexpected exception
(traceback on stderr).
"""

import math
import os
import sys
import time
import traceback
from decimal import Decimal

SYMBOL = "BTCUSDT"
BASE, QUOTE = "BTC", "USDT"
TICK, STEP, MIN_NOTIONAL = Decimal("0.01"), Decimal("0.00001"), Decimal("5")
FEE_RATE = Decimal("0.001")  # maker and taker, charged in the asset received

# the scenario: the maker rests SELL_QTY at PRICE; the taker buys BUY_QTY with a limit
# above it (fills at the maker's price), then spends QUOTE_SPEND with a market buy by
# quoteOrderQty (fills QUOTE_SPEND / PRICE); the maker cancels the rest
PRICE = Decimal("50000")
SELL_QTY = Decimal("0.5")
BUY_LIMIT = Decimal("50100")
BUY_QTY = Decimal("0.1")
QUOTE_SPEND = Decimal("1000")
MARKET_QTY = QUOTE_SPEND / PRICE  # 0.02
TRADED = BUY_QTY + MARKET_QTY  # 0.12
TRADED_QUOTE = TRADED * PRICE  # 6000
# last, on its own: the maker rests BY_QTY at PRICE again and the taker takes it with a
# MARKET buy by base quantity (what ccxt's create_market_buy_order sends): it holds
# BY_QTY × PRICE × (1 + the 5 % market band) and gets back what it did not spend
BY_QTY = Decimal("0.01")
BY_QTY_COST = BY_QTY * PRICE  # 500

# settlement and market data are asynchronous: how long a poll waits (30 s unless
# SETTLE_TIMEOUT_S says otherwise; the Rust harness gives 60 s, as its own waits)
SETTLE_TIMEOUT_S = float(os.environ.get("SETTLE_TIMEOUT_S") or 30)


class Mismatch(AssertionError):
    """A check that did not hold."""


def env(name):
    value = os.environ.get(name)
    if not value:
        raise Mismatch(f"environment variable {name} is not set")
    return value


def settings():
    """(gateway base URL, (maker key, secret), (taker key, secret))."""
    return (
        env("GATEWAY_URL").rstrip("/"),
        (env("MAKER_KEY"), env("MAKER_SECRET")),
        (env("TAKER_KEY"), env("TAKER_SECRET")),
    )


def step(what):
    print(f"[scenario] {what}", flush=True)


def dec(v):
    """A Decimal of a client's value (str, int, float or Decimal)."""
    if isinstance(v, Decimal):
        return v
    if isinstance(v, float):
        return Decimal(repr(v))
    return Decimal(str(v))


def check(cond, what, got=None):
    if not cond:
        raise Mismatch(f"{what}" + ("" if got is None else f"; got {got!r}"))


def eq(got, want, what):
    if got != want:
        raise Mismatch(f"{what}: expected {want!r}, got {got!r}")


def num(got, want, what):
    """`got` is the number `want`: exactly for decimal strings, to 1e-9 relative for
    floats (ccxt computes some values in binary floating point)."""
    if got is None:
        raise Mismatch(f"{what}: expected {want}, got None")
    w = dec(want)
    if isinstance(got, float):
        ok = math.isclose(got, float(w), rel_tol=1e-9, abs_tol=1e-12)
    else:
        try:
            ok = dec(got) == w
        except Exception:  # noqa: BLE001 - not a number at all
            ok = False
    if not ok:
        raise Mismatch(f"{what}: expected {w}, got {got!r}")


def is_decimal_string(v, what):
    """Prices and quantities come as decimal strings (the SDK's strict models)."""
    check(isinstance(v, str), f"{what} must be a string", v)
    try:
        Decimal(v)
    except Exception as e:  # noqa: BLE001
        raise Mismatch(f"{what} is not a decimal: {v!r}") from e


def poll(what, fn, timeout=SETTLE_TIMEOUT_S, interval=0.25):
    """Calls `fn` until it returns something truthy (returned); a Mismatch after
    `timeout` seconds, with the last value seen."""
    until = time.monotonic() + timeout
    last = None
    while True:
        last = fn()
        if last:
            return last
        if time.monotonic() > until:
            raise Mismatch(f"timed out after {timeout} s waiting for {what}; last {last!r}")
        time.sleep(interval)


def expect_error(what, fn, exc_type, check_exc=None):
    """`fn()` raises `exc_type` (and `check_exc(e)` holds)."""
    try:
        got = fn()
    except exc_type as e:
        if check_exc is not None:
            check_exc(e)
        return e
    except Exception as e:  # noqa: BLE001
        raise Mismatch(f"{what}: expected {exc_type.__name__}, got {type(e).__name__}: {e}") from e
    raise Mismatch(f"{what}: expected {exc_type.__name__}, but it succeeded: {got!r}")


def fees():
    """The expected fees: the taker pays in BASE on each fill, the maker in QUOTE."""
    return {
        "taker_limit": BUY_QTY * FEE_RATE,  # 0.0001 BTC
        "taker_market": MARKET_QTY * FEE_RATE,  # 0.00002 BTC
        "maker_limit": BUY_QTY * PRICE * FEE_RATE,  # 5 USDT
        "maker_market": MARKET_QTY * PRICE * FEE_RATE,  # 1 USDT
    }


def main(name, scenario):
    """Runs `scenario()`; exit 0, 1 on a mismatch, 2 on anything else."""
    started = time.monotonic()
    try:
        scenario()
    except Mismatch as e:
        print(f"[scenario] {name}: MISMATCH: {e}", file=sys.stderr, flush=True)
        traceback.print_exc()
        sys.exit(1)
    except Exception as e:  # noqa: BLE001
        print(f"[scenario] {name}: ERROR: {type(e).__name__}: {e}", file=sys.stderr, flush=True)
        traceback.print_exc()
        sys.exit(2)
    step(f"{name}: all checks held ({time.monotonic() - started:.1f} s)")
