"""Memory of workers and executions, on the real stack: `GET /api/workers`
shows each worker's resident memory (`rss_mb`), the running execution's
(`execution_rss_mb`) and the last one's peak (`last_execution_peak_rss_mb`);
an execution's record keeps its peak (`peak_rss_mb`); and a pool replaces a
worker over `BIFROST_WORKER_MAX_RSS_MB` after the item in hand, without
replacing its replacement over and over when the limit is too low."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from tests.support.exchange import CLIENT_SOURCE, Exchange
from tests.support.stack import Stack

# Touches `mb` MB (every page), then, with `hold`, keeps it while it waits to be cancelled.
BIG = """import time


def main(mb, hold=0):
    block = bytearray(mb * 2**20)
    for i in range(0, len(block), 4096):
        block[i] = 1
    time.sleep(hold)
    return len(block) // 2**20
"""
# With `release`: holds its worker until the test creates that file.
# `release`: the test's exchange file (tests/support/exchange.py).
HELD = CLIENT_SOURCE + """
import time


def main(release=None):
    deadline = time.monotonic() + 120
    while release and not exchange_exists(release) and time.monotonic() < deadline:
        time.sleep(0.01)
    return "done"
"""
LIMIT_MB = 10  # below what any fresh worker (a Python process and its template) holds


def only_worker(stack: Stack) -> dict[str, Any]:
    workers = [w for w in stack.fleet()["workers"] if not w.get("retiring")]
    assert len(workers) == 1, workers
    return workers[0]


def test_workers_show_their_memory_and_executions_their_peak(
        make_stack: Callable[..., Stack]) -> None:
    stack = make_stack(pools=1, workers_per_pool=1).start()
    stack.upload("workflows/big.py", BIG)
    worker = stack.wait(lambda: (w := only_worker(stack))["rss_mb"] and w, 60,
                        "the worker's resident memory in GET /api/workers")
    assert worker["rss_mb"] > 5, worker

    big = stack.execute("workflows.big", params={"mb": 150})
    assert big["status"] == "Success" and big["result"] == 150, big
    assert big["peak_rss_mb"] >= 150, big
    stack.wait(lambda: only_worker(stack)["last_execution_peak_rss_mb"] == big["peak_rss_mb"],
               60, "the worker to show its last execution's peak")

    # A fresh process per execution: the next one's peak is its own, not the worker's highest.
    small = stack.execute("workflows.big", params={"mb": 1})
    assert small["status"] == "Success" and small["peak_rss_mb"] is not None, small
    assert small["peak_rss_mb"] < 100, small
    stack.wait(lambda: only_worker(stack)["last_execution_peak_rss_mb"] == small["peak_rss_mb"],
               60, "the worker to show the small execution's peak")

    # While busy, the running execution's memory; a cancelled one still has its peak.
    held = stack.submit("workflows.big", params={"mb": 120, "hold": 300})
    busy = stack.wait(lambda: ((w := only_worker(stack))["status"] == "busy"
                               and (w.get("execution_rss_mb") or 0) >= 120 and w), 60,
                      "the worker to show its running execution's memory")
    assert busy["rss_mb"] < worker["rss_mb"] + 60, (busy, worker)  # the execution is apart
    assert stack.client.post(f"/api/executions/{held}/cancel").status_code == 202
    cancelled = stack.wait_final(held, 60)
    assert cancelled["status"] == "Failed" and cancelled["peak_rss_mb"] >= 120, cancelled
    idle = stack.wait(lambda: (w := only_worker(stack))["status"] == "idle" and w, 60,
                      "the worker to be idle again")
    assert idle["execution_rss_mb"] is None, idle


def test_a_worker_over_the_memory_limit_is_replaced_after_the_item_in_hand_once(
        make_stack: Callable[..., Stack], exchange: Exchange) -> None:
    stack = make_stack(pools=1, workers_per_pool=1,
                       extra_env={"BIFROST_WORKER_MAX_RSS_MB": str(LIMIT_MB)})
    stack.start(wait=False)  # the API answers; the pool is still starting
    stack.upload("workflows/held.py", HELD)
    # Queued before the worker is ready, and held until the test releases it:
    # it is in hand at the worker's first measurement, however long that takes.
    release = exchange / "release"
    execution_id = stack.submit("workflows.held", params={"release": str(release)})

    def retiring_while_busy() -> dict[str, Any] | None:
        workers = stack.fleet()["workers"]
        return next((w for w in workers if w.get("retiring") and w["status"] == "busy"), None)

    try:
        first = stack.wait(retiring_while_busy, 60, "the worker to be replaced while it is busy")
    finally:
        release.touch()
    record = stack.wait_final(execution_id, 60)
    assert record["status"] == "Success" and record["result"] == "done", record
    assert record["worker_id"] == first["worker_id"], (record, first)
    assert first["rss_mb"] > LIMIT_MB, first

    fleet = stack.wait_ready(stack.current_hash(), workers=1)
    second = only_worker(stack)
    assert second["worker_id"] != first["worker_id"], fleet
    log = stack.logs_dir / "pool-0.log"
    replacing = (re.escape(f"[{first['worker_id']}] resident memory ") + r"\d+"
                 + re.escape(f" MB is over BIFROST_WORKER_MAX_RSS_MB={LIMIT_MB}: "
                             "replacing it after the item in hand"))
    assert re.search(replacing, log.read_text()), stack.logs()

    # The replacement starts above the limit too: told once, not replaced again (for a minute).
    too_low = f"[{second['worker_id']}] resident memory"
    stack.wait(lambda: any(too_low in line and "right after its start" in line
                           for line in log.read_text().splitlines()), 60,
               "the warning that the limit is below a fresh worker")
    assert only_worker(stack)["worker_id"] == second["worker_id"]
    assert log.read_text().count("replacing it after the item in hand") == 1, stack.logs()
    assert stack.execute("workflows.held")["worker_id"] == second["worker_id"]
