"""A pool's view of Redis being away: since when, and telling it once.

While Redis is down the pool's worker processes keep running what they hold;
the steps that need Redis (handing out stream entries, the heartbeat) fail and
are tried again next turn, after a short pause so the loop does not spin
against a server that is not there. The outage is logged once when it starts
and once when Redis answers again.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import redis

# The pool's log lines keep one logger name, whichever of its parts writes them.
logger = logging.getLogger("src.services.execution.process_pool")

# How long a step that found Redis down waits before the loop goes on.
RETRY_PAUSE_SECONDS = 0.5


class RedisOutage:
    """Runs the pool's Redis steps and keeps track of Redis being down."""

    def __init__(self) -> None:
        self.down_since: float | None = None  # time.monotonic() of the first failure

    def guard(self, step: Callable[[], None]) -> bool:
        """Run `step`; a Redis error is noted (not raised) and followed by a
        pause. True when this step is the first to succeed after an outage:
        Redis may have restarted empty, and the caller rebuilds what it lost."""
        try:
            step()
        except redis.RedisError as exc:
            self.note_down(exc)
            time.sleep(RETRY_PAUSE_SECONDS)  # do not spin against a Redis that is down
            return False
        if self.down_since is None:
            return False
        logger.info("Redis is back after %.1f s", time.monotonic() - self.down_since)
        self.down_since = None
        return True

    def note_down(self, exc: Exception) -> None:
        """Redis did not answer: log it when this starts an outage."""
        if self.down_since is None:
            self.down_since = time.monotonic()
            logger.warning("Redis unavailable (%s); workers keep running, retrying", exc)
