"""The trading scenario with python-binance's `binance.Client` (sync), `API_URL`
pointed at the gateway before construction (the constructor pings). It signs with
parameters sorted and `recvWindow=10000`, sends POST and DELETE parameters as a form
body and GET ones in the query (with `Content-Type: application/json`).

Exercised: ping (constructor), get_server_time, get_exchange_info, get_symbol_info,
get_order_book, get_recent_trades, get_aggregate_trades, get_historical_trades,
get_klines, get_historical_klines, get_ticker, get_symbol_ticker,
get_orderbook_ticker, get_avg_price, get_account, get_asset_balance,
create_test_order (also with computeCommissionRates=True, which it sends as `True`),
order_limit_sell, order_limit_buy, order_market_buy (quoteOrderQty and quantity),
order_market_sell (quoteOrderQty), get_order,
get_open_orders, cancel_order, get_all_orders, get_my_trades, and
BinanceAPIException codes (-2010 insufficient balance, -2013, -2011).
"""

from decimal import Decimal

from binance.client import Client
from binance.exceptions import BinanceAPIException

from scenario_common import (
    BASE,
    BUY_LIMIT,
    BUY_QTY,
    FEE_RATE,
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

PREFIX = "x-HNA2TXFJ"  # python-binance's newClientOrderId prefix


def client(base, key, secret):
    Client.API_URL = f"{base}/api"
    Client.MARGIN_API_URL = f"{base}/sapi"
    c = Client(key, secret)
    c.calls = []
    c.session.hooks["response"].append(
        lambda r, *a, **k: c.calls.append((r.request.method, r.url.split("?")[0], r.request.body))
    )
    return c


def api_error(code, status=400):
    def check_exc(e):
        eq((e.status_code, e.code), (status, code), f"error status and code ({e.message})")
        check(e.message, "error message", e.message)

    return check_exc


def free_locked(c, asset):
    b = c.get_asset_balance(asset=asset)
    if b is None:
        return Decimal(0), Decimal(0)
    is_decimal_string(b["free"], f"{asset} free")
    is_decimal_string(b["locked"], f"{asset} locked")
    return Decimal(b["free"]), Decimal(b["locked"])


def scenario():
    base, (mk, ms), (tk, ts) = settings()
    step("Client(): the constructor pings")
    maker, taker = client(base, mk, ms), client(base, tk, ts)
    f = fees()

    step("server time and exchange info")
    t = maker.get_server_time()["serverTime"]
    check(isinstance(t, int), "serverTime is an integer", t)
    info = maker.get_exchange_info()
    check(any(s["symbol"] == SYMBOL for s in info["symbols"]), "BTCUSDT listed", info["symbols"])
    s = maker.get_symbol_info(SYMBOL)
    check(s is not None, "get_symbol_info(BTCUSDT)")
    eq((s["status"], s["baseAsset"], s["quoteAsset"]), ("TRADING", BASE, QUOTE), "symbol info")
    filters = {x["filterType"]: x for x in s["filters"]}
    num(filters["PRICE_FILTER"]["tickSize"], TICK, "tickSize")
    num(filters["LOT_SIZE"]["stepSize"], STEP, "stepSize")
    num(filters["NOTIONAL"]["minNotional"], MIN_NOTIONAL, "minNotional")
    check("LIMIT" in s["orderTypes"] and "MARKET" in s["orderTypes"], "order types", s["orderTypes"])
    eq(s["quoteOrderQtyMarketAllowed"], True, "quoteOrderQtyMarketAllowed")

    step("public data before any trade")
    eq(maker.get_order_book(symbol=SYMBOL, limit=5)["asks"], [], "empty book")
    eq(maker.get_recent_trades(symbol=SYMBOL), [], "no trades")
    eq(maker.get_klines(symbol=SYMBOL, interval=Client.KLINE_INTERVAL_1MINUTE), [], "no klines")
    eq(maker.get_symbol_ticker(symbol=SYMBOL), {"symbol": SYMBOL, "price": "0"}, "price before trades")

    step("balances")
    maker_btc, maker_btc_locked = free_locked(maker, BASE)
    taker_usdt, _ = free_locked(taker, QUOTE)
    check(maker_btc >= SELL_QTY and maker_btc_locked == 0, "maker holds BTC", maker_btc)
    check(taker_usdt >= 2 * QUOTE_SPEND + BUY_QTY * BUY_LIMIT, "taker holds USDT", taker_usdt)
    maker_usdt0 = sum(free_locked(maker, QUOTE))
    taker_btc0 = sum(free_locked(taker, BASE))
    acc = maker.get_account()
    eq((acc["canTrade"], acc["accountType"]), (True, "SPOT"), "account")

    step("create_test_order: checked, nothing placed")
    eq(
        maker.create_test_order(
            symbol=SYMBOL, side="SELL", type="LIMIT", timeInForce="GTC", quantity="0.5", price="50000"
        ),
        {},
        "test order",
    )
    rates = maker.create_test_order(
        symbol=SYMBOL,
        side="SELL",
        type="LIMIT",
        timeInForce="GTC",
        quantity="0.5",
        price="50000",
        computeCommissionRates=True,  # sent as `True`
    )
    check("standardCommissionForOrder" in rates, "computeCommissionRates=True answers the rates", rates)
    num(rates["standardCommissionForOrder"]["maker"], "0.001", "maker commission rate")
    num(rates["standardCommissionForOrder"]["taker"], "0.001", "taker commission rate")

    step("maker: order_limit_sell (floats: str() of them is sent)")
    sell = maker.order_limit_sell(symbol=SYMBOL, quantity=float(SELL_QTY), price=float(PRICE))
    check(isinstance(sell["orderId"], int), "orderId is an integer", sell)
    eq(sell["clientOrderId"][: len(PREFIX)], PREFIX, "python-binance's client order id echoed")
    eq((sell["status"], sell["side"], sell["type"]), ("NEW", "SELL", "LIMIT"), "sell answer")
    num(sell["origQty"], SELL_QTY, "sell origQty")
    num(sell["price"], PRICE, "sell price")
    check(isinstance(sell.get("fills"), list), "FULL answer has fills", sell)
    poll(
        "the ask in the book",
        lambda: maker.get_order_book(symbol=SYMBOL)["asks"] == [[str(PRICE), str(SELL_QTY)]],
    )
    eq(free_locked(maker, BASE), (maker_btc - SELL_QTY, SELL_QTY), "maker BTC after the sell")

    step("taker: order_limit_buy crossing the ask, until FILLED")
    buy = taker.order_limit_buy(symbol=SYMBOL, quantity=str(BUY_QTY), price=str(BUY_LIMIT))
    # FULL (python-binance's default): the answer waits for the matcher's outcome
    eq(buy["status"], "FILLED", "FULL answer: the buy's outcome")
    eq(len(buy["fills"]), 1, "FULL answer: one fill")
    num(buy["fills"][0]["price"], PRICE, "fill price (the maker's)")
    num(buy["fills"][0]["qty"], BUY_QTY, "fill qty")
    num(buy["fills"][0]["commission"], BUY_QTY * FEE_RATE, "fill commission")
    eq(buy["fills"][0]["commissionAsset"], BASE, "fill commission asset")
    bought = poll(
        "the buy to fill",
        lambda: (o := taker.get_order(symbol=SYMBOL, orderId=buy["orderId"]))["status"] == "FILLED" and o,
    )
    num(bought["executedQty"], BUY_QTY, "buy executedQty")
    num(bought["cummulativeQuoteQty"], BUY_QTY * PRICE, "buy quote (at the maker's price)")
    eq(bought["clientOrderId"], buy["clientOrderId"], "get_order clientOrderId")
    by_cid = taker.get_order(symbol=SYMBOL, origClientOrderId=buy["clientOrderId"])
    eq(by_cid["orderId"], buy["orderId"], "get_order by origClientOrderId")

    step("taker: order_market_buy by quoteOrderQty, until FILLED")
    mbuy = taker.order_market_buy(symbol=SYMBOL, quoteOrderQty=str(QUOTE_SPEND))
    eq((mbuy["type"], mbuy["side"]), ("MARKET", "BUY"), "market buy answer")
    mbought = poll(
        "the market buy to fill",
        lambda: (o := taker.get_order(symbol=SYMBOL, orderId=mbuy["orderId"]))["status"] == "FILLED" and o,
    )
    num(mbought["executedQty"], MARKET_QTY, "market buy executedQty")
    num(mbought["cummulativeQuoteQty"], QUOTE_SPEND, "market buy quote")
    num(mbought["origQuoteOrderQty"], QUOTE_SPEND, "market buy origQuoteOrderQty")

    step("maker: open orders show the partly filled sell")
    opens = poll(
        "the sell to show both fills",
        lambda: (o := maker.get_open_orders(symbol=SYMBOL)) and dec(o[0]["executedQty"]) == TRADED and o,
    )
    eq([o["orderId"] for o in opens], [sell["orderId"]], "maker open orders")
    eq(opens[0]["status"], "PARTIALLY_FILLED", "sell status")
    eq(taker.get_open_orders(symbol=SYMBOL), [], "taker open orders")

    step("maker: cancel_order (a DELETE with a form body), until CANCELED")
    c = maker.cancel_order(symbol=SYMBOL, orderId=sell["orderId"])
    eq(c["orderId"], sell["orderId"], "cancel answers the order")
    check(c["status"] in ("PENDING_CANCEL", "CANCELED"), "cancel status", c["status"])
    method, _, body = maker.calls[-1]
    check(
        method == "DELETE" and body and "orderId=" in body,
        "the cancel's parameters in the body",
        maker.calls[-1],
    )
    poll(
        "the sell to be canceled",
        lambda: maker.get_order(symbol=SYMBOL, orderId=sell["orderId"])["status"] == "CANCELED",
    )
    expect_error(
        "a second cancel",
        lambda: maker.cancel_order(symbol=SYMBOL, orderId=sell["orderId"]),
        BinanceAPIException,
        api_error(-2011),
    )
    expect_error(
        "an unknown order",
        lambda: maker.get_order(symbol=SYMBOL, orderId=12345),
        BinanceAPIException,
        api_error(-2013),
    )

    step("all orders")
    mall = maker.get_all_orders(symbol=SYMBOL)
    eq([(o["orderId"], o["status"]) for o in mall], [(sell["orderId"], "CANCELED")], "maker all orders")
    num(mall[0]["executedQty"], TRADED, "canceled sell executedQty")
    tall = taker.get_all_orders(symbol=SYMBOL)
    eq(
        [(o["orderId"], o["status"]) for o in tall],
        [(buy["orderId"], "FILLED"), (mbuy["orderId"], "FILLED")],
        "taker all orders, oldest first",
    )

    step("my trades: price, qty, commission")
    tt = taker.get_my_trades(symbol=SYMBOL)
    eq([t["orderId"] for t in tt], [buy["orderId"], mbuy["orderId"]], "taker trades, oldest first")
    for t, qty, fee in zip(tt, (BUY_QTY, MARKET_QTY), (f["taker_limit"], f["taker_market"]), strict=True):
        for k in ("price", "qty", "quoteQty", "commission"):
            is_decimal_string(t[k], f"trade {k}")
        num(t["price"], PRICE, "taker trade price")
        num(t["qty"], qty, "taker trade qty")
        num(t["quoteQty"], qty * PRICE, "taker trade quoteQty")
        num(t["commission"], fee, "taker trade commission")
        eq((t["commissionAsset"], t["isBuyer"], t["isMaker"]), (BASE, True, False), "taker trade role")
    mt = maker.get_my_trades(symbol=SYMBOL)
    eq([t["id"] for t in mt], [t["id"] for t in tt], "maker sees the same trades")
    for t, fee in zip(mt, (f["maker_limit"], f["maker_market"]), strict=True):
        num(t["commission"], fee, "maker trade commission")
        eq((t["commissionAsset"], t["isBuyer"], t["isMaker"]), (QUOTE, False, True), "maker trade role")
    eq(
        [t["id"] for t in taker.get_my_trades(symbol=SYMBOL, orderId=mbuy["orderId"])],
        [tt[1]["id"]],
        "my trades of one order",
    )

    step("insufficient balance: -2010 with Binance's message")
    e = expect_error(
        "a buy of 100 BTC",
        lambda: taker.order_limit_buy(symbol=SYMBOL, quantity="100", price=str(PRICE)),
        BinanceAPIException,
        api_error(-2010),
    )
    eq(e.message, "Account has insufficient balance for requested action.", "insufficient balance message")

    step("balances after settlement")
    eq(free_locked(maker, BASE), (maker_btc - TRADED, Decimal(0)), "maker BTC")
    eq(
        sum(free_locked(maker, QUOTE)),
        maker_usdt0 + TRADED_QUOTE - f["maker_limit"] - f["maker_market"],
        "maker USDT",
    )
    eq(free_locked(taker, QUOTE), (taker_usdt - TRADED_QUOTE, Decimal(0)), "taker USDT")
    eq(sum(free_locked(taker, BASE)), taker_btc0 + TRADED - f["taker_limit"] - f["taker_market"], "taker BTC")

    step("public data after the trades")
    trades = poll("both public trades", lambda: len(t := maker.get_recent_trades(symbol=SYMBOL)) == 2 and t)
    eq([t["id"] for t in trades], [t["id"] for t in tt], "public trades, oldest first")
    eq(
        [(t["price"], t["qty"]) for t in trades],
        [(str(PRICE), str(BUY_QTY)), (str(PRICE), str(MARKET_QTY))],
        "public trade prices and qtys",
    )
    eq([t["isBuyerMaker"] for t in trades], [False, False], "the buyer took")
    eq(
        [t["id"] for t in maker.get_historical_trades(symbol=SYMBOL, fromId=trades[1]["id"])],
        [trades[1]["id"]],
        "historical trades from an id",
    )
    agg = maker.get_aggregate_trades(symbol=SYMBOL)
    eq(
        [(a["p"], a["q"]) for a in agg],
        [(str(PRICE), str(BUY_QTY)), (str(PRICE), str(MARKET_QTY))],
        "aggregate trades",
    )
    kl = maker.get_klines(symbol=SYMBOL, interval=Client.KLINE_INTERVAL_1MINUTE)
    check(1 <= len(kl) <= 2, "one or two 1m klines", kl)
    eq(sum(dec(k[5]) for k in kl), TRADED, "klines volume")
    eq(sum(k[8] for k in kl), 2, "klines trade count")
    hist = maker.get_historical_klines(SYMBOL, Client.KLINE_INTERVAL_1MINUTE, "1 hour ago UTC")
    eq([k[0] for k in hist], [k[0] for k in kl], "get_historical_klines")
    t24 = poll("the 24 h ticker", lambda: (t := maker.get_ticker(symbol=SYMBOL))["count"] == 2 and t)
    eq((t24["lastPrice"], t24["volume"]), (str(PRICE), str(TRADED)), "24 h ticker")
    num(t24["quoteVolume"], TRADED_QUOTE, "24 h quote volume")
    eq(maker.get_symbol_ticker(symbol=SYMBOL)["price"], str(PRICE), "price ticker")
    poll("the empty book", lambda: maker.get_order_book(symbol=SYMBOL)["asks"] == [])
    bt = maker.get_orderbook_ticker(symbol=SYMBOL)
    eq(bt["symbol"], SYMBOL, "book ticker symbol")
    num(maker.get_avg_price(symbol=SYMBOL)["price"], PRICE, "average price")

    step("taker: order_market_buy by quantity, until FILLED")
    usdt_before, _ = free_locked(taker, QUOTE)
    maker.order_limit_sell(symbol=SYMBOL, quantity=str(BY_QTY), price=str(PRICE))
    poll(
        "the new ask in the book",
        lambda: maker.get_order_book(symbol=SYMBOL)["asks"] == [[str(PRICE), str(BY_QTY)]],
    )
    q = taker.order_market_buy(symbol=SYMBOL, quantity=str(BY_QTY))
    eq((q["type"], q["side"]), ("MARKET", "BUY"), "market buy by quantity answer")
    qbought = poll(
        "the market buy by quantity to fill",
        lambda: (o := taker.get_order(symbol=SYMBOL, orderId=q["orderId"]))["status"] == "FILLED" and o,
    )
    num(qbought["executedQty"], BY_QTY, "market buy by quantity executedQty")
    num(qbought["origQty"], BY_QTY, "market buy by quantity origQty")
    num(qbought["cummulativeQuoteQty"], BY_QTY_COST, "market buy by quantity quote")
    num(qbought["origQuoteOrderQty"], 0, "no quoteOrderQty was sent")
    poll(
        "the unspent hold released",
        lambda: free_locked(taker, QUOTE) == (usdt_before - BY_QTY_COST, Decimal(0)),
    )

    step("maker: order_market_sell by quoteOrderQty into the taker's bid, until FILLED")
    btc_before, btc_locked = free_locked(maker, BASE)
    taker.order_limit_buy(symbol=SYMBOL, quantity=str(BY_QTY), price=str(PRICE))
    poll(
        "the bid in the book",
        lambda: maker.get_order_book(symbol=SYMBOL)["bids"] == [[str(PRICE), str(BY_QTY)]],
    )
    qs = maker.order_market_sell(symbol=SYMBOL, quoteOrderQty=str(BY_QTY_COST))
    eq((qs["type"], qs["side"]), ("MARKET", "SELL"), "market sell by quote answer")
    qsold = poll(
        "the market sell by quote to fill",
        lambda: (o := maker.get_order(symbol=SYMBOL, orderId=qs["orderId"]))["status"] == "FILLED" and o,
    )
    num(qsold["executedQty"], BY_QTY, "market sell by quote executedQty")
    num(qsold["cummulativeQuoteQty"], BY_QTY_COST, "market sell by quote quote")
    num(qsold["origQuoteOrderQty"], BY_QTY_COST, "market sell by quote origQuoteOrderQty")
    poll(
        "the unsold hold released",
        lambda: free_locked(maker, BASE) == (btc_before - BY_QTY, btc_locked),
    )


if __name__ == "__main__":
    main("python-binance", scenario)
