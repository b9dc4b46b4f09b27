#!/usr/bin/env bash
# tools/with-busy-cores.sh [-n N] COMMAND [ARGS...]: run COMMAND while N busy
# loops (default: one per core) keep every core of the machine at 100%, then
# stop them. For checking that a verdict does not depend on the machine's
# speed, e.g. `tools/with-busy-cores.sh ./test.sh`. Exit status: COMMAND's.
set -euo pipefail
spinners=$(nproc)
if [ "${1:-}" = "-n" ]; then
    spinners=$2
    shift 2
fi
if [ $# -eq 0 ]; then
    echo "usage: $0 [-n N] COMMAND [ARGS...]" >&2
    exit 2
fi
pids=()
stop_spinners() {
    if [ ${#pids[@]} -gt 0 ]; then
        kill "${pids[@]}" 2>/dev/null || true
        wait "${pids[@]}" 2>/dev/null || true
    fi
}
trap stop_spinners EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
for _ in $(seq "$spinners"); do
    python3 -c 'while True: pass' &
    pids+=($!)
done
echo "with-busy-cores: $spinners busy loop(s) running (pids ${pids[*]})" >&2
set +e
"$@"
status=$?
set -e
exit $status
