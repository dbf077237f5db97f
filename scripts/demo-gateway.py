#!/usr/bin/env python3
"""The gateway demo of scripts/run.sh: two traders trade BTCUSDT over the
Binance-compatible REST API, signed with HMAC-SHA256 exactly as Binance clients sign.

Usage: demo-gateway.py BASE_URL MAKER_KEY MAKER_SECRET TAKER_KEY TAKER_SECRET
Standard library only. Exits 1 with the API's error if a step fails.
"""
import hashlib
import hmac
import json
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

base, maker_key, maker_secret, taker_key, taker_secret = sys.argv[1:6]


def call(method, path, params=None, key=None, secret=None):
    params = dict(params or {})
    headers = {}
    if key:
        params["timestamp"] = int(time.time() * 1000)
        params["recvWindow"] = 10000
        query = urllib.parse.urlencode(params)
        sig = hmac.new(secret.encode(), query.encode(), hashlib.sha256).hexdigest()
        query += "&signature=" + sig
        headers["X-MBX-APIKEY"] = key
    else:
        query = urllib.parse.urlencode(params)
    req = urllib.request.Request(f"{base}{path}?{query}", method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return json.load(r)
    except urllib.error.HTTPError as e:
        body = e.read().decode()
        sys.exit(f"{method} {path}: HTTP {e.code} {body}")


def show(title, value):
    print(f"  {title}: {json.dumps(value)}")


print("public:")
show("ping", call("GET", "/api/v3/ping"))
info = call("GET", "/api/v3/exchangeInfo", {"symbol": "BTCUSDT"})["symbols"][0]
show("BTCUSDT filters", {f["filterType"]: {k: v for k, v in f.items() if k != "filterType"} for f in info["filters"]})
price = "50123.45"
print("trading (maker sells 0.01 BTC, taker buys 0.004):")
sell = call("POST", "/api/v3/order", {"symbol": "BTCUSDT", "side": "SELL", "type": "LIMIT",
            "timeInForce": "GTC", "quantity": "0.01", "price": price}, maker_key, maker_secret)
show("maker's order", {k: sell[k] for k in ("orderId", "status", "price", "origQty")})
buy = call("POST", "/api/v3/order", {"symbol": "BTCUSDT", "side": "BUY", "type": "LIMIT",
           "timeInForce": "GTC", "quantity": "0.004", "price": price, "newOrderRespType": "ACK"},
           taker_key, taker_secret)
for _ in range(300):
    o = call("GET", "/api/v3/order", {"symbol": "BTCUSDT", "orderId": buy["orderId"]}, taker_key, taker_secret)
    if o["status"] == "FILLED":
        break
    time.sleep(0.1)
else:
    sys.exit(f"the taker's order did not fill: {o}")
show("taker's order", {k: o[k] for k in ("orderId", "status", "executedQty", "cummulativeQuoteQty")})
trades = call("GET", "/api/v3/myTrades", {"symbol": "BTCUSDT", "limit": 1}, taker_key, taker_secret)
show("taker's last trade", {k: trades[-1][k] for k in ("price", "qty", "commission", "commissionAsset")})
time.sleep(0.5)
show("depth", call("GET", "/api/v3/depth", {"symbol": "BTCUSDT", "limit": 3}))
cancel = call("DELETE", "/api/v3/order", {"symbol": "BTCUSDT", "orderId": sell["orderId"]}, maker_key, maker_secret)
show("maker cancels the rest", {k: cancel[k] for k in ("orderId", "status", "executedQty")})
for _ in range(300):
    o = call("GET", "/api/v3/order", {"symbol": "BTCUSDT", "orderId": sell["orderId"]}, maker_key, maker_secret)
    if o["status"] == "CANCELED":
        break
    time.sleep(0.1)
else:
    sys.exit(f"the maker's cancel did not settle: {o}")
show("maker's order after the matcher", {k: o[k] for k in ("orderId", "status", "executedQty")})
acct = call("GET", "/api/v3/account", {"omitZeroBalances": "true"}, taker_key, taker_secret)
show("taker's balances", acct["balances"])
print("errors are Binance's:")
req = urllib.request.Request(f"{base}/api/v3/depth?symbol=NOPE")
try:
    urllib.request.urlopen(req, timeout=10)
except urllib.error.HTTPError as e:
    show(f"unknown symbol (HTTP {e.code})", json.loads(e.read()))
