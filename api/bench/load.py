"""Load benchmark: execution round trips over HTTP, the worker loop with a fork per
execution against the long-lived loop it replaced, and requirement changes to a
ready fleet.

Run from `api/`:

    ../.venv/bin/python -m bench.load [--keep] [--profile]

Everything lives in one temp dir (deleted at the end, also on Ctrl-C or an
error, unless --keep, which keeps the processes' logs in `<tmp>/logs/`): a
private redis-server (LocalRedis, free port), a SQLite store file, `bifrost
init`, then `bifrost api` (free port, BIFROST_ADMIN_TOKEN set) and ONE pool
`bifrost worker --workers 2` (BIFROST_WORKERS=2), started as real processes by
tests/support/stack.py; installs come from a local wheelhouse (PIP_FIND_LINKS,
PIP_NO_INDEX=1) with UV_CACHE_DIR, PIP_CACHE_DIR and TMPDIR in the temp dir.
All traffic goes to 127.0.0.1.

What it measures:

1. Execution round trip over HTTP with 2 workers, as the real pool runs them
   (each execution in a child forked by its worker's execution template): the
   workspace module `workflows/echo.py` (`def main(x): return x`), 20 warm-up
   executions, then 500 executions with 8 in flight at all times (8 threads,
   one httpx client each): POST /api/executions, then GET
   /api/executions/{id} every 5 ms until the status is final. Round trip =
   from the POST sent to the final status seen. p50, p90, p99, max (ms),
   throughput over the whole batch, the count of non-Success (target 0), where
   the time went (from the execution records' timestamps in Redis: API
   accepted -> pool wrote the final status -> seen), and the CPU each
   component used (the worker processes descend from the pool's forkserver;
   their reaped execution processes are counted apart).
1b. The same batch, side by side, against the baseline: the pools are
   replaced by one whose workers run each execution in the worker itself, the
   former in-process loop (bench/_inline_pool.py), re-run here the way the
   phase-4 spec's install function is the baseline for install work; same API,
   Redis and host, then the real pool comes back. Throughput and round trip
   p50/p99 of each, and the ratio fork / in-process against the target of at
   least 60% (OK / FAIL; it does not change the exit code).
2. The worker loop alone, side by side in the same run (bench/_loops.py): 2
   worker-like processes at once (spawned; each starts up as a worker does,
   then starts its execution template), each running the same echo items
   through the former loop body (`execute_item`, `json.dumps`,
   `result_queue.put`) and the current one (the template forks a child per
   execution); 20 warm-up items of each, then 300 timed items of each per
   process, in blocks of 25 in the order A B B A ..., both processes in the
   same block at once, so noise and drift fall on both alike. Executions/s
   and per-item latency of each body, and their ratio: what a process per
   execution costs by itself, with no HTTP and no pool around it. With
   --profile, where that time goes, step by step, and a bare fork + exit +
   reap (the floor of any fork).
3. Floors, in the same run: a direct in-process call of the same function,
   one SET+GET against the same Redis from this process (the floor the ratio
   is taken against), and GET /health (one HTTP request to the same API).
4. Requirement change to every worker ready: wheels `load-pkg==1.0.0` and
   `2.0.0`; POST /api/packages/install 1.0.0, then 2.0.0 (an upgrade), then
   DELETE /api/packages/load-pkg; each timed from the request sent until GET
   /api/workers (polled every 20 ms) shows summary.ready == summary.total == 2
   on summary.current_hash == the hash the change answered. Three rounds, so
   every change moves the fleet to a hash other than the one it is on; median
   and max of each. After each change one execution per worker checks the
   version the workers import (outside the timing).
5. A summary block with these figures.

Exits 0 when every execution (over HTTP and in the worker loops) succeeded and
every change reached a ready fleet; 1 otherwise.

httpx is imported where it is used: the worker-like processes of 2. are
spawned and import this module as `__mp_main__`, and must not carry it (the
cost of a fork grows with the size of the process forked).
"""

from __future__ import annotations

import itertools
import shutil
import signal
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

from bench import _load_cpu, _loops

if TYPE_CHECKING:
    import httpx

