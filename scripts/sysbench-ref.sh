#!/usr/bin/env bash
# The physical reference of the benchmarks: `sysbench oltp_update_index` on every shard
# server at once for SECONDS (THREADS per shard; one small fsync'ed update per
# transaction). Prints the total TPS on stdout (progress on stderr).
# Usage: scripts/sysbench-ref.sh SECONDS [THREADS]
set -euo pipefail

# shellcheck source-path=SCRIPTDIR source=env.sh
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
seconds=${1:?seconds}
threads=${2:-${SYSBENCH_THREADS:-16}}

if ! command -v sysbench >/dev/null 2>&1; then
  log "installing sysbench"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends sysbench >/dev/null
fi
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
echo "$tps"
