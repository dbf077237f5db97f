#!/usr/bin/env bash
# The exchange's own processes in the background (the engine: outbox relays, matching
# service, settlers, market data, recovery; the gateway: the Binance-compatible API):
#   scripts/services.sh start|stop|status [engine|gateway ...]   (default: both)
# start builds if needed, starts, waits for /ready; stop sends SIGTERM (in-flight work
# finishes) and waits. Logs: $EXCHANGE_DATA_DIR/<name>/<name>.log. Endpoints:
# engine $EXCHANGE_ENGINE__HTTP_ADDR (default 127.0.0.1:9464: /metrics /health /ready),
# gateway $EXCHANGE_GATEWAY__HTTP_ADDR (default 127.0.0.1:8080: the API, /ready).
set -euo pipefail

# shellcheck source-path=SCRIPTDIR source=env.sh
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$EXCHANGE_REPO_ROOT"
: "${CARGO_TARGET_DIR:=$EXCHANGE_CACHE_DIR/target}"
: "${EXCHANGE_ENGINE__HTTP_ADDR:=127.0.0.1:9464}"
: "${EXCHANGE_GATEWAY__HTTP_ADDR:=127.0.0.1:8080}"
export CARGO_TARGET_DIR EXCHANGE_ENGINE__HTTP_ADDR EXCHANGE_GATEWAY__HTTP_ADDR

addr_of() { case $1 in engine) echo "$EXCHANGE_ENGINE__HTTP_ADDR" ;; gateway) echo "$EXCHANGE_GATEWAY__HTTP_ADDR" ;; esac; }
args_of() { case $1 in engine) echo run ;; gateway) echo "" ;; esac; }
pidfile_of() { echo "$EXCHANGE_DATA_DIR/$1/$1.pid"; }
running() { local p; p=$(pidfile_of "$1"); [[ -f $p ]] && kill -0 "$(cat "$p")" 2>/dev/null; }
ready() { curl -fs "http://$(addr_of "$1")/ready" >/dev/null 2>&1; }

start() {
  local name=$1 dir="$EXCHANGE_DATA_DIR/$1" pidfile i
  pidfile=$(pidfile_of "$name")
  if running "$name"; then
    log "$name: already up (pid $(cat "$pidfile"))"
    return 0
  fi
  log "$name: building"
  cargo build --quiet -p "$name" --bin "$name"
  mkdir -p "$dir"
  log "$name: starting (log: $dir/$name.log)"
  # shellcheck disable=SC2046 # the engine's one argument, none for the gateway
  RUST_LOG="${RUST_LOG:-info,sqlx=warn,rdkafka=warn}" setsid nohup "$CARGO_TARGET_DIR/debug/$name" $(args_of "$name") \
    >>"$dir/$name.log" 2>&1 </dev/null &
  echo $! >"$pidfile"
  for ((i = 0; i < 600; i++)); do
    ready "$name" && { log "$name: up (pid $(cat "$pidfile"), http://$(addr_of "$name"))"; return 0; }
    running "$name" || { tail -n 30 "$dir/$name.log" >&2; die "$name exited during start"; }
    sleep 0.1
  done
  tail -n 30 "$dir/$name.log" >&2
  die "$name not ready after 60 s"
}

stop() {
  local name=$1 pidfile pid i
  pidfile=$(pidfile_of "$name")
  if ! running "$name"; then
    log "$name: not running"
    rm -f "$pidfile"
    return 0
  fi
  pid=$(cat "$pidfile")
  log "$name: stopping (pid $pid, SIGTERM)"
  kill -TERM "$pid"
  for ((i = 0; i < 600; i++)); do
    kill -0 "$pid" 2>/dev/null || { rm -f "$pidfile"; log "$name: stopped"; return 0; }
    sleep 0.1
  done
  kill -KILL "$pid" 2>/dev/null || true
  rm -f "$pidfile"
  warn "$name: killed after 60 s"
}

status() {
  local name=$1
  if running "$name" && ready "$name"; then
    printf '%-8s up       %s  pid %s\n' "$name" "$(addr_of "$name")" "$(cat "$(pidfile_of "$name")")"
  else
    printf '%-8s down\n' "$name"
    return 1
  fi
}

action=${1:-}
shift || true
names=("$@")
[[ ${#names[@]} -gt 0 ]] || names=(engine gateway)
for n in "${names[@]}"; do
  [[ $n == engine || $n == gateway ]] || die "unknown service $n (engine or gateway)"
done
case "$action" in
  start) for n in "${names[@]}"; do start "$n"; done ;;
  # the gateway first: it stops taking orders before the engine stops moving them
  stop) for ((i = ${#names[@]} - 1; i >= 0; i--)); do stop "${names[i]}"; done ;;
  status)
    rc=0
    for n in "${names[@]}"; do status "$n" || rc=1; done
    exit $rc
    ;;
  *)
    sed -n '2,8p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
    exit 2
    ;;
esac
