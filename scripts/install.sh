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

install_tansu() {
  [[ -x "$EXCHANGE_TANSU_BIN" ]] && return 0
  # Another `cargo install tansu` (e.g. started by hand) may already be
  # building it; never run two at once, wait for that one instead.
  if pgrep -f "cargo install tansu" >/dev/null 2>&1; then
    log "a 'cargo install tansu' is already running; waiting for it to finish..."
    local waited=0
    while pgrep -f "cargo install tansu" >/dev/null 2>&1; do
      sleep 5
      waited=$((waited + 5))
      ((waited % 60 == 0)) && log "  still building tansu (${waited}s)..."
    done
    if [[ -x "$EXCHANGE_TANSU_BIN" ]]; then
      log "tansu ready: $EXCHANGE_TANSU_BIN"
      return 0
    fi
    warn "the other cargo install finished but $EXCHANGE_TANSU_BIN is missing; building it here"
  fi
  command -v cargo >/dev/null 2>&1 || die "cargo not found; install Rust (https://rustup.rs) first"
  mkdir -p "$EXCHANGE_LOG_DIR"
  log "building tansu with cargo (10+ minutes the first time; log: $EXCHANGE_LOG_DIR/tansu-install.log)"
  if ! CARGO_TARGET_DIR="$EXCHANGE_TANSU_TARGET" cargo install tansu --version "$TANSU_VERSION" --features libsql --locked \
    --root "$EXCHANGE_TANSU_ROOT" >>"$EXCHANGE_LOG_DIR/tansu-install.log" 2>&1; then
    log_tail "$EXCHANGE_LOG_DIR/tansu-install.log"
    die "cargo install tansu failed"
  fi
  [[ -x "$EXCHANGE_TANSU_BIN" ]] || die "cargo install finished but $EXCHANGE_TANSU_BIN is missing"
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
