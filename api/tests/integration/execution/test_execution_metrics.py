"""Executions' ends in the fleet's metrics, on the run's real Redis: counted
with the acknowledgement of their stream entry (one round trip), by the status
that was recorded, exactly once even when Redis was down at the end; ends
that never reach a worker (a pool that died, a cancel before the start)
are counted too."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import redis

from src.core import metrics_store
from src.foundation.settings import get_settings
from src.services.execution import executions
from src.services.execution.stream_consumer import StreamConsumer
from tests.support.waiting import wait_for

WF = "tests.support.sample_workflows"


@pytest.fixture(autouse=True)
def nothing_pending() -> Iterator[None]:
    metrics_store.forget_pending()
    yield
    metrics_store.forget_pending()


def consumer(name: str, claim_idle: float = 30.0) -> StreamConsumer:
    settings = get_settings().model_copy(update={"claim_idle_seconds": claim_idle})
    return StreamConsumer(name, settings, on_redis_down=lambda _exc: None)


def read_one(client: redis.Redis, stream: StreamConsumer) -> tuple[str, str]:
    execution_id = executions.enqueue_execution(WF, "add", {"a": 1, "b": 1}, client)
    stream.read(1, block_ms=10)
    taken = stream.take()
    assert taken is not None and taken[1]["id"] == execution_id
    return taken[0], execution_id


def ended(status: str, result: Any = 1, duration_ms: float = 1500) -> dict[str, Any]:
    return {"status": status, "result": result, "error": None, "worker_id": "w-test",
            "duration_ms": duration_ms, "notes": []}


def counts(client: redis.Redis) -> dict[str, int]:
    raw = client.hgetall(metrics_store.counter_key(metrics_store.EXECUTIONS))
    return {str(field): int(value) for field, value in raw.items()}  # type: ignore[union-attr]


def durations(client: redis.Redis) -> dict[str, float]:
    raw = client.hgetall(metrics_store.histogram_key(metrics_store.EXECUTION_DURATION))
    return {str(field): float(value) for field, value in raw.items()}  # type: ignore[union-attr]


def status_field(status: str) -> str:
    return metrics_store.labels_field({"status": status})


def test_an_end_is_counted_by_status_with_its_duration(redis_client: redis.Redis) -> None:
    stream = consumer("pool-a")
    for status in ("Success", "Success", "Timeout"):
        entry_id, execution_id = read_one(redis_client, stream)
        stream.record_outcome(execution_id, entry_id, ended(status))

    assert counts(redis_client) == {status_field("Success"): 2, status_field("Timeout"): 1}
    assert durations(redis_client) == {
        metrics_store.histogram_field({}, "2.5"): 3,  # 1.5 s each
        metrics_store.histogram_field({}, "sum"): 4.5,
    }


def test_a_sub_millisecond_end_counts_in_the_sum(redis_client: redis.Redis) -> None:
    stream = consumer("pool-a")
    entry_id, execution_id = read_one(redis_client, stream)
    stream.record_outcome(execution_id, entry_id, ended("Success", duration_ms=0.2))

    record = executions.get_execution(execution_id, redis_client)
    assert record is not None and record["duration_ms"] == 0.2
    assert durations(redis_client) == {
        metrics_store.histogram_field({}, "0.001"): 1,  # the smallest bucket
        metrics_store.histogram_field({}, "sum"): pytest.approx(0.0002),
    }


def test_what_is_counted_is_the_status_that_was_recorded(redis_client: redis.Redis) -> None:
    stream = consumer("pool-a")
    entry_id, execution_id = read_one(redis_client, stream)
    stream.record_outcome(execution_id, entry_id, ended("Success", result=object()))  # not JSON

    record = executions.get_execution(execution_id, redis_client)
    assert record is not None and record["status"] == "Failed"
    assert counts(redis_client) == {status_field("Failed"): 1}


def test_an_end_saved_after_an_outage_is_counted_once(
    redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    stream = consumer("pool-a")
    entry_id, execution_id = read_one(redis_client, stream)
    real_ack = stream.ack
    attempts: list[str] = []

    def ack_while_down(entry: str, counted: Any = None) -> None:
        attempts.append(entry)
        if len(attempts) == 1:  # the record was written, then Redis went away
            raise redis.ConnectionError("Connection refused")
        real_ack(entry, counted)

    monkeypatch.setattr(stream, "ack", ack_while_down)
    stream.record_outcome(execution_id, entry_id, ended("Success"))
    assert stream.unsaved and counts(redis_client) == {}

    stream.flush_unsaved()
    stream.flush_unsaved()
    assert attempts == [entry_id, entry_id] and stream.unsaved == []
    assert counts(redis_client) == {status_field("Success"): 1}


def test_an_execution_a_dead_pool_was_running_is_counted_failed(
    redis_client: redis.Redis,
) -> None:
    dead = consumer("pool-dead")
    _entry_id, execution_id = read_one(redis_client, dead)
    assert executions.start_execution(execution_id, "w-dead", redis_client)

    def idle() -> bool:
        entries = redis_client.xpending_range(executions.STREAM_KEY, executions.GROUP,
                                              "-", "+", 10)
        return bool(entries) and all(int(e["time_since_delivered"]) >= 150 for e in entries)

    wait_for(idle, 60, what="the dead pool's entry to idle")
    consumer("pool-live", claim_idle=0.1).reclaim([])

    assert counts(redis_client) == {status_field("Failed"): 1}
    assert durations(redis_client) == {}  # how long it ran is not known


def test_a_cancel_before_the_start_is_counted_failed(redis_client: redis.Redis) -> None:
    execution_id = executions.enqueue_execution(WF, "add", {"a": 1, "b": 1}, redis_client)
    assert executions.cancel_execution(execution_id, redis_client) == "Pending"
    assert counts(redis_client) == {status_field("Failed"): 1}
