"""Faults with real processes: Redis down or restarted empty, pools and workers killed."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from src.foundation.local_redis import LocalRedis
from tests.support.exchange import CLIENT_SOURCE, Exchange
from tests.support.stack import Stack
from tests.support.wheels import build_sdist, build_wheel

ECHO = "def main(x):\n    return x\n"
# Touches `marker`, then holds its worker until the test creates `release`.
# `marker` and `release`: the test's exchange files (tests/support/exchange.py).
HELD = CLIENT_SOURCE + ("import time\n\n\ndef main(marker, release):\n"
                        "    exchange_touch(marker)\n"
                        "    deadline = time.monotonic() + 120\n"
                        "    while not exchange_exists(release) and time.monotonic() < deadline:\n"
                        "        time.sleep(0.01)\n"
                        "    return 'done'\n")


@pytest.fixture
def stacks(tmp_path: Path) -> Iterator[list[Stack]]:
    made: list[Stack] = []
    yield made
    for stack in made:
        stack.stop()


def _stack(stacks: list[Stack], root: Path, redis_url: str, **options: object) -> Stack:
    stack = Stack(root, redis_url, **options)  # type: ignore[arg-type]
    stacks.append(stack)
    return stack


def test_redis_restarted_empty_under_a_running_system(
    stacks: list[Stack], redis_server: LocalRedis, tmp_path: Path
) -> None:
    stack = _stack(stacks, tmp_path / "s", redis_server.url).start()
    stack.upload("workflows/echo.py", ECHO)
    assert stack.execute("workflows.echo", params={"x": 1})["result"] == 1
    before = {w["worker_id"] for w in stack.fleet()["workers"]}

    redis_server.stop()
    redis_server.start()  # same port, nothing in it: no stream, group, keys or index

    # Nothing was restarted: the API reconnects, the pool recreates its group,
    # the module cache comes back from the store, the registry on the next beat.
    record = stack.execute("workflows.echo", params={"x": 2}, timeout=60)
    assert (record["status"], record["result"]) == ("Success", 2), stack.logs()
    stack.wait(lambda: stack.fleet()["summary"]["total"] == 2, 60, "the pool to re-register")
    # The control channel was re-subscribed: a recycle still reaches the pool.
    # A broadcast nobody heard changes nothing, so it is sent until the pool
    # hears one (the answer says how many subscribers did); then it must act.
    stack.wait_subscribed()

    def heard() -> bool:
        answer = stack.client.post("/api/workers/recycle-all")
        assert answer.status_code == 202, answer.text
        return int(answer.json()["subscribers"]) >= 1

    stack.wait(heard, 60, "a recycle the pool hears")
    stack.wait(lambda: (ws := stack.fleet()["workers"]) and len(ws) == 2 and
               not {w["worker_id"] for w in ws} & before and
               all(w["status"] == "idle" for w in ws), 60, "the recycled workers")


def test_redis_down_when_a_worker_starts_it_installs_from_the_store(
    stacks: list[Stack], redis_server: LocalRedis, tmp_path: Path
) -> None:
    stack = _stack(stacks, tmp_path / "s", redis_server.url, workers_per_pool=1)
    build_wheel(stack.wheelhouse, "fault-pkg", "1.0.0")
    stack.start()
    answer = stack.install("fault-pkg", "1.0.0")
    stack.wait_ready(answer["hash"])
    for pool in stack.pool_processes:  # stop the pools, then take Redis away
        pool.send_signal(signal.SIGTERM)
        pool.wait(30)
    stack.pool_processes.clear()
    import shutil

    shutil.rmtree(stack.packages_dir)  # and start from an empty packages dir
    redis_server.stop()
    started = time.monotonic()
    stack.start_pools()
    log = stack.logs_dir / "pool-0.log"
    stack.wait(lambda: "Redis unavailable after 3 attempts" in log.read_text() and
               "Installed 1 packages from requirements.txt" in log.read_text() and
               "ready (install: 1 installed" in log.read_text(), 120,
               "the worker to install from the store and be ready")
    print(f"ready with Redis down: {time.monotonic() - started:.2f} s")
    redis_server.start()
    stack.wait_ready(answer["hash"], workers=1)


def test_a_pool_killed_with_executions_claimed_loses_none(
    stacks: list[Stack], redis_url: str, redis_client: object, tmp_path: Path,
    exchange: Exchange,
) -> None:
    stack = _stack(stacks, tmp_path / "s", redis_url, pools=2, workers_per_pool=1,
                   extra_env={"BIFROST_CLAIM_IDLE_SECONDS": "3"}).start()
    stack.upload("workflows/held.py", HELD)
    markers, release = exchange / "markers", exchange / "release"
    markers.mkdir()
    ids = [stack.submit("workflows.held", params={"marker": str(markers / f"m{i}"),
                                                  "release": str(release)})
           for i in range(6)]
    # Each execution holds its worker until the release, and a pool takes no
    # more than it has idle workers: two in hand are one on each pool.
    stack.wait(lambda: len(list(markers.iterdir())) >= 2, 60, "both pools to be busy")
    victim = stack.pool_processes[0]
    os.killpg(victim.pid, signal.SIGKILL)  # the pool and its worker, mid-execution
    victim.wait(30)
    stack.pool_processes.remove(victim)
    release.touch()
    records = [stack.wait_final(i, timeout=90) for i in ids]
    statuses = [r["status"] for r in records]
    assert all(s in ("Success", "Failed") for s in statuses), records
    failed = [r for r in records if r["status"] == "Failed"]
    assert len(failed) >= 1  # the one the dead pool was running
    assert all("PoolDied" in (r["error"] or "") or "WorkerDied" in (r["error"] or "")
               for r in failed), failed
    assert statuses.count("Success") == len(ids) - len(failed)


def test_a_package_that_cannot_build_among_good_ones(
    stacks: list[Stack], redis_url: str, redis_client: object, tmp_path: Path
) -> None:
    stack = _stack(stacks, tmp_path / "s", redis_url, workers_per_pool=1)
    build_wheel(stack.wheelhouse, "good-one", "1.0")
    build_sdist(stack.wheelhouse, "needs-gcc", "1.0", behaviour="fail")
    stack.start()
    content = "good-one==1.0\nneeds-gcc==1.0\n"
    put = stack.client.put("/api/requirements", json={"content": content})
    assert put.status_code == 200
    stack.wait_ready(put.json()["hash"])
    worker = stack.fleet()["workers"][0]
    assert worker["install"]["ok"] is False
    assert [f["package"] for f in worker["install"]["failed"]] == ["needs-gcc==1.0"]
    assert "needs a C compiler" in worker["install"]["failed"][0]["error"]
    stack.upload("workflows/good.py", "def main():\n    import good_one\n    return good_one.VERSION\n")
    stack.upload("workflows/bad.py", "def main():\n    import needs_gcc\n")
    assert stack.execute("workflows.good")["result"] == "1.0"
    bad = stack.execute("workflows.bad")
    assert bad["status"] == "Failed"
    assert "the requirement needs-gcc==1.0 failed to install" in bad["error"]
