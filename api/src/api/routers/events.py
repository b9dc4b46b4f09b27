"""`GET /api/events`: the fleet's changes as server-sent events.

Relays the Redis event stream (`src.core.events`), so an API host sees every
pool on every host. Each event's `id` is its stream id: a client reconnecting
with `Last-Event-ID` gets what it missed, or, when that is gone, one `reset`
event (read the state afresh) before the new ones. A client connecting anew
first gets the progress of the requirements in effect. When Redis cannot be
read, one `unavailable` event ends the stream; the client reconnects.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from typing import Annotated, Any

import redis
import redis.asyncio as aioredis
from fastapi import APIRouter, Header, HTTPException, Request
from sse_starlette import EventSourceResponse

from src.api.auth import Role, admin_only, role_for
from src.core.event_reader import latest_id, read_after, resume_at
from src.core.events import InvalidEventId, parse_event_id
from src.foundation.settings import get_settings
from src.services import packages

logger = logging.getLogger(__name__)

router = APIRouter(prefix="/api/events", tags=["events"], dependencies=admin_only)

# Open streams per API process and per token (the admin's and the read-only
# one's are counted apart, so that readers holding every slot never lock the
# admin out); each holds a Redis connection.
MAX_STREAMS = 100
# How long one read waits in Redis; between reads the stream notices a client
# that left. Keep-alive comments go out every PING_SECONDS.
BLOCK_MS = 5_000
PING_SECONDS = 15


def _event(kind: str, data: dict[str, Any], event_id: str | None = None) -> dict[str, str]:
    event = {"event": kind, "data": json.dumps(data, separators=(",", ":"))}
    if event_id is not None:
        event["id"] = event_id
    return event


async def _opening(client: aioredis.Redis, last_id: str | None) -> tuple[str, list[dict[str, str]]]:
    """Where to read from, and what to send before the stream's own events."""
    if last_id is None:
        position = await latest_id(client)
        try:
            progress = await asyncio.to_thread(packages.install_progress)
        except Exception as exc:  # the store or Redis failing: the stream goes on without it
            logger.warning("Event stream: no opening progress: %s", exc)
            return position, []
        return position, [_event("progress", dict(progress), position)]
    resume = await resume_at(client, last_id)
    if not resume.gap:
        return resume.position, []
    reason = "events after the one you saw last are no longer kept: read the state afresh"
    return resume.position, [_event("reset", {"reason": reason})]


def _open_streams(request: Request) -> dict[Role, int]:
    """The app's open streams per role (`create_app` starts it empty)."""
    streams: dict[Role, int] = request.app.state.event_streams
    return streams


async def _relay(request: Request, role: Role, last_id: str | None
                 ) -> AsyncIterator[dict[str, str]]:
    streams = _open_streams(request)
    streams[role] = streams.get(role, 0) + 1
    # A read blocks in Redis for BLOCK_MS: the socket must wait longer than that.
    client = aioredis.Redis.from_url(get_settings().redis_url, decode_responses=True,
                                     socket_connect_timeout=5.0,
                                     socket_timeout=BLOCK_MS / 1000 + 10)
    try:
        position, opening = await _opening(client, last_id)
        for event in opening:
            yield event
        while not await request.is_disconnected():
            for event in await read_after(client, position, BLOCK_MS):
                position = event.id
                if event.kind:
                    yield _event(event.kind, event.data, event.id)
    except (redis.RedisError, OSError) as exc:
        logger.warning("Event stream: Redis cannot be read: %s", exc)
        yield _event("unavailable", {"reason": f"redis unavailable: {exc}"})
    finally:
        streams[role] -= 1
        await client.aclose()


@router.get("")
async def stream_events(
    request: Request,
    last_event_id: Annotated[str | None, Header(max_length=64)] = None,
) -> EventSourceResponse:
    if last_event_id is not None:
        try:
            parse_event_id(last_event_id)
        except InvalidEventId as exc:
            raise HTTPException(400, str(exc)) from None
    # The auth dependency has let the request through: it has a role.
    role = role_for(request.headers.get("authorization"), request.app.state.tokens) or "read"
    if _open_streams(request).get(role, 0) >= MAX_STREAMS:
        raise HTTPException(503, f"{MAX_STREAMS} event streams of the {role} token are open on "
                                 "this API process; try again later", headers={"Retry-After": "5"})
    return EventSourceResponse(
        _relay(request, role, last_event_id), ping=PING_SECONDS,
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )
