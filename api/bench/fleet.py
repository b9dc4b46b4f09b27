"""Fleet benchmark: a simulated fleet of hosts cold-starting on one lock,
every host from the index (each with a cache of its own: the behaviour
before a fleet cache was shared) against one fetch per fleet through object
storage; then a new host joining with the index stopped.

Run from `api/`:

    ../.venv/bin/python -m bench.fleet [--hosts 8] [--runs 3] [--keep]

Everything lives in one temp dir (deleted at the end unless --keep): a
private redis-server (LocalRedis, free port), a SQLite store, an S3 server
(moto's, over HTTP, free port) and a package index over HTTP (a PEP 503
simple index of a wheelhouse, `tests/support/package_index.py`) that counts
each file's downloads and the bytes it served. The wheelhouse is filled once
from the real index with pandas, numpy and what they need, and kept in
`~/.cache/bifrost-bench/fleet-wheelhouse` for the next run.

Each host is a real pool (`bifrost worker --workers 1`) with a packages dir,
a uv and pip cache, a data dir and a `BIFROST_HOST_NAME` of its own.
For each mode and run, N new hosts start on empty requirements; once they
are ready, requirements.txt becomes `pandas` and `numpy` through the real
write path (locked against the local index once; every pool recycles), and
the run is timed from that change until every host is ready on it, cold:

* index: each host's fleet cache is a directory of its own (`file://`), so
  every host fetches every file from the index;
* fleet: every host's fleet cache is one bucket (`s3://`, a new one per run).

It prints, per mode: index downloads per file (the goal of the fleet mode:
exactly 1 per file), bytes the index served, and change -> all N ready (p50
and max over the runs). Then a new host joins, with the index stopped, on
the last fleet run's bucket: its start -> ready (goal: <= 3 s), and an
execution on it that imports pandas.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

API_DIR = Path(__file__).resolve().parents[1]
WHEELHOUSE = Path.home() / ".cache" / "bifrost-bench" / "fleet-wheelhouse"
REQUIREMENTS = "pandas\nnumpy\n"
READY_TIMEOUT = 600.0
JOIN_GOAL_SECONDS = 3.0


def fill_wheelhouse() -> Path:
    """pandas, numpy and their dependencies, from the real index, once; at
    the versions of the platform's own where it has them (installs keep the
    platform's versions as constraints)."""
    done = WHEELHOUSE / ".filled"
    if done.is_file():
        return WHEELHOUSE
    WHEELHOUSE.mkdir(parents=True, exist_ok=True)
    print(f"Filling {WHEELHOUSE} from the package index (once)...", flush=True)
    frozen = subprocess.run([sys.executable, "-m", "pip", "freeze", "--exclude-editable"],
                            check=True, capture_output=True, text=True).stdout
    constraints = WHEELHOUSE / ".platform-constraints.txt"
    constraints.write_text(frozen)
    subprocess.run([sys.executable, "-m", "pip", "download", "--only-binary=:all:",
                    "--constraint", str(constraints), "--dest", str(WHEELHOUSE),
                    "pandas", "numpy"], check=True, stdout=subprocess.DEVNULL)
    done.touch()
    return WHEELHOUSE


class Fleet:
    """The shared services of the simulated fleet, and its hosts."""

    def __init__(self, root: Path, index: Any, redis_url: str, store_url: str) -> None:
        self.root, self.index = root, index
        self.base = {"REDIS_URL": redis_url, "DATABASE_URL": store_url, **index.env(),
                     "PYTHONUNBUFFERED": "1"}
        self.pools: list[subprocess.Popen[bytes]] = []

    def host_env(self, name: str, cache: dict[str, str]) -> dict[str, str]:
        home = self.root / "hosts" / name
        return {**os.environ, **self.base, **cache, "BIFROST_HOST_NAME": name,
                "BIFROST_DATA_DIR": str(home / "data"), "UV_CACHE_DIR": str(home / "uv"),
                "PIP_CACHE_DIR": str(home / "pip"), "BIFROST_WORKERS": "1"}

    def start(self, name: str, cache: dict[str, str]) -> None:
        log = open(self.root / f"{name}.log", "ab")  # noqa: SIM115  # closed with the process
        self.pools.append(subprocess.Popen(
            [sys.executable, "-m", "src.cli", "worker", "--workers", "1"], cwd=API_DIR,
            env=self.host_env(name, cache), stdout=log, stderr=log, start_new_session=True))

    def stop_all(self) -> None:
        for pool in self.pools:
            if pool.poll() is None:
                pool.send_signal(signal.SIGTERM)
        for pool in self.pools:
            try:
                pool.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(pool.pid, signal.SIGKILL)
                pool.wait()
        self.pools = []


def ready_hosts(client: Any, hosts: set[str], requirements_hash: str) -> list[dict[str, Any]]:
    from src.services.execution import registry

    return [w for pool in registry.list_pools(client) for w in pool["workers"]
            if w["host"] in hosts and w["status"] == "idle" and w["install"]
            and w["install"]["requirements_hash"] == requirements_hash]


def wait_ready(client: Any, hosts: set[str], requirements_hash: str) -> list[dict[str, Any]]:
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        ready = ready_hosts(client, hosts, requirements_hash)
        if len(ready) == len(hosts):
            return ready
        time.sleep(0.05)
    raise SystemExit(f"hosts {sorted(hosts)} not all ready within {READY_TIMEOUT:g} s")


