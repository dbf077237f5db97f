"""The trading scenario with ccxt's `binance` class (sync API), every `urls['api']`
entry pointed at the gateway, and the options a user of this exchange sets (see
/work/shared/CLIENTS.md): markets of type spot only, no currencies, no margin pairs,
no clock adjustment. With them `load_markets` makes exactly one call,
`GET /api/v3/exchangeInfo`, which this scenario checks.

Exercised: load_markets (precision, limits), fetch_time, fetch_order_book,
fetch_ticker, fetch_trades (aggTrades), fetch_ohlcv, fetch_balance,
create_limit_sell_order, create_limit_buy_order, create_market_buy_order_with_cost, create_market_buy_order,
fetch_order, fetch_open_orders, cancel_order, fetch_closed_orders,
fetch_canceled_orders, fetch_orders, fetch_my_trades, and InsufficientFunds mapping.
"""

import re
import urllib.parse

import ccxt

from scenario_common import (
    BASE,
    BUY_LIMIT,
    BUY_QTY,
    BY_QTY,
    BY_QTY_COST,
    MARKET_QTY,
    MIN_NOTIONAL,
    PRICE,
    QUOTE,
    QUOTE_SPEND,
    SELL_QTY,
    STEP,
    TICK,
    TRADED,
    TRADED_QUOTE,
    check,
    eq,
    expect_error,
    fees,
    main,
    num,
    poll,
    settings,
    step,
)

UNIFIED = f"{BASE}/{QUOTE}"


class Recorded(ccxt.binance):
    """ccxt's binance, recording every HTTP call it makes."""

    def __init__(self, config):
        super().__init__(config)
        self.calls = []
        self.bodies = []

    def fetch(self, url, method="GET", headers=None, body=None):
        self.calls.append((method, url.split("?")[0]))
        self.bodies.append(body)
        return super().fetch(url, method, headers, body)


