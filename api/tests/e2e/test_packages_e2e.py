"""Packages end to end: install through the API, execute, recycle, restart with
nothing left but the store, and execute again, through the real processes
(`bifrost init`, `bifrost api`, `bifrost worker`) over HTTP.
"""

from __future__ import annotations

import os
import shutil
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis

from src.foundation.hashing import sha256_hex
from tests.support.stack import Stack
from tests.support.wheels import build_wheel

PACKAGE = "bifrost-e2e-pkg"
VERSION = "1.0.0"
LINE = f"{PACKAGE}=={VERSION}"
EMPTY_HASH = sha256_hex("")

USES_PKG = """\
def main():
    import bifrost_e2e_pkg
    return bifrost_e2e_pkg.VERSION
"""

USES_PKG_SLOWLY = """\
import time


def main(seconds=0.0):
    time.sleep(seconds)
    import bifrost_e2e_pkg
    return bifrost_e2e_pkg.VERSION
"""

APPEND_TOKEN = """\
import time


def main(token, path, seconds=0.0):
    time.sleep(seconds)
    with open(path, "a") as f:
        f.write(token + "\\n")
    return token
"""

SLEEPER = """\
import time
from pathlib import Path


def main(marker, seconds):
    Path(marker).touch()
    time.sleep(seconds)
    return "done"
"""

StackFactory = Callable[..., Stack]


def _pool_of(worker_id: str) -> str:
    """`<host>-<pool pid>-w<slot>.<generation>` -> `<host>-<pool pid>`."""
    return worker_id.rsplit("-w", 1)[0]


def _stack_with_package_workflow(make_stack: StackFactory, **options: object) -> Stack:
    stack = make_stack(**options)
    build_wheel(stack.wheelhouse, PACKAGE, VERSION)
    stack.start()
    stack.upload("workflows/uses_pkg.py", USES_PKG)
    return stack


def _install(stack: Stack) -> str:
    """Install the package through the API; the new hash, once every worker is on it."""
    answer = stack.install(PACKAGE, VERSION)
    assert answer["changed"] is True, answer
    assert LINE in answer["content"].splitlines(), answer
    stack.wait_ready(answer["hash"])
    return str(answer["hash"])


def _assert_runs(stack: Stack) -> None:
    record = stack.execute("workflows.uses_pkg")
    assert (record["status"], record["result"]) == ("Success", VERSION), (
        f"{record}\n{stack.logs()}"
    )


def _assert_module_missing(stack: Stack) -> None:
    record = stack.execute("workflows.uses_pkg")
    assert record["status"] == "Failed", f"{record}\n{stack.logs()}"
    assert "ModuleNotFoundError" in (record["error"] or ""), f"{record}\n{stack.logs()}"


def test_install_then_execute(make_stack: StackFactory) -> None:
    stack = _stack_with_package_workflow(make_stack)
    _assert_module_missing(stack)

    started = time.monotonic()
    answer = stack.install(PACKAGE, VERSION)
    assert answer["changed"] is True, answer
    assert answer["hash"] == sha256_hex(answer["content"])
    assert answer["hash"] != EMPTY_HASH
    stack.wait_ready(answer["hash"])
    secs = time.monotonic() - started
    print(f"install-to-ready: {secs:.2f} s")

    _assert_runs(stack)
    listing = stack.client.get("/api/packages")
    assert listing.status_code == 200, listing.text
    assert LINE in listing.json()["requirements"], listing.json()


def test_recycle_all_loses_nothing(make_stack: StackFactory, exchange_dir: Path) -> None:
    stack = make_stack().start()
    stack.upload("workflows/append_token.py", APPEND_TOKEN)
    runs = exchange_dir / "runs.log"

    def lines() -> list[str]:
        return runs.read_text().split() if runs.exists() else []

    before = {w["worker_id"] for w in stack.wait_ready(EMPTY_HASH)["workers"]}
    ids = [stack.submit("workflows.append_token", params={
        "token": f"t{i}", "path": str(runs), "seconds": 0.2}) for i in range(20)]
    stack.wait(lambda: len(lines()) >= 2, 60, "some executions to run before the recycle")

    response = stack.client.post("/api/workers/recycle-all")
    assert response.status_code == 202, response.text
    assert response.json()["subscribers"] == 1, response.json()
    assert len(lines()) < 20, "the recycle came after every execution had ended"

    ids += [stack.submit("workflows.append_token", params={
        "token": f"t{i}", "path": str(runs)}) for i in range(20, 40)]
    records = [stack.wait_final(i, 90) for i in ids]
    failed = [r for r in records if r["status"] != "Success"]
    assert not failed, f"{failed}\n{stack.logs()}"
    assert [r["result"] for r in records] == [f"t{i}" for i in range(40)]
    assert sorted(lines()) == sorted(f"t{i}" for i in range(40))  # each exactly once

    def recycled() -> dict[str, Any] | None:
        fleet = stack.fleet()
        ids_now = {w["worker_id"] for w in fleet["workers"]}
        return fleet if stack.is_ready(fleet, EMPTY_HASH) and not ids_now & before else None

    after = stack.wait(recycled, 60, "every worker to be replaced and ready")
    assert len(after["workers"]) == 2, after


