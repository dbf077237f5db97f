#!/usr/bin/env bash
# The Python venv with the real Binance clients of clients/requirements.txt (ccxt,
# python-binance, binance-sdk-spot) and schemathesis (the gateway's API fuzzing), at
# $EXCHANGE_CACHE_DIR/clients-venv.
#
# Idempotent: creates the venv when missing (apt-installs python3-venv first if
# python3 cannot make one), pip-installs the requirements only when they changed since
# the last successful install (a sha256 stamp file in the venv), and prints the venv's
# python path on stdout as its last line. Everything else goes to stderr.
#
# Usage: scripts/clients-venv.sh
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cache="${EXCHANGE_CACHE_DIR:-$HOME/.cache/exchange}"
venv="$cache/clients-venv"
req="$root/clients/requirements.txt"
stamp="$venv/.requirements.sha256"
log="$cache/logs/clients-venv.log"

say() { printf '[clients-venv] %s\n' "$*" >&2; }
die() {
  say "ERROR: $*"
  exit 1
}
as_root() {
  if ((EUID == 0)); then "$@"; else sudo "$@"; fi
}

[[ -f $req ]] || die "$req not found"
mkdir -p "$cache/logs"

# one installer at a time (tests may call this concurrently)
exec 9>"$cache/clients-venv.lock"
flock 9

have_venv_module() {
  python3 -c 'import venv, ensurepip' >/dev/null 2>&1
}

# a venv whose python no longer runs (the base interpreter moved or was upgraded) is
# made again
if [[ -e $venv && ! -x $venv/bin/python ]] || { [[ -x $venv/bin/python ]] && ! "$venv/bin/python" -c '' 2>/dev/null; }; then
  say "$venv is broken; making it again"
  rm -rf "$venv"
fi

if [[ ! -x $venv/bin/python ]]; then
  command -v python3 >/dev/null 2>&1 || die "python3 not found"
  if ! have_venv_module; then
    command -v apt-get >/dev/null 2>&1 || die "python3 has no venv/ensurepip and apt-get is missing: install python3-venv"
    say "installing python3-venv with apt-get (log: $log)"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update >>"$log" 2>&1 || die "apt-get update failed (see $log)"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends python3-venv \
      >>"$log" 2>&1 || die "apt-get install python3-venv failed (see $log)"
  fi
  say "creating $venv"
  python3 -m venv "$venv" >>"$log" 2>&1 || die "python3 -m venv failed (see $log)"
fi

want="$(sha256sum "$req" | cut -d' ' -f1)"
if [[ ! -f $stamp || "$(cat "$stamp")" != "$want" ]]; then
  say "pip installing $(grep -cv '^\s*\(#\|$\)' "$req") pinned clients (log: $log)"
  rm -f "$stamp"
  "$venv/bin/python" -m pip install --disable-pip-version-check -q -r "$req" >>"$log" 2>&1 ||
    die "pip install failed (see $log)"
  "$venv/bin/python" -c 'import ccxt, binance, binance_sdk_spot, schemathesis' >>"$log" 2>&1 ||
    die "the clients do not import after pip install (see $log)"
  printf '%s\n' "$want" >"$stamp"
  say "clients installed"
fi

printf '%s\n' "$venv/bin/python"
