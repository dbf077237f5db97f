#!/usr/bin/env bash
# The gateway's figures (issue #14) with a standard HTTP load tool (wrk), against the
# pipeline's own benchmark in the same invocation:
#   1. `loadtest bench` closed loop for SECONDS (1,024 placing tasks, its own databases
#      and topics, as scripts/bench-pipeline.sh): the pipeline's settled orders/s, the
#      reference;
#   2. `engine run` and the gateway (release builds) on databases of their own
#      (`gwbench` on every shard, `gwbench_meta`), Redis prefix `gwbench:`, topics
#      `gwbench_<run>_`, ports 18080 / 19464; USERS traders (default 1,000, spread over
#      the shards, funded like loadtest's) with an API key each; a resting book of 100
#      bids and 100 asks away from the crossing price;
#   3. wrk on `GET /api/v3/depth?symbol=BTCUSDT` (limit 100) for SECONDS;
#   4. wrk on signed `POST /api/v3/order` (LIMIT GTC 0.001 BTCUSDT at 50,000, buys and
#      sells alternating so they cross, newOrderRespType=ACK, a unique newClientOrderId
#      each) for SECONDS: bodies pre-signed right before the run (HMAC-SHA256, recvWindow
#      60,000, so SECONDS is at most 40), each sent once; the engine matches and settles
#      them; then waits until settlement is done;
#   5. prints acked orders/s, p50/p99, non-2xx answers, settled orders/s, the gateway's
#      CPU per order (CPU seconds of the gateway process from /proc over the run ÷
#      orders acked), every process's share of the machine (MariaDB, tansu and Redis
#      by process name: whatever else uses them is counted too), MariaDB and broker CPU
#      and SQL statements per order against the reference's, and the ratio of settled
#      orders/s through the gateway to the reference (goal >= 0.90); then
#      `shardctl audit` on the bench databases, and drops them (BENCH_KEEP=1 keeps them).
# Exit 1 if the audit fails, the pre-signed bodies ran out, or the orders written differ
# from wrk's 2xx count by more than the connections in flight. The engine and gateway
# it starts are its own processes (not scripts/services.sh's), stopped at exit.
# The gateway's rate limits are raised for the run (every check still runs, in Redis):
# one IP and 1,000 users send far more than Binance's budgets.
# Usage: scripts/bench-gateway.sh [SECONDS] [CONNECTIONS]   (default 20 s; 128 wrk
# connections for orders; DEPTH_CONNECTIONS=64, USERS=1000, WRK_THREADS=2)
set -euo pipefail

# shellcheck source-path=SCRIPTDIR source=env.sh
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$EXCHANGE_REPO_ROOT"
: "${CARGO_TARGET_DIR:=$EXCHANGE_CACHE_DIR/target}"
export CARGO_TARGET_DIR
seconds=${1:-20}
connections=${2:-128}
depth_connections=${DEPTH_CONNECTIONS:-64}
users=${USERS:-1000}
threads=${WRK_THREADS:-2}
gw_addr=127.0.0.1:18080
engine_addr=127.0.0.1:19464
db=gwbench
for v in seconds connections depth_connections users threads; do
  [[ ${!v} =~ ^[1-9][0-9]*$ ]] || die "$v must be a positive number, got ${!v}"
done
((seconds <= 40)) || die "SECONDS must be at most 40: the pre-signed orders must stay within recvWindow (60 s)"
((users >= 2)) || die "USERS must be at least 2"

if ! command -v wrk >/dev/null 2>&1; then
  log "installing wrk (Debian package)"
  as_root apt-get install -y wrk >/dev/null || { as_root apt-get update >/dev/null && as_root apt-get install -y wrk >/dev/null; }
fi

scripts/stack.sh start >/dev/null
note_engine_running
log "building gateway, engine, shardctl, loadtest (release)"
cargo build --release --quiet -p gateway -p engine -p shardctl -p loadtest
bin=$CARGO_TARGET_DIR/release
tick=$(getconf CLK_TCK)
run=$(date +%s)
work=$(mktemp -d)
mkdir -p "$EXCHANGE_DATA_DIR/bench-gateway"
logs=$EXCHANGE_DATA_DIR/bench-gateway

