"""The websocket half of ccxt (its `pro` module's `binance` class, asyncio), every REST
and websocket URL pointed at the gateway, the options of ccxt_scenario.py. ccxt pro is
the judge of the streams: `watch_order_book` subscribes to the diff stream and syncs
it on a REST snapshot by Binance's procedure (its own code), `watch_trades` reads
`@trade`, and `watch_orders` / `watch_my_trades` subscribe to the user's data through
the WebSocket API (`userDataStream.subscribe.signature` on /ws-api/v3), while the
orders themselves are placed with ccxt's REST methods.

Exercised: watch_order_book (an ask appearing, partly taken, gone after the cancel,
equal to REST depth each time), watch_trades, watch_orders (the taker's buy closing),
watch_my_trades (the taker's fill with its fee).
"""

import asyncio
import re

import ccxt.pro as ccxtpro

from scenario_common import (
    BASE,
    BUY_LIMIT,
    BUY_QTY,
    FEE_RATE,
    PRICE,
    QUOTE,
    SELL_QTY,
    SETTLE_TIMEOUT_S,
    Mismatch,
    check,
    eq,
    main,
    num,
    settings,
    step,
)

UNIFIED = f"{BASE}/{QUOTE}"


def exchange(base, key, secret):
    ex = ccxtpro.binance(
        {
            "apiKey": key,
            "secret": secret,
            "options": {
                "fetchMarkets": {"types": ["spot"]},
                "fetchCurrencies": False,
                "fetchMargins": False,
                "adjustForTimeDifference": False,
            },
        }
    )
    for name, url in list(ex.urls["api"].items()):
        if isinstance(url, str):
            ex.urls["api"][name] = re.sub(r"^https?://[^/]+", base, url)
    ws = re.sub(r"^http", "ws", base)
    ex.urls["api"]["ws"] = {
        "spot": f"{ws}/ws",
        "margin": f"{ws}/ws",
        "ws-api": {"spot": f"{ws}/ws-api/v3"},
    }
    return ex


async def until(what, watch, ok, timeout=SETTLE_TIMEOUT_S):
    """Calls the watch coroutine factory `watch` until `ok(value)`; the value."""
    last = None

    async def loop():
        nonlocal last
        while True:
            last = await watch()
            if ok(last):
                return last

    try:
        return await asyncio.wait_for(loop(), timeout)
    except asyncio.TimeoutError as e:
        raise Mismatch(f"timed out after {timeout} s waiting for {what}; last {last!r}") from e


async def after(what, watch, ok, action):
    """`action()` while watching: the watch starts first (an update that comes before a
    watch is waiting resolves nobody), then the value `ok` accepts and the action's."""
    watched = asyncio.ensure_future(until(what, watch, ok))
    await asyncio.sleep(0.3)
    done = await action()
    return await watched, done


def levels(side):
    return [[float(p), float(q)] for p, q, *_ in side]


async def same_as_rest(ex, book, what):
    rest = await ex.fetch_order_book(UNIFIED)
    eq((levels(book["bids"]), levels(book["asks"])), (levels(rest["bids"]), levels(rest["asks"])), what)


async def run():
    base, (mk, ms), (tk, ts) = settings()
    maker, taker = exchange(base, mk, ms), exchange(base, tk, ts)
    try:
        await maker.load_markets()
        await taker.load_markets()

        step("watch_order_book: synced on the REST snapshot, empty")
        book = await maker.watch_order_book(UNIFIED)
        eq((book["bids"], book["asks"]), ([], []), "the empty book")

        step("watch_orders / watch_my_trades of the taker, through the WebSocket API")
        orders = asyncio.ensure_future(
            until("the taker's buy to close", lambda: taker.watch_orders(UNIFIED), lambda os: any(o["status"] == "closed" for o in os))
        )
        fills = asyncio.ensure_future(
            until("the taker's fill", lambda: taker.watch_my_trades(UNIFIED), lambda ts: len(ts) >= 1)
        )
        await asyncio.sleep(1.0)  # the subscription answered before anything trades
        check(not orders.done() and not fills.done(), "nothing watched before any order")

        step("maker: limit sell (REST), until the watched book shows it")
        book, sell = await after(
            "the ask on the watched book",
            lambda: maker.watch_order_book(UNIFIED),
            lambda b: levels(b["asks"]) == [[float(PRICE), float(SELL_QTY)]],
            lambda: maker.create_limit_sell_order(UNIFIED, float(SELL_QTY), float(PRICE)),
        )
        await same_as_rest(maker, book, "watched book = REST depth (one ask)")

        step("taker: limit buy (REST); watch_trades sees the trade, the book the rest")
        book_after = asyncio.ensure_future(
            until(
                "the ask partly taken",
                lambda: maker.watch_order_book(UNIFIED),
                lambda b: levels(b["asks"]) == [[float(PRICE), float(SELL_QTY - BUY_QTY)]],
            )
        )
        ts, buy = await after(
            "the public trade",
            lambda: maker.watch_trades(UNIFIED),
            lambda ts: len(ts) >= 1,
            lambda: taker.create_limit_buy_order(UNIFIED, float(BUY_QTY), float(BUY_LIMIT)),
        )
        num(ts[-1]["price"], PRICE, "watched trade price")
        num(ts[-1]["amount"], BUY_QTY, "watched trade amount")
        eq(ts[-1]["side"], "buy", "watched trade taker side")
        book = await book_after
        await same_as_rest(maker, book, "watched book = REST depth (the rest of the ask)")

        step("the taker's order and fill, pushed on its WebSocket API subscription")
        os = await orders
        mine = [o for o in os if o["id"] == buy["id"]]
        check(mine, "the buy among the watched orders", os)
        eq(mine[-1]["status"], "closed", "watched buy status")
        num(mine[-1]["filled"], BUY_QTY, "watched buy filled")
        my = await fills
        eq(my[-1]["order"], buy["id"], "watched fill's order")
        num(my[-1]["price"], PRICE, "watched fill price")
        num(my[-1]["amount"], BUY_QTY, "watched fill amount")
        num(my[-1]["fee"]["cost"], BUY_QTY * FEE_RATE, "watched fill fee")
        eq(my[-1]["fee"]["currency"], BASE, "watched fill fee currency")

        step("the watched book after the cancel: = REST depth")
        book, _ = await after(
            "the ask gone",
            lambda: maker.watch_order_book(UNIFIED),
            lambda b: b["asks"] == [],
            lambda: maker.cancel_order(sell["id"], UNIFIED),
        )
        await same_as_rest(maker, book, "watched book = REST depth (empty)")
    finally:
        await maker.close()
        await taker.close()


def scenario():
    asyncio.run(run())


if __name__ == "__main__":
    main("ccxt pro", scenario)
