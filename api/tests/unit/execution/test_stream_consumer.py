"""A pool's consumer of the execution stream, on the test run's own Redis:
reading through the group, acknowledging, dropping malformed entries, taking
over entries of dead pools, and saving outcomes (kept while Redis is down,
never retried without end when Redis refuses them)."""

from __future__ import annotations

import json
from typing import Any

import pytest
import redis

from src.foundation.settings import get_settings
from src.services.execution import executions
from src.services.execution.stream_consumer import RECLAIM_BATCH, StreamConsumer
from tests.support.waiting import wait_for

WF = "tests.support.sample_workflows"


@pytest.fixture
def downs() -> list[Exception]:
    """What the consumers told about Redis being down."""
    return []


def consumer(name: str, downs: list[Exception], claim_idle: float = 30.0) -> StreamConsumer:
    settings = get_settings().model_copy(update={"claim_idle_seconds": claim_idle})
    return StreamConsumer(name, settings, on_redis_down=downs.append)


def enqueue(client: redis.Redis, count: int) -> list[str]:
    return [executions.enqueue_execution(WF, "add", {"a": i, "b": 1}, client)
            for i in range(count)]


def entry_ids(client: redis.Redis) -> list[str]:
    """The ids of the entries still in the stream."""
    entries: Any = client.xrange(executions.STREAM_KEY)
    return [str(entry_id) for entry_id, _ in entries]


def pending_of(client: redis.Redis) -> dict[str, str]:
    """Entry id -> the consumer it is pending for."""
    entries = client.xpending_range(executions.STREAM_KEY, executions.GROUP, "-", "+", 1000)
    return {str(e["message_id"]): str(e["consumer"]) for e in entries}


def idle_for(client: redis.Redis, ms: int) -> bool:
    entries = client.xpending_range(executions.STREAM_KEY, executions.GROUP, "-", "+", 1000)
    return bool(entries) and all(int(e["time_since_delivered"]) >= ms for e in entries)


def seem_idle(client: redis.Redis, entry_ids: list[str], owner: str, ms: int) -> None:
    """As if nobody had claimed the entries for `ms`: Redis's own idle time,
    set by the test (XCLAIM ... IDLE), the owner and the delivery count kept."""
    client.xclaim(executions.STREAM_KEY, executions.GROUP, owner, min_idle_time=0,
                  message_ids=entry_ids, idle=ms, justid=True)


def take_all(stream: StreamConsumer) -> list[tuple[str, str]]:
    """(entry id, execution id) of every order the backlog holds."""
    taken = []
    while (next_one := stream.take()) is not None:
        taken.append((next_one[0], next_one[1]["id"]))
    return taken


def changes(result: Any, status: str = "Success") -> dict[str, Any]:
    return {"status": status, "result": result, "error": None, "worker_id": "w-test",
            "duration_ms": 5, "notes": []}


# --- reading ------------------------------------------------------------------


def test_read_fills_the_backlog_up_to_count_in_stream_order(
    redis_client: redis.Redis, downs: list[Exception]
) -> None:
    ids = enqueue(redis_client, 3)
    stream = consumer("pool-a", downs)
    stream.read(2, block_ms=10)
    first = stream.take()
    assert first is not None
    assert (first[1]["id"], first[1]["module"], first[1]["function"]) == (ids[0], WF, "add")
    assert json.loads(first[1].get("parameters_json", "")) == {"a": 0, "b": 1}
    assert [execution for _, execution in take_all(stream)] == [ids[1]]
    stream.read(2, block_ms=10)
    assert [execution for _, execution in take_all(stream)] == [ids[2]]
    assert set(pending_of(redis_client).values()) == {"pool-a"}  # read, not yet acknowledged


