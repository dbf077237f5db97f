"""The trading scenario with Binance's official SDK (binance-sdk-spot, REST), its
configuration's base path pointed at the gateway and a timeout of 10 s (the default,
1 s, is shorter than a placement may take on a busy test machine). It signs every
parameter in the query string (POST and DELETE included, empty body), in its own
order, and sends Python floats with `str()`.

Its response models are strict (prices and quantities strings, ids and times
integers): when an answer does not fit, the SDK only logs a warning and relaxes the
model, so this scenario fails on any warning it logs. Retries are off, so a 5xx is
seen, not retried away.

Exercised: ping, time, exchange_info, depth, get_trades, historical_trades,
agg_trades, klines, ui_klines, ticker24hr, ticker_price, ticker_book_ticker,
avg_price, get_account (with a fractional recv_window, which the SDK documents),
order_test, new_order (LIMIT sell, LIMIT buy, MARKET buy by quote_order_qty and by quantity),
get_order, get_open_orders, delete_order, all_orders, my_trades, and the errors:
-2010 insufficient balance, -2011, -2013, and -1100 for `1e-05` (what `str(0.00001)`
gives).
"""

import logging
from decimal import Decimal

from binance_common.configuration import ConfigurationRestAPI
from binance_common.errors import BadRequestError
from binance_sdk_spot.rest_api.models import (
    KlinesIntervalEnum,
    NewOrderSideEnum,
    NewOrderTimeInForceEnum,
    NewOrderTypeEnum,
    OrderTestSideEnum,
    OrderTestTimeInForceEnum,
    OrderTestTypeEnum,
    UiKlinesIntervalEnum,
)
from binance_sdk_spot.spot import Spot

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
    SYMBOL,
    TICK,
    TRADED,
    TRADED_QUOTE,
    Mismatch,
    check,
    dec,
    eq,
    expect_error,
    fees,
    is_decimal_string,
    main,
    num,
    poll,
    settings,
    step,
)


class Warnings(logging.Handler):
    """Every warning the SDK logs (a refused model among them)."""

    def __init__(self):
        super().__init__(logging.WARNING)
        self.seen = []

    def emit(self, record):
        self.seen.append(record.getMessage())


WARNINGS = Warnings()
logging.getLogger().addHandler(WARNINGS)


def plain(v):
    """A model (or list of them) as its JSON dict with the wire's names."""
    if isinstance(v, list):
        return [plain(x) for x in v]
    if hasattr(v, "actual_instance"):
        return plain(v.actual_instance)
    if hasattr(v, "to_dict"):
        return v.to_dict()
    return v


def call(what, fn):
    """`fn()`'s data as plain JSON; a Mismatch when the SDK logged a warning (its
    model refused the answer) or the answer is not a model where one is declared."""
    n = len(WARNINGS.seen)
    resp = fn()
    data = resp.data() if resp is not None else None
    if len(WARNINGS.seen) > n:
        raise Mismatch(f"{what}: the SDK warned: {WARNINGS.seen[n:]}")
    return plain(data)


def rest(base, key, secret):
    return Spot(
        config_rest_api=ConfigurationRestAPI(
            api_key=key,
            api_secret=secret,
            base_path=base,
            timeout=10_000,
            retries=0,
        )
    ).rest_api


def api_error(code):
    def check_exc(e):
        eq(e.status_code, code, f"error code ({e.error_message})")
        check(e.error_message, "error message")

    return check_exc


def balances(api, what):
    acc = call(what, lambda: api.get_account())
    out = {}
    for b in acc["balances"]:
        is_decimal_string(b["free"], "free")
        is_decimal_string(b["locked"], "locked")
        out[b["asset"]] = (Decimal(b["free"]), Decimal(b["locked"]))
    return out


def get(d, asset):
    return d.get(asset, (Decimal(0), Decimal(0)))


