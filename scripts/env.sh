# shellcheck shell=bash
# Shared settings and helpers for the dev service stack.
# Sourced by install.sh, stack.sh and test-stack.sh; not meant to be executed.
#
# Every setting can be overridden from the environment, e.g.
#   EXCHANGE_SHARDS=2 EXCHANGE_MYSQL_BASE_PORT=4407 scripts/stack.sh start

if [[ -n "${_EXCHANGE_ENV_SOURCED:-}" ]]; then
  return 0
fi
_EXCHANGE_ENV_SOURCED=1

EXCHANGE_REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

: "${EXCHANGE_CACHE_DIR:=$HOME/.cache/exchange}"
: "${EXCHANGE_DATA_DIR:=$EXCHANGE_REPO_ROOT/.data}"
: "${EXCHANGE_SHARDS:=4}"
: "${EXCHANGE_MYSQL_BASE_PORT:=3307}"
: "${EXCHANGE_MYSQL_USER:=exchange}"
: "${EXCHANGE_MYSQL_PASSWORD:=exchange}"
: "${EXCHANGE_MYSQL_FLUSH:=1}"          # innodb_flush_log_at_trx_commit (0/1/2)
: "${EXCHANGE_REDIS_PORT:=6379}"
: "${EXCHANGE_KAFKA_PORT:=9092}"
: "${EXCHANGE_MONGO_PORT:=27017}"
: "${EXCHANGE_S3_PORT:=9000}"
: "${EXCHANGE_START_TIMEOUT:=60}"       # seconds to wait for a service to answer
: "${EXCHANGE_STOP_TIMEOUT:=60}"        # seconds to wait before SIGKILL

_exchange_check_int() {
  local name=$1 value=${!1}
  if ! [[ "$value" =~ ^[0-9]+$ ]]; then
    printf '[stack] ERROR: %s must be a number, got %q\n' "$name" "$value" >&2
    exit 1
  fi
}
for _v in EXCHANGE_SHARDS EXCHANGE_MYSQL_BASE_PORT EXCHANGE_REDIS_PORT EXCHANGE_KAFKA_PORT \
  EXCHANGE_MONGO_PORT EXCHANGE_S3_PORT EXCHANGE_START_TIMEOUT EXCHANGE_STOP_TIMEOUT; do
  _exchange_check_int "$_v"
done
unset _v
if ! [[ "$EXCHANGE_MYSQL_FLUSH" =~ ^[012]$ ]]; then
  printf '[stack] ERROR: EXCHANGE_MYSQL_FLUSH must be 0, 1 or 2, got %q\n' "$EXCHANGE_MYSQL_FLUSH" >&2
  exit 1
fi

# What the Rust processes read (router::config): derived from the settings above
# unless set explicitly, so scripts and services always agree on shards and ports.
if [[ -z "${EXCHANGE_SHARD_URLS:-}" ]]; then
  _urls=()
  for ((_i = 0; _i < EXCHANGE_SHARDS; _i++)); do
    _urls+=("mysql://$EXCHANGE_MYSQL_USER:$EXCHANGE_MYSQL_PASSWORD@127.0.0.1:$((EXCHANGE_MYSQL_BASE_PORT + _i))/exchange")
  done
  EXCHANGE_SHARD_URLS=$(IFS=,; echo "${_urls[*]}")
  unset _urls _i
fi
: "${EXCHANGE_META:=mysql://$EXCHANGE_MYSQL_USER:$EXCHANGE_MYSQL_PASSWORD@127.0.0.1:$EXCHANGE_MYSQL_BASE_PORT/exchange_meta}"
: "${EXCHANGE_REDIS__URL:=redis://127.0.0.1:$EXCHANGE_REDIS_PORT/0}"
: "${EXCHANGE_ENGINE__BROKERS:=127.0.0.1:$EXCHANGE_KAFKA_PORT}"
export EXCHANGE_SHARD_URLS EXCHANGE_META EXCHANGE_REDIS__URL EXCHANGE_ENGINE__BROKERS