def test_read_waits_for_the_backlog_to_empty_first(
    redis_client: redis.Redis, downs: list[Exception]
) -> None:
    enqueue(redis_client, 3)
    stream = consumer("pool-a", downs)
    stream.read(1, block_ms=10)
    stream.read(5, block_ms=10)  # one entry still waits: nothing more is read
    assert len(stream.backlog) == 1
    assert len(pending_of(redis_client)) == 1


def test_each_entry_goes_to_one_pool(redis_client: redis.Redis, downs: list[Exception]) -> None:
    ids = enqueue(redis_client, 4)
    first, second = consumer("pool-a", downs), consumer("pool-b", downs)
    first.read(2, block_ms=10)
    second.read(10, block_ms=10)
    first_ids = [execution for _, execution in take_all(first)]
    second_ids = [execution for _, execution in take_all(second)]
    assert first_ids == ids[:2] and second_ids == ids[2:]
    assert list(pending_of(redis_client).values()).count("pool-a") == 2


def test_the_group_starts_from_the_entries_already_queued(
    redis_client: redis.Redis, downs: list[Exception]
) -> None:
    ids = enqueue(redis_client, 2)  # queued while no group existed
    stream = consumer("pool-a", downs)
    stream.ensure_group()
    consumer("pool-b", downs).ensure_group()  # the group exists already: no error
    stream.read(10, block_ms=10)
    assert [execution for _, execution in take_all(stream)] == ids


def test_a_group_redis_lost_is_made_again(
    redis_client: redis.Redis, downs: list[Exception]
) -> None:
    stream = consumer("pool-a", downs)
    stream.read(1, block_ms=10)  # makes the group
    redis_client.flushdb()  # Redis restarted empty
    ids = enqueue(redis_client, 1)
    stream.read(1, block_ms=10)  # NOGROUP: noted, not raised
    assert stream.backlog == []
    stream.read(1, block_ms=10)
    assert [execution for _, execution in take_all(stream)] == ids


def test_forget_group_makes_the_group_before_the_next_read(
    redis_client: redis.Redis, downs: list[Exception]
) -> None:
    stream = consumer("pool-a", downs)
    stream.ensure_group()
    redis_client.flushdb()
    ids = enqueue(redis_client, 1)
    stream.forget_group()
    stream.read(1, block_ms=10)
    assert [execution for _, execution in take_all(stream)] == ids


# --- malformed entries and acknowledging ----------------------------------------


def test_take_drops_malformed_entries_and_fails_their_execution(
    redis_client: redis.Redis, downs: list[Exception]
) -> None:
    executions.update_execution("broken", redis_client, status="Pending")
    redis_client.xadd(executions.STREAM_KEY, {"id": "broken", "module": ""})  # no module
    redis_client.xadd(executions.STREAM_KEY, {"id": "ghost", "module": ""})  # nor a record
    redis_client.xadd(executions.STREAM_KEY, {"junk": "1"})
    good = enqueue(redis_client, 1)[0]
    stream = consumer("pool-a", downs)
    stream.read(10, block_ms=10)
    taken = stream.take()
    assert taken is not None and taken[1]["id"] == good
    record = executions.get_execution("broken", redis_client)
    assert record is not None
    assert (record["status"], record["error"]) == ("Failed",
                                                   "the queued execution could not be read")
    assert executions.get_execution("ghost", redis_client) is None  # none made up
    assert list(pending_of(redis_client)) == [taken[0]]  # the malformed three: acknowledged
    assert entry_ids(redis_client) == [taken[0]]
    assert stream.take() is None


def test_ack_acknowledges_and_deletes_the_entry(
    redis_client: redis.Redis, downs: list[Exception]
) -> None:
    enqueue(redis_client, 2)
    stream = consumer("pool-a", downs)
    stream.read(2, block_ms=10)
    (entry_id, _), (other, _) = take_all(stream)
    stream.ack(entry_id)
    assert list(pending_of(redis_client)) == [other]
    assert entry_ids(redis_client) == [other]


# --- outcomes -------------------------------------------------------------------


