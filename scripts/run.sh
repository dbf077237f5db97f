#!/usr/bin/env bash
# One command on a fresh machine: install what is missing, start the service stack,
# build, apply migrations, create month tables ahead, start the engine (outbox relays,
# matching service, settlers, market data) and the gateway (the Binance-compatible API
# on http://127.0.0.1:8080), and run the demo: users on all four shards deposit and
# trade, two of them over the REST API with signed requests; their settled balances,
# orders and the money audit are printed.
# Idempotent: run it again and it reuses everything (each run deposits and trades
# again, so balances grow; the audit holds after every run).
# Stop: scripts/services.sh stop && scripts/stack.sh stop.
set -euo pipefail

# shellcheck source-path=SCRIPTDIR source=env.sh
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$EXCHANGE_REPO_ROOT"
: "${CARGO_TARGET_DIR:=$EXCHANGE_CACHE_DIR/target}"
export CARGO_TARGET_DIR
export RUST_LOG="${RUST_LOG:-warn}"

step() { printf '\n==> %s\n' "$*" >&2; }

step "service stack (MariaDB x$EXCHANGE_SHARDS, Redis, Kafka, Mongo, S3)"
scripts/stack.sh start

step "building shardctl, engine, gateway (the first build takes several minutes on 2 cores)"
cargo build --quiet -p shardctl -p engine -p gateway -p loadtest
shardctl="$CARGO_TARGET_DIR/debug/shardctl"

step "migrations (meta + every shard)"
"$shardctl" migrate

step "month tables and ledger partitions ahead of time"
"$shardctl" ensure-tables

step "demo: registering 8 users; dense ids spread over the shards by user_id % $EXCHANGE_SHARDS"
emails=()
for i in 1 2 3 4 5 6 7 8; do emails+=("trader$i@demo.exchange"); done
"$shardctl" user add "${emails[@]}"

step "demo: where trader6 lives"
"$shardctl" locate email trader6@demo.exchange

step "demo: order ids (snowflake; worker id leased in Redis; the month picks the table)"
"$shardctl" ids --count 3

step "engine and gateway: relays, matcher, settlers, market data; the REST API (restarted: the binaries may be new)"
scripts/services.sh stop
scripts/services.sh start

step "demo: users on all four shards trade BTCUSDT through the whole pipeline"
"$CARGO_TARGET_DIR/debug/loadtest" demo

step "demo: money across shards — a deposit seen on the (simulated) chain, credited at its confirmations"
txid="demo-$(date +%s)-$RANDOM"
"$shardctl" chain deposit 1 USDT 500 --txid "$txid"
"$shardctl" chain confirm "$txid" USDT --confirmations 3
"$shardctl" chain confirm "$txid" USDT

step "demo: a transfer from trader 1 (shard 1) to trader 2 (shard 2) by TCC"
"$shardctl" transfer 1 2 USDT 100

step "demo: trader 2 withdraws 50 USDT: allowlisted address, review, sent, completed"
"$shardctl" withdraw address 2 USDT TRX TDemoAddress2
"$shardctl" withdraw request 2 USDT TRX TDemoAddress2 50
wid=$("$shardctl" withdraw list --status reviewing --json | python3 -c 'import json,sys; print([json.loads(l) for l in sys.stdin][-1]["withdrawal_id"])')
"$shardctl" withdraw approve "$wid" --comment "demo review"
"$shardctl" withdraw process "$wid"
"$shardctl" withdraw complete "$wid" --txid "demo-sent-$wid"

step "demo: traders 3 and 4 over the gateway's REST API (keys from shardctl, funds by chain deposit)"
fund() { # user asset amount
  local tx="demo-gw-$1-$2-$(date +%s%N)"
  "$shardctl" chain deposit "$1" "$2" "$3" --txid "$tx" >/dev/null
  "$shardctl" chain confirm "$tx" "$2" >/dev/null
}
fund 3 BTC 1
fund 4 USDT 10000
key_of() { "$shardctl" --json user key "$1" --label demo | python3 -c 'import json,sys; k=json.load(sys.stdin); print(k["api_key"], k["secret"])'; }
read -r k3 s3 < <(key_of 3)
read -r k4 s4 < <(key_of 4)
python3 scripts/demo-gateway.py "http://${EXCHANGE_GATEWAY__HTTP_ADDR:-127.0.0.1:8080}" "$k3" "$s3" "$k4" "$s4"

step "demo: the audits (conservation, frozen vs holds, trade halves, ledger replay, matcher vs database)"
# the matcher snapshots once it has been idle 5 s: wait (at most 20 s) until its
# snapshot covers every order, so the matcher-vs-database check compares
for _ in $(seq 40); do
  state=$("$shardctl" --json audit 2>/dev/null | python3 -c 'import json,sys; print(json.load(sys.stdin)["books"]["state"])' 2>/dev/null || true)
  [[ $state == compared ]] && break
  sleep 0.5
done
"$shardctl" audit

step "status"
"$shardctl" status
scripts/services.sh status
printf '\nthe stack, the engine and the gateway (http://%s/api/v3/exchangeInfo) keep running: stop with scripts/services.sh stop && scripts/stack.sh stop (wipe: scripts/stack.sh wipe)\n' "${EXCHANGE_GATEWAY__HTTP_ADDR:-127.0.0.1:8080}" >&2