WORKERS = 2
CONCURRENCY = 8
WARMUP = 20
EXECUTIONS = 500
EXECUTION_POLL_SECONDS = 0.005
FLEET_POLL_SECONDS = 0.02
EXECUTION_TIMEOUT = 60.0  # one execution's round trip may take at most this long
CHANGE_TIMEOUT = 180.0  # one requirements change may take at most this long to be ready
CHANGE_ROUNDS = 3
FLOOR_SAMPLES = 500
HEALTH_SAMPLES = 200
TOKEN = "bench-load-admin-token-7c2e41"
PACKAGE = "load-pkg"
VERSIONS = ("1.0.0", "2.0.0")
FINAL = frozenset({"Success", "Failed", "Timeout"})
# Fork per execution must keep this share of the in-process loop's HTTP throughput.
HTTP_TARGET = 0.60

ECHO_MODULE = "workflows.echo"
ECHO_SOURCE = "def main(x):\n    return x\n"
VERSION_MODULE = "workflows.load_version"
VERSION_SOURCE = (
    "import os\n\n\n"
    "def main():\n"
    "    try:\n"
    "        import load_pkg\n"
    "    except ModuleNotFoundError:\n"
    "        return [os.getpid(), None]\n"
    "    return [os.getpid(), load_pkg.VERSION]\n"
)


# --- statistics --------------------------------------------------------------------


def percentile(values: list[float], fraction: float) -> float:
    """Nearest-rank percentile (p99 of 500 values is the 495th smallest)."""
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * fraction // 1))  # ceil without float surprises
    return ordered[int(rank) - 1]


def spread(values: list[float]) -> str:
    """p50 / p90 / p99 / max, in ms (values are ms)."""
    return (f"p50 {percentile(values, 0.5):7.1f}  p90 {percentile(values, 0.9):7.1f}  "
            f"p99 {percentile(values, 0.99):7.1f}  max {max(values):7.1f} ms")


# --- the stack ---------------------------------------------------------------------


def start_stack(root: Path, redis_url: str) -> Any:
    """init, the API, one pool of WORKERS processes; waits until they are ready."""
    from tests.support.stack import Stack

    tmp = root / "tmp"
    tmp.mkdir()
    stack = Stack(
        root, redis_url, pools=1, workers_per_pool=WORKERS, token=TOKEN,
        extra_env={
            "BIFROST_WORKERS": str(WORKERS),
            "UV_CACHE_DIR": str(root / "uv-cache"),
            "PIP_CACHE_DIR": str(root / "pip-cache"),
            "TMPDIR": str(tmp),
        },
    )
    build_wheels(stack.wheelhouse)
    try:
        stack.start()
    except BaseException:
        stack.stop()
        raise
    return stack


def build_wheels(wheelhouse: Path) -> None:
    from tests.support.wheels import build_wheel

    for version in VERSIONS:
        build_wheel(wheelhouse, PACKAGE, version)


def api_client(stack: Any) -> httpx.Client:
    import httpx

    return httpx.Client(base_url=f"http://127.0.0.1:{stack.port}",
                        headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30)


# --- 1. execution round trips -------------------------------------------------------


@dataclass
class Sample:
    """One execution as the client saw it (perf_counter and wall-clock times)."""

    index: int
    sent: float = 0.0
    sent_wall: float = 0.0
    posted: float = 0.0  # POST answered
    seen: float = 0.0  # final status seen
    execution_id: str | None = None
    status: str = "NotSent"
    error: str | None = None
    worker_id: str | None = None
    polls: int = 0

    @property
    def round_trip_ms(self) -> float:
        return (self.seen - self.sent) * 1000

    @property
    def post_ms(self) -> float:
        return (self.posted - self.sent) * 1000


def run_one(client: httpx.Client, index: int) -> Sample:
    """POST one execution, then poll every 5 ms until its status is final."""
    import httpx

    sample = Sample(index)
    body = {"module": ECHO_MODULE, "function": "main", "parameters": {"x": index}}
    sample.sent_wall, sample.sent = time.time(), time.perf_counter()
    try:
        response = client.post("/api/executions", json=body)
        sample.posted = time.perf_counter()
        if response.status_code != 202:
            sample.status, sample.error = "PostRefused", f"{response.status_code} {response.text}"
            return sample
        sample.execution_id = str(response.json()["id"])
        deadline = sample.sent + EXECUTION_TIMEOUT
        while True:
            time.sleep(EXECUTION_POLL_SECONDS)
            record = client.get(f"/api/executions/{sample.execution_id}").json()
            sample.polls += 1
            if record["status"] in FINAL:
                sample.seen = time.perf_counter()
                sample.status, sample.error = record["status"], record["error"]
                sample.worker_id = record["worker_id"]
                if sample.status == "Success" and record["result"] != index:
                    sample.status, sample.error = "WrongResult", repr(record["result"])
                return sample
            if time.perf_counter() > deadline:
                sample.status, sample.error = "Lost", f"still {record['status']} after timeout"
                return sample
    except httpx.HTTPError as exc:
        sample.status, sample.error = "HttpError", repr(exc)
        return sample