def read_one(client: redis.Redis, stream: StreamConsumer) -> tuple[str, str]:
    execution_id = enqueue(client, 1)[0]
    stream.read(1, block_ms=10)
    taken = stream.take()
    assert taken is not None and taken[1]["id"] == execution_id
    return taken[0], execution_id


def test_an_outcome_is_saved_then_its_entry_acknowledged(
    redis_client: redis.Redis, downs: list[Exception]
) -> None:
    stream = consumer("pool-a", downs)
    entry_id, execution_id = read_one(redis_client, stream)
    stream.record_outcome(execution_id, entry_id, changes({"sum": 3}))
    record = executions.get_execution(execution_id, redis_client)
    assert record is not None
    assert (record["status"], record["result"], record["worker_id"]) == (
        "Success", {"sum": 3}, "w-test")
    assert stream.unsaved == [] and downs == []
    assert redis_client.xlen(executions.STREAM_KEY) == 0 and pending_of(redis_client) == {}


def test_outcomes_wait_while_redis_is_down_then_are_saved_in_order(
    redis_client: redis.Redis, downs: list[Exception], monkeypatch: pytest.MonkeyPatch
) -> None:
    stream = consumer("pool-a", downs)
    first, second = read_one(redis_client, stream), read_one(redis_client, stream)
    real_update = executions.update_execution
    saved: list[str] = []
    redis_down = True

    def update(execution_id: str, client: Any = None, **fields: Any) -> Any:
        if redis_down:
            raise redis.ConnectionError("Connection refused")
        saved.append(execution_id)
        return real_update(execution_id, client, **fields)

    monkeypatch.setattr(executions, "update_execution", update)
    stream.record_outcome(first[1], first[0], changes(1))
    stream.record_outcome(second[1], second[0], changes(2))
    assert [execution for execution, _, _ in stream.unsaved] == [first[1], second[1]]
    assert len(downs) == 2 and all(isinstance(e, redis.ConnectionError) for e in downs)
    assert redis_client.xlen(executions.STREAM_KEY) == 2  # nothing acknowledged yet

    redis_down = False
    stream.flush_unsaved()
    assert saved == [first[1], second[1]] and stream.unsaved == []
    assert [executions.get_execution(i, redis_client)["result"]  # type: ignore[index]
            for i in (first[1], second[1])] == [1, 2]
    assert redis_client.xlen(executions.STREAM_KEY) == 0 and len(downs) == 2


def test_an_outcome_redis_cannot_store_is_saved_as_failed_and_blocks_nothing(
    redis_client: redis.Redis, downs: list[Exception]
) -> None:
    stream = consumer("pool-a", downs)
    refused, fine = read_one(redis_client, stream), read_one(redis_client, stream)
    stream.record_outcome(refused[1], refused[0], changes(object()))  # not JSON
    stream.record_outcome(fine[1], fine[0], changes(7))
    failed = executions.get_execution(refused[1], redis_client)
    assert failed is not None and failed["status"] == "Failed" and failed["result"] is None
    assert (failed["error"] or "").startswith("ResultNotSaved: the outcome could not be saved (")
    done = executions.get_execution(fine[1], redis_client)
    assert done is not None and (done["status"], done["result"]) == ("Success", 7)
    assert stream.unsaved == [] and downs == []
    assert redis_client.xlen(executions.STREAM_KEY) == 0


def test_an_outcome_refused_twice_is_dropped_not_retried(
    redis_client: redis.Redis, downs: list[Exception], monkeypatch: pytest.MonkeyPatch
) -> None:
    stream = consumer("pool-a", downs)
    entry_id, execution_id = read_one(redis_client, stream)
    attempts: list[dict[str, Any]] = []

    def update(execution_id: str, client: Any = None, **fields: Any) -> Any:
        attempts.append(fields)
        raise redis.ResponseError("OOM command not allowed when used memory > 'maxmemory'")

    monkeypatch.setattr(executions, "update_execution", update)
    stream.record_outcome(execution_id, entry_id, changes(1))
    stream.flush_unsaved()
    assert [a["status"] for a in attempts] == ["Success", "Failed"]  # once each, no more
    assert "OOM" in attempts[1]["error"] and len(attempts[1]["error"]) <= 2000
    assert stream.unsaved == [] and downs == []
    assert redis_client.xlen(executions.STREAM_KEY) == 0  # acknowledged all the same