EXCHANGE_VENV="$EXCHANGE_CACHE_DIR/venv"
EXCHANGE_TANSU_ROOT="$EXCHANGE_CACHE_DIR/tansu"
EXCHANGE_TANSU_BIN="$EXCHANGE_TANSU_ROOT/bin/tansu"
EXCHANGE_TANSU_TARGET="$EXCHANGE_CACHE_DIR/tansu-target"
EXCHANGE_LOG_DIR="$EXCHANGE_CACHE_DIR/logs"

export EXCHANGE_REPO_ROOT EXCHANGE_CACHE_DIR EXCHANGE_DATA_DIR EXCHANGE_SHARDS \
  EXCHANGE_MYSQL_BASE_PORT EXCHANGE_MYSQL_USER EXCHANGE_MYSQL_PASSWORD \
  EXCHANGE_MYSQL_FLUSH EXCHANGE_REDIS_PORT EXCHANGE_KAFKA_PORT \
  EXCHANGE_MONGO_PORT EXCHANGE_S3_PORT EXCHANGE_START_TIMEOUT \
  EXCHANGE_STOP_TIMEOUT EXCHANGE_VENV EXCHANGE_TANSU_ROOT EXCHANGE_TANSU_BIN \
  EXCHANGE_TANSU_TARGET EXCHANGE_LOG_DIR

# cargo is usually installed through rustup into ~/.cargo/bin.
if [[ -d "$HOME/.cargo/bin" && ":$PATH:" != *":$HOME/.cargo/bin:"* ]]; then
  PATH="$HOME/.cargo/bin:$PATH"
fi
# mariadbd lives in /usr/sbin, which is not on every user's PATH.
if [[ ":$PATH:" != *":/usr/sbin:"* ]]; then
  PATH="$PATH:/usr/sbin:/sbin"
fi
export PATH

# ---------------------------------------------------------------- logging ---

log()  { printf '[stack] %s\n' "$*" >&2; }
warn() { printf '[stack] WARNING: %s\n' "$*" >&2; }
err()  { printf '[stack] ERROR: %s\n' "$*" >&2; }
die()  { err "$*"; exit 1; }

# log_tail FILE [LINES]: show the end of a service log after a failure.
log_tail() {
  local file=$1 lines=${2:-30}
  if [[ -s "$file" ]]; then
    printf '[stack] ---- last %s lines of %s ----\n' "$lines" "$file" >&2
    tail -n "$lines" "$file" | sed 's/^/[stack] | /' >&2
    printf '[stack] ---- end of %s ----\n' "$file" >&2
  else
    printf '[stack] (log %s is empty or missing)\n' "$file" >&2
  fi
}

# as_root CMD...: run CMD as root (directly, or through sudo).
as_root() {
  if [[ $(id -u) -eq 0 ]]; then
    "$@"
  elif command -v sudo >/dev/null 2>&1; then
    sudo "$@"
  else
    die "need root for: $* (no sudo available)"
  fi
}

# ------------------------------------------------------------- readiness ---

# port_open HOST PORT: true if something accepts TCP connections there.
port_open() {
  local host=$1 port=$2
  # shellcheck disable=SC2016  # expanded by the inner bash
  timeout 2 bash -c 'exec 3<>"/dev/tcp/$1/$2"' _ "$host" "$port" 2>/dev/null
}

# wait_until TIMEOUT DESCRIPTION CMD...: poll CMD every 0.2s until it succeeds
# or TIMEOUT seconds have passed (then fail with a message).
wait_until() {
  local timeout=$1 what=$2
  shift 2
  local deadline=$((SECONDS + timeout))
  until "$@" >/dev/null 2>&1; do
    if ((SECONDS >= deadline)); then
      err "timed out after ${timeout}s waiting for $what"
      return 1
    fi
    sleep 0.2
  done
}

# wait_port HOST PORT TIMEOUT: wait until HOST:PORT accepts TCP connections.
wait_port() {
  local host=$1 port=$2 timeout=${3:-$EXCHANGE_START_TIMEOUT}
  wait_until "$timeout" "$host:$port to accept connections" port_open "$host" "$port"
}

# port_owner PORT: best-effort description of who listens on PORT.
port_owner() {
  local port=$1
  if command -v ss >/dev/null 2>&1; then
    ss -Hltnp "sport = :$port" 2>/dev/null | sed -n 's/.*users:((\(.*\)))/\1/p' | head -n1
  fi
}

