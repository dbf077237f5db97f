#!/usr/bin/env bash
# Pipeline throughput against the physical reference, in one invocation:
#   1. `engine bench`: concurrent crossing placements through group commit, the outbox
#      relays, the matching service and the settlers on the 4 local shards (in its own
#      databases), for SECONDS; prints settled orders/s and ack latency;
#   2. `sysbench oltp_update_index` on the same 4 shard servers for the same SECONDS
#      (THREADS per shard, all shards at once): the TPS of one small fsync'ed
#      transaction per update, the ceiling a design without batching would hit;
#   3. the ratio settled orders/s ÷ sysbench TPS (goal ≥ 2.0).
# Usage: scripts/bench-pipeline.sh [SECONDS] [CONCURRENCY]     (default 20, 128)
set -euo pipefail

# shellcheck source-path=SCRIPTDIR source=env.sh
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$EXCHANGE_REPO_ROOT"
: "${CARGO_TARGET_DIR:=$EXCHANGE_CACHE_DIR/target}"
export CARGO_TARGET_DIR
seconds=${1:-20}
concurrency=${2:-128}
threads=${SYSBENCH_THREADS:-16}

scripts/stack.sh start >/dev/null
if ! command -v sysbench >/dev/null 2>&1; then
  log "installing sysbench"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends sysbench >/dev/null
fi
log "building the engine (release)"
cargo build --release --quiet -p engine --bin engine

log "pipeline: $seconds s, $concurrency placing tasks"
out=$(RUST_LOG=warn "$CARGO_TARGET_DIR/release/engine" bench --seconds "$seconds" --concurrency "$concurrency")
printf '%s\n' "$out"
settled=$(sed -n 's/^RESULT settled_orders_per_s=\([0-9]*\).*/\1/p' <<<"$out")

log "sysbench oltp_update_index: $seconds s, $threads threads on each of $EXCHANGE_SHARDS shards"
sb_args=(--db-driver=mysql --mysql-host=127.0.0.1 --mysql-user="$EXCHANGE_MYSQL_USER"
  --mysql-password="$EXCHANGE_MYSQL_PASSWORD" --mysql-db=sbtest --tables=1 --table-size=10000)
pids=()
outs=()
for ((i = 0; i < EXCHANGE_SHARDS; i++)); do
  port=$((EXCHANGE_MYSQL_BASE_PORT + i))
  mariadb --no-defaults --protocol=tcp -h127.0.0.1 -P"$port" -u"$EXCHANGE_MYSQL_USER" -p"$EXCHANGE_MYSQL_PASSWORD" \
    -e "CREATE DATABASE IF NOT EXISTS sbtest"
  if ! mariadb --no-defaults --protocol=tcp -h127.0.0.1 -P"$port" -u"$EXCHANGE_MYSQL_USER" -p"$EXCHANGE_MYSQL_PASSWORD" \
    sbtest -e "SELECT 1 FROM sbtest1 LIMIT 1" >/dev/null 2>&1; then
    sysbench oltp_update_index "${sb_args[@]}" --mysql-port="$port" prepare >/dev/null
  fi
  f=$(mktemp)
  outs+=("$f")
  sysbench oltp_update_index "${sb_args[@]}" --mysql-port="$port" --threads="$threads" --time="$seconds" run >"$f" 2>&1 &
  pids+=($!)
done
for p in "${pids[@]}"; do wait "$p"; done
tps=0
for f in "${outs[@]}"; do
  t=$(sed -n 's/.*transactions: *[0-9]* *(\([0-9.]*\) per sec.).*/\1/p' "$f")
  tps=$(python3 -c "print(${tps} + ${t:-0})")
  rm -f "$f"
done
python3 - "$settled" "$tps" <<'PY'
import sys
settled, tps = float(sys.argv[1] or 0), float(sys.argv[2])
print(f"sysbench oltp_update_index, all shards: {tps:,.0f} TPS")
print(f"pipeline settled orders/s:              {settled:,.0f}")
print(f"ratio settled orders/s / sysbench TPS:  {settled / tps:.2f}  (goal >= 2.0)")
PY
