#!/usr/bin/env bash
# Self-test for scripts/stack.sh. Runs a throw-away stack (1 MariaDB shard) in a
# temporary data dir on non-default ports, so a running dev stack is not
# touched. Prints "stack: N passed, M failed" and exits non-zero on failure.
#
# Usage: scripts/test-stack.sh
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
STACK="$SCRIPT_DIR/stack.sh"

EXCHANGE_DATA_DIR="$(mktemp -d "${TMPDIR:-/tmp}/exchange-stack-test.XXXXXX")"
export EXCHANGE_DATA_DIR
export EXCHANGE_SHARDS=1
export EXCHANGE_MYSQL_BASE_PORT=13307
export EXCHANGE_REDIS_PORT=16379
export EXCHANGE_KAFKA_PORT=19092
export EXCHANGE_MONGO_PORT=37017
export EXCHANGE_S3_PORT=19000
export EXCHANGE_MYSQL_USER=exchange
export EXCHANGE_MYSQL_PASSWORD=exchange
export EXCHANGE_MYSQL_FLUSH=2   # faster; durability does not matter here

SERVICES=(mysql0 redis kafka mongo s3)
PASSED=0
FAILED=0
OUT=""          # output of the last run_stack
RC=0            # exit code of the last run_stack
SQUATTER_PID="" # foreign process holding a port (foreign-port test)

say() { printf '[test-stack] %s\n' "$*" >&2; }

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  if [[ -n "$SQUATTER_PID" ]]; then
    kill "$SQUATTER_PID" 2>/dev/null || true
  fi
  if [[ -d "$EXCHANGE_DATA_DIR" ]]; then
    say "cleanup: stopping test services and deleting $EXCHANGE_DATA_DIR"
    "$STACK" wipe >/dev/null 2>&1 || "$STACK" stop >/dev/null 2>&1 || true
    rm -rf -- "$EXCHANGE_DATA_DIR"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# run_stack ARGS...: run stack.sh, capture combined output in OUT and exit
# code in RC (never aborts the test).
run_stack() {
  say "\$ stack.sh $*"
  RC=0
  OUT=$("$STACK" "$@" 2>&1) || RC=$?
  printf '%s\n' "$OUT" | sed 's/^/    /' >&2
}

# alive PID: a live process (zombies awaiting reaping by init count as gone).
alive() {
  local st
  st=$(ps -o stat= -p "$1" 2>/dev/null) || return 1
  [[ -n "$st" && "$st" != Z* ]]
}

pass() { PASSED=$((PASSED + 1)); say "PASS: $1"; }
fail() { FAILED=$((FAILED + 1)); say "FAIL: $1"; }

# expect NAME CMD...: run a check command, record pass/fail.
expect() {
  local name=$1
  shift
  if "$@"; then pass "$name"; else fail "$name"; fi
}

# state_of SVC: the STATE column of SVC in the last `status` output.
state_of() { printf '%s\n' "$OUT" | awk -v s="$1" '$1 == s { print $2 }'; }
pid_of() { printf '%s\n' "$OUT" | awk -v s="$1" '$1 == s { print $4 }'; }

all_states() {
  local want=$1 svc
  for svc in "${SERVICES[@]}"; do
    [[ "$(state_of "$svc")" == "$want" ]] || { say "  $svc is '$(state_of "$svc")', want '$want'"; return 1; }
  done
}

states_are() { # states_are svc=state ...
  local kv
  for kv in "$@"; do
    [[ "$(state_of "${kv%%=*}")" == "${kv#*=}" ]] ||
      { say "  ${kv%%=*} is '$(state_of "${kv%%=*}")', want '${kv#*=}'"; return 1; }
  done
}

rc_is() { [[ "$RC" == "$1" ]] || { say "  exit code $RC, want $1"; return 1; }; }
out_has() { [[ "$OUT" == *"$1"* ]] || { say "  output lacks '$1'"; return 1; }; }

mysql_works() {
  MYSQL_PWD=exchange mariadb --no-defaults --protocol=tcp -h127.0.0.1 -P13307 -uexchange \
    -Nse 'CREATE DATABASE IF NOT EXISTS stack_test; DROP DATABASE stack_test; SELECT 1' >/dev/null
}
redis_works() { [[ "$(redis-cli -p 16379 ping 2>/dev/null)" == PONG ]]; }