def exchange(base, key, secret):
    ex = Recorded(
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
    # every API family to the gateway (paths kept), so no call can leave for binance.com
    for name, url in list(ex.urls["api"].items()):
        if isinstance(url, str):
            ex.urls["api"][name] = re.sub(r"^https?://[^/]+", base, url)
    return ex


def scenario():
    base, (mk, ms), (tk, ts) = settings()
    maker, taker = exchange(base, mk, ms), exchange(base, tk, ts)
    f = fees()

    step("load_markets: one call, GET /api/v3/exchangeInfo")
    markets = maker.load_markets()
    eq(maker.calls, [("GET", f"{base}/api/v3/exchangeInfo")], "load_markets calls")
    check(UNIFIED in markets, f"{UNIFIED} in markets", sorted(markets))
    m = markets[UNIFIED]
    eq(m["id"], "BTCUSDT", "market id")
    eq((m["base"], m["quote"], m["spot"], m["type"]), (BASE, QUOTE, True, "spot"), "market kind")
    eq(m["active"], True, "market active (status TRADING)")
    num(m["precision"]["price"], TICK, "price precision (tickSize)")
    num(m["precision"]["amount"], STEP, "amount precision (stepSize)")
    num(m["limits"]["cost"]["min"], MIN_NOTIONAL, "min notional")
    num(m["limits"]["amount"]["min"], STEP, "min amount")
    num(m["maker"], "0.001", "maker fee")
    num(m["taker"], "0.001", "taker fee")
    taker.load_markets()

    step("fetch_time")
    t = maker.fetch_time()
    check(abs(t - maker.milliseconds()) < 5_000, "server time close to ours", t)

    step("public data before any trade")
    book = maker.fetch_order_book(UNIFIED)
    eq((book["bids"], book["asks"]), ([], []), "empty book")
    eq(maker.fetch_trades(UNIFIED), [], "no trades yet")
    eq(maker.fetch_ohlcv(UNIFIED, "1m"), [], "no candles yet")

    step("fetch_balance")
    mb0, tb0 = maker.fetch_balance(), taker.fetch_balance()
    maker_btc, taker_usdt = mb0[BASE]["free"], tb0[QUOTE]["free"]
    check(maker_btc is not None and maker_btc >= float(SELL_QTY), "maker holds BTC", mb0.get(BASE))
    check(
        taker_usdt is not None and taker_usdt >= float(2 * QUOTE_SPEND + BUY_QTY * BUY_LIMIT),
        "taker holds USDT",
        tb0.get(QUOTE),
    )
    maker_usdt0 = (mb0.get(QUOTE) or {}).get("total") or 0.0
    taker_btc0 = (tb0.get(BASE) or {}).get("total") or 0.0

    step("maker: limit sell, the client order id is echoed")
    sell = maker.create_limit_sell_order(UNIFIED, float(SELL_QTY), float(PRICE))
    check(sell["id"], "sell order id", sell)
    sent = dict(urllib.parse.parse_qsl(maker.bodies[-1] or ""))
    eq(
        (sent.get("newOrderRespType"), sent.get("recvWindow"), len(sent.get("newClientOrderId", ""))),
        ("FULL", "10000", 32),
        "what ccxt sends with an order",
    )
    check(sent["newClientOrderId"].startswith("x-TKT5PX2F"), "ccxt's broker prefix", sent)
    eq(sell["clientOrderId"], sent["newClientOrderId"], "ccxt's newClientOrderId echoed")
    eq(sell["status"], "open", "sell status")
    eq((sell["side"], sell["type"]), ("sell", "limit"), "sell side/type")
    num(sell["price"], PRICE, "sell price")
    num(sell["amount"], SELL_QTY, "sell amount")
    eq(sell["symbol"], UNIFIED, "sell symbol")
    poll(
        "the ask in the book",
        lambda: maker.fetch_order_book(UNIFIED)["asks"] == [[float(PRICE), float(SELL_QTY)]],
    )
    locked = maker.fetch_balance()[BASE]
    num(locked["used"], SELL_QTY, "maker BTC locked by the sell")

    step("taker: limit buy crossing the ask, until filled")
    buy = taker.create_limit_buy_order(UNIFIED, float(BUY_QTY), float(BUY_LIMIT))
    eq(buy["clientOrderId"][:10], "x-TKT5PX2F", "buy client order id")
    # FULL: the answer waits for the matcher's outcome
    eq(buy["status"], "closed", "the answer says filled")
    num(buy["filled"], BUY_QTY, "the answer's filled amount")
    eq(len(buy["trades"]), 1, "the answer's fills as trades")
    bought = poll(
        "the buy to fill",
        lambda: (o := taker.fetch_order(buy["id"], UNIFIED))["status"] == "closed" and o,
    )
    num(bought["filled"], BUY_QTY, "buy filled")
    num(bought["remaining"], 0, "buy remaining")
    num(bought["cost"], BUY_QTY * PRICE, "buy cost (at the maker's price)")
    num(bought["average"], PRICE, "buy average price")
    num(bought["price"], BUY_LIMIT, "buy limit price")
    eq(bought["clientOrderId"], buy["clientOrderId"], "fetch_order clientOrderId")

    step("taker: market buy by cost (quoteOrderQty), until filled")
    mbuy = taker.create_market_buy_order_with_cost(UNIFIED, float(QUOTE_SPEND))
    eq((mbuy["type"], mbuy["side"]), ("market", "buy"), "market buy type/side")
    mbought = poll(
        "the market buy to fill",
        lambda: (o := taker.fetch_order(mbuy["id"], UNIFIED))["status"] == "closed" and o,
    )
    num(mbought["filled"], MARKET_QTY, "market buy filled")
    num(mbought["cost"], QUOTE_SPEND, "market buy cost")

    step("maker: the sell partly filled, open")
    opens = poll(
        "the maker's open sell to show both fills",
        lambda: (o := maker.fetch_open_orders(UNIFIED)) and abs(o[0]["filled"] - float(TRADED)) < 1e-12 and o,
    )
    eq(len(opens), 1, "maker open orders")
    eq(opens[0]["id"], sell["id"], "the open order is the sell")
    num(opens[0]["remaining"], SELL_QTY - TRADED, "sell remaining")
    eq(opens[0]["status"], "open", "sell status while partly filled")
    eq(taker.fetch_open_orders(UNIFIED), [], "taker has no open orders")

    step("maker: cancel the rest, until canceled")
    c = maker.cancel_order(sell["id"], UNIFIED)
    eq(c["id"], sell["id"], "cancel answers the order")
    check(c["status"] in ("canceling", "canceled"), "cancel status", c["status"])
    poll(
        "the sell to be canceled",
        lambda: maker.fetch_order(sell["id"], UNIFIED)["status"] == "canceled",
    )
    expect_error(
        "a second cancel",
        lambda: maker.cancel_order(sell["id"], UNIFIED),
        ccxt.OrderNotFound,
    )
    eq(maker.fetch_open_orders(UNIFIED), [], "maker has no open orders left")

    step("closed, canceled and all orders")
    closed = taker.fetch_closed_orders(UNIFIED)
    eq(sorted(o["id"] for o in closed), sorted([buy["id"], mbuy["id"]]), "taker closed orders")
    canceled = maker.fetch_canceled_orders(UNIFIED)
    eq([o["id"] for o in canceled], [sell["id"]], "maker canceled orders")
    num(canceled[0]["filled"], TRADED, "canceled sell filled")
    eq([o["id"] for o in maker.fetch_orders(UNIFIED)], [sell["id"]], "maker all orders")

    step("my trades: price, amount, cost, fee, role")
    tt = taker.fetch_my_trades(UNIFIED)
    eq(len(tt), 2, "taker trades")
    by_order = {t["order"]: t for t in tt}
    check(set(by_order) == {buy["id"], mbuy["id"]}, "taker trades' orders", list(by_order))
    for oid, qty, fee in (
        (buy["id"], BUY_QTY, f["taker_limit"]),
        (mbuy["id"], MARKET_QTY, f["taker_market"]),
    ):
        t = by_order[oid]
        num(t["price"], PRICE, "taker trade price")
        num(t["amount"], qty, "taker trade amount")
        num(t["cost"], qty * PRICE, "taker trade cost")
        eq((t["side"], t["takerOrMaker"], t["symbol"]), ("buy", "taker", UNIFIED), "taker trade role")
        num(t["fee"]["cost"], fee, "taker trade fee")
        eq(t["fee"]["currency"], BASE, "taker fee currency")
    mt = maker.fetch_my_trades(UNIFIED)
    eq(len(mt), 2, "maker trades")
    eq({t["order"] for t in mt}, {sell["id"]}, "maker trades' order")
    eq({(t["side"], t["takerOrMaker"]) for t in mt}, {("sell", "maker")}, "maker trade role")
    num(sum(t["amount"] for t in mt), TRADED, "maker traded amount")
    num(sum(t["fee"]["cost"] for t in mt), f["maker_limit"] + f["maker_market"], "maker fees")
    eq({t["fee"]["currency"] for t in mt}, {QUOTE}, "maker fee currency")
    eq(sorted(t["id"] for t in mt), sorted(t["id"] for t in tt), "both sides see the same trades")

    step("InsufficientFunds for a buy beyond the balance")
    expect_error(
        "a buy of 100 BTC",
        lambda: taker.create_limit_buy_order(UNIFIED, 100, float(PRICE)),
        ccxt.InsufficientFunds,
    )

    step("balances after settlement")
    mb, tb = maker.fetch_balance(), taker.fetch_balance()
    num(mb[BASE]["free"], maker_btc - float(TRADED), "maker BTC free")
    num(mb[BASE]["used"], 0, "maker BTC locked")
    num(
        mb[QUOTE]["total"],
        maker_usdt0 + float(TRADED_QUOTE - f["maker_limit"] - f["maker_market"]),
        "maker USDT",
    )
    num(tb[QUOTE]["free"], taker_usdt - float(TRADED_QUOTE), "taker USDT free")
    num(tb[QUOTE]["used"], 0, "taker USDT locked")
    num(tb[BASE]["total"], taker_btc0 + float(TRADED - f["taker_limit"] - f["taker_market"]), "taker BTC")

    step("public data after the trades")
    trades = poll("both public trades", lambda: len(t := maker.fetch_trades(UNIFIED)) == 2 and t)
    eq(sorted(t["id"] for t in trades), sorted(t["id"] for t in tt), "public trade ids")
    for t in trades:
        num(t["price"], PRICE, "public trade price")
        eq(t["side"], "buy", "public trade taker side")
    num(sum(t["amount"] for t in trades), TRADED, "public traded amount")
    ohlcv = maker.fetch_ohlcv(UNIFIED, "1m")
    check(1 <= len(ohlcv) <= 2, "one or two 1m candles", ohlcv)
    for c in ohlcv:
        eq(len(c), 6, "candle shape")
        num(c[2], PRICE, "candle high")
        num(c[3], PRICE, "candle low")
    num(sum(c[5] for c in ohlcv), TRADED, "candle volume")
    ticker = poll(
        "the ticker to count both trades",
        lambda: (
            (t := maker.fetch_ticker(UNIFIED))["baseVolume"]
            and abs(t["baseVolume"] - float(TRADED)) < 1e-12
            and t
        ),
    )
    eq(ticker["symbol"], UNIFIED, "ticker symbol")
    num(ticker["last"], PRICE, "ticker last")
    num(ticker["quoteVolume"], TRADED_QUOTE, "ticker quote volume")
    book = poll(
        "the empty book after the cancel",
        lambda: (b := maker.fetch_order_book(UNIFIED))["asks"] == [] and b,
    )
    eq(book["bids"], [], "no bids")

    step("taker: market buy by quantity (create_market_buy_order), until closed")
    usdt_before = taker.fetch_balance()[QUOTE]["free"]
    maker.create_limit_sell_order(UNIFIED, float(BY_QTY), float(PRICE))
    poll(
        "the new ask in the book",
        lambda: maker.fetch_order_book(UNIFIED)["asks"] == [[float(PRICE), float(BY_QTY)]],
    )
    q = taker.create_market_buy_order(UNIFIED, float(BY_QTY))
    sent = taker.bodies[-1] or ""
    check("quantity=" in sent and "quoteOrderQty" not in sent, "ccxt sent quantity", sent)
    qbought = poll(
        "the market buy by quantity to fill",
        lambda: (o := taker.fetch_order(q["id"], UNIFIED))["status"] == "closed" and o,
    )
    num(qbought["filled"], BY_QTY, "market buy by quantity filled")
    num(qbought["cost"], BY_QTY_COST, "market buy by quantity cost")
    tq = poll(
        "the unspent hold released",
        lambda: (b := taker.fetch_balance()[QUOTE])["used"] == 0 and b,
    )
    num(tq["free"], usdt_before - float(BY_QTY_COST), "taker USDT after the market buy by quantity")

    step("every call went to the gateway")
    for ex in (maker, taker):
        stray = [c for c in ex.calls if not c[1].startswith(base + "/api/v3/")]
        eq(stray, [], "calls outside the gateway's /api/v3")


if __name__ == "__main__":
    main("ccxt", scenario)