# --- taking over entries --------------------------------------------------------


def test_reclaim_takes_over_what_a_dead_pool_held(
    redis_client: redis.Redis, downs: list[Exception]
) -> None:
    waiting, running, finished = enqueue(redis_client, 3)
    redis_client.xadd(executions.STREAM_KEY, {"junk": "1"})
    dead = consumer("pool-dead", downs)
    dead.read(10, block_ms=10)
    assert executions.start_execution(running, "w-dead", redis_client)
    executions.update_execution(finished, redis_client, status="Success", result=1)
    wait_for(lambda: idle_for(redis_client, 150), 60, what="the entries to idle")

    live = consumer("pool-live", downs, claim_idle=0.1)
    live.reclaim([])
    assert [execution for _, execution in take_all(live)] == [waiting]
    record = executions.get_execution(running, redis_client)
    assert record is not None and record["status"] == "Failed"
    assert record["error"] == ("PoolDied: the pool running this execution stopped "
                               "(worker w-dead)")
    assert list(pending_of(redis_client).values()) == ["pool-live"]  # the waiting one
    assert redis_client.xlen(executions.STREAM_KEY) == 1


def test_reclaim_leaves_entries_that_are_not_idle_long_enough(
    redis_client: redis.Redis, downs: list[Exception]
) -> None:
    enqueue(redis_client, 2)
    consumer("pool-a", downs).read(10, block_ms=10)
    other = consumer("pool-b", downs, claim_idle=30.0)
    other.reclaim([])
    assert other.backlog == [] and set(pending_of(redis_client).values()) == {"pool-a"}


def test_reclaim_keeps_the_entries_a_pool_runs_its_own(
    redis_client: redis.Redis, downs: list[Exception]
) -> None:
    enqueue(redis_client, 1)
    owner = consumer("pool-a", downs, claim_idle=30.0)
    owner.read(1, block_ms=10)
    held = [entry_id for entry_id, _ in take_all(owner)]
    # Idle for a minute, twice what another pool waits before it takes over:
    # set in Redis, not waited for, so that the entry is certainly stale before
    # the owner's refresh and certainly fresh (seconds old at most) after it.
    seem_idle(redis_client, held, "pool-a", 60_000)
    owner.reclaim(held)  # the owner's heartbeat: the entry is fresh again
    other = consumer("pool-b", downs, claim_idle=30.0)
    other.reclaim([])
    assert other.backlog == [] and pending_of(redis_client) == {held[0]: "pool-a"}
    seem_idle(redis_client, held, "pool-a", 60_000)
    other.reclaim([])  # the owner stopped refreshing it: now it is taken over
    assert [entry_id for entry_id, _ in take_all(other)] == held


def test_reclaim_takes_over_a_bounded_batch_per_call(
    redis_client: redis.Redis, downs: list[Exception]
) -> None:
    enqueue(redis_client, RECLAIM_BATCH + 5)
    consumer("pool-dead", downs).read(RECLAIM_BATCH + 5, block_ms=10)
    # Idle for a minute as far as Redis knows; what `live` takes is fresh, and
    # stays below its 30 s threshold however slowly the test goes on.
    seem_idle(redis_client, list(pending_of(redis_client)), "pool-dead", 60_000)
    live = consumer("pool-live", downs, claim_idle=30.0)
    live.reclaim([])
    assert len(live.backlog) == RECLAIM_BATCH
    live.reclaim([])
    assert len(live.backlog) == RECLAIM_BATCH + 5