@dataclass
class Batch:
    samples: list[Sample]
    seconds: float  # first POST sent to last final status seen
    cpu: dict[str, float] = field(default_factory=dict)  # CPU seconds per component

    @property
    def ok(self) -> list[Sample]:
        return [s for s in self.samples if s.status == "Success"]

    @property
    def failures(self) -> list[Sample]:
        return [s for s in self.samples if s.status != "Success"]

    @property
    def throughput(self) -> float:
        return len(self.samples) / self.seconds if self.seconds else 0.0

    @property
    def round_trips_ms(self) -> list[float]:
        return [s.round_trip_ms for s in self.ok] or [float("nan")]


def components(stack: Any, redis_pid: int) -> dict[str, list[int]]:
    """The stack's processes, by role. The pool's worker processes descend from
    its forkserver (a child of the pool), not from the pool itself."""
    import os

    pool = stack.pool_processes[0].pid
    return {
        "API (uvicorn)": [stack.api.pid, *_load_cpu.children(stack.api.pid)],
        "pool manager": [pool],
        "worker processes": descendants(pool),
        "redis-server": [redis_pid],
        "this benchmark (client)": [os.getpid()],
    }


def descendants(pid: int) -> list[int]:
    found, todo = [], [pid]
    while todo:
        for child in _load_cpu.children(todo.pop()):
            found.append(child)
            todo.append(child)
    return found


def describe_pool_workers(stack: Any) -> str:
    """Size of the stack's own worker processes (children of the pool's
    forkserver), to set beside the worker-like processes of the loop comparison."""
    pool = stack.pool_processes[0].pid
    facts = []
    for server in _load_cpu.children(pool):
        for pid in _load_cpu.children(server):
            try:
                status = Path(f"/proc/{pid}/status").read_text().splitlines()
                fds = len(list(Path(f"/proc/{pid}/fd").iterdir()))
            except OSError:
                continue
            sizes = {line.split(":")[0]: int(line.split()[1]) / 1024 for line in status
                     if line.startswith(("VmRSS:", "VmSize:"))}
            facts.append(f"pid {pid}: RSS {sizes.get('VmRSS', 0):.1f} MB, VmSize "
                         f"{sizes.get('VmSize', 0):.0f} MB, {fds} fds")
    return "the stack's own pool workers, for scale: " + ("; ".join(facts) or "none found")


def reaped_cpu_seconds(pids: list[int]) -> dict[int, float]:
    """cutime + cstime of each process: the CPU of the children it has reaped
    (a worker's execution processes, forked and reaped one per execution)."""
    seconds = {}
    for pid in pids:
        fields = _load_cpu._stat(pid)
        if fields is not None:
            seconds[pid] = (int(fields[13]) + int(fields[14])) / _load_cpu.TICKS
    return seconds


def run_batch(stack: Any, count: int, concurrency: int, stop: threading.Event,
              redis_pid: int) -> Batch:
    """`count` executions, `concurrency` in flight: each thread runs one at a time."""
    counter = itertools.count()
    lock = threading.Lock()
    samples: list[Sample] = []

    def loop() -> None:
        with api_client(stack) as client:
            while not stop.is_set():
                with lock:
                    index = next(counter)
                if index >= count:
                    return
                sample = run_one(client, index)
                with lock:
                    samples.append(sample)

    threads = [threading.Thread(target=loop, daemon=True) for _ in range(concurrency)]
    groups = components(stack, redis_pid)
    cpu_before, host_before = _load_cpu.snapshot(groups), _load_cpu.host_busy_seconds()
    reaped_before = reaped_cpu_seconds(groups["worker processes"])
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        while thread.is_alive():  # a timed join stays interruptible by Ctrl-C
            thread.join(0.2)
    seconds = time.perf_counter() - started
    cpu = _load_cpu.used(cpu_before, _load_cpu.snapshot(groups))
    reaped_after = reaped_cpu_seconds(groups["worker processes"])
    reaped = sum(seconds - reaped_before.get(pid, seconds)
                 for pid, seconds in reaped_after.items())
    cpu = dict(itertools.chain.from_iterable(
        [(name, seconds), ("  their executions", reaped)]
        if name == "worker processes" else [(name, seconds)]
        for name, seconds in cpu.items()))
    cpu["other processes on the host"] = max(
        0.0, _load_cpu.host_busy_seconds() - host_before - sum(cpu.values()))
    samples.sort(key=lambda s: s.index)
    return Batch(samples, seconds, cpu)


