#!/usr/bin/env bash
# Install everything the dev service stack needs, but only what is missing.
# Quiet (no output) when everything is already present.
#
# Usage: scripts/install.sh [apt] [venv] [tansu]     (default: all three)
#   apt    Debian packages: MariaDB, Redis, and the native build deps of the
#          Rust crates (rdkafka builds librdkafka from source).
#   venv   Python venv at $EXCHANGE_CACHE_DIR/venv with secantusdb (Mongo
#          wire-compatible server) and moto[server] (S3).
#   tansu  Kafka-compatible broker, built with cargo into
#          $EXCHANGE_CACHE_DIR/tansu.
set -euo pipefail

# shellcheck source-path=SCRIPTDIR source=env.sh
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"

APT_PACKAGES=(
  # services
  mariadb-server mariadb-client redis-server redis-tools
  # tools the scripts use
  ca-certificates curl iproute2 procps python3 python3-venv
  # native build deps (rdkafka/librdkafka with any feature set, sqlx, ...)
  build-essential cmake pkg-config zlib1g-dev libssl-dev libsasl2-dev
  libzstd-dev libcurl4-openssl-dev
)
# pinned: the versions the tests were written against
PIP_PACKAGES=('secantusdb==0.7.0b3' 'moto[server]==5.2.5')
TANSU_VERSION=0.6.0

apt_installed() {
  dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'
}

