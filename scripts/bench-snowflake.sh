#!/usr/bin/env bash
# Snowflake id generation per worker: ours vs the `snowflaked` crate, in one run.
# Prints ids/s and ratios to the physical limit (4,096,000 ids/s per worker: 12-bit
# sequence per millisecond) and to the reference.
set -euo pipefail

# shellcheck source-path=SCRIPTDIR source=env.sh
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$EXCHANGE_REPO_ROOT"
: "${CARGO_TARGET_DIR:=$EXCHANGE_CACHE_DIR/target}"
export CARGO_TARGET_DIR

cargo bench -p router --bench snowflake -- --noplot >&2
python3 - "$CARGO_TARGET_DIR/criterion/snowflake_per_worker" <<'PY'
import json, sys, pathlib
root = pathlib.Path(sys.argv[1])
limit = 4_096_000
rate = {}
for name in ("router", "snowflaked_sync", "snowflaked_unsync"):
    est = json.loads((root / name / "new" / "estimates.json").read_text())
    rate[name] = 1e9 / est["mean"]["point_estimate"]
print(f"{'generator':<20} {'ids/s':>12} {'of limit':>9} {'vs snowflaked sync':>19}")
for name, r in rate.items():
    print(f"{name:<20} {r:>12,.0f} {r / limit:>9.1%} {r / rate['snowflaked_sync']:>19.3f}")
PY
