"""The event stream on a real Redis: appending, reading on after an id, and
telling a client whose events are gone (trimmed, or Redis restarted empty)
to read the state afresh."""

from __future__ import annotations

import pytest
import redis
import redis.asyncio as aioredis

from src.core import event_reader, events
from src.core.event_reader import BEGINNING, read_after, resume_at


@pytest.fixture
async def aclient(redis_client: redis.Redis, redis_url: str):  # type: ignore[no-untyped-def]
    client = aioredis.Redis.from_url(redis_url, decode_responses=True)
    yield client
    await client.aclose()


async def test_reads_on_after_an_id_in_order(redis_client: redis.Redis,
                                             aclient: aioredis.Redis) -> None:
    ids = [events.append(redis_client, "progress", {"n": n}) for n in range(5)]
    assert all(ids)
    after = await read_after(aclient, str(ids[1]), block_ms=100)
    assert [e.data["n"] for e in after] == [2, 3, 4]
    assert [e.id for e in after] == ids[2:]
    assert await read_after(aclient, str(ids[-1]), block_ms=50) == []


async def test_a_client_that_saw_everything_kept_resumes_without_reset(
    redis_client: redis.Redis, aclient: aioredis.Redis
) -> None:
    first = events.append(redis_client, "worker", {"n": 0})
    events.append(redis_client, "worker", {"n": 1})
    assert await resume_at(aclient, str(first)) == (first, False)
    # A client that connected while the stream was empty.
    assert (await resume_at(aclient, BEGINNING)).gap is False


async def test_trimmed_events_mean_a_reset(redis_client: redis.Redis, aclient: aioredis.Redis,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(events, "STREAM_MAX_LENGTH", 10)  # Redis 6 tells trimming by length
    old = events.append(redis_client, "worker", {"n": 0})
    for n in range(1, 50):
        redis_client.xadd(events.STREAM_KEY, events.entry("worker", {"n": n}),  # type: ignore[arg-type]
                          maxlen=events.STREAM_MAX_LENGTH, approximate=False)
    resume = await resume_at(aclient, str(old))
    assert resume.gap is True and resume.position == old


async def test_ids_from_before_a_restart_mean_a_reset(redis_client: redis.Redis,
                                                      aclient: aioredis.Redis) -> None:
    assert await resume_at(aclient, "99999999999999-0") == (BEGINNING, True)  # no stream at all
    newest = events.append(redis_client, "worker", {"n": 0})
    assert await resume_at(aclient, "99999999999999-0") == (newest, True)


async def test_entries_that_are_not_events_are_stepped_over(
    redis_client: redis.Redis, aclient: aioredis.Redis
) -> None:
    redis_client.xadd(events.STREAM_KEY, {"type": "worker", "data": "{not json"})
    redis_client.xadd(events.STREAM_KEY, {"type": "unknown", "data": "{}"})
    good = events.append(redis_client, "progress", {"ok": True})
    read = await read_after(aclient, BEGINNING, block_ms=50)
    assert [(e.kind, e.data) for e in read] == [("", {}), ("", {}), ("progress", {"ok": True})]
    assert read[-1].id == good


def test_appending_without_redis_loses_the_event_not_the_caller() -> None:
    down = redis.Redis(port=1, socket_connect_timeout=0.2)
    assert events.append(down, "progress", {"n": 1}) is None


def test_malformed_ids_are_refused() -> None:
    for bad in ("", "abc", "1-", "-1", "1-2-3", "1" * 30 + "-0", "../x"):
        with pytest.raises(events.InvalidEventId):
            events.parse_event_id(bad)
    assert events.parse_event_id(" 12-3 ") == (12, 3)
    assert event_reader.BEGINNING == "0-0"
