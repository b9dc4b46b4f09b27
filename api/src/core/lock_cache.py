"""Lock cache: each requirements hash's lock in the store, cached in Redis.

Key `bifrost:requirements:lock:<requirements hash>` holds the lock's text
(`Lock.text()`) with the requirements cache's 24 h TTL. As with requirements,
Redis is only a cache that may be flushed or restarted empty at any time: the
store (table `requirements_locks`) is the source of truth, and a reader that
misses in Redis reads the store and re-caches. A hash's lock never changes
(the first writer wins, `src.store.locks.put_lock`), so a cached lock is
never stale, only missing.

The write path (`src.services.packages`) resolves requirements.txt once and
calls `save_lock_sync`; install engines call `read_lock` with the hash they
are about to install, and resolve by themselves when it gives None or raises
`InvalidLock`. The init step calls `warm_lock_cache_sync` for the current hash.

`read_lock` tries Redis once, with the process's shared client (its own short
reconnect retries included) and none of the requirements cache's one-second
retries: a worker that gets here has just waited for Redis there.

The store (`src.store.database`, `src.store.locks`) is imported inside the
functions that use it, `read_store_lock`, `save_lock_sync`, and nowhere else:
worker processes import this module before they accept work, and SQLAlchemy
would add about half a second and 20 MB to each of them, which read the store
only when Redis has lost the key.
"""

from __future__ import annotations

import logging

import redis

from src.core import metrics_store
from src.core.requirements_cache import REQUIREMENTS_TTL_SECONDS
from src.foundation.locks import InvalidLock, Lock
from src.foundation.redis_client import get_redis

logger = logging.getLogger(__name__)

LOCK_KEY_PREFIX = "bifrost:requirements:lock:"
LOCK_TTL_SECONDS = REQUIREMENTS_TTL_SECONDS


def lock_key(requirements_hash: str) -> str:
    return f"{LOCK_KEY_PREFIX}{requirements_hash}"


def _parse(requirements_hash: str, text: str) -> Lock:
    """The lock in `text`, which must be the lock of `requirements_hash`:
    a lock of other requirements under this hash is as unusable as garbage."""
    lock = Lock.parse(text)
    if lock.requirements_hash != requirements_hash:
        raise InvalidLock(
            f"the lock of requirements {lock.requirements_hash!r} is kept under {requirements_hash}"
        )
    return lock


# --- reading ----------------------------------------------------------------


# Cached for a hash the store has no lock of (requirements written before
# locks existed), so that only the first worker to look pays for the store
# (and for loading SQLAlchemy); short-lived, in case a lock is stored for it
# while Redis is away.
NO_LOCK = "none"
NO_LOCK_TTL_SECONDS = 300


def read_lock(requirements_hash: str, worker_id: str = "-") -> Lock | None:
    """The lock of `requirements_hash`: Redis, else the store (re-cached, quietly).

    None when no lock is stored for the hash, or when neither Redis nor the
    store could be read (logged): either way the caller resolves by itself.
    Raises `InvalidLock` when the store's text cannot be read back; a cached
    text that cannot is logged and replaced by the store's. `worker_id`
    prefixes the log lines.
    """
    cached, reachable = _get_cached(requirements_hash, worker_id)
    if cached == NO_LOCK:
        return None
    if cached is not None:
        try:
            return _parse(requirements_hash, cached)
        except InvalidLock as exc:
            logger.warning("[%s] Unreadable cached lock of %s, reading the store: %s",
                           worker_id, requirements_hash[:12], exc)
    try:
        stored = read_store_lock(requirements_hash)
    except Exception as exc:  # the store is down too: no lock, never a crash
        logger.warning("[%s] Could not read the lock of %s from the store: %s",
                       worker_id, requirements_hash[:12], exc)
        return None
    if stored is None:
        if reachable:
            _remember_no_lock(worker_id, requirements_hash)
        return None
    lock = _parse(requirements_hash, stored)  # InvalidLock: the caller logs it
    logger.info("[%s] Read the lock of %s from the store", worker_id, requirements_hash[:12])
    if reachable:
        _cache_quietly(worker_id, requirements_hash, stored)
    return lock


def read_store_lock(requirements_hash: str) -> str | None:
    """The store's lock text for the hash; None when there is no store or no lock.

    A missing SQLite file is never created by a reader.
    """
    from src.store.database import session_scope, store_exists
    from src.store.locks import get_lock

    if not store_exists():
        return None
    with session_scope() as session:
        return get_lock(session, requirements_hash)


def _get_cached(requirements_hash: str, worker_id: str) -> tuple[str | None, bool]:
    """(cached text or None, whether Redis answered)."""
    try:
        data = get_redis().get(lock_key(requirements_hash))
    except Exception as exc:  # Redis down or any client error: a miss, never a crash
        logger.warning("[%s] Redis unavailable, reading the lock of %s from the store: %s",
                       worker_id, requirements_hash[:12], exc)
        metrics_store.store_fallback("lock")
        return None, False
    metrics_store.flush()  # fallbacks counted while Redis was away (no call if none)
    return (None if data is None else str(data)), True


# --- caching ----------------------------------------------------------------


def _cache(requirements_hash: str, text: str) -> None:
    get_redis().set(lock_key(requirements_hash), text, ex=LOCK_TTL_SECONDS)


def _remember_no_lock(worker_id: str, requirements_hash: str) -> None:
    try:
        get_redis().set(lock_key(requirements_hash), NO_LOCK, ex=NO_LOCK_TTL_SECONDS, nx=True)
    except redis.RedisError as exc:
        logger.warning("[%s] Could not note that %s has no lock: %s",
                       worker_id, requirements_hash[:12], exc)


def _cache_quietly(worker_id: str, requirements_hash: str, text: str) -> None:
    try:
        _cache(requirements_hash, text)
    except redis.RedisError as exc:
        logger.warning("[%s] Could not re-cache the lock of %s: %s",
                       worker_id, requirements_hash, exc)


def warm_lock_cache_sync(requirements_hash: str) -> bool:
    """Copy the store's lock of the hash to Redis. False when the store has
    none; Redis errors propagate (init reports them)."""
    stored = read_store_lock(requirements_hash)
    if stored is None:
        # A cached lock the store does not have is in effect nowhere: drop it.
        get_redis().delete(lock_key(requirements_hash))
        return False
    _cache(requirements_hash, stored)
    return True


# --- writing through -----------------------------------------------------------


def save_lock_sync(lock: Lock) -> Lock:
    """Store the lock of `lock.requirements_hash` unless the hash has one
    already, then cache the stored one; returns the stored lock (the first
    writer's, which may not be `lock`).

    Store errors propagate (`StoreUnavailable`) before Redis is touched, and
    so does `InvalidLock` when the hash's stored lock cannot be read back (it
    stays, uncached: a hash's lock is never replaced). A cache write that
    fails after the store committed is logged, not raised: readers fall back
    to the store.
    """
    from src.store.database import session_scope
    from src.store.locks import put_lock

    requirements_hash = lock.requirements_hash
    text = lock.text()
    with session_scope() as session:
        stored = put_lock(session, requirements_hash, text)
    winner = lock if stored == text else _parse(requirements_hash, stored)
    try:
        _cache(requirements_hash, stored)
    except redis.RedisError as exc:
        logger.warning("Lock of %s saved to the store, but not cached: %s",
                       requirements_hash, exc)
    return winner