@dataclass
class Breakdown:
    """Per execution (ms): POST sent -> record created by the API (`accepted`),
    -> final status written by the pool (`queued_and_run`), -> seen (`seen_lag`)."""

    accepted: list[float]
    queued_and_run: list[float]
    seen_lag: list[float]
    worker_ms: list[float]  # the worker's own duration_ms


def breakdown(redis_url: str, batch: Batch) -> Breakdown:
    """Read each record's created_at/updated_at (wall clock, same host) from Redis."""
    import json

    import redis

    from src.services.execution.executions import record_key

    done = [s for s in batch.ok if s.execution_id]
    client = redis.from_url(redis_url, decode_responses=True)
    try:
        raws: Any = client.mget([record_key(str(s.execution_id)) for s in done])
    finally:
        client.close()
    result = Breakdown([], [], [], [])
    for sample, raw in zip(done, raws, strict=True):
        if raw is None:
            continue
        record = json.loads(raw)
        seen_wall = sample.sent_wall + (sample.seen - sample.sent)
        result.accepted.append((record["created_at"] - sample.sent_wall) * 1000)
        result.queued_and_run.append((record["updated_at"] - record["created_at"]) * 1000)
        result.seen_lag.append((seen_wall - record["updated_at"]) * 1000)
        result.worker_ms.append(float(record.get("duration_ms") or 0))
    return result


# --- 2. floors ----------------------------------------------------------------------


def time_calls(call: Callable[[], object], samples: int, warmup: int = 20) -> list[float]:
    """Each call's time in ms."""
    for _ in range(warmup):
        call()
    times = []
    for _ in range(samples):
        started = time.perf_counter()
        call()
        times.append((time.perf_counter() - started) * 1000)
    return times


def direct_call_ms() -> list[float]:
    """The workflow function called in this process (no platform at all)."""
    namespace: dict[str, Any] = {}
    exec(compile(ECHO_SOURCE, "workflows/echo.py", "exec"), namespace)
    main = namespace["main"]
    return time_calls(lambda: main(1), EXECUTIONS)


def redis_set_get_ms(redis_url: str) -> list[float]:
    """One SET then one GET (two round trips) against the stack's Redis."""
    import redis

    client = redis.from_url(redis_url)
    try:
        def set_get() -> object:
            client.set("bench:load:floor", "x")
            return client.get("bench:load:floor")

        return time_calls(set_get, FLOOR_SAMPLES)
    finally:
        client.delete("bench:load:floor")
        client.close()


def health_ms(stack: Any) -> list[float]:
    """GET /health: one HTTP request to the same API, no Redis, no token."""
    with api_client(stack) as client:
        return time_calls(lambda: client.get("/health").raise_for_status(), HEALTH_SAMPLES)


# --- 3. requirements change -> every worker ready ---------------------------------------


@dataclass
class Change:
    label: str
    round: int
    ms: float = 0.0  # request sent -> fleet ready on the new hash
    request_ms: float = 0.0  # the request alone (persist, cache, recycle)
    polls: int = 0
    new_hash: str = ""
    outcomes: list[dict[str, Any]] = field(default_factory=list)
    versions: list[Any] = field(default_factory=list)
    error: str | None = None
    # From the fleet's own timestamps (wall clock, same host), ms after the request:
    spawned_ms: float = 0.0  # the last new worker process started by the pool
    ready_ms: float = 0.0  # the last new worker reported ready to its pool
    startup_ms: list[float] = field(default_factory=list)  # per worker: started -> ready