def run_mode(fleet: Fleet, client: Any, mode: str, run: int, hosts: int,
             requirements_hash: str) -> dict[str, Any]:
    """N new hosts ready on empty requirements, then the change to pandas and
    numpy (the real write path, which recycles every pool), timed until every
    host is ready on it."""
    from src.foundation.hashing import sha256_hex
    from src.services import packages
    from tests.support.s3 import new_bucket

    packages.put_requirements("")
    names = {f"{mode}-{run}-host-{i}" for i in range(hosts)}
    bucket = new_bucket() if mode == "fleet" else None
    for name in sorted(names):
        cache = bucket.env() if bucket else {
            "BIFROST_WHEEL_CACHE": (fleet.root / "hosts" / name / "cache").as_uri()}
        fleet.start(name, cache)
    wait_ready(client, names, sha256_hex(""))
    fleet.index.downloads.clear()
    fleet.index.bytes_served = 0
    started = time.monotonic()
    packages.put_requirements(REQUIREMENTS)
    ready = wait_ready(client, names, requirements_hash)
    took = time.monotonic() - started
    fleet.stop_all()
    failed = [w["install"] for w in ready if not w["install"]["ok"]]
    if failed:
        raise SystemExit(f"an install failed: {failed[0]}")
    return {"seconds": took, "downloads": dict(fleet.index.downloads),
            "bytes": fleet.index.bytes_served, "bucket": bucket}


def join_with_the_index_stopped(fleet: Fleet, client: Any, bucket: Any,
                                requirements_hash: str) -> tuple[float, Any]:
    from src.core import module_cache
    from src.services.execution import executions

    fleet.index.stop()
    started = time.monotonic()
    fleet.start("joining-host", bucket.env())
    [worker] = wait_ready(client, {"joining-host"}, requirements_hash)
    took = time.monotonic() - started
    module_cache.save_file_sync("bench/uses_pandas.py",
                                "def main():\n    import numpy, pandas\n"
                                "    return [pandas.__version__, int(numpy.arange(4).sum())]\n")
    execution_id = executions.enqueue_execution("bench.uses_pandas", "main", {}, client)
    deadline = time.monotonic() + 120
    record: Any = None
    while time.monotonic() < deadline:
        record = executions.get_execution(execution_id, client)
        if record and record["status"] in executions.FINAL_STATUSES:
            break
        time.sleep(0.05)
    fleet.stop_all()
    print(f"  its install: {worker['install'].get('files_from')}, "
          f"{worker['install']['duration_ms']:.0f} ms")
    return took, record


def report(mode: str, runs: list[dict[str, Any]], hosts: int) -> None:
    times = [run["seconds"] for run in runs]
    per_file: dict[str, list[int]] = {}
    for run in runs:
        for name, count in run["downloads"].items():
            per_file.setdefault(name, []).append(count)
    print(f"\n{mode}: {hosts} hosts cold, {len(runs)} runs")
    print(f"  change -> all {hosts} ready: p50 {statistics.median(times):.1f} s, "
          f"max {max(times):.1f} s")
    print(f"  bytes served by the index per run: "
          f"{statistics.median([run['bytes'] for run in runs]) / 1e6:.1f} MB")
    print("  index downloads per file per run (median):")
    for name in sorted(per_file):
        print(f"    {statistics.median(per_file[name]):>4g}  {name}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hosts", type=int, default=8)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()

    import redis

    from src.foundation.local_redis import LocalRedis
    from src.foundation.settings import get_settings
    from src.store.migrate import upgrade_to_head
    from tests.support.package_index import PackageIndex

    root = Path(tempfile.mkdtemp(prefix="bifrost-fleet-bench-"))
    server = LocalRedis(root / "redis").start(timeout=60)
    index = PackageIndex(fill_wheelhouse()).start()
    try:
        store_url = f"sqlite:///{root / 'bifrost.db'}"
        upgrade_to_head(store_url)
        fleet = Fleet(root, index, server.url, store_url)
        os.environ.update({**fleet.base, "BIFROST_DATA_DIR": str(root / "api-data")})
        get_settings.cache_clear()
        from src.services import packages

        requirements_hash = packages.put_requirements(REQUIREMENTS)["hash"]  # locked once
        client = redis.from_url(server.url, decode_responses=True)
        results: dict[str, list[dict[str, Any]]] = {"index": [], "fleet": []}
        for run in range(1, args.runs + 1):
            for mode in ("index", "fleet"):  # side by side, run after run
                results[mode].append(run_mode(fleet, client, mode, run, args.hosts,
                                              requirements_hash))
                print(f"run {run} {mode}: {results[mode][-1]['seconds']:.1f} s", flush=True)
        for mode in ("index", "fleet"):
            report(mode, results[mode], args.hosts)
        fleet_counts = [count for run in results["fleet"] for count in run["downloads"].values()]
        print(f"\nfleet mode: {'OK' if set(fleet_counts) == {1} else 'MISSED'} "
              f"(every file from the index exactly once per fleet)")
        print("\na new host joins, the index stopped:")
        took, record = join_with_the_index_stopped(fleet, client, results["fleet"][-1]["bucket"],
                                                   requirements_hash)
        verdict = "OK" if took <= JOIN_GOAL_SECONDS else "MISSED"
        print(f"  start -> ready: {took:.2f} s (goal <= {JOIN_GOAL_SECONDS:g} s: {verdict})")
        print(f"  an execution importing pandas: {record and record['status']} "
              f"{record and (record['result'] or record['error'])}")
        return 0
    finally:
        index.stop()
        server.stop()
        if args.keep:
            print(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
