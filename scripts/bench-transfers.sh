#!/usr/bin/env bash
# Cross-shard transfer throughput against the physical reference, in one invocation:
#   1. `loadtest transfers` (release): CONCURRENCY tasks transferring USDT between users on
#      two different shards (TCC: global row, Try ×2, Confirm ×2) for SECONDS, in its
#      own databases; transfers/s and p50/p99/p99.9 latency; the audit must hold;
#   2. `sysbench oltp_update_index` on the same 4 shard servers for the same SECONDS;
#   3. the ratio, and the goal (≥ 1,000 transfers/s on this machine).
# Usage: scripts/bench-transfers.sh [SECONDS] [CONCURRENCY]     (default 20, 64)
set -euo pipefail

# shellcheck source-path=SCRIPTDIR source=env.sh
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$EXCHANGE_REPO_ROOT"
: "${CARGO_TARGET_DIR:=$EXCHANGE_CACHE_DIR/target}"
export CARGO_TARGET_DIR
seconds=${1:-20}
concurrency=${2:-64}

scripts/stack.sh start >/dev/null
note_engine_running
log "building the transfer bench (release)"
cargo build --release --quiet -p loadtest
out=$(RUST_LOG=warn "$CARGO_TARGET_DIR/release/loadtest" transfers --seconds "$seconds" --concurrency "$concurrency" --users 1000)
printf '%s\n' "$out"
rate=$(sed -n 's/^RESULT transfers_per_s=\([0-9]*\).*/\1/p' <<<"$out")
tps=$(scripts/sysbench-ref.sh "$seconds")
python3 - "$rate" "$tps" <<'PY'
import sys
rate, tps = float(sys.argv[1] or 0), float(sys.argv[2])
print(f"sysbench oltp_update_index, all shards: {tps:,.0f} TPS")
print(f"cross-shard transfers/s:                {rate:,.0f}  (goal >= 1,000)")
print(f"ratio transfers/s / sysbench TPS:       {rate / tps:.3f}")
PY
