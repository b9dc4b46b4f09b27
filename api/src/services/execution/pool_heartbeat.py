"""A pool in the worker registry, and the beat of its periodic checks.

The pool publishes its state (its worker processes' states) to the registry
as soon as it changed, though not more often than every
`STATE_PUBLISH_MIN_INTERVAL`, and at least every `HEARTBEAT_SECONDS`, so its
registry key (which expires) stays while the pool lives. Each heartbeat is also
when the pool runs the checks that need not run every turn: keeping its claimed
entries its own, taking over those of pools that died, noticing broadcasts
missed while the control channel was down, and keeping the module cache warm.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable

import redis

from src.core import module_cache
from src.services.execution import fleet_progress, registry
from src.services.execution.registry import PoolState, WorkerState

# The pool's log lines keep one logger name, whichever of its parts writes them.
logger = logging.getLogger("src.services.execution.process_pool")

HEARTBEAT_SECONDS = 2.0
STATE_PUBLISH_MIN_INTERVAL = 0.05


class PoolHeartbeat:
    """When the pool publishes its state, and when its periodic checks are due."""

    def __init__(self, pool_id: str, host: str, started_at: float) -> None:
        self.pool_id = pool_id
        self.host = host
        self.started_at = started_at
        self._last_beat = 0.0
        self._last_publish = 0.0
        self._changed = True
        # What the registry showed last: the next publish announces the
        # difference on the event stream (`fleet_progress.announce`).
        self._published: list[WorkerState] = []

    def changed(self) -> None:
        """Something the registry shows changed: publish it soon."""
        self._changed = True

    def beat_now(self) -> None:
        """Make the next turn a heartbeat (its checks run at once)."""
        self._last_beat = 0.0

    def tick(self, workers: Callable[[], list[WorkerState]], client: redis.Redis) -> bool:
        """Publish the pool's state if it is due; True when a heartbeat is due,
        and the caller runs the periodic checks."""
        now = time.monotonic()
        beat = now - self._last_beat >= HEARTBEAT_SECONDS
        if beat or (self._changed and now - self._last_publish >= STATE_PUBLISH_MIN_INTERVAL):
            state = self.state(workers())
            registry.publish_pool_state(state, client)
            self._last_publish, self._changed = now, False
            fleet_progress.announce(client, self.pool_id, self._published, state["workers"])
            self._published = state["workers"]
        if not beat:
            return False
        self._last_beat = now
        return True

    def state(self, workers: list[WorkerState]) -> PoolState:
        return PoolState(
            pool_id=self.pool_id, host=self.host, pid=os.getpid(),
            started_at=self.started_at, workers=workers,
        )

    def leave(self, client: redis.Redis) -> None:
        """Take the pool out of the registry (else its key expires by itself)."""
        registry.remove_pool(self.pool_id, client)
        fleet_progress.announce(client, self.pool_id, self._published, [])
        self._published = []


def keep_module_cache_warm(client: redis.Redis) -> None:
    """Executions read workspace modules from Redis alone: when Redis lost
    them (restarted empty, flushed), the pool, which may read the store,
    puts them back."""
    try:
        module_cache.ensure_warm_sync(client)
    except redis.RedisError:
        raise
    except Exception as exc:  # the store is down: executions wait, the pool goes on
        logger.warning("Could not warm the module cache from the store: %s", exc)