# the bench's own databases, Redis prefix, topics and ports (only its own processes
# get these settings; loadtest bench makes its own databases anyway)
IFS=, read -ra base_urls <<<"$EXCHANGE_SHARD_URLS"
bench_urls=()
for u in "${base_urls[@]}"; do bench_urls+=("${u%/*}/$db"); done
benv=(
  "EXCHANGE_SHARD_URLS=$(IFS=,; echo "${bench_urls[*]}")"
  "EXCHANGE_META=${EXCHANGE_META%/*}/${db}_meta"
  "EXCHANGE_REDIS__KEY_PREFIX=$db:"
  "EXCHANGE_ENGINE__TOPIC_PREFIX=${db}_${run}_"
  "EXCHANGE_ENGINE__HTTP_ADDR=$engine_addr"
  "EXCHANGE_GATEWAY__HTTP_ADDR=$gw_addr"
  "EXCHANGE_GATEWAY__LIMITS__WEIGHT_PER_MINUTE=1000000000000"
  "EXCHANGE_GATEWAY__LIMITS__ORDERS_PER_10S=1000000000000"
  "EXCHANGE_GATEWAY__LIMITS__ORDERS_PER_DAY=1000000000000"
  "RUST_LOG=warn"
)

sql() { # port statement
  mariadb --no-defaults --protocol=tcp -h127.0.0.1 -P"$1" -u"$EXCHANGE_MYSQL_USER" \
    -p"$EXCHANGE_MYSQL_PASSWORD" -N -B -e "$2"
}
drop_bench_data() {
  for ((i = 0; i < EXCHANGE_SHARDS; i++)); do
    sql $((EXCHANGE_MYSQL_BASE_PORT + i)) "DROP DATABASE IF EXISTS \`$db\`"
  done
  sql "$EXCHANGE_MYSQL_BASE_PORT" "DROP DATABASE IF EXISTS \`${db}_meta\`"
  redis-cli -p "$EXCHANGE_REDIS_PORT" --scan --pattern "$db:*" | xargs -r -n 500 redis-cli -p "$EXCHANGE_REDIS_PORT" del >/dev/null
}

pids=()
cleanup() {
  local pid
  for pid in "${pids[@]}"; do pid_stop "$pid" "bench process" 60; done
  rm -rf "$work"
  if [[ ${BENCH_KEEP:-0} == 1 ]]; then
    log "kept the bench databases ($db, ${db}_meta) and Redis keys ($db:*)"
  else
    drop_bench_data || true
  fi
}
trap cleanup EXIT

