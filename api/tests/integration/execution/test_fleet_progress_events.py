"""The progress the event stream ends on is never older than the last change,
whichever order pools on several hosts compute and append it in."""

from __future__ import annotations

from typing import Any

import pytest
import redis

from src.core import events
from src.services.execution import fleet_progress as fp


def _progress(ready: int) -> fp.Progress:
    return fp.Progress(hash="h", current_hash="h", total=4, ready=ready, installing=4 - ready,
                       failed=[], done=ready == 4)


def _progress_events(client: redis.Redis) -> list[dict[str, Any]]:
    decoded = [events.decode(fields) for _, fields in client.xrange(events.STREAM_KEY)]
    return [data for kind, data in filter(None, decoded) if kind == "progress"]


def test_a_count_read_before_another_hosts_change_is_not_the_last_word(
    redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Host A reads 3/4 ready; host B's last worker becomes ready, and B
    appends 4/4; then A appends what it read. A reads again after appending,
    and appends 4/4: the stream ends on the truth."""
    reads = iter([_progress(3), _progress(4), _progress(4)])

    def fleet_progress(hash: str, current: str | None, client: Any = None) -> fp.Progress:
        return next(reads)

    real_append = events.append
    first = True

    def append(client: redis.Redis, kind: Any, data: dict[str, Any]) -> str | None:
        nonlocal first
        if first:  # host B got there between A's read and A's append
            first = False
            real_append(client, "progress", dict(_progress(4)))
        return real_append(client, kind, data)

    monkeypatch.setattr(fp, "fleet_progress", fleet_progress)
    monkeypatch.setattr(events, "append", append)
    fp.append_settled_progress(redis_client, "h")
    appended = _progress_events(redis_client)
    assert [event["ready"] for event in appended] == [4, 3, 4]
    assert appended[-1] == dict(_progress(4))
