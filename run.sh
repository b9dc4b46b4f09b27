#!/usr/bin/env bash
# ./run.sh: set up .venv, then `bifrost up` in the foreground: init, the API on
# 127.0.0.1:${BIFROST_PORT:-8000} and a pool of ${BIFROST_WORKERS:-2} worker
# processes (plus a private Redis when none is reachable). Ctrl-C stops it all.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=tools/venv.sh
source "$root/tools/venv.sh"
ensure_venv "$root" ""
export BIFROST_DATA_DIR="${BIFROST_DATA_DIR:-$root/.bifrost}"
exec "$root/.venv/bin/bifrost" up
