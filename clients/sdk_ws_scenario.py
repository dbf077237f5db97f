"""The WebSocket API half of Binance's official SDK (binance-sdk-spot, asyncio), its
`stream_url` pointed at the gateway's /ws-api/v3 and HMAC keys: the low-latency path
the SDK offers. Its strict response models (pydantic, StrictStr / StrictInt) are the
judge of every answer's shape.

Exercised: order_place (a resting LIMIT sell; a crossing LIMIT buy answered FULL with
its fill), order_status, open_orders_status, account_status, order_cancel, and a
refused order_place (unknown symbol) raising the SDK's error with Binance's code.
"""

import asyncio
import logging
from decimal import Decimal

from binance_common.configuration import ConfigurationWebSocketAPI
from binance_sdk_spot.spot import Spot
from binance_sdk_spot.websocket_api.models import (
    OrderPlaceSideEnum,
    OrderPlaceTimeInForceEnum,
    OrderPlaceTypeEnum,
)

from scenario_common import (
    BASE,
    BUY_LIMIT,
    BUY_QTY,
    FEE_RATE,
    PRICE,
    QUOTE,
    SELL_QTY,
    Mismatch,
    check,
    eq,
    main,
    num,
    poll,
    settings,
    step,
    SYMBOL,
)


class Captured(logging.Handler):
    """The messages the SDK logs (it reports a server's error answer there)."""

    def __init__(self):
        super().__init__()
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def result(resp):
    """The `result` of a WebSocket API answer, as the SDK parsed it."""
    data = resp.data()
    return getattr(data, "result", data)


async def connect(base, key, secret):
    ws = base.replace("http", "ws", 1) + "/ws-api/v3"
    client = Spot(config_ws_api=ConfigurationWebSocketAPI(api_key=key, api_secret=secret, stream_url=ws, timeout=15000))
    return await client.websocket_api.create_connection()


async def run():
    base, (mk, ms), (tk, ts) = settings()
    maker = await connect(base, mk, ms)
    taker = await connect(base, tk, ts)
    try:
        step("maker: order_place LIMIT sell")
        sell = result(
            await maker.order_place(
                symbol=SYMBOL,
                side=OrderPlaceSideEnum["SELL"].value,
                type=OrderPlaceTypeEnum["LIMIT"].value,
                time_in_force=OrderPlaceTimeInForceEnum["GTC"].value,
                quantity=float(SELL_QTY),
                price=float(PRICE),
                new_client_order_id="sdkws-sell-1",
            )
        )
        check(isinstance(sell.order_id, int), "orderId", sell)
        eq((sell.client_order_id, sell.status), ("sdkws-sell-1", "NEW"), "the sell's answer")
        num(sell.orig_qty, SELL_QTY, "the sell's origQty")

        step("taker: order_place LIMIT buy crossing it, answered FULL with the fill")
        buy = None
        # the two users' orders race through two shards: retry until the sell rested
        for _ in range(40):
            open_sells = result(await maker.open_orders_status(symbol=SYMBOL))
            if open_sells:
                break
            await asyncio.sleep(0.25)
        buy = result(
            await taker.order_place(
                symbol=SYMBOL,
                side=OrderPlaceSideEnum["BUY"].value,
                type=OrderPlaceTypeEnum["LIMIT"].value,
                time_in_force=OrderPlaceTimeInForceEnum["GTC"].value,
                quantity=float(BUY_QTY),
                price=float(BUY_LIMIT),
            )
        )
        eq(buy.status, "FILLED", "the buy's FULL answer")
        eq(len(buy.fills), 1, "one fill")
        num(buy.fills[0].price, PRICE, "fill price (the maker's)")
        num(buy.fills[0].qty, BUY_QTY, "fill qty")
        num(buy.fills[0].commission, BUY_QTY * FEE_RATE, "fill commission")
        eq(buy.fills[0].commission_asset, BASE, "fill commission asset")

        step("order_status, open_orders_status, account_status")
        st = result(await taker.order_status(symbol=SYMBOL, order_id=buy.order_id))
        eq((st.order_id, st.status), (buy.order_id, "FILLED"), "order_status")
        num(st.cummulative_quote_qty, BUY_QTY * PRICE, "order_status quote")

        async def sell_shows_fill():
            o = result(await maker.open_orders_status(symbol=SYMBOL))
            return o if o and Decimal(o[0].executed_qty) == BUY_QTY else None

        async def poll_async(what, fn, timeout=60.0):
            until = asyncio.get_event_loop().time() + timeout
            while True:
                got = await fn()
                if got:
                    return got
                if asyncio.get_event_loop().time() > until:
                    raise Mismatch(f"timed out waiting for {what}")
                await asyncio.sleep(0.25)

        opens = await poll_async("the maker's sell to show the fill", sell_shows_fill)
        eq([o.order_id for o in opens], [sell.order_id], "the maker's open orders")
        acc = result(await taker.account_status())
        usdt = [b for b in acc.balances if b.asset == QUOTE]
        check(usdt and Decimal(usdt[0].locked) == 0, "the taker's USDT: nothing locked", acc.balances)

        step("a refused order_place: the SDK receives Binance's error (-1121), no order")
        seen = Captured()
        logging.getLogger().addHandler(seen)
        try:
            resp = await taker.order_place(
                symbol="NOPEUSDT",
                side=OrderPlaceSideEnum["BUY"].value,
                type=OrderPlaceTypeEnum["LIMIT"].value,
                time_in_force=OrderPlaceTimeInForceEnum["GTC"].value,
                quantity=1.0,
                price=1.0,
            )
            got = None
            try:
                got = result(resp)
            except Exception:  # noqa: BLE001 - the SDK may raise on reading an error
                got = None
            check(got is None or getattr(got, "order_id", None) is None, "no order for an unknown symbol", got)
        except Exception as e:  # noqa: BLE001 - or raise its own error type
            seen.messages.append(str(e))
        finally:
            logging.getLogger().removeHandler(seen)
        check(any("-1121" in m for m in seen.messages), "the SDK saw Binance's -1121", seen.messages)

        step("maker: order_cancel of the rest")
        c = result(await maker.order_cancel(symbol=SYMBOL, orig_client_order_id="sdkws-sell-1"))
        eq(c.order_id, sell.order_id, "the cancel answers the sell")
        check(c.status in ("PENDING_CANCEL", "CANCELED"), "cancel status", c.status)
    finally:
        for conn in (maker, taker):
            try:
                await conn.close_connection(close_session=True)
            except Exception:  # noqa: BLE001 - closing is best effort
                pass


def scenario():
    logging.getLogger().setLevel(logging.WARNING)
    asyncio.run(run())
    _ = poll


if __name__ == "__main__":
    main("binance-sdk-spot websocket API", scenario)