# CPU seconds (user + system) of the processes named $1 / of pid $1, from /proc
stat_ticks() { awk '{ sub(/.*\) /, ""); print $12 + $13 }' "/proc/$1/stat" 2>/dev/null || echo 0; }
cpu_named() {
  local total=0 pid
  for pid in $(pgrep -x "$1" || true); do total=$((total + $(stat_ticks "$pid"))); done
  echo "$total"
}
# counts over the bench's BTCUSDT order tables on every shard: all orders, filled ones
order_counts() {
  local all=0 filled=0 port t row
  for ((i = 0; i < EXCHANGE_SHARDS; i++)); do
    port=$((EXCHANGE_MYSQL_BASE_PORT + i))
    for t in $(sql "$port" "SELECT table_name FROM information_schema.tables WHERE table_schema = '$db' AND table_name LIKE 'orders\\_BTCUSDT\\_%'"); do
      row=$(sql "$port" "SELECT COUNT(*), COALESCE(SUM(status = 'filled'), 0) FROM \`$db\`.\`$t\`")
      all=$((all + ${row%%$'\t'*})) filled=$((filled + ${row##*$'\t'}))
    done
  done
  echo "$all $filled"
}
# statements the shard servers executed so far (Questions, summed over the servers)
db_questions() {
  local total=0
  for ((i = 0; i < EXCHANGE_SHARDS; i++)); do
    total=$((total + $(sql $((EXCHANGE_MYSQL_BASE_PORT + i)) "SHOW GLOBAL STATUS LIKE 'Questions'" | cut -f2)))
  done
  echo "$total"
}
field() { sed -n "s/.*[ ]$1=\([0-9.]*\).*/\1/p" <<<"$2"; }
now() { date +%s.%N; }

log "bench databases: dropping leftovers, migrating ($db on $EXCHANGE_SHARDS shards, ${db}_meta)"
drop_bench_data
env "${benv[@]}" "$bin/shardctl" migrate >/dev/null
env "${benv[@]}" "$bin/shardctl" ensure-tables >/dev/null
log "$users traders: registered, funded (1,000 BTC, 100,000,000 USDT each), one API key each"
env "${benv[@]}" "$bin/loadtest" accounts --users "$users" --prefix "$db" >"$work/accounts"

# ------------------------------------------------------------ 1. reference ---
log "1. reference: loadtest bench, closed loop, $seconds s, 1024 placing tasks"
r0="$(cpu_named mariadbd) $(cpu_named tansu) $(db_questions)"
ref_out=$(RUST_LOG=warn "$bin/loadtest" bench --seconds "$seconds" --concurrency 1024)
r1="$(cpu_named mariadbd) $(cpu_named tansu) $(db_questions)"
printf '%s\n' "$ref_out" | sed 's/^/   /'
ref=$(grep '^RESULT' <<<"$ref_out")
ref_settled=$(field settled_orders_per_s "$ref")
ref_acked=$(field acked_per_s "$ref")
ref_placed=$(sed -n 's/^placed *\([0-9]*\) orders.*/\1/p' <<<"$ref_out")

# ------------------------------------------------- 2. engine and gateway up ---
start_bench() { # name args...: started in the background, pid in $started
  local name=$1
  shift
  env "${benv[@]}" "$bin/$name" "$@" >>"$logs/$name.log" 2>&1 </dev/null &
  started=$!
  pids+=("$started")
}
log "2. engine run and gateway (release; logs in $logs)"
start_bench engine run
engine_pid=$started
start_bench gateway
gw_pid=$started
wait_until 120 "the bench engine to be ready" curl -fs "http://$engine_addr/ready" ||
  { log_tail "$logs/engine.log"; die "engine not ready"; }
wait_until 60 "the bench gateway to be ready" curl -fs "http://$gw_addr/ready" ||
  { log_tail "$logs/gateway.log"; die "gateway not ready"; }

# signs: seed the resting book now; write the order files right before the order run
cat >"$work/sign.py" <<'PY'
import hashlib, hmac, http.client, json, sys, time

def accounts(path):
    return [line.split() for line in open(path)]

def body(params, secret):
    q = "&".join(f"{k}={v}" for k, v in params)
    return q + "&signature=" + hmac.new(secret.encode(), q.encode(), hashlib.sha256).hexdigest()

def seed(path, addr):
    # 100 bids 49,010..50,000 - 10 and 100 asks 50,010..51,000 from two traders: depth
    # has 100 levels a side, the crossing orders at 50,000 never reach them
    acc = accounts(path)
    conn = http.client.HTTPConnection(addr, timeout=10)
    ts = int(time.time() * 1000)
    for i in range(100):
        for side, price, (uid, key, secret) in (("BUY", 49990 - 10 * i, acc[1]), ("SELL", 50010 + 10 * i, acc[0])):
            b = body([("symbol", "BTCUSDT"), ("side", side), ("type", "LIMIT"), ("timeInForce", "GTC"),
                      ("quantity", "0.001"), ("price", price), ("newOrderRespType", "ACK"),
                      ("recvWindow", 60000), ("timestamp", ts)], secret)
            conn.request("POST", "/api/v3/order", b, {"X-MBX-APIKEY": key,
                         "Content-Type": "application/x-www-form-urlencoded"})
            r = conn.getresponse()
            text = r.read()
            if r.status != 200:
                sys.exit(f"seed order refused: {r.status} {text!r}")

def orders(path, out, count, threads, run):
    # order j: trader j % n (index from 1 in the .keys file), BUY for even j: the even
    # traders buy, the odd ones sell (no self-trades), every shard gets both sides
    acc = accounts(path)
    with open(out + ".keys", "w") as f:
        f.writelines(key + "\n" for _, key, _ in acc)
    macs = [hmac.new(s.encode(), digestmod=hashlib.sha256) for _, _, s in acc]
    ts = int(time.time() * 1000)
    files = [open(f"{out}.{t}", "w") for t in range(threads)]
    n = len(acc)
    for j in range(count):
        u = j % n
        q = (f"symbol=BTCUSDT&side={'BUY' if j % 2 == 0 else 'SELL'}&type=LIMIT&timeInForce=GTC"
             f"&quantity=0.001&price=50000&newOrderRespType=ACK&newClientOrderId=gwb{run}-{j}"
             f"&recvWindow=60000&timestamp={ts}")
        m = macs[u].copy()
        m.update(q.encode())
        files[j % threads].write(f"{u + 1} {q}&signature={m.hexdigest()}\n")
    for f in files:
        f.close()
    print(ts)

if sys.argv[1] == "seed":
    seed(sys.argv[2], sys.argv[3])
else:
    orders(sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]), sys.argv[6])
PY
log "   resting book: 100 bids, 100 asks"
python3 "$work/sign.py" seed "$work/accounts" "$gw_addr"
book_full() {
  curl -fs "http://$gw_addr/api/v3/depth?symbol=BTCUSDT" |
    python3 -c 'import json,sys; d=json.load(sys.stdin); sys.exit(0 if len(d["bids"]) == len(d["asks"]) == 100 else 1)'
}
wait_until 60 "depth to show the resting book" book_full || die "the resting book did not reach depth"

# wrk_run OUT CONNECTIONS URL [LUA ARGS...]: wrk's output and its CPU seconds (the
# child's rusage, "WRKCPU s") into OUT
wrk_run() {
  local out=$1 c=$2 url=$3
  shift 3
  python3 - "$threads" "$c" "${seconds}s" "$url" "$@" >"$out" <<'PY'
import resource, subprocess, sys
threads, conns, duration, url, *lua = sys.argv[1:]
r = subprocess.run(["wrk", f"-t{threads}", f"-c{conns}", f"-d{duration}", "--timeout", "10s", "--latency",
                    "-s", "scripts/bench-gateway.lua", url] + (["--"] + lua if lua else []),
                   capture_output=True, text=True)
sys.stderr.write(r.stderr)
print(r.stdout, end="")
u = resource.getrusage(resource.RUSAGE_CHILDREN)
print(f"WRKCPU {u.ru_utime + u.ru_stime:.2f}")
sys.exit(r.returncode)
PY
  sed 's/^/   /' "$out"
}
snapshot() { # CPU seconds ×tick of gateway, engine, mariadbd, tansu, redis-server, then wall time
  echo "$(stat_ticks "$gw_pid") $(stat_ticks "$engine_pid") $(cpu_named mariadbd) $(cpu_named tansu) $(cpu_named redis-server) $(now)"
}

# ---------------------------------------------------------------- 3. depth ---
log "3. wrk: GET /api/v3/depth?symbol=BTCUSDT, $seconds s, $depth_connections connections, $threads threads"
d0=$(snapshot)
wrk_run "$work/depth.out" "$depth_connections" "http://$gw_addr/api/v3/depth?symbol=BTCUSDT"
d1=$(snapshot)

# --------------------------------------------------------------- 4. orders ---
count=$(python3 -c "print(max(40000, int(1.5 * float('${ref_acked:-0}') * $seconds)))")
log "4. signing $count orders (unique newClientOrderId, recvWindow 60 s), one file per wrk thread"
python3 "$work/sign.py" orders "$work/accounts" "$work/orders" "$count" "$threads" "$run" >/dev/null
read -r all0 filled0 <<<"$(order_counts)"
log "   wrk: signed POST /api/v3/order (ACK), $seconds s, $connections connections, $threads threads"
q0=$(db_questions)
o0=$(snapshot)
wrk_run "$work/orders.out" "$connections" "http://$gw_addr" "$work/orders"
o1=$(snapshot)
q1=$(db_questions)
log "   waiting for the pipeline to match and settle everything"
t_start=${o0##* }
last="" last_change=$(now) drained=0
for ((k = 0; k < 3000; k++)); do # 5 min at most
  cur=$(order_counts)
  if [[ $cur != "$last" ]]; then
    last=$cur last_change=$(now)
  elif awk -v a="$(now)" -v b="$last_change" 'BEGIN { exit !(a - b > 2) }'; then
    drained=1
    break
  fi
  sleep 0.1
done
((drained)) || warn "settlement still moving after 5 min; the settled figure is a lower bound"
read -r all1 filled1 <<<"$last"
metrics=$(curl -fs "http://$gw_addr/metrics" | grep '^gateway_errors_total' || true)

log "5. audit of the bench databases (after 6 s idle, so the matcher's snapshot covers every input)"
sleep 6
audit_ok=1
env "${benv[@]}" "$bin/shardctl" audit >"$work/audit" 2>&1 || audit_ok=0
grep -iE 'holds|fail|not covered|offender|mismatch' "$work/audit" | sed 's/^/   /' | head -n 20 || true

python3 - "$seconds" "$(nproc)" "$tick" "$ref_settled" "$ref_acked" "$all0" "$filled0" "$all1" "$filled1" \
  "$t_start" "$last_change" "$audit_ok" "$connections" "$depth_connections" "$users" \
  "$d0" "$d1" "$o0" "$o1" "$work/depth.out" "$work/orders.out" \
  "$r0" "$r1" "$q0" "$q1" "$ref" "${ref_placed:-0}" <<'PY'
import sys
a = sys.argv[1:]
seconds, cores, tick = float(a[0]), float(a[1]), float(a[2])
ref_settled, ref_acked = float(a[3] or 0), float(a[4] or 0)
all0, filled0, all1, filled1 = (int(x) for x in a[5:9])
t_start, t_settled, audit_ok = float(a[9]), float(a[10]), a[11] == "1"
conns, dconns, users = a[12], a[13], a[14]
snap = lambda s: [float(x) for x in s.split()]
d0, d1, o0, o1 = (snap(x) for x in a[15:19])

def wrk(text):
    line = next(l for l in text.splitlines() if l.startswith("RESULT"))
    f = dict(kv.split("=") for kv in line.split()[1:])
    f = {k: float(v) for k, v in f.items()}
    f["wrk_cpu"] = float(next(l for l in text.splitlines() if l.startswith("WRKCPU")).split()[1])
    return f
depth = wrk(open(a[19]).read())
orders = wrk(open(a[20]).read())

names = ["gateway", "engine run", "MariaDB (4 shards)", "broker (tansu)", "Redis"]
def cpu(s0, s1):
    return [(b - a) / tick for a, b in zip(s0[:5], s1[:5])], s1[5] - s0[5]

errs = lambda f: int(f["non2xx"] + f["connect_errors"] + f["read_errors"] + f["write_errors"] + f["timeouts"])
dok = depth["requests"] - errs(depth)
dcpu, dwall = cpu(d0, d1)
print()
print(f"depth (GET /api/v3/depth?symbol=BTCUSDT, 100 levels a side), {dconns} connections:")
print(f"  {dok / depth['duration_s']:,.0f} requests/s; p50 {depth['p50_ms']:.2f} ms, p99 {depth['p99_ms']:.2f} ms, "
      f"p99.9 {depth['p999_ms']:.2f} ms; non-2xx {int(depth['non2xx'])}, socket errors/timeouts "
      f"{errs(depth) - int(depth['non2xx'])}")
print(f"  gateway CPU {1e6 * dcpu[0] / max(dok, 1):.0f} µs per request ({100 * dcpu[0] / (dwall * cores):.0f} % of the machine)")

acked = orders["requests"] - errs(orders)
placed = all1 - all0
settled = filled1 - filled0
ocpu, owall = cpu(o0, o1)
settle_s = t_settled - t_start
ack_rate = acked / orders["duration_s"]
settled_rate = settled / settle_s
print()
print(f"signed POST /api/v3/order (LIMIT, ACK), {conns} connections, {users} traders:")
print(f"  {ack_rate:,.0f} orders/s acked; p50 {orders['p50_ms']:.2f} ms, p99 {orders['p99_ms']:.2f} ms, "
      f"p99.9 {orders['p999_ms']:.2f} ms; non-2xx {int(orders['non2xx'])}, socket errors/timeouts "
      f"{errs(orders) - int(orders['non2xx'])}, bodies exhausted {int(orders['exhausted'])}")
print(f"  orders written in the bench databases {placed:,} (wrk counted {int(acked):,} acked; "
      f"the difference is what was in flight when wrk stopped, at most {conns})")
print(f"  settled (filled, both sides settled) {settled:,} by {settle_s:.1f} s: {settled_rate:,.0f} settled orders/s")
print(f"  gateway CPU {1e6 * ocpu[0] / max(acked, 1):.0f} µs per order acked")
print(f"  CPU over the order run ({owall:.1f} s x {cores:.0f} cores = {owall * cores:.1f} core-s):")
for n, v in zip(names, ocpu):
    print(f"    {n:<20} {v:6.1f} core-s  {100 * v / (owall * cores):5.1f} %")
print(f"    {'wrk':<20} {orders['wrk_cpu']:6.1f} core-s  {100 * orders['wrk_cpu'] / (owall * cores):5.1f} %")
print()
print(f"reference (loadtest bench, same invocation): {ref_settled:,.0f} settled orders/s ({ref_acked:,.0f} acked/s)")
# per order, the reference's closed loop against the order run through the gateway
r0, r1 = snap(a[21]), snap(a[22])
q0, q1 = float(a[23]), float(a[24])
ref_line = dict(kv.split("=") for kv in a[25].split()[1:])
ref_orders = max(float(a[26]), 1)
print("per order placed (reference: the whole loadtest bench invocation, its setup included; gateway: the wrk run):")
print(f"  MariaDB CPU      reference {1e6 * (r1[0] - r0[0]) / tick / ref_orders:6.0f} µs   gateway run {1e6 * ocpu[2] / max(placed, 1):6.0f} µs")
print(f"  broker CPU       reference {1e6 * (r1[1] - r0[1]) / tick / ref_orders:6.0f} µs   gateway run {1e6 * ocpu[3] / max(placed, 1):6.0f} µs")
print(f"  SQL statements   reference {(r1[2] - r0[2]) / ref_orders:6.2f}      gateway run {(q1 - q0) / max(placed, 1):6.2f}   (Questions, every shard server)")
print(f"  machine CPU      reference {1e6 * (float(ref_line.get('engine_cpu_s', 0)) + ((r1[0] - r0[0]) + (r1[1] - r0[1])) / tick) / ref_orders:6.0f} µs   "
      f"gateway run {1e6 * (sum(ocpu) + orders['wrk_cpu']) / max(placed, 1):6.0f} µs   (reference: engine process + MariaDB + broker)")
print(f"ratio settled through the gateway / reference: {settled_rate / ref_settled:.2f}  (goal >= 0.90)"
      if ref_settled else "ratio: no reference")
print(f"ratio acked through the gateway / reference settled: {ack_rate / ref_settled:.2f}" if ref_settled else "")
print(f"audit of the bench databases: {'holds' if audit_ok else 'FAILED'}")
ok = audit_ok and orders["exhausted"] == 0 and abs(placed - acked) <= int(conns)
print("RESULT " + " ".join(f"{k}={v}" for k, v in [
    ("depth_rps", round(dok / depth["duration_s"])), ("depth_p50_ms", depth["p50_ms"]), ("depth_p99_ms", depth["p99_ms"]),
    ("orders_acked_per_s", round(ack_rate)), ("order_p50_ms", orders["p50_ms"]), ("order_p99_ms", orders["p99_ms"]),
    ("order_non2xx", int(orders["non2xx"])), ("settled_per_s", round(settled_rate)),
    ("gateway_cpu_us_per_order", round(1e6 * ocpu[0] / max(acked, 1))), ("ref_settled_per_s", round(ref_settled)),
    ("ratio", round(settled_rate / ref_settled, 3) if ref_settled else 0), ("audit", "holds" if audit_ok else "failed")]))
sys.exit(0 if ok else 1)
PY
if [[ -n $metrics ]]; then
  log "gateway error answers by code (/metrics):"
  printf '%s\n' "$metrics" | sed 's/^/   /' >&2
fi
[[ $audit_ok == 1 ]] || { cat "$work/audit" >&2; die "the audit of the bench databases failed"; }
