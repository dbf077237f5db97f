#!/usr/bin/env bash
# The whole test suite, against the real services: brings the stack up if needed,
# checks formatting and lints, runs every Rust test (unit, property, integration
# against MariaDB/Redis/Kafka), then the stack scripts' own test.
# Idempotent; exits non-zero on the first failure.
set -euo pipefail

# shellcheck source-path=SCRIPTDIR source=env.sh
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$EXCHANGE_REPO_ROOT"
: "${CARGO_TARGET_DIR:=$EXCHANGE_CACHE_DIR/target}"
export CARGO_TARGET_DIR

step() { printf '\n==> %s\n' "$*" >&2; }

step "service stack"
scripts/stack.sh start

step "dropping test databases left by interrupted runs"
for ((i = 0; i < EXCHANGE_SHARDS; i++)); do
  port=$((EXCHANGE_MYSQL_BASE_PORT + i))
  mysql=(mariadb --no-defaults --protocol=tcp -h127.0.0.1 -P"$port" -u"$EXCHANGE_MYSQL_USER" -p"$EXCHANGE_MYSQL_PASSWORD" -N -B)
  for db in $("${mysql[@]}" -e "SELECT schema_name FROM information_schema.schemata WHERE schema_name LIKE 't\\_%'"); do
    "${mysql[@]}" -e "DROP DATABASE \`$db\`"
  done
done

if command -v rustup >/dev/null 2>&1; then
  cargo fmt --version >/dev/null 2>&1 || rustup component add rustfmt
  cargo clippy --version >/dev/null 2>&1 || rustup component add clippy
fi

step "cargo fmt --check"
cargo fmt --all -- --check

step "dependency rule (scripts/check-deps.py)"
python3 scripts/check-deps.py

step "cargo clippy --all-targets -- -D warnings"
cargo clippy --workspace --all-targets --quiet -- -D warnings

step "cargo test (unit, property and integration tests against the real services)"
cargo test --workspace

step "stack scripts test (own data dir and ports)"
scripts/test-stack.sh
