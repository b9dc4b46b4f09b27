"""Waiting for an execution to end without polling: `wait` on the executions
routes.

A pool publishes an execution's id on `bifrost:executions:ended` when it
writes its final record (`executions.update_execution`). Each API process
keeps one subscription to that channel, on its event loop, and wakes the
requests waiting for that id; a waiting request costs an `asyncio.Event`,
not a connection, and one that disconnects is simply dropped. The record is
read after the subscription is in place, so an end published in between is
never missed; a subscription that cannot be made leaves the wait to run out,
and the record is read as it stands then.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import weakref
from collections.abc import Awaitable, Callable

import redis.asyncio as aioredis

from src.foundation.settings import get_settings
from src.services.execution.executions import ended_channel

logger = logging.getLogger(__name__)

SUBSCRIBE_SECONDS = 5.0


class EndedExecutions:
    """The ids of executions that end, as this event loop hears them."""

    def __init__(self) -> None:
        self._waiting: dict[str, set[asyncio.Event]] = {}
        self._listener: asyncio.Task[None] | None = None
        self._subscribed = asyncio.Event()

    async def wait(self, execution_id: str, seconds: float,
                   ended: Callable[[], Awaitable[bool]]) -> None:
        """Return once `ended()` says so, or `seconds` have passed."""
        event = asyncio.Event()
        self._waiting.setdefault(execution_id, set()).add(event)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        try:
            await self._subscribe()
            while True:
                event.clear()  # before the look: an end heard after it wakes the wait below
                if await ended():
                    return
                remaining = deadline - loop.time()
                if remaining <= 0:
                    return
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(event.wait(), remaining)
        finally:
            waiters = self._waiting.get(execution_id)
            if waiters is not None:
                waiters.discard(event)
                if not waiters:
                    del self._waiting[execution_id]

    async def _subscribe(self) -> None:
        if self._listener is None or self._listener.done():
            self._subscribed = asyncio.Event()
            self._listener = asyncio.create_task(self._listen(), name="bifrost-ended-executions")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._subscribed.wait(), SUBSCRIBE_SECONDS)

    async def _listen(self) -> None:
        client = aioredis.Redis.from_url(get_settings().redis_url, decode_responses=True)
        db = int(client.connection_pool.connection_kwargs.get("db") or 0)
        try:
            async with client.pubsub() as pubsub:
                await pubsub.subscribe(ended_channel(db))
                self._subscribed.set()
                async for message in pubsub.listen():
                    if message.get("type") == "message":
                        for event in self._waiting.get(str(message.get("data")), ()):
                            event.set()
        except Exception as exc:  # Redis away: waits run out, and read the record then
            logger.warning("Not hearing executions end (Redis: %s): waits run their time", exc)
        finally:
            self._subscribed.set()
            with contextlib.suppress(Exception):
                await client.aclose()


_by_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, EndedExecutions] = (
    weakref.WeakKeyDictionary())


def ended_executions() -> EndedExecutions:
    """This event loop's listener (made on first use)."""
    loop = asyncio.get_running_loop()
    found = _by_loop.get(loop)
    if found is None:
        found = _by_loop[loop] = EndedExecutions()
    return found