say "data dir $EXCHANGE_DATA_DIR; ports mysql 13307, redis 16379, kafka 19092, mongo 37017, s3 19000"

# 1. fresh start
run_stack start
expect "start (fresh) exits 0" rc_is 0
run_stack status
ok_all_up() { rc_is 0 && all_states up; }
expect "status after start: exit 0, all up" ok_all_up
declare -A PIDS
for svc in "${SERVICES[@]}"; do PIDS[$svc]=$(pid_of "$svc"); done
expect "mysql0 accepts the exchange user" mysql_works
expect "redis answers PING" redis_works

# 2. starting again is harmless
run_stack start
ok_already_up() { rc_is 0 && out_has "mysql0: already up" && out_has "s3: already up"; }
expect "start again exits 0 and reports 'already up'" ok_already_up
run_stack status
same_pids() {
  local svc
  for svc in "${SERVICES[@]}"; do
    [[ "$(pid_of "$svc")" == "${PIDS[$svc]}" ]] || { say "  $svc pid changed"; return 1; }
  done
}
ok_same() { rc_is 0 && all_states up && same_pids; }
expect "start again keeps the same processes" ok_same

# 3. stop one service
run_stack stop redis
expect "stop redis exits 0" rc_is 0
run_stack status
ok_redis_down() { rc_is 1 && states_are redis=down mysql0=up kafka=up mongo=up s3=up; }
expect "status after stopping redis: exit 1, redis down, others up" ok_redis_down
gone() { ! alive "$1"; }
expect "redis process is gone" gone "${PIDS[redis]}"

# 4. a crashed service (kill -9) is reported down
kill -9 "${PIDS[mongo]}"
sleep 0.5
run_stack status
ok_mongo_down() { rc_is 1 && states_are mongo=down redis=down mysql0=up; }
expect "status after kill -9 mongo: exit 1, mongo down" ok_mongo_down

# 5. a foreign process on a service port is detected
python3 -c '
import socket
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", 16379)); s.listen(16); s.settimeout(120)
while True:
    c, _ = s.accept(); c.close()' &
SQUATTER_PID=$!
for _ in $(seq 50); do (exec 3<>/dev/tcp/127.0.0.1/16379) 2>/dev/null && break; sleep 0.1; done
run_stack start redis
ok_foreign_refused() { [[ $RC != 0 ]] && out_has "already in use"; }
expect "start with a foreign process on the redis port fails clearly" ok_foreign_refused
run_stack status
expect "status reports the port as foreign" states_are redis=foreign
kill "$SQUATTER_PID" 2>/dev/null || true
wait "$SQUATTER_PID" 2>/dev/null || true
SQUATTER_PID=""

# 6. start brings everything back (stale mongo pid file is cleaned)
run_stack start
ok_restarted() { rc_is 0 && out_has "stale pid file"; }
expect "start after failures exits 0 (stale pid file cleaned)" ok_restarted
run_stack status
expect "status: all up again" ok_all_up
expect "mysql data survived the restart cycle" mysql_works
expect "redis answers PING again" redis_works

# 7. restart of a single service
old_pid=$(pid_of mysql0)
run_stack restart mysql0
run_stack status
ok_new_mysql() { rc_is 0 && all_states up && [[ "$(pid_of mysql0)" != "$old_pid" ]]; }
expect "restart mysql0 gives a new process and all up" ok_new_mysql

# 8. stop everything
run_stack status
for svc in "${SERVICES[@]}"; do PIDS[$svc]=$(pid_of "$svc"); done
run_stack stop
expect "stop all exits 0" rc_is 0
run_stack status
ok_all_down() { rc_is 1 && all_states down; }
expect "status after stop: exit 1, all down" ok_all_down
no_processes() {
  local svc
  for svc in "${SERVICES[@]}"; do
    if alive "${PIDS[$svc]}"; then say "  $svc pid ${PIDS[$svc]} still alive"; return 1; fi
  done
  [[ -z "$(find "$EXCHANGE_DATA_DIR" -name '*.pid' 2>/dev/null)" ]] || { say "  pid files left behind"; return 1; }
}
expect "no service processes or pid files left" no_processes

# 9. wipe
run_stack wipe
ok_wiped() { rc_is 0 && [[ ! -e "$EXCHANGE_DATA_DIR" ]]; }
expect "wipe deletes the data dir" ok_wiped

printf 'stack: %d passed, %d failed\n' "$PASSED" "$FAILED"
((FAILED == 0))
