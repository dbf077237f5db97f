#!/usr/bin/env bash
# Pipeline throughput against the physical reference, in one invocation:
#   1. `loadtest bench` closed loop: concurrent crossing placements through group commit,
#      the outbox relays, the matching service and the settlers on the 4 local shards
#      (in its own databases), for SECONDS; prints settled orders/s and ack latency, and
#      the CPU seconds used by MariaDB (4 servers), the broker (tansu) and the engine
#      process over the run (the broker's share of the machine);
#   2. `loadtest bench --rate` open loop at half the rate measured in 1: ack latency at
#      half load (goal p99 < 10 ms);
#   3. `sysbench oltp_update_index` on the same 4 shard servers for the same SECONDS
#      (THREADS per shard, all shards at once): the TPS of one small fsync'ed
#      transaction per update, the ceiling a design without batching would hit;
#   4. the ratio settled orders/s ÷ sysbench TPS (goal ≥ 2.0).
# Usage: scripts/bench-pipeline.sh [SECONDS] [CONCURRENCY]     (default 20, 1024: the
# placing tasks that give the highest rate here; 128 are latency-bound at ~8,000/s)
set -euo pipefail

# shellcheck source-path=SCRIPTDIR source=env.sh
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$EXCHANGE_REPO_ROOT"
: "${CARGO_TARGET_DIR:=$EXCHANGE_CACHE_DIR/target}"
export CARGO_TARGET_DIR
seconds=${1:-20}
concurrency=${2:-1024}
threads=${SYSBENCH_THREADS:-16}

scripts/stack.sh start >/dev/null
note_engine_running
log "building the engine (release)"
cargo build --release --quiet -p loadtest

# CPU seconds (user + system) of the processes named $1, from /proc
cpu_of() {
  local total=0 pid t
  for pid in $(pgrep -x "$1" || true); do
    t=$(awk '{ sub(/.*\) /, ""); print $12 + $13 }' "/proc/$pid/stat" 2>/dev/null || echo 0)
    total=$((total + t))
  done
  echo "$total"
}
tick=$(getconf CLK_TCK)

log "pipeline, closed loop: $seconds s, $concurrency placing tasks"
db0=$(cpu_of mariadbd) broker0=$(cpu_of tansu) t0=$(date +%s.%N)
out=$(RUST_LOG=warn "$CARGO_TARGET_DIR/release/loadtest" bench --seconds "$seconds" --concurrency "$concurrency")
db1=$(cpu_of mariadbd) broker1=$(cpu_of tansu) t1=$(date +%s.%N)
printf '%s\n' "$out"
result=$(grep '^RESULT' <<<"$out")
field() { sed -n "s/.*[ ]$1=\([0-9.]*\).*/\1/p" <<<"$2"; }
settled=$(field settled_orders_per_s "$result")
acked=$(field acked_per_s "$result")
engine_cpu=$(field engine_cpu_s "$result")

half=$(python3 -c "print(max(1, int(float('${acked:-0}') / 2)))")
log "pipeline, open loop at half that rate: $half placements/s for $seconds s"
out_half=$(RUST_LOG=warn "$CARGO_TARGET_DIR/release/loadtest" bench --seconds "$seconds" --concurrency "$concurrency" --rate "$half")
printf '%s\n' "$out_half"
half_result=$(grep '^RESULT' <<<"$out_half")

tps=$(scripts/sysbench-ref.sh "$seconds" "$threads")
python3 - "$settled" "$tps" "$(python3 -c "print(($db1 - $db0) / $tick)")" \
  "$(python3 -c "print(($broker1 - $broker0) / $tick)")" "${engine_cpu:-0}" \
  "$(python3 -c "print($t1 - $t0)")" "$(nproc)" "$half" \
  "$(field ack_p50_ms "$half_result")" "$(field ack_p99_ms "$half_result")" "$(field ack_p999_ms "$half_result")" <<'PY'
import sys
settled, tps, db, broker, engine, wall, cores, half, p50, p99, p999 = (float(a or 0) for a in sys.argv[1:])
print(f"sysbench oltp_update_index, all shards: {tps:,.0f} TPS")
print(f"pipeline settled orders/s:              {settled:,.0f}")
print(f"ratio settled orders/s / sysbench TPS:  {settled / tps:.2f}  (goal >= 2.0)")
machine = wall * cores
print(f"CPU over the closed-loop run ({wall:.1f} s x {cores:.0f} cores = {machine:.1f} core-s):")
for name, v in (("MariaDB (4 shards)", db), ("broker (tansu)", broker), ("engine process", engine)):
    print(f"  {name:<20} {v:6.1f} core-s  {100 * v / machine:5.1f} % of the machine")
print(f"ack latency at half load ({half:,.0f}/s): p50 {p50:.2f} ms  p99 {p99:.2f} ms  p99.9 {p999:.2f} ms  (goal p99 < 10 ms)")
PY
