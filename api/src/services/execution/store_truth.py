"""What the store holds, which a pool hands each worker it starts.

Redis is a cache that any client holding its password can write; the store
is what the API wrote. A worker checks what it reads from Redis against the
store: requirements whose hash is not the store's current one, or a lock
that is not the store's lock for that hash, are refused (logged with the
worker's id, counted in `bifrost_cache_refusals_total`) and the store's are
used instead. The pool reads the store each time it starts a worker (so a
worker started for a change sees the change) and passes what it read as an
argument: the worker needs no way into the store for it.

Where the pool cannot read the store, it says so and its workers start on
what Redis holds, checked for its form only (`requirements_cache`).
"""

from __future__ import annotations

import logging
from typing import TypedDict

from src.core.lock_cache import read_store_lock
from src.core.requirements_cache import read_store_requirements

logger = logging.getLogger(__name__)


class StoreTruth(TypedDict):
    content: str
    hash: str
    lock: str | None  # the lock's text; None for empty requirements or no lock kept


def read_store_truth() -> StoreTruth | None:
    """The store's requirements.txt and the lock of its hash; None when there
    is no store, no file, or the store cannot be read (logged)."""
    try:
        found = read_store_requirements()
        if found is None:
            return None
        lock = read_store_lock(found["hash"]) if found["content"].strip() else None
    except Exception as exc:  # a store down must not stop the pool from starting workers
        logger.warning("the store cannot be read: workers start on what Redis holds, "
                       "checked for its form only: %s", exc)
        return None
    return StoreTruth(content=found["content"], hash=found["hash"], lock=lock)