def measure_change(stack: Any, client: httpx.Client, label: str, round_: int,
                   request: Callable[[httpx.Client], httpx.Response]) -> Change:
    change = Change(label, round_)
    sent_wall, started = time.time(), time.perf_counter()
    response = request(client)
    change.request_ms = (time.perf_counter() - started) * 1000
    if response.status_code != 200:
        change.error = f"{response.status_code} {response.text}"
        return change
    change.new_hash = str(response.json()["hash"])
    deadline = started + CHANGE_TIMEOUT
    while True:
        fleet = client.get("/api/workers").json()
        change.polls += 1
        summary = fleet["summary"]
        if (summary["ready"] == summary["total"] == WORKERS
                and summary["current_hash"] == change.new_hash):
            change.ms = (time.perf_counter() - started) * 1000
            change.outcomes = [w["install"] or {} for w in fleet["workers"]]
            workers = fleet["workers"]
            change.spawned_ms = (max(w["started_at"] for w in workers) - sent_wall) * 1000
            change.ready_ms = (max(w["ready_at"] or 0 for w in workers) - sent_wall) * 1000
            change.startup_ms = [((w["ready_at"] or 0) - w["started_at"]) * 1000
                                 for w in workers]
            return change
        if time.perf_counter() > deadline:
            change.error = f"not ready after {CHANGE_TIMEOUT:g} s: {summary}"
            return change
        time.sleep(FLEET_POLL_SECONDS)


