#!/usr/bin/env bash
# One command on a fresh machine: install what is missing, start the service stack,
# build, apply migrations, create month tables ahead, start the engine (outbox relays,
# matching service, settlers) and run the demo: users on all four shards deposit and
# trade; their settled balances, orders and the money audit are printed.
# Idempotent: run it again and it reuses everything (each run deposits and trades
# again, so balances grow; the audit holds after every run).
# Stop: scripts/engine.sh stop && scripts/stack.sh stop.
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

step "building shardctl and engine (the first build takes several minutes on 2 cores)"
cargo build --quiet -p shardctl -p engine -p loadtest
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

step "engine: outbox relays, matching service and settlers for every shard (restarted: the binary may be new)"
scripts/engine.sh stop
scripts/engine.sh start

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

step "demo: the money audits (conservation, frozen vs holds, trade halves)"
"$shardctl" audit

step "status"
"$shardctl" status
scripts/engine.sh status
printf '\nthe stack and the engine keep running: stop with scripts/engine.sh stop && scripts/stack.sh stop (wipe: scripts/stack.sh wipe)\n' >&2
