"""Load through the real stack: concurrent installs, and executions across a recycle."""

from __future__ import annotations

from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import httpx

from tests.e2e.test_packages_e2e import StackFactory
from tests.support.exchange import CLIENT_SOURCE, Exchange
from tests.support.wheels import build_wheel

# `log`: the test's exchange file (tests/support/exchange.py).
MARK = CLIENT_SOURCE + ("def main(token, log):\n"
                        "    exchange_append(log, token + '\\n')\n"
                        "    return token\n")


def test_fifty_concurrent_installs_over_http_keep_all_fifty(make_stack: StackFactory) -> None:
    stack = make_stack(pools=0)
    for i in range(50):  # every write resolves its lock: the index has them all
        build_wheel(stack.wheelhouse, f"load-pkg-{i}", "1.0")
    stack.start(wait=False)
    base, headers = str(stack.client.base_url), dict(stack.client.headers)

    def install(i: int) -> int:
        # The writers take turns, each resolving its lock: the last answer comes
        # ~17 s in on an idle two-core machine, several times that on a busy one.
        with httpx.Client(base_url=base, headers=headers, timeout=300) as client:
            return client.post("/api/packages/install",
                               json={"package": f"load-pkg-{i}", "version": "1.0"}).status_code

    with ThreadPoolExecutor(max_workers=50) as pool:
        statuses = list(pool.map(install, range(50)))
    assert statuses == [200] * 50
    lines = stack.client.get("/api/requirements").json()["content"].splitlines()
    assert sorted(lines) == sorted(f"load-pkg-{i}==1.0" for i in range(50))


def test_five_hundred_executions_over_two_pools_with_a_recycle_run_once_each(
    make_stack: StackFactory, exchange: Exchange
) -> None:
    stack = make_stack(pools=2, workers_per_pool=2).start()
    stack.upload("workflows/mark.py", MARK)
    log = exchange / "runs.log"
    ids: list[str] = []
    before: set[str] = set()
    for i in range(500):
        ids.append(stack.submit("workflows.mark", params={"token": f"t{i}", "log": str(log)}))
        if i == 250:
            # The old workers have run something before they are replaced, on
            # any machine (submitting may outpace a slow pool).
            stack.wait(lambda: log.exists() and log.read_text().strip(), 60,
                       "an execution to run before the recycle")
            before = {w["worker_id"] for w in stack.fleet()["workers"]}
            assert stack.client.post("/api/workers/recycle-all").status_code == 202
    records = [stack.wait_final(i, timeout=120) for i in ids]
    assert Counter(r["status"] for r in records) == {"Success": 500}
    runs = Counter(log.read_text().split())
    assert len(runs) == 500 and set(runs.values()) == {1}  # each exactly once
    # The recycle replaced the workers: executions ran on the old ones and on new ones.
    ran_on = {r["worker_id"] for r in records}
    assert ran_on & before and ran_on - before, (sorted(ran_on), sorted(before))