def check_versions(stack: Any, change: Change, stop: threading.Event) -> None:
    """One execution per worker (two at once, the pool gives one to each idle
    worker): which load_pkg version each imports (None when absent)."""
    results: list[Any] = []

    def one() -> None:
        with api_client(stack) as client:
            response = client.post("/api/executions", json={
                "module": VERSION_MODULE, "function": "main", "parameters": {}})
            execution_id = response.json()["id"]
            deadline = time.perf_counter() + EXECUTION_TIMEOUT
            while time.perf_counter() < deadline and not stop.is_set():
                record = client.get(f"/api/executions/{execution_id}").json()
                if record["status"] in FINAL:
                    results.append(record["result"] if record["status"] == "Success"
                                   else f"{record['status']}: {record['error']}")
                    return
                time.sleep(EXECUTION_POLL_SECONDS)
            results.append("no final status")

    threads = [threading.Thread(target=one, daemon=True) for _ in range(WORKERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        while thread.is_alive():
            thread.join(0.2)
    change.versions = results


def measure_changes(stack: Any, stop: threading.Event) -> list[Change]:
    def install(version: str) -> Callable[[httpx.Client], httpx.Response]:
        return lambda c: c.post("/api/packages/install",
                                json={"package": PACKAGE, "version": version})

    steps: list[tuple[str, Callable[[httpx.Client], httpx.Response]]] = [
        (f"install {VERSIONS[0]}", install(VERSIONS[0])),
        (f"upgrade to {VERSIONS[1]}", install(VERSIONS[1])),
        ("uninstall", lambda c: c.delete(f"/api/packages/{PACKAGE}")),
    ]
    changes = []
    with api_client(stack) as client:
        for round_ in range(1, CHANGE_ROUNDS + 1):
            for label, request in steps:
                if stop.is_set():
                    return changes
                change = measure_change(stack, client, label, round_, request)
                changes.append(change)
                if change.error is None:
                    check_versions(stack, change, stop)
                print(f"  round {round_}: {describe_change(change)}", flush=True)
                if change.error is not None:
                    return changes
    return changes


def describe_outcome(outcome: dict[str, Any]) -> str:
    if not outcome:
        return "?"
    what = "reused" if outcome.get("skipped") else f"built {len(outcome.get('installed', []))}"
    failed = f", {len(outcome['failed'])} failed" if outcome.get("failed") else ""
    return f"{what}{failed} {outcome.get('duration_ms')} ms"


def describe_change(change: Change) -> str:
    if change.error is not None:
        return f"{change.label:16} FAILED: {change.error}"
    workers = "; ".join(describe_outcome(o) for o in change.outcomes)
    versions = ", ".join(str(v[1]) if isinstance(v, list) else str(v) for v in change.versions)
    startups = ", ".join(f"{ms:.0f}" for ms in change.startup_ms)
    return (f"{change.label:16} ready in {change.ms:7.1f} ms (request {change.request_ms:5.1f} "
            f"ms; new workers spawned by +{change.spawned_ms:.0f} ms, all ready by "
            f"+{change.ready_ms:.0f} ms, seen +{change.ms:.0f} ms; per worker start->ready "
            f"{startups} ms, of which install: {workers}; "
            f"load_pkg seen: {versions}; hash {change.new_hash[:10]})")


def expected_version(label: str) -> str | None:
    return next((v for v in VERSIONS if v in label), None)


def versions_right(change: Change) -> bool:
    want = expected_version(change.label)
    return len(change.versions) == WORKERS and all(
        isinstance(v, list) and v[1] == want for v in change.versions)


# --- report --------------------------------------------------------------------------


def log_problems(stack: Any) -> list[str]:
    """WARNING/ERROR/Traceback lines in the processes' logs, counted per file."""
    lines = []
    for path in sorted(stack.logs_dir.glob("*.log")):
        text = path.read_text(errors="replace").splitlines()
        bad = [line for line in text
               if " WARNING " in line or " ERROR " in line or "Traceback" in line]
        if bad:
            lines.append(f"{path.name}: {len(bad)} warning/error lines, last: {bad[-1][:160]}")
    return lines


def print_batch(batch: Batch, parts: Breakdown) -> None:
    trips = [s.round_trip_ms for s in batch.ok]
    polls = [s.polls for s in batch.ok]
    requests = len(batch.samples) + sum(s.polls for s in batch.samples)
    print(f"\n1. Execution round trip over HTTP: {EXECUTIONS} executions, {CONCURRENCY} in "
          f"flight, {WORKERS} workers, polled every {EXECUTION_POLL_SECONDS * 1000:g} ms")
    if trips:
        print(f"    round trip                      {spread(trips)}")
        print(f"    POST /api/executions alone      {spread([s.post_ms for s in batch.ok])}")
        print(f"    sent -> record created (API)    {spread(parts.accepted)}")
        print(f"    created -> final written (pool) {spread(parts.queued_and_run)}")
        print(f"    final written -> seen (polling) {spread(parts.seen_lag)}")
        print(f"    worker's own duration_ms        {spread(parts.worker_ms)}")
        print(f"    polls per execution: mean {statistics.fmean(polls):.1f}, max {max(polls)}; "
              f"API requests: {requests} in {batch.seconds:.2f} s "
              f"({requests / batch.seconds:.0f}/s)")
    print(f"    throughput {len(batch.samples) / batch.seconds:.1f} executions/s "
          f"({len(batch.samples)} in {batch.seconds:.2f} s)")
    import os

    cpus = os.cpu_count() or 1
    print(f"    CPU used during the batch ({cpus} CPUs x {batch.seconds:.2f} s = "
          f"{cpus * batch.seconds:.2f} CPU-s available):")
    for name, seconds in batch.cpu.items():
        print(f"      {name:26} {seconds:6.2f} CPU-s  ({seconds / batch.seconds * 100:5.1f}% "
              f"of one CPU)")
    total = sum(batch.cpu.values())
    print(f"      {'host total':26} {total:6.2f} CPU-s  "
          f"({total / (cpus * batch.seconds) * 100:5.1f}% of the host)")
    per_worker = Counter(s.worker_id for s in batch.ok)
    print("    per worker: " + ", ".join(f"{w}: {n}" for w, n in sorted(per_worker.items())))
    print(f"    non-Success: {len(batch.failures)} (target 0) "
          f"{'OK' if not batch.failures else 'MISSED'}")
    for status, count in Counter(s.status for s in batch.failures).items():
        example = next(s for s in batch.failures if s.status == status)
        print(f"      {status}: {count}, e.g. #{example.index} {example.execution_id}: "
              f"{str(example.error)[:200]}")


def print_floors(batch: Batch, direct: list[float], floor: list[float],
                 health: list[float]) -> None:
    p50 = percentile([s.round_trip_ms for s in batch.ok], 0.5) if batch.ok else float("nan")
    floor_p50 = percentile(floor, 0.5)
    print("\n3. Floors (same run, same host)")
    print(f"    direct in-process call          p50 {percentile(direct, 0.5) * 1000:7.2f} us "
          f"(max {max(direct) * 1000:.1f} us, {len(direct)} calls)")
    print(f"    Redis SET+GET from this process {spread(floor)}")
    print(f"    GET /health (HTTP only)         {spread(health)}")
    print(f"    round trip p50 / Redis floor p50 = {p50:.1f} / {floor_p50:.3f} = "
          f"{p50 / floor_p50:.0f}x")


def change_stats(changes: list[Change]) -> dict[str, list[float]]:
    by_label: dict[str, list[float]] = {}
    for change in changes:
        if change.error is None:
            by_label.setdefault(change.label, []).append(change.ms)
    return by_label


def print_changes(changes: list[Change]) -> None:
    print(f"\n4. Requirements change -> {WORKERS} workers ready on the new hash "
          f"(GET /api/workers every {FLEET_POLL_SECONDS * 1000:g} ms), {CHANGE_ROUNDS} rounds")
    for label, values in change_stats(changes).items():
        runs = ", ".join(f"{v:.0f}" for v in values)
        print(f"    {label:16} median {statistics.median(values):7.1f} ms  "
              f"max {max(values):7.1f} ms  (runs: {runs})")
    wrong = [c for c in changes if c.error is None and not versions_right(c)]
    for change in wrong:
        print(f"    WRONG VERSION after round {change.round} {change.label}: {change.versions}")
    failed = [c for c in changes if c.error is not None]
    for change in failed:
        print(f"    FAILED round {change.round} {change.label}: {change.error}")


def print_summary(batch: Batch, baseline: Batch, loops: _loops.Comparison, floor: list[float],
                  changes: list[Change], problems: list[str]) -> bool:
    trips = [s.round_trip_ms for s in batch.ok] or [float("nan")]
    complete = len(changes) == 3 * CHANGE_ROUNDS and all(c.error is None for c in changes)
    versions_ok = all(versions_right(c) for c in changes if c.error is None)
    print("\n===== Summary =====")
    print(f"HTTP executions ({EXECUTIONS}, {CONCURRENCY} in flight, {WORKERS} workers, "
          "fork per execution): "
          f"p50 {percentile(trips, 0.5):.1f}  p90 {percentile(trips, 0.9):.1f}  "
          f"p99 {percentile(trips, 0.99):.1f}  max {max(trips):.1f} ms; "
          f"{len(batch.samples) / batch.seconds:.1f} executions/s")
    print(f"non-Success: {len(batch.failures)} (target 0) "
          f"{'OK' if not batch.failures else 'MISSED'}")
    ratio = batch.throughput / baseline.throughput if baseline.throughput else 0.0
    print(f"same batch, former in-process loop: {baseline.throughput:.1f} executions/s, "
          f"p50 {percentile(baseline.round_trips_ms, 0.5):.1f}  "
          f"p99 {percentile(baseline.round_trips_ms, 0.99):.1f} ms; fork / in-process = "
          f"{ratio:.0%} (target >= {HTTP_TARGET:.0%}) {'OK' if ratio >= HTTP_TARGET else 'FAIL'}")
    for line in _loops.summary_lines(loops):
        print(line)
    floor_p50 = percentile(floor, 0.5)
    print(f"Redis SET+GET floor p50 {floor_p50:.3f} ms; round trip p50 / floor = "
          f"{percentile(trips, 0.5) / floor_p50:.0f}x")
    for label, values in change_stats(changes).items():
        print(f"{label + ' -> ready:':28} median {statistics.median(values):7.1f} ms, "
              f"max {max(values):7.1f} ms")
    print(f"changes completed: {sum(c.error is None for c in changes)} of "
          f"{3 * CHANGE_ROUNDS}; versions seen right: {'yes' if versions_ok else 'NO'}")
    print("log warnings/errors: " + ("none" if not problems else f"{len(problems)} file(s)"))
    for line in problems:
        print(f"    {line}")
    return not batch.failures and loops.ok and complete and versions_ok


# --- main -----------------------------------------------------------------------------


def run_inline_baseline(stack: Any, stop: threading.Event, redis_pid: int) -> Batch:
    """The same batch against a pool running the former in-process loop
    (`bench/_inline_pool.py`), on the same API and Redis; then the real pool
    is back for what follows."""
    stack.stop_pools()
    stack.start_pools("bench._inline_pool")
    stack.wait_ready(stack.current_hash())
    run_batch(stack, WARMUP, CONCURRENCY, stop, redis_pid)
    baseline = run_batch(stack, EXECUTIONS, CONCURRENCY, stop, redis_pid)
    stack.stop_pools()
    stack.start_pools()
    stack.wait_ready(stack.current_hash())
    return baseline


def print_baseline(batch: Batch, baseline: Batch) -> None:
    ratio = batch.throughput / baseline.throughput if baseline.throughput else 0.0
    verdict = "OK" if ratio >= HTTP_TARGET else "FAIL"
    print("\n1b. The same batch, side by side: fork per execution against the former "
          "in-process loop (bench/_inline_pool.py), same API, Redis and host")
    for label, run in (("fork per execution", batch), ("in-process loop", baseline)):
        times = run.round_trips_ms
        print(f"    {label:<20} {run.throughput:6.1f} executions/s; round trip "
              f"p50 {percentile(times, 0.5):6.1f}  p99 {percentile(times, 0.99):6.1f} ms; "
              f"non-Success {len(run.samples) - len(run.ok)}")
    print(f"    fork / in-process throughput = {ratio:.0%} (target >= {HTTP_TARGET:.0%}) "
          f"{verdict}")


# What the operator's scrape shows after the run (GET /metrics, the fleet's
# numbers from Redis): the lines of these families, HTTP by route left out.
METRICS_EXCERPT = ("bifrost_executions_total", "bifrost_execution_duration_seconds_count",
                   "bifrost_execution_duration_seconds_sum", "bifrost_execution_stream_",
                   "bifrost_workers", "bifrost_environment_", "bifrost_store_fallbacks_total",
                   "bifrost_package_install_failures_total", "bifrost_metrics_redis_up")


def print_metrics_excerpt(stack: Any) -> None:
    response = stack.client.get("/metrics")
    print(f"\nGET /metrics after the run ({response.status_code}), an excerpt:")
    for line in response.text.splitlines():
        if line.startswith(METRICS_EXCERPT) and not line.startswith("#"):
            print(f"  {line}")


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str]) -> int:
    from bench.startup import host_load, source_state
    from src.foundation.local_redis import LocalRedis

    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even if inherited ignored
    keep = "--keep" in argv
    profile = "--profile" in argv
    root = Path(tempfile.mkdtemp(prefix="bifrost-bench-load-"))
    server = LocalRedis(root / "redis")
    stack: Any = None
    stop = threading.Event()
    ok = False
    try:
        server.start()
        started = time.perf_counter()
        stack = start_stack(root, server.url)
        print(f"Setup: Redis {server.url}; API 127.0.0.1:{stack.port}; 1 pool of {WORKERS} "
              f"workers, ready {time.perf_counter() - started:.1f} s after init began; "
              f"Python {sys.version.split()[0]}; src at {source_state()}; {host_load()}",
              flush=True)
        stack.upload("workflows/echo.py", ECHO_SOURCE)
        stack.upload("workflows/load_version.py", VERSION_SOURCE)

        redis_pid = server.process.pid if server.process else 0
        warmup = run_batch(stack, WARMUP, CONCURRENCY, stop, redis_pid)
        print(f"  warm-up: {len(warmup.ok)} of {WARMUP} succeeded in {warmup.seconds:.2f} s",
              flush=True)
        batch = run_batch(stack, EXECUTIONS, CONCURRENCY, stop, redis_pid)
        print(f"  batch: {len(batch.ok)} of {EXECUTIONS} succeeded in {batch.seconds:.2f} s "
              f"({host_load()})", flush=True)
        parts = breakdown(server.url, batch)
        baseline = run_inline_baseline(stack, stop, redis_pid)
        print(f"  baseline batch (in-process loop): {len(baseline.ok)} of {EXECUTIONS} "
              f"succeeded in {baseline.seconds:.2f} s", flush=True)
        print(f"  worker loop comparison ({_loops.WORKERS} worker-like processes):", flush=True)
        loops = _loops.compare(_loops.stack_env(stack.env()), stack.logs_dir,
                               profile_items=_loops.PROFILE_ITEMS if profile else 0)
        pool_workers = describe_pool_workers(stack)
        for line in _loops.summary_lines(loops):
            print(f"    {line}", flush=True)
        direct, floor, health = direct_call_ms(), redis_set_get_ms(server.url), health_ms(stack)

        print("  requirement changes:", flush=True)
        changes = measure_changes(stack, stop)

        print_batch(batch, parts)
        print_baseline(batch, baseline)
        _loops.print_comparison(loops, profile, pool_workers)
        print_floors(batch, direct, floor, health)
        print_changes(changes)
        ok = print_summary(batch, baseline, loops, floor, changes, log_problems(stack))
        print_metrics_excerpt(stack)
        print(f"(done; {host_load()})")
    except KeyboardInterrupt:
        print("\nInterrupted; stopping everything", file=sys.stderr)
    finally:
        stop.set()
        if stack is not None:
            stack.stop()
        server.stop()
        if keep:
            print(f"(kept {root}; process logs in {root / 'logs'})")
        else:
            shutil.rmtree(root, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