install_apt() {
  local missing=() pkg
  for pkg in "${APT_PACKAGES[@]}"; do
    apt_installed "$pkg" || missing+=("$pkg")
  done
  ((${#missing[@]} == 0)) && return 0
  command -v apt-get >/dev/null 2>&1 || die "apt-get not found; install manually: ${missing[*]}"
  mkdir -p "$EXCHANGE_LOG_DIR"
  local aptlog="$EXCHANGE_LOG_DIR/apt-install.log"
  log "installing apt packages: ${missing[*]} (log: $aptlog)"
  if ! as_root env DEBIAN_FRONTEND=noninteractive apt-get update >>"$aptlog" 2>&1; then
    log_tail "$aptlog"
    die "apt-get update failed"
  fi
  # Debian starts packaged daemons on install; the system redis-server/mariadb would
  # then hold 6379/3306. A temporary policy-rc.d forbids that (the stack runs its own).
  local policy=/usr/sbin/policy-rc.d own_policy=0
  if [[ ! -e $policy ]]; then
    printf '#!/bin/sh\nexit 101\n' | as_root tee "$policy" >/dev/null && as_root chmod +x "$policy" && own_policy=1
  fi
  local rc=0
  as_root env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y --no-install-recommends "${missing[@]}" >>"$aptlog" 2>&1 || rc=$?
  ((own_policy)) && as_root rm -f "$policy"
  if ((rc != 0)); then
    log_tail "$aptlog"
    die "apt-get install failed"
  fi
  # if a system service still got started (no policy-rc.d support), stop and disable it
  if command -v systemctl >/dev/null 2>&1 && [[ -d /run/systemd/system ]]; then
    as_root systemctl disable --now redis-server mariadb >/dev/null 2>&1 || true
  fi
  log "apt packages installed"
}

venv_ok() {
  [[ -x "$EXCHANGE_VENV/bin/secantusd-py" && -x "$EXCHANGE_VENV/bin/moto_server" ]] &&
    "$EXCHANGE_VENV/bin/python" -c 'import secantus, moto.server, pymongo' >/dev/null 2>&1
}

install_venv() {
  venv_ok && return 0
  if [[ ! -x "$EXCHANGE_VENV/bin/python" ]]; then
    local py
    py=$(command -v python3 || true)
    [[ -n "$py" ]] || die "python3 not found (run: scripts/install.sh apt)"
    log "creating python venv $EXCHANGE_VENV (with $py)"
    mkdir -p "$(dirname "$EXCHANGE_VENV")"
    "$py" -m venv "$EXCHANGE_VENV"
  fi
  mkdir -p "$EXCHANGE_LOG_DIR"
  log "pip installing ${PIP_PACKAGES[*]} into $EXCHANGE_VENV (log: $EXCHANGE_LOG_DIR/pip-install.log)"
  if ! "$EXCHANGE_VENV/bin/python" -m pip install --upgrade "${PIP_PACKAGES[@]}" \
    >>"$EXCHANGE_LOG_DIR/pip-install.log" 2>&1; then
    log_tail "$EXCHANGE_LOG_DIR/pip-install.log"
    die "pip install failed"
  fi
  venv_ok || die "venv still incomplete after pip install (see $EXCHANGE_LOG_DIR/pip-install.log)"
  log "python venv ready"
}

# tansu 0.6.0 is built from its crates.io sources with one patch (TANSU_PATCH, below):
# its storage service ends for good (every later request fails, the port stays open)
# when it cannot hand a response back because the client went away mid-request — a
# producer or consumer reconnecting after a broker outage does that. Patched, the
# response is dropped (and a failed request logged) and the service goes on.
# Bump TANSU_PATCH_ID when the patch changes: machines with an older build rebuild.
TANSU_PATCH_ID=1
TANSU_STORAGE_SHA256=720d2ed8e6010c70f7f06e5af5a7274ebbf6e42fdcd9e46de542b10dc4d2f35d

# The .crate of $1 at $TANSU_VERSION: from cargo's cache, else from crates.io.
tansu_crate() {
  local name=$1 out=$2 cached
  cached=$(find "${CARGO_HOME:-$HOME/.cargo}/registry/cache" -name "$name-$TANSU_VERSION.crate" 2>/dev/null | head -1)
  if [[ -n $cached ]]; then
    cp "$cached" "$out"
  else
    curl -sSfL -o "$out" "https://static.crates.io/crates/$name/$name-$TANSU_VERSION.crate" ||
      die "cannot download $name $TANSU_VERSION from crates.io"
  fi
}

install_tansu() {
  local stamp="$EXCHANGE_TANSU_ROOT/.patched-$TANSU_VERSION-$TANSU_PATCH_ID"
  [[ -x "$EXCHANGE_TANSU_BIN" && -f $stamp ]] && return 0
  # Another build (e.g. started by hand) may already be running; never run two at
  # once, wait for that one instead.
  if pgrep -f "cargo install.*tansu" >/dev/null 2>&1; then
    log "a tansu build is already running; waiting for it to finish..."
    local waited=0
    while pgrep -f "cargo install.*tansu" >/dev/null 2>&1; do
      sleep 5
      waited=$((waited + 5))
      ((waited % 60 == 0)) && log "  still building tansu (${waited}s)..."
    done
    if [[ -x "$EXCHANGE_TANSU_BIN" && -f $stamp ]]; then
      log "tansu ready: $EXCHANGE_TANSU_BIN"
      return 0
    fi
  fi
  command -v cargo >/dev/null 2>&1 || die "cargo not found; install Rust (https://rustup.rs) first"
  mkdir -p "$EXCHANGE_LOG_DIR"
  local src="$EXCHANGE_CACHE_DIR/tansu-src"
  rm -rf "$src"
  mkdir -p "$src"
  tansu_crate tansu "$src/tansu.crate"
  tansu_crate tansu-storage "$src/tansu-storage.crate"
  echo "$TANSU_STORAGE_SHA256  $src/tansu-storage.crate" | sha256sum -c --quiet - ||
    die "tansu-storage $TANSU_VERSION does not have the expected checksum"
  tar -xzf "$src/tansu.crate" -C "$src"
  tar -xzf "$src/tansu-storage.crate" -C "$src"
  python3 - "$src/tansu-storage-$TANSU_VERSION/src/service.rs" <<'PATCH' || die "patching tansu-storage failed"
import sys
path = sys.argv[1]
text = open(path).read()
old = """                Some((request, tx)) = req.recv() => {
                    self.inner
                    .serve(ctx.clone(), request)
                    .await
                    .and_then(|response| {
                        tx.send(response).map_err(|_unsent| Error::UnableToSend)
                    })?
                }"""
new = """                Some((request, tx)) = req.recv() => {
                    // patched: a client gone mid-request, or one failed request, must
                    // not end the storage service for every later request
                    match self.inner.serve(ctx.clone(), request).await {
                        Ok(response) => {
                            let _unsent = tx.send(response);
                        }
                        Err(err) => error!(?err, "storage request failed"),
                    }
                }"""
if text.count(old) != 1:
    sys.exit("tansu-storage service.rs: the code to patch was not found")
open(path, "w").write(text.replace(old, new))
PATCH
  printf '\n[patch.crates-io]\ntansu-storage = { path = "../tansu-storage-%s" }\n' "$TANSU_VERSION" \
    >>"$src/tansu-$TANSU_VERSION/Cargo.toml"
  # the package's own Cargo.lock, with tansu-storage from the path: every other crate
  # stays at the version tansu was released with (--locked), and cargo reuses what the
  # stock build compiled
  python3 - "$src/tansu-$TANSU_VERSION/Cargo.lock" <<'LOCK' || die "adjusting tansu's Cargo.lock failed"
import re
import sys
path = sys.argv[1]
text = open(path).read()
entry = re.compile(r'(name = "tansu-storage"\nversion = "[^"]+"\n)source = "[^"]+"\nchecksum = "[^"]+"\n')
text, n = entry.subn(r"\1", text)
if n != 1:
    sys.exit("tansu's Cargo.lock: the tansu-storage entry was not found")
open(path, "w").write(text)
LOCK
  log "building tansu $TANSU_VERSION (patched) with cargo (10+ minutes the first time; log: $EXCHANGE_LOG_DIR/tansu-install.log)"
  # its Cargo.lock pins every other crate; only the patched one moves to its path
  if ! CARGO_TARGET_DIR="$EXCHANGE_TANSU_TARGET" cargo install --path "$src/tansu-$TANSU_VERSION" \
    --features libsql --locked --force --root "$EXCHANGE_TANSU_ROOT" >>"$EXCHANGE_LOG_DIR/tansu-install.log" 2>&1; then
    log_tail "$EXCHANGE_LOG_DIR/tansu-install.log"
    die "building tansu failed"
  fi
  [[ -x "$EXCHANGE_TANSU_BIN" ]] || die "cargo install finished but $EXCHANGE_TANSU_BIN is missing"
  rm -f "$EXCHANGE_TANSU_ROOT"/.patched-*
  touch "$stamp"
  log "tansu ready: $EXCHANGE_TANSU_BIN"
}

main() {
  local parts=("$@") part
  ((${#parts[@]})) || parts=(apt venv tansu)
  for part in "${parts[@]}"; do
    case "$part" in
      apt) install_apt ;;
      venv) install_venv ;;
      tansu) install_tansu ;;
      -h | --help) sed -n '2,12p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; return 0 ;;
      *) die "unknown component '$part' (expected: apt venv tansu)" ;;
    esac
  done
}

main "$@"
