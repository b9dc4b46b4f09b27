"""Reading the event stream (`src.core.events`) from where a client stopped.

A client that reconnects sends the id of the last event it saw. `resume_at`
says where to read on from, and whether events it has not seen are gone (the
stream was trimmed past them, or Redis restarted empty and the ids started
over): then the client is told to reset, that is, to read the state afresh.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any, NamedTuple, cast

import redis
import redis.asyncio as aioredis

from src.core import events
from src.core.events import STREAM_KEY, decode, parse_event_id

# Where a stream that does not exist yet starts: every id is after it.
BEGINNING = "0-0"
# Entries relayed per read.
READ_COUNT = 200


class Resume(NamedTuple):
    position: str  # read the entries after this id
    gap: bool  # events after the client's last id are lost


class Event(NamedTuple):
    id: str
    kind: str
    data: dict[str, Any]


async def latest_id(client: aioredis.Redis) -> str:
    """The id of the newest event, or BEGINNING when there is none."""
    newest = await client.xrevrange(STREAM_KEY, count=1)
    return str(newest[0][0]) if newest else BEGINNING


async def resume_at(client: aioredis.Redis, last_id: str) -> Resume:
    """Where to read on after `last_id` (a valid id: `parse_event_id`)."""
    seen = parse_event_id(last_id)
    try:
        info: dict[str, Any] = await cast(Awaitable[dict[str, Any]],
                                          client.xinfo_stream(STREAM_KEY))
    except redis.ResponseError:  # no stream: Redis lost it, or nothing happened yet
        return Resume(BEGINNING, gap=seen != (0, 0))
    newest = parse_event_id(str(info.get("last-generated-id") or BEGINNING))
    if seen > newest:  # ids from before a restart: they mean nothing now
        return Resume(await latest_id(client), gap=True)
    # Trimming drops the oldest entries: when the oldest left is after the
    # client's last one, what lay between is gone (or was never there: a
    # reset too many costs the client one fresh read, a gap costs it truth).
    deleted = parse_event_id(str(info.get("max-deleted-entry-id") or BEGINNING))
    first = info.get("recorded-first-entry-id") or (info.get("first-entry") or [None])[0]
    oldest = parse_event_id(str(first)) if first else newest
    length = int(info.get("length", 0))
    trimmed = _trimmed(info, length)
    gap = deleted > seen or (trimmed and oldest > seen)
    return Resume(last_id, gap=gap)


def _trimmed(info: dict[str, Any], length: int) -> bool:
    """Whether entries were ever trimmed. Redis 7 counts what was added;
    before, a stream trimmed approximately stays at or over its cap."""
    added = info.get("entries-added")
    if added is not None:
        return int(added) > length
    return length >= events.STREAM_MAX_LENGTH


async def read_after(client: aioredis.Redis, position: str, block_ms: int) -> list[Event]:
    """The events after `position`, waiting up to `block_ms` for one."""
    answer: Any = await client.xread({STREAM_KEY: position}, count=READ_COUNT, block=block_ms)
    found: list[Event] = []
    for _stream, entries in answer or []:
        for entry_id, fields in entries:
            decoded = decode(fields)
            if decoded is not None:
                found.append(Event(str(entry_id), *decoded))
            else:  # not one of ours: step over it all the same
                found.append(Event(str(entry_id), "", {}))
    return found
