#!/usr/bin/env bash
# The engine alone: scripts/engine.sh start|stop|status (see scripts/services.sh).
exec "$(dirname "${BASH_SOURCE[0]}")/services.sh" "${1:-}" engine
