#!/usr/bin/env bash
# The engine process (outbox relays, matching service, settlers for every shard):
#   scripts/engine.sh start    build if needed, start in the background, wait for /ready
#   scripts/engine.sh stop     SIGTERM (finishes the batch in flight), wait
#   scripts/engine.sh status   up/down, pid, endpoint
# Log: $EXCHANGE_DATA_DIR/engine/engine.log. Endpoint: $EXCHANGE_ENGINE__HTTP_ADDR
# (default 127.0.0.1:9464: /metrics, /health, /ready).
set -euo pipefail

# shellcheck source-path=SCRIPTDIR source=env.sh
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$EXCHANGE_REPO_ROOT"
: "${CARGO_TARGET_DIR:=$EXCHANGE_CACHE_DIR/target}"
: "${EXCHANGE_ENGINE__HTTP_ADDR:=127.0.0.1:9464}"
export CARGO_TARGET_DIR EXCHANGE_ENGINE__HTTP_ADDR
dir="$EXCHANGE_DATA_DIR/engine"
pidfile="$dir/engine.pid"
bin="$CARGO_TARGET_DIR/debug/engine"

running() { [[ -f $pidfile ]] && kill -0 "$(cat "$pidfile")" 2>/dev/null; }

ready() { curl -fs "http://$EXCHANGE_ENGINE__HTTP_ADDR/ready" >/dev/null 2>&1; }

case "${1:-}" in
  start)
    if running; then
      log "engine: already up (pid $(cat "$pidfile"))"
      exit 0
    fi
    log "engine: building"
    cargo build --quiet -p engine --bin engine
    mkdir -p "$dir"
    log "engine: starting (log: $dir/engine.log)"
    RUST_LOG="${RUST_LOG:-info,sqlx=warn,rdkafka=warn}" setsid nohup "$bin" run >>"$dir/engine.log" 2>&1 </dev/null &
    echo $! >"$pidfile"
    for ((i = 0; i < 600; i++)); do
      ready && { log "engine: up (pid $(cat "$pidfile"), http://$EXCHANGE_ENGINE__HTTP_ADDR/metrics)"; exit 0; }
      running || { tail -n 30 "$dir/engine.log" >&2; die "engine exited during start"; }
      sleep 0.1
    done
    tail -n 30 "$dir/engine.log" >&2
    die "engine not ready after 60 s"
    ;;
  stop)
    if ! running; then
      log "engine: not running"
      rm -f "$pidfile"
      exit 0
    fi
    pid=$(cat "$pidfile")
    log "engine: stopping (pid $pid, SIGTERM)"
    kill -TERM "$pid"
    for ((i = 0; i < 600; i++)); do
      kill -0 "$pid" 2>/dev/null || { rm -f "$pidfile"; log "engine: stopped"; exit 0; }
      sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    rm -f "$pidfile"
    warn "engine: killed after 60 s"
    ;;
  status)
    if running && ready; then
      printf 'engine   up       %s  pid %s\n' "$EXCHANGE_ENGINE__HTTP_ADDR" "$(cat "$pidfile")"
    else
      printf 'engine   down\n'
      exit 1
    fi
    ;;
  *)
    sed -n '2,7p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
    exit 2
    ;;
esac