def scenario():
    base, (mk, ms), (tk, ts) = settings()
    maker, taker = rest(base, mk, ms), rest(base, tk, ts)
    f = fees()

    step("ping, time, exchange_info")
    maker.ping()
    t = call("time", lambda: maker.time())
    check(isinstance(t["serverTime"], int), "serverTime is an integer", t)
    info = call("exchange_info", lambda: maker.exchange_info(symbol=SYMBOL))
    eq([s["symbol"] for s in info["symbols"]], [SYMBOL], "exchange_info(symbol)")
    s = info["symbols"][0]
    eq((s["status"], s["baseAsset"], s["quoteAsset"]), ("TRADING", BASE, QUOTE), "symbol")
    filters = {x["filterType"]: x for x in s["filters"]}
    num(filters["PRICE_FILTER"]["tickSize"], TICK, "tickSize")
    num(filters["LOT_SIZE"]["stepSize"], STEP, "stepSize")
    num(filters["NOTIONAL"]["minNotional"], MIN_NOTIONAL, "minNotional")
    call("exchange_info(symbols)", lambda: maker.exchange_info(symbols=[SYMBOL, "ETHUSDT"]))

    step("public data before any trade")
    d = call("depth", lambda: maker.depth(symbol=SYMBOL, limit=5))
    eq((d["bids"], d["asks"]), ([], []), "empty book")
    eq(call("get_trades", lambda: maker.get_trades(symbol=SYMBOL)), [], "no trades")
    eq(
        call("klines", lambda: maker.klines(symbol=SYMBOL, interval=KlinesIntervalEnum.INTERVAL_1m)),
        [],
        "no klines",
    )

    step("get_account, one with a fractional recv_window (the SDK documents µs precision)")
    mb0, tb0 = balances(maker, "maker account"), balances(taker, "taker account")
    call("get_account(recv_window=6000.5)", lambda: maker.get_account(recv_window=6000.5))
    maker_btc, _ = get(mb0, BASE)
    taker_usdt, _ = get(tb0, QUOTE)
    check(maker_btc >= SELL_QTY, "maker holds BTC", mb0)
    check(taker_usdt >= 2 * QUOTE_SPEND + BUY_QTY * BUY_LIMIT, "taker holds USDT", tb0)

    step("order_test")
    call(
        "order_test",
        lambda: maker.order_test(
            symbol=SYMBOL,
            side=OrderTestSideEnum.SELL,
            type=OrderTestTypeEnum.LIMIT,
            time_in_force=OrderTestTimeInForceEnum.GTC,
            quantity=float(SELL_QTY),
            price=float(PRICE),
        ),
    )

    step("str(0.00001) is '1e-05': refused with -1100, not a 5xx")
    expect_error(
        "a quantity of 1e-05",
        lambda: maker.new_order(
            symbol=SYMBOL,
            side=NewOrderSideEnum.SELL,
            type=NewOrderTypeEnum.LIMIT,
            time_in_force=NewOrderTimeInForceEnum.GTC,
            quantity=0.00001,
            price=float(PRICE),
        ),
        BadRequestError,
        api_error(-1100),
    )

    step("maker: new_order LIMIT sell (floats)")
    sell = call(
        "new_order sell",
        lambda: maker.new_order(
            symbol=SYMBOL,
            side=NewOrderSideEnum.SELL,
            type=NewOrderTypeEnum.LIMIT,
            time_in_force=NewOrderTimeInForceEnum.GTC,
            quantity=float(SELL_QTY),
            price=float(PRICE),
            new_client_order_id="sdk-maker-sell-1",
        ),
    )
    check(isinstance(sell["orderId"], int), "orderId is an integer", sell)
    check(isinstance(sell["transactTime"], int), "transactTime is an integer", sell)
    eq(sell["clientOrderId"], "sdk-maker-sell-1", "client order id echoed")
    eq((sell["status"], sell["side"], sell["type"]), ("NEW", "SELL", "LIMIT"), "sell answer")
    num(sell["origQty"], SELL_QTY, "sell origQty")
    poll(
        "the ask in the book",
        lambda: call("depth", lambda: maker.depth(symbol=SYMBOL))["asks"] == [[str(PRICE), str(SELL_QTY)]],
    )

    step("taker: new_order LIMIT buy crossing the ask, until FILLED")
    buy = call(
        "new_order buy",
        lambda: taker.new_order(
            symbol=SYMBOL,
            side=NewOrderSideEnum.BUY,
            type=NewOrderTypeEnum.LIMIT,
            time_in_force=NewOrderTimeInForceEnum.GTC,
            quantity=float(BUY_QTY),
            price=float(BUY_LIMIT),
        ),
    )
    # FULL (the default for LIMIT): the answer waits for the matcher's outcome
    eq(buy["status"], "FILLED", "FULL answer: the buy's outcome")
    eq([(f["price"], f["qty"]) for f in buy["fills"]], [(str(PRICE), str(BUY_QTY))], "FULL answer: its fill")
    bought = poll(
        "the buy to fill",
        lambda: (
            (o := call("get_order", lambda: taker.get_order(symbol=SYMBOL, order_id=buy["orderId"])))[
                "status"
            ]
            == "FILLED"
            and o
        ),
    )
    num(bought["executedQty"], BUY_QTY, "buy executedQty")
    num(bought["cummulativeQuoteQty"], BUY_QTY * PRICE, "buy quote (at the maker's price)")
    for k in ("time", "updateTime", "workingTime"):
        check(isinstance(bought[k], int), f"{k} is an integer", bought)

    step("taker: new_order MARKET buy by quote_order_qty, until FILLED")
    mbuy = call(
        "new_order market buy",
        lambda: taker.new_order(
            symbol=SYMBOL,
            side=NewOrderSideEnum.BUY,
            type=NewOrderTypeEnum.MARKET,
            quote_order_qty=float(QUOTE_SPEND),
        ),
    )
    mbought = poll(
        "the market buy to fill",
        lambda: (
            (o := call("get_order", lambda: taker.get_order(symbol=SYMBOL, order_id=mbuy["orderId"])))[
                "status"
            ]
            == "FILLED"
            and o
        ),
    )
    num(mbought["executedQty"], MARKET_QTY, "market buy executedQty")
    num(mbought["cummulativeQuoteQty"], QUOTE_SPEND, "market buy quote")

    step("open orders; delete_order of the maker's rest, until CANCELED")
    opens = poll(
        "the sell to show both fills",
        lambda: (
            (o := call("get_open_orders", lambda: maker.get_open_orders(symbol=SYMBOL)))
            and dec(o[0]["executedQty"]) == TRADED
            and o
        ),
    )
    eq([o["orderId"] for o in opens], [sell["orderId"]], "maker open orders")
    eq(call("taker open orders", lambda: taker.get_open_orders(symbol=SYMBOL)), [], "taker open orders")
    c = call(
        "delete_order", lambda: maker.delete_order(symbol=SYMBOL, orig_client_order_id="sdk-maker-sell-1")
    )
    eq((c["orderId"], c["origClientOrderId"]), (sell["orderId"], "sdk-maker-sell-1"), "cancel answer")
    check(c["status"] in ("PENDING_CANCEL", "CANCELED"), "cancel status", c["status"])
    poll(
        "the sell to be canceled",
        lambda: (
            call("get_order", lambda: maker.get_order(symbol=SYMBOL, order_id=sell["orderId"]))["status"]
            == "CANCELED"
        ),
    )
    expect_error(
        "a second cancel",
        lambda: maker.delete_order(symbol=SYMBOL, order_id=sell["orderId"]),
        BadRequestError,
        api_error(-2011),
    )
    expect_error(
        "an unknown order",
        lambda: maker.get_order(symbol=SYMBOL, order_id=12345),
        BadRequestError,
        api_error(-2013),
    )

    step("all_orders")
    mall = call("all_orders", lambda: maker.all_orders(symbol=SYMBOL))
    eq([(o["orderId"], o["status"]) for o in mall], [(sell["orderId"], "CANCELED")], "maker all orders")
    tall = call("all_orders", lambda: taker.all_orders(symbol=SYMBOL, limit=10))
    eq([o["orderId"] for o in tall], [buy["orderId"], mbuy["orderId"]], "taker all orders")

    step("my_trades: price, qty, commission")
    tt = call("my_trades", lambda: taker.my_trades(symbol=SYMBOL))
    eq([t["orderId"] for t in tt], [buy["orderId"], mbuy["orderId"]], "taker trades")
    for t, qty, fee in zip(tt, (BUY_QTY, MARKET_QTY), (f["taker_limit"], f["taker_market"]), strict=True):
        num(t["price"], PRICE, "taker trade price")
        num(t["qty"], qty, "taker trade qty")
        num(t["commission"], fee, "taker commission")
        eq((t["commissionAsset"], t["isBuyer"], t["isMaker"]), (BASE, True, False), "taker trade role")
    mt = call("my_trades", lambda: maker.my_trades(symbol=SYMBOL, limit=10))
    eq([t["id"] for t in mt], [t["id"] for t in tt], "maker sees the same trades")
    for t, fee in zip(mt, (f["maker_limit"], f["maker_market"]), strict=True):
        num(t["commission"], fee, "maker commission")
        eq((t["commissionAsset"], t["isMaker"]), (QUOTE, True), "maker trade role")
    eq(
        [
            t["id"]
            for t in call("my_trades(from_id)", lambda: taker.my_trades(symbol=SYMBOL, from_id=tt[1]["id"]))
        ],
        [tt[1]["id"]],
        "my_trades from an id",
    )

    step("insufficient balance: -2010")
    e = expect_error(
        "a buy of 100 BTC",
        lambda: taker.new_order(
            symbol=SYMBOL,
            side=NewOrderSideEnum.BUY,
            type=NewOrderTypeEnum.LIMIT,
            time_in_force=NewOrderTimeInForceEnum.GTC,
            quantity=100.0,
            price=float(PRICE),
        ),
        BadRequestError,
        api_error(-2010),
    )
    eq(e.error_message, "Account has insufficient balance for requested action.", "message")

    step("balances after settlement")
    mb, tb = balances(maker, "maker account"), balances(taker, "taker account")
    eq(get(mb, BASE), (maker_btc - TRADED, Decimal(0)), "maker BTC")
    eq(
        sum(get(mb, QUOTE)),
        sum(get(mb0, QUOTE)) + TRADED_QUOTE - f["maker_limit"] - f["maker_market"],
        "maker USDT",
    )
    eq(get(tb, QUOTE), (taker_usdt - TRADED_QUOTE, Decimal(0)), "taker USDT")
    eq(sum(get(tb, BASE)), sum(get(tb0, BASE)) + TRADED - f["taker_limit"] - f["taker_market"], "taker BTC")

    step("public data after the trades")
    trades = poll(
        "both public trades",
        lambda: len(t := call("get_trades", lambda: maker.get_trades(symbol=SYMBOL))) == 2 and t,
    )
    eq([t["id"] for t in trades], [t["id"] for t in tt], "public trades")
    eq(
        [(t["price"], t["qty"]) for t in trades],
        [(str(PRICE), str(BUY_QTY)), (str(PRICE), str(MARKET_QTY))],
        "public trade prices",
    )
    h = call(
        "historical_trades", lambda: maker.historical_trades(symbol=SYMBOL, from_id=trades[0]["id"], limit=1)
    )
    eq([t["id"] for t in h], [trades[0]["id"]], "historical trades")
    agg = call("agg_trades", lambda: maker.agg_trades(symbol=SYMBOL))
    eq(len(agg), 2, "aggregate trades")
    for a in agg:
        check(isinstance(a["a"], int) and isinstance(a["T"], int), "agg ids and times are integers", a)
    kl = call("klines", lambda: maker.klines(symbol=SYMBOL, interval=KlinesIntervalEnum.INTERVAL_1m))
    check(1 <= len(kl) <= 2, "one or two 1m klines", kl)
    eq(sum(dec(k[5]) for k in kl), TRADED, "klines volume")
    check(
        all(isinstance(k[0], int) and isinstance(k[1], str) for k in kl),
        "kline open time int, prices strings",
        kl,
    )
    ui = call("ui_klines", lambda: maker.ui_klines(symbol=SYMBOL, interval=UiKlinesIntervalEnum.INTERVAL_1m))
    eq(ui, kl, "ui_klines")
    t24 = poll(
        "the 24 h ticker",
        lambda: (t := call("ticker24hr", lambda: maker.ticker24hr(symbol=SYMBOL)))["count"] == 2 and t,
    )
    eq((t24["lastPrice"], t24["volume"]), (str(PRICE), str(TRADED)), "24 h ticker")
    num(t24["quoteVolume"], TRADED_QUOTE, "24 h quote volume")
    all24 = call("ticker24hr(all)", lambda: maker.ticker24hr())
    check(isinstance(all24, list) and SYMBOL in [t["symbol"] for t in all24], "all tickers", all24)
    eq(call("ticker_price", lambda: maker.ticker_price(symbol=SYMBOL))["price"], str(PRICE), "price ticker")
    call("ticker_book_ticker", lambda: maker.ticker_book_ticker(symbol=SYMBOL))
    num(call("avg_price", lambda: maker.avg_price(symbol=SYMBOL))["price"], PRICE, "average price")

    step("taker: new_order MARKET buy by quantity, until FILLED")
    usdt_before = get(balances(taker, "taker account"), QUOTE)[0]
    call(
        "new_order sell",
        lambda: maker.new_order(
            symbol=SYMBOL,
            side=NewOrderSideEnum.SELL,
            type=NewOrderTypeEnum.LIMIT,
            time_in_force=NewOrderTimeInForceEnum.GTC,
            quantity=float(BY_QTY),
            price=float(PRICE),
        ),
    )
    poll(
        "the new ask in the book",
        lambda: call("depth", lambda: maker.depth(symbol=SYMBOL))["asks"] == [[str(PRICE), str(BY_QTY)]],
    )
    q = call(
        "new_order market buy by quantity",
        lambda: taker.new_order(
            symbol=SYMBOL,
            side=NewOrderSideEnum.BUY,
            type=NewOrderTypeEnum.MARKET,
            quantity=float(BY_QTY),
        ),
    )
    qbought = poll(
        "the market buy by quantity to fill",
        lambda: (
            (o := call("get_order", lambda: taker.get_order(symbol=SYMBOL, order_id=q["orderId"])))["status"]
            == "FILLED"
            and o
        ),
    )
    num(qbought["executedQty"], BY_QTY, "market buy by quantity executedQty")
    num(qbought["cummulativeQuoteQty"], BY_QTY_COST, "market buy by quantity quote")
    poll(
        "the unspent hold released",
        lambda: get(balances(taker, "taker account"), QUOTE) == (usdt_before - BY_QTY_COST, Decimal(0)),
    )
    eq(WARNINGS.seen, [], "warnings the SDK logged")


if __name__ == "__main__":
    main("binance-sdk-spot", scenario)
