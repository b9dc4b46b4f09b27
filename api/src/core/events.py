"""The event stream: what changed in the fleet, for every API host to relay.

One Redis stream, `bifrost:events`, that any process appends to and every
`GET /api/events` reads. An entry is `{"type": <kind>, "data": <JSON>}`; its
stream id (`<ms>-<seq>`) is the server-sent event's id, so a client that
reconnects with `Last-Event-ID` reads on from where it stopped, for as long
as the stream still holds that entry (it keeps about `STREAM_MAX_LENGTH`).

Kinds:
- `requirements`: `{hash, previous_hash, added, removed}` after a write;
- `worker`: one worker's new state (`status` is `gone` once it left);
- `progress`: `{hash, current_hash, total, ready, installing, failed, done}`.

Appending never raises: an event lost while Redis is down is only a missed
update, and the writer (a pool, the write path) must go on.
"""

from __future__ import annotations

import json
import logging
import re
from typing import Any, Literal

import redis

logger = logging.getLogger(__name__)

STREAM_KEY = "bifrost:events"
# The backlog a reconnecting client can resume from; trimmed approximately
# (whole radix-tree nodes), which is what keeps XADD cheap.
STREAM_MAX_LENGTH = 10_000

EventKind = Literal["requirements", "worker", "progress"]
EVENT_KINDS: frozenset[str] = frozenset({"requirements", "worker", "progress"})

_STREAM_ID = re.compile(r"^(\d{1,20})-(\d{1,20})$")


class InvalidEventId(ValueError):
    """A `Last-Event-ID` that is not a stream id."""


def parse_event_id(value: str) -> tuple[int, int]:
    """`"1700000000000-3"` as `(1700000000000, 3)`; InvalidEventId otherwise."""
    match = _STREAM_ID.match(value.strip())
    if match is None:
        raise InvalidEventId(
            f"Last-Event-ID {value[:40]!r} is not an event id (they look like 1700000000000-0)"
        )
    return int(match.group(1)), int(match.group(2))


def entry(kind: EventKind, data: dict[str, Any]) -> dict[str, str]:
    """The fields of one stream entry."""
    return {"type": kind, "data": json.dumps(data, separators=(",", ":"))}


def add_to(pipe: Any, kind: EventKind, data: dict[str, Any]) -> None:
    """Queue one event on a pipeline (or a client): the caller executes it."""
    pipe.xadd(STREAM_KEY, entry(kind, data), maxlen=STREAM_MAX_LENGTH, approximate=True)


def append(client: redis.Redis, kind: EventKind, data: dict[str, Any]) -> str | None:
    """Append one event; its id, or None when Redis could not take it."""
    try:
        return str(client.xadd(STREAM_KEY, entry(kind, data),  # type: ignore[arg-type]
                               maxlen=STREAM_MAX_LENGTH, approximate=True))
    except redis.RedisError as exc:
        logger.warning("Could not append a %s event to %s: %s", kind, STREAM_KEY, exc)
        return None


def decode(fields: dict[Any, Any]) -> tuple[str, dict[str, Any]] | None:
    """A stream entry's `(kind, data)`; None for an entry that is not one."""
    kind, raw = _text(fields.get("type")), _text(fields.get("data"))
    if kind not in EVENT_KINDS or raw is None:
        return None
    try:
        data = json.loads(raw)
    except ValueError:
        return None
    return (kind, data) if isinstance(data, dict) else None


def _text(value: Any) -> str | None:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value if isinstance(value, str) else None
