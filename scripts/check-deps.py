#!/usr/bin/env python3
"""The workspace's dependency rule, checked on `cargo metadata` (no build needed).

* Crates are layered: a crate depends (normal or build edges) only on crates of a
  lower layer: domain < matcher < router < ledger < trading < engine; the service
  crates (engine, gateway, archiver, shardctl, loadtest) never depend on each other,
  except `loadtest -> engine` (its in-process pipeline bench hosts the engine's
  services until the HTTP harness replaces it).
* rdkafka only under engine, axum only under gateway, object_store only under
  archiver (in the normal-dependency closure of every other crate they are absent).
* domain and matcher have no tokio, sqlx or redis in their normal closure.
* testkit is never a normal dependency (only loadtest, a test harness itself).
* No statement outside ledger/src writes `account_balances` or
  `account_transactions` (one writer of balances and ledger rows).

Exits 1 with one line per violation.
"""
import json
import subprocess
import sys

LAYER = {"domain": 0, "matcher": 1, "router": 2, "ledger": 3, "trading": 4, "engine": 5,
         "testkit": 5, "gateway": 6, "archiver": 6, "shardctl": 6, "loadtest": 7}
SERVICES = {"engine", "gateway", "archiver", "shardctl", "loadtest"}
ALLOWED = {("loadtest", "engine"), ("loadtest", "testkit")}
ONLY_UNDER = {"rdkafka": {"engine"}, "axum": {"gateway"}, "object_store": {"archiver"}}
PURE = {"domain", "matcher"}
IMPURE = {"tokio", "sqlx", "redis", "deadpool-redis"}

host = next(line.split()[1] for line in subprocess.check_output(
    ["rustc", "-vV"], text=True).splitlines() if line.startswith("host:"))
meta = json.loads(subprocess.check_output(
    ["cargo", "metadata", "--format-version", "1", "--filter-platform", host]))
members = set(meta["workspace_members"])
name_of = {p["id"]: p["name"] for p in meta["packages"]}
normal = {}  # id -> set of ids (normal + build edges)
for node in meta["resolve"]["nodes"]:
    normal[node["id"]] = {
        d["pkg"] for d in node["deps"]
        if any(k["kind"] in (None, "build") for k in d["dep_kinds"])
    }


def closure(pid):
    seen, stack = set(), [pid]
    while stack:
        for d in normal.get(stack.pop(), ()):
            if d not in seen:
                seen.add(d)
                stack.append(d)
    return seen


errors = []
for pid in sorted(members, key=lambda p: name_of[p]):
    crate = name_of[pid]
    if crate not in LAYER:
        errors.append(f"{crate}: not in the layer table of scripts/check-deps.py")
        continue
    for d in normal[pid]:
        dep = name_of[d]
        if d not in members or (crate, dep) in ALLOWED:
            continue
        if dep == "testkit":
            errors.append(f"{crate}: testkit is a normal dependency (dev-dependencies only)")
        elif dep in SERVICES and crate in SERVICES:
            errors.append(f"{crate}: depends on the service crate {dep}")
        elif LAYER.get(dep, 99) >= LAYER[crate]:
            errors.append(f"{crate}: depends on {dep}, which is not below it")
    below = {name_of[d] for d in closure(pid)}
    for heavy, owners in ONLY_UNDER.items():
        if heavy in below and crate not in owners and not (owners & below):
            errors.append(f"{crate}: links {heavy} (only {', '.join(sorted(owners))} may)")
    if crate in PURE:
        for bad in sorted(IMPURE & below):
            errors.append(f"{crate}: links {bad} (domain and matcher do no I/O)")

# one writer of balances and ledger rows: the statements that change them live only
# in ledger/src (tests may write fixtures)
import pathlib
import re
WRITES = re.compile(r"(UPDATE|INSERT INTO|DELETE FROM)\s+`?(account_balances|account_transactions)\b")
root = pathlib.Path(__file__).resolve().parent.parent
for path in sorted(root.glob("*/src/**/*.rs")):
    rel = path.relative_to(root)
    if rel.parts[0] in ("ledger", "target"):
        continue
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if WRITES.search(line):
            errors.append(f"{rel}:{n}: writes balances or ledger rows outside ledger/")

if errors:
    print("dependency rule broken:", file=sys.stderr)
    for e in errors:
        print(f"  {e}", file=sys.stderr)
    sys.exit(1)
print(f"dependency rule holds for {len(members)} crates")