def test_full_restart_with_empty_packages_dir_and_flushed_redis(
    make_stack: StackFactory, redis_client: redis.Redis
) -> None:
    stack = _stack_with_package_workflow(make_stack)
    new_hash = _install(stack)
    _assert_runs(stack)

    stack.stop()
    assert stack.packages_dir.is_dir(), f"no packages dir at {stack.packages_dir}"
    shutil.rmtree(stack.packages_dir)
    redis_client.flushall()

    stack.start(init=True)  # init warms both caches from the store
    assert stack.current_hash() == new_hash
    stack.wait_ready(new_hash)
    _assert_runs(stack)


def test_uninstall_makes_the_import_fail_again(make_stack: StackFactory) -> None:
    stack = _stack_with_package_workflow(make_stack)
    _install(stack)
    _assert_runs(stack)

    response = stack.client.delete(f"/api/packages/{PACKAGE}")
    assert response.status_code == 200, response.text
    answer = response.json()
    assert LINE not in answer["content"].splitlines(), answer
    stack.wait_ready(answer["hash"])
    _assert_module_missing(stack)


def test_two_pools_both_recycle_and_report_the_new_hash(make_stack: StackFactory) -> None:
    stack = _stack_with_package_workflow(make_stack, pools=2, workers_per_pool=1)
    stack.upload("workflows/uses_pkg_slowly.py", USES_PKG_SLOWLY)
    before = stack.wait_ready(EMPTY_HASH)["workers"]
    assert len({_pool_of(w["worker_id"]) for w in before}) == 2, before

    new_hash = _install(stack)
    fleet = stack.wait_ready(new_hash)
    workers = fleet["workers"]
    assert len(workers) == 2, fleet
    assert {_pool_of(w["worker_id"]) for w in workers} == {_pool_of(w["worker_id"])
                                                           for w in before}
    assert not {w["worker_id"] for w in workers} & {w["worker_id"] for w in before}
    assert all(w["install"]["ok"] and not w["install"]["failed"] for w in workers), fleet

    # Work goes to whichever pool reads first: keep both busy until both answered.
    ran_on: set[str] = set()

    def both_pools_ran() -> bool:
        ids = [stack.submit("workflows.uses_pkg_slowly", params={"seconds": 0.3})
               for _ in range(4)]
        for execution_id in ids:
            record = stack.wait_final(execution_id)
            assert (record["status"], record["result"]) == ("Success", VERSION), (
                f"{record}\n{stack.logs()}"
            )
            ran_on.add(_pool_of(record["worker_id"]))
        return len(ran_on) == 2

    stack.wait(both_pools_ran, 60, "executions on both pools")


def test_worker_killed_mid_execution(make_stack: StackFactory, exchange_dir: Path) -> None:
    stack = make_stack().start()
    stack.upload("workflows/sleeper.py", SLEEPER)
    marker = exchange_dir / "started"

    victim = stack.submit("workflows.sleeper", params={"marker": str(marker), "seconds": 60})
    stack.wait(marker.exists, 60, "the execution to start")
    worker_id = stack.wait(lambda: stack.record(victim)["worker_id"], 10,
                           "the execution's worker id")

    def busy_worker() -> dict[str, Any] | None:
        # The pool publishes its state a moment after it hands the item out.
        return next((w for w in stack.fleet()["workers"]
                     if w["worker_id"] == worker_id and w["status"] == "busy"), None)

    busy = stack.wait(busy_worker, 10, f"GET /api/workers to show {worker_id} busy")
    assert busy["pid"], busy
    os.kill(busy["pid"], signal.SIGKILL)

    record = stack.wait_final(victim, 30)
    assert record["status"] == "Failed", f"{record}\n{stack.logs()}"
    assert record["error"], record
    assert worker_id in record["error"], record

    def replaced() -> dict[str, Any] | None:
        # The fleet is published a moment after the record: wait for the new state.
        fleet = stack.fleet()
        workers = fleet["workers"]
        if (
            stack.is_ready(fleet, EMPTY_HASH)
            and all(w["status"] == "idle" for w in workers)
            and busy["pid"] not in {w["pid"] for w in workers}
            and worker_id not in {w["worker_id"] for w in workers}
        ):
            return fleet
        return None

    stack.wait(replaced, 60, f"{worker_id} to be replaced by a new idle worker")

    after = stack.execute("workflows.sleeper", params={"marker": str(marker), "seconds": 0})
    assert (after["status"], after["result"]) == ("Success", "done"), f"{after}\n{stack.logs()}"


def test_old_environments_go_once_no_worker_uses_them(make_stack: StackFactory) -> None:
    stack = make_stack()
    for version in ("1.0", "2.0", "3.0"):
        build_wheel(stack.wheelhouse, "bifrost-e2e-gc", version)
    stack.start()
    hashes = []
    for version in ("1.0", "2.0", "3.0"):
        answer = stack.install("bifrost-e2e-gc", version)
        stack.wait_ready(answer["hash"])
        hashes.append(answer["hash"])
    envs = stack.packages_dir / ".envs"

    def kept() -> set[str] | None:
        names = {p.name.split(".")[0] for p in envs.iterdir() if not p.name.startswith(".")}
        return names if hashes[0] not in names else None

    # The first hash's environment goes once the workers using it retired; the
    # current one stays, and the one before it (for rollback).
    assert stack.wait(kept, 30, "the oldest environment to be collected") == set(hashes[1:])