# ------------------------------------------------------------- pid files ---

# pid_read FILE: print the pid stored in FILE (nothing if missing/garbage).
pid_read() {
  local file=$1 pid=""
  [[ -r "$file" ]] || return 0
  read -r pid <"$file" 2>/dev/null || true
  [[ "$pid" =~ ^[0-9]+$ ]] && printf '%s\n' "$pid"
  return 0
}

# note_engine_running: benchmarks say so when the exchange's own engine is running
# (it shares the cores with them).
note_engine_running() {
  local pid
  pid=$(pid_read "$EXCHANGE_DATA_DIR/engine/engine.pid")
  if pid_alive "$pid"; then
    log "note: the exchange's own engine (pid $pid) is running and shares the cores with this benchmark; scripts/engine.sh stop for a quiet machine"
  fi
}

# pid_alive PID [PATTERN]: true if PID is a live (non-zombie) process and, when
# PATTERN is given, its command line contains PATTERN (guards against reuse).
pid_alive() {
  local pid=$1 pattern=${2:-} state cmdline
  [[ -n "$pid" ]] || return 1
  kill -0 "$pid" 2>/dev/null || return 1
  state=$(ps -o stat= -p "$pid" 2>/dev/null || true)
  [[ -n "$state" && "$state" != Z* ]] || return 1
  if [[ -n "$pattern" ]]; then
    cmdline=$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null || true)
    [[ "$cmdline" == *"$pattern"* ]] || return 1
  fi
}

# pidfile_alive FILE [PATTERN]: print the pid and succeed if FILE names a live
# process (matching PATTERN if given).
pidfile_alive() {
  local file=$1 pattern=${2:-} pid
  pid=$(pid_read "$file")
  pid_alive "$pid" "$pattern" || return 1
  printf '%s\n' "$pid"
}

# pidfile_clean FILE: remove FILE if it does not name a live process.
pidfile_clean() {
  local file=$1 pid
  [[ -e "$file" ]] || return 0
  pid=$(pid_read "$file")
  if ! pid_alive "$pid"; then
    log "removing stale pid file $file${pid:+ (pid $pid is gone)}"
    rm -f "$file"
  fi
}

# pid_wait_gone PID TIMEOUT: wait until PID has exited.
pid_wait_gone() {
  local pid=$1 timeout=$2
  local deadline=$((SECONDS + timeout))
  while pid_alive "$pid"; do
    ((SECONDS >= deadline)) && return 1
    sleep 0.2
  done
}

# pid_stop PID NAME [TIMEOUT]: SIGTERM, wait, then SIGKILL if still alive.
pid_stop() {
  local pid=$1 name=$2 timeout=${3:-$EXCHANGE_STOP_TIMEOUT}
  pid_alive "$pid" || return 0
  kill -TERM "$pid" 2>/dev/null || true
  if ! pid_wait_gone "$pid" "$timeout"; then
    warn "$name (pid $pid) did not exit within ${timeout}s, sending SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
    pid_wait_gone "$pid" 10 || die "$name (pid $pid) survived SIGKILL"
  fi
}

# spawn_daemon PIDFILE LOGFILE WORKDIR CMD...: start CMD detached (own session,
# stdin from /dev/null, output appended to LOGFILE) with its exact pid written
# to PIDFILE before it execs.
spawn_daemon() {
  local pidfile=$1 logfile=$2 workdir=$3
  shift 3
  (
    cd "$workdir" || exit 1
    # shellcheck disable=SC2016  # expanded by the inner bash
    exec setsid bash -c 'echo $$ >"$0"; exec "$@"' "$pidfile" "$@" \
      </dev/null >>"$logfile" 2>&1 9>&-   # fd 9 = stack.sh lock, not for daemons
  ) &
  # Wait (briefly) for the pid file so callers can rely on it.
  local i
  for ((i = 0; i < 50; i++)); do
    [[ -s "$pidfile" ]] && return 0
    sleep 0.1
  done
  die "could not start: $* (no pid file $pidfile)"
}
