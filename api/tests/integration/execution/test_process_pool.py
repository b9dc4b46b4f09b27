"""The pool manager with real worker processes, a real Redis and a real store."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
import redis

from src.core import metrics_store
from src.services.execution import executions, registry
from src.services.execution.control import publish_recycle
from tests.support.exchange import Exchange
from tests.support.pools import running_pool
from tests.support.waiting import wait_for

WF = "tests.support.sample_workflows"


@pytest.fixture
def pool_env(sqlite_system: str, redis_url: str, isolated_settings: Path) -> dict[str, str]:
    return {"REDIS_URL": redis_url, "DATABASE_URL": sqlite_system,
            "BIFROST_DATA_DIR": str(isolated_settings)}


def _workers(client: redis.Redis) -> list[registry.WorkerState]:
    return [w for pool in registry.list_pools(client) for w in pool["workers"]]


def _all_idle(client: redis.Redis, count: int) -> list[registry.WorkerState] | None:
    workers = _workers(client)
    if len(workers) == count and all(w["status"] == "idle" for w in workers):
        return workers
    return None


def _final(client: redis.Redis, execution_id: str) -> executions.ExecutionRecord | None:
    record = executions.get_execution(execution_id, client)
    return record if record and record["status"] in executions.FINAL_STATUSES else None


def test_executions_run_and_results_come_back(
    pool_env: dict[str, str], redis_client: redis.Redis, tmp_path: Path
) -> None:
    with running_pool(pool_env, workers=2, log_path=tmp_path / "pool.log"):
        wait_for(lambda: _all_idle(redis_client, 2), 60, what="2 idle workers")
        ids = [executions.enqueue_execution(WF, "add", {"a": i, "b": 1}, redis_client)
               for i in range(10)]
        ids.append(executions.enqueue_execution(WF, "boom", {}, redis_client))
        records = [wait_for(lambda i=i: _final(redis_client, i), 60, what=f"execution {i}")
                   for i in ids]
    assert [r["result"] for r in records[:10]] == [i + 1 for i in range(10)]
    assert all(r["status"] == "Success" for r in records[:10])
    assert records[10]["status"] == "Failed" and records[10]["error"] == "ValueError: boom"
    assert redis_client.xlen(executions.STREAM_KEY) == 0  # acknowledged and deleted
    assert registry.list_pools(redis_client) == []  # a stopped pool deregisters
    # `add` takes well under a millisecond: kept to the microsecond, it still
    # has a duration, and each one counts in the fleet's histogram.
    took = [r["duration_ms"] for r in records]
    assert all(isinstance(ms, float) and ms > 0 for ms in took), took
    histogram = redis_client.hgetall(metrics_store.histogram_key(metrics_store.EXECUTION_DURATION))
    total = float(histogram[metrics_store.histogram_field({}, "sum")])  # type: ignore[index]
    assert total == pytest.approx(sum(took) / 1000, rel=1e-6, abs=1e-9)



def _runs(log: Path) -> list[str]:
    return log.read_text().split() if log.exists() else []


def test_recycle_loses_nothing_and_runs_nothing_twice(
    pool_env: dict[str, str], redis_client: redis.Redis, tmp_path: Path, exchange: Exchange
) -> None:
    log = exchange / "runs.log"
    with running_pool(pool_env, workers=2, log_path=tmp_path / "pool.log"):
        before = wait_for(lambda: _all_idle(redis_client, 2), 60, what="2 idle workers")
        ids = [executions.enqueue_execution(WF, "mark", {"token": f"t{i}", "log": str(log),
                                                          "seconds": 0.05}, redis_client)
               for i in range(40)]
        wait_for(lambda: len(_runs(log)) >= 5, 60, what="some runs before the recycle")
        # The pool subscribes to the control channel on a thread of its own:
        # idle workers do not prove it listens yet. A broadcast nobody heard
        # changes nothing, so asking again until one is heard is safe.
        wait_for(lambda: publish_recycle("test", redis_client) == 1, 30,
                 what="the pool to hear the recycle")
        ids += [executions.enqueue_execution(WF, "mark", {"token": f"t{i}", "log": str(log)},
                                             redis_client) for i in range(40, 60)]
        records = [wait_for(lambda i=i: _final(redis_client, i), 120, what=f"execution {i}")
                   for i in ids]
        after = wait_for(lambda: _all_idle(redis_client, 2), 60, what="2 new idle workers")
    assert all(r["status"] == "Success" for r in records), [r for r in records
                                                            if r["status"] != "Success"]
    assert sorted(_runs(log)) == sorted(f"t{i}" for i in range(60))  # each exactly once
    assert not {w["worker_id"] for w in before} & {w["worker_id"] for w in after}


def test_a_worker_killed_mid_execution_fails_it_and_is_replaced(
    pool_env: dict[str, str], redis_client: redis.Redis, tmp_path: Path, exchange: Exchange
) -> None:
    started = exchange / "started"
    with running_pool(pool_env, workers=1, log_path=tmp_path / "pool.log"):
        wait_for(lambda: _all_idle(redis_client, 1), 60, what="an idle worker")
        victim = executions.enqueue_execution(
            WF, "slow", {"seconds": 300, "marker": str(started)}, redis_client)
        wait_for(started.exists, 60, what="the execution to start")
        worker_pid = _workers(redis_client)[0]["pid"]
        assert worker_pid is not None
        os.kill(worker_pid, signal.SIGKILL)
        record = wait_for(lambda: _final(redis_client, victim), 60, what="the victim's end")
        assert record["status"] == "Failed"
        assert "WorkerDied" in (record["error"] or "")
        next_one = executions.enqueue_execution(WF, "add", {"a": 1, "b": 2}, redis_client)
        done = wait_for(lambda: _final(redis_client, next_one), 60, what="the next execution")
        assert (done["status"], done["result"]) == ("Success", 3)
        assert _workers(redis_client)[0]["pid"] != worker_pid


def test_an_execution_past_the_timeout_is_killed_and_marked(
    pool_env: dict[str, str], redis_client: redis.Redis, tmp_path: Path
) -> None:
    # Long enough for the quick one after it to finish within it on a busy
    # machine too (the timeout applies to every execution of the pool).
    env = {**pool_env, "BIFROST_EXECUTION_TIMEOUT": "5"}
    with running_pool(env, workers=1, log_path=tmp_path / "pool.log"):
        wait_for(lambda: _all_idle(redis_client, 1), 60, what="an idle worker")
        slow = executions.enqueue_execution(WF, "slow", {"seconds": 300}, redis_client)
        record = wait_for(lambda: _final(redis_client, slow), 60, what="the timeout")
        assert record["status"] == "Timeout"
        quick = executions.enqueue_execution(WF, "add", {"a": 2, "b": 2}, redis_client)
        assert wait_for(lambda: _final(redis_client, quick), 60)["result"] == 4


def test_two_pools_on_one_redis_both_recycle(
    pool_env: dict[str, str], redis_client: redis.Redis, tmp_path: Path
) -> None:
    with running_pool(pool_env, 1, tmp_path / "a.log"), running_pool(pool_env, 1, tmp_path / "b.log"):
        before = wait_for(lambda: _all_idle(redis_client, 2), 60, what="both pools ready")
        assert len(registry.list_pools(redis_client)) == 2
        wait_for(lambda: publish_recycle("test", redis_client) == 2, 30,
                 what="both pools subscribed")
        after = wait_for(
            lambda: (ws := _all_idle(redis_client, 2))
            and not {w["worker_id"] for w in ws} & {w["worker_id"] for w in before} and ws,
            60, what="both pools recycled",
        )
    assert len({w["worker_id"].rsplit("-w", 1)[0] for w in after}) == 2
