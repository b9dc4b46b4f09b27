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
from typing import Any

import redis

from src.foundation.hashing import sha256_hex
from tests.support.exchange import CLIENT_SOURCE, Exchange
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

# Holds its worker (touching `started`) until the test creates `release`;
# both are the test's exchange files (tests/support/exchange.py), as are the
# `path`, `started`, `release` and `marker` of the workflows below.
USES_PKG_HELD = CLIENT_SOURCE + """
import time


def main(started, release):
    exchange_touch(started)
    deadline = time.monotonic() + 120
    while not exchange_exists(release) and time.monotonic() < deadline:
        time.sleep(0.01)
    import bifrost_e2e_pkg
    return bifrost_e2e_pkg.VERSION
"""

# With `started` and `release`: held in hand (as above) before it appends.
APPEND_TOKEN = CLIENT_SOURCE + """
import time


def main(token, path, started=None, release=None):
    if started:
        exchange_touch(started)
    deadline = time.monotonic() + 120
    while release and not exchange_exists(release) and time.monotonic() < deadline:
        time.sleep(0.01)
    exchange_append(path, token + "\\n")
    return token
"""

SLEEPER = CLIENT_SOURCE + """
import time


def main(marker, seconds):
    exchange_touch(marker)
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


def test_recycle_all_loses_nothing(make_stack: StackFactory, exchange: Exchange) -> None:
    stack = make_stack().start()
    stack.upload("workflows/append_token.py", APPEND_TOKEN)
    runs, started, release = (exchange / name for name in ("runs.log", "started", "release"))
    started.mkdir()

    def lines() -> list[str]:
        return runs.read_text().split() if runs.exists() else []

    before = {w["worker_id"] for w in stack.wait_ready(EMPTY_HASH)["workers"]}
    # The first twenty are held until the recycle has been asked: it comes
    # while both workers have one in hand and the rest wait, on any machine.
    ids = [stack.submit("workflows.append_token", params={
        "token": f"t{i}", "path": str(runs), "started": str(started / f"t{i}"),
        "release": str(release)}) for i in range(20)]
    stack.wait(lambda: len(list(started.iterdir())) >= 2, 60,
               "both workers to have an execution in hand")

    response = stack.client.post("/api/workers/recycle-all")
    assert response.status_code == 202, response.text
    assert response.json()["subscribers"] == 1, response.json()
    assert lines() == [], "an execution ran past its hold"
    release.touch()

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


def test_two_pools_both_recycle_and_report_the_new_hash(
    make_stack: StackFactory, exchange: Exchange
) -> None:
    stack = _stack_with_package_workflow(make_stack, pools=2, workers_per_pool=1)
    stack.upload("workflows/uses_pkg_held.py", USES_PKG_HELD)
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

    # Work goes to whichever pool reads first, and a pool takes no more than it
    # has idle workers: two executions held in hand at once are one per pool.
    started, release = exchange / "started", exchange / "release"
    started.mkdir()
    ids = [stack.submit("workflows.uses_pkg_held", params={
        "started": str(started / f"e{i}"), "release": str(release)}) for i in range(2)]
    stack.wait(lambda: len(list(started.iterdir())) == 2, 60, "both executions in hand")
    release.touch()
    records = [stack.wait_final(execution_id) for execution_id in ids]
    for record in records:
        assert (record["status"], record["result"]) == ("Success", VERSION), (
            f"{record}\n{stack.logs()}"
        )
    assert {_pool_of(r["worker_id"]) for r in records} == {_pool_of(w["worker_id"])
                                                          for w in workers}


def test_worker_killed_mid_execution(make_stack: StackFactory, exchange: Exchange) -> None:
    stack = make_stack().start()
    stack.upload("workflows/sleeper.py", SLEEPER)
    marker = exchange / "started"

    victim = stack.submit("workflows.sleeper", params={"marker": str(marker), "seconds": 300})
    stack.wait(marker.exists, 60, "the execution to start")
    worker_id = stack.wait(lambda: stack.record(victim)["worker_id"], 60,
                           "the execution's worker id")

    def busy_worker() -> dict[str, Any] | None:
        # The pool publishes its state a moment after it hands the item out.
        return next((w for w in stack.fleet()["workers"]
                     if w["worker_id"] == worker_id and w["status"] == "busy"), None)

    busy = stack.wait(busy_worker, 60, f"GET /api/workers to show {worker_id} busy")
    assert busy["pid"], busy
    os.kill(busy["pid"], signal.SIGKILL)

    record = stack.wait_final(victim, 60)
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
    assert stack.wait(kept, 60, "the oldest environment to be collected") == set(hashes[1:])
