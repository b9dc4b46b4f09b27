"""The lease one host takes to fetch a lock's files for the whole fleet.

`bifrost:fleet-fetch:<lock digest>:<platform>` in Redis, held by one worker
(its id is the lease's value, so the others can say whom they wait for).
The holder renews it while it works; a holder that dies loses it within
`BIFROST_FLEET_LEASE_SECONDS`, and the next host that asks takes over. A redis-py lock:
taken only if free, renewed and released only by its holder.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import redis
from redis.lock import Lock

logger = logging.getLogger(__name__)

LEASE_PREFIX = "bifrost:fleet-fetch:"


class FetchLease:
    """The fetch lease of one lock on one platform, as one worker sees it."""

    def __init__(self, client: redis.Redis, lock_digest: str, platform: str,
                 worker_id: str, seconds: float) -> None:
        self.name = f"{LEASE_PREFIX}{lock_digest}:{platform}"
        self.worker_id = worker_id
        self.seconds = seconds
        self._client = client
        self._lock = Lock(client, self.name, timeout=seconds, blocking=False,
                          thread_local=False)

    def take(self) -> bool:
        """Whether this worker holds it now (taken only if nobody does)."""
        return bool(self._lock.acquire(blocking=False, token=self.worker_id))

    def holder(self) -> str | None:
        """Who holds it (a worker id); None when nobody does."""
        value = self._client.get(self.name)
        return None if value is None else str(value)

    @contextmanager
    def renewed(self) -> Iterator[None]:
        """Keep it ours while the block runs (renewed every third of its
        time), and let it go after."""
        done = threading.Event()

        def renew() -> None:
            while not done.wait(self.seconds / 3):
                try:
                    self._lock.reacquire()
                except Exception as exc:  # Redis away, or the lease lost: the fetch goes on
                    logger.warning("Could not renew the fleet fetch lease %s: %s", self.name, exc)

        thread = threading.Thread(target=renew, name="bifrost-fleet-lease", daemon=True)
        thread.start()
        try:
            yield
        finally:
            done.set()
            thread.join()
            try:
                self._lock.release()
            except Exception as exc:  # expired, or Redis away: it ends by itself
                logger.warning("Could not release the fleet fetch lease %s: %s", self.name, exc)
