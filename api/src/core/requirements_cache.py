"""Requirements cache: requirements.txt in the store, cached in Redis.

Key `bifrost:requirements:content` holds JSON `{"content", "hash"}` where hash is
the sha256 hex digest of content, with a 24 h TTL. Redis is only a cache and may
be flushed or restarted empty at any time: the store is the source of truth,
and every reader that misses in Redis reads the store and re-caches.

`save_requirements_sync` writes through: one compare-and-set in the store, then
the key. It neither validates nor retries; the requirements service
(`src.services.packages`) validates what it writes, once, and retries
conflicts, bounded.

Workers read with `get_requirements_sync()` before any event loop exists, with
the workers' Redis retry policy (three tries, one second apart). The async
functions run the same sync code in a thread, so there is one implementation
and no event-loop-bound client.

The store (`src.store.database`, `src.store.files`) is imported inside the two
functions that use it, `read_store_requirements` and `save_requirements_sync`,
and nowhere else: every worker process imports this module before it accepts
work, and SQLAlchemy would add about half a second and 20 MB to each worker,
which reads the store only when Redis has lost the key.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from typing import TypedDict

import redis

from src.core import metrics_store
from src.foundation.hashing import sha256_hex
from src.foundation.redis_client import CacheNotCleared, get_redis
from src.foundation.requirement_checks import InvalidRequirements, shorten
from src.foundation.requirements import validate_requirements
from src.foundation.settings import get_settings

logger = logging.getLogger(__name__)

REQUIREMENTS_KEY = "bifrost:requirements:content"
REQUIREMENTS_TTL_SECONDS = 86400

# Workers' retry policy: three tries one second apart, then give up on Redis.
REDIS_ATTEMPTS = 3
REDIS_RETRY_DELAY = 1.0


class CachedRequirements(TypedDict):
    content: str
    hash: str


# --- reading ----------------------------------------------------------------


def get_requirements_sync(worker_id: str = "-") -> CachedRequirements | None:
    """Read requirements for a worker: Redis, else the store; never raises.

    Redis is tried `REDIS_ATTEMPTS` times, `REDIS_RETRY_DELAY` s apart, on
    connection errors. On a miss (key absent or unreadable, or Redis down) the
    store is read directly when there is one, and re-cached when Redis answers.
    None means there is nothing anywhere (or neither could be read).
    `worker_id` prefixes the log lines.
    """
    data, reachable = _get_with_retries(worker_id)
    try:
        return _read_through(data, reachable, worker_id, _recache_with_fresh_client)
    except Exception as exc:
        logger.warning("[%s] Could not read requirements from the store: %s", worker_id, exc)
        return None


def read_requirements() -> CachedRequirements | None:
    """The API's read: one Redis attempt, then the store (whose errors propagate)."""
    try:
        data, reachable = get_redis().get(REQUIREMENTS_KEY), True
    except redis.RedisError as exc:
        logger.warning("Redis unavailable, reading requirements from the store: %s", exc)
        data, reachable = None, False
    return _read_through(
        None if data is None else str(data), reachable, "api", _recache_quietly
    )


async def get_requirements() -> CachedRequirements | None:
    """Redis, on a miss the store, re-caching what it found."""
    return await asyncio.to_thread(read_requirements)


def read_store_requirements() -> CachedRequirements | None:
    """The store's requirements.txt; None when there is no store or no file.

    A missing SQLite file is never created by a reader.
    """
    from src.store.database import session_scope, store_exists
    from src.store.files import read_requirements as read_stored

    if not store_exists():
        return None
    with session_scope() as session:
        found = read_stored(session)
    return None if found is None else CachedRequirements(content=found[0], hash=found[1])


def cached_hash(client: redis.Redis) -> str | None:
    """The hash in the Redis key, or None (absent, unreadable); Redis only,
    for pools watching for a change. Redis errors propagate."""
    data = client.get(REQUIREMENTS_KEY)
    # Quietly: a pool asks often; the workers that read the value report it.
    cached = _decode("pool", str(data), report=False) if data else None
    return cached["hash"] if cached else None


def _get_with_retries(worker_id: str) -> tuple[str | None, bool]:
    """Workers' Redis read: (cached JSON or None, whether Redis answered)."""
    redis_url = get_settings().redis_url
    for attempt in range(1, REDIS_ATTEMPTS + 1):
        try:
            client = redis.from_url(redis_url, decode_responses=True, socket_timeout=5.0)
            try:
                data = client.get(REQUIREMENTS_KEY)
            finally:
                client.close()
            return (str(data) if data else None), True
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            if attempt < REDIS_ATTEMPTS:
                logger.warning(
                    "[%s] Redis connection failed (attempt %d/%d): %s",
                    worker_id, attempt, REDIS_ATTEMPTS, exc,
                )
                time.sleep(REDIS_RETRY_DELAY)
        except Exception as exc:  # any other client error: a miss, never a crash
            logger.warning("[%s] Could not read cached requirements: %s", worker_id, exc)
            return None, False
    logger.warning("[%s] Redis unavailable after %d attempts", worker_id, REDIS_ATTEMPTS)
    return None, False


def _read_through(
    data: str | None,
    reachable: bool,
    worker_id: str,
    recache: Callable[[CachedRequirements], None],
) -> CachedRequirements | None:
    cached = None if data is None else _decode(worker_id, data)
    if reachable:
        # Fallbacks counted while Redis was away, and a refused value (no call if none).
        metrics_store.flush()
    else:
        metrics_store.store_fallback("requirements")
    if cached is not None:
        return cached
    stored = read_store_requirements()
    if stored is None:
        return None
    logger.info("[%s] Read requirements.txt from the store", worker_id)
    if reachable:
        recache(stored)
    return stored


def _decode(worker_id: str, data: str, report: bool = True) -> CachedRequirements | None:
    """The cached value, if it is what the API would have written; else None
    (logged and counted unless `report` is False), and the caller reads the store.

    Redis is reachable by more than the platform (a workflow can reach the
    network): a value is used only when every line passes the API's
    validation, and always under the sha256 of its content, whatever hash it
    gives (a mismatch is logged and counted).
    """
    try:
        cached = json.loads(data)
    except json.JSONDecodeError as exc:
        return _refuse(worker_id, f"Invalid JSON in cached requirements: {exc}", report)
    if not isinstance(cached, dict):
        return _refuse(worker_id, "Invalid cached requirements: not a JSON object", report)
    content, digest = cached.get("content", ""), cached.get("hash")
    if not isinstance(content, str):
        return _refuse(worker_id, "Invalid cached requirements: content is not a string",
                       report)
    try:
        validate_requirements(content)
    except InvalidRequirements as exc:
        return _refuse(worker_id, "Invalid cached requirements: the API would refuse them "
                       f"({shorten(str(exc))})", report)
    actual = sha256_hex(content)
    # The content is used under its own hash, never under the one given: a
    # value cannot pass for another hash's environment or lock. (The
    # worker-startup spec has a worker install a cached value whose hash is
    # not its content's.)
    if digest != actual and report:
        logger.warning("[%s] Cached requirements: the hash %.12s is not the sha256 of "
                       "the content; using the content's own, %.12s",
                       worker_id, str(digest), actual)
        metrics_store.cache_refusal("requirements")
    return CachedRequirements(content=content, hash=actual)


def _refuse(worker_id: str, reason: str, report: bool) -> None:
    """Log and count a cached value that is not used (the store is read instead)."""
    if report:
        logger.warning("[%s] %s; not used: reading the store", worker_id, reason)
        metrics_store.cache_refusal("requirements")
    return None


# --- caching ----------------------------------------------------------------


def _cache_value(content: str, digest: str) -> str:
    return json.dumps(CachedRequirements(content=content, hash=digest))


def set_requirements_sync(content: str, content_hash: str) -> None:
    get_redis().set(
        REQUIREMENTS_KEY, _cache_value(content, content_hash), ex=REQUIREMENTS_TTL_SECONDS
    )


async def set_requirements(content: str, content_hash: str) -> None:
    """SETEX the key with a 24 h TTL."""
    await asyncio.to_thread(set_requirements_sync, content, content_hash)


def _recache_quietly(cached: CachedRequirements) -> None:
    try:
        set_requirements_sync(cached["content"], cached["hash"])
    except redis.RedisError as exc:
        logger.warning("Could not re-cache requirements: %s", exc)


def _recache_with_fresh_client(cached: CachedRequirements) -> None:
    # Workers keep no shared client at start-up; one short-lived connection.
    try:
        client = redis.from_url(
            get_settings().redis_url, decode_responses=True, socket_timeout=5.0
        )
        try:
            client.set(
                REQUIREMENTS_KEY,
                _cache_value(cached["content"], cached["hash"]),
                ex=REQUIREMENTS_TTL_SECONDS,
            )
        finally:
            client.close()
    except Exception as exc:
        logger.warning("Could not re-cache requirements: %s", exc)


def warm_requirements_cache_sync() -> bool:
    """Copy the store's requirements to Redis. False when there is nothing to
    cache (no file, or a blank one); Redis errors propagate (init reports them)."""
    stored = read_store_requirements()
    if stored is None:
        # Nothing in the store means nothing in effect: drop a stale key.
        get_redis().delete(REQUIREMENTS_KEY)
        return False
    set_requirements_sync(stored["content"], stored["hash"])
    return bool(stored["content"].strip())


async def warm_requirements_cache() -> bool:
    return await asyncio.to_thread(warm_requirements_cache_sync)


# --- writing through -----------------------------------------------------------


def save_requirements_sync(
    content: str, expected_hash: str | None = None, change: str = "put"
) -> CachedRequirements:
    """Compare-and-set `content` in the store (one attempt), then update the cache.

    `content` is written as given: the caller has validated it. Raises
    `RequirementsConflict` (the store's hash is not `expected_hash`, or with
    `expected_hash=None`, another writer landed during the write) with nothing
    changed, and `StoreUnavailable` before Redis is touched. A cache write that
    fails after the store committed drops the cached copy instead (readers fall
    back to the store, which holds the truth); `CacheNotCleared` when even that
    fails. `change` goes into the store's history.
    """
    from src.store.database import session_scope
    from src.store.files import compare_and_set_requirements

    with session_scope() as session:
        _, digest = compare_and_set_requirements(session, content, expected_hash, change)
    saved = CachedRequirements(content=content, hash=digest)
    try:
        set_requirements_sync(content, digest)
    except redis.RedisError as exc:
        # Dropped instead (DEL passes maxmemory): workers then read the store.
        try:
            get_redis().delete(REQUIREMENTS_KEY)
        except redis.RedisError as again:
            logger.error("Requirements %s saved to the store, but Redis could neither update "
                         "nor drop its cached copy: %s; then %s", digest[:12], exc, again)
            raise CacheNotCleared(
                f"the requirements are saved in the store (hash {digest}), but Redis could "
                f"neither update nor drop its cached copy ({exc}): workers may install the old "
                "ones until Redis answers and the write is repeated") from again
        logger.warning("Requirements %s saved to the store; Redis refused the new cached copy "
                       "(%s), so the old one was dropped: readers read the store",
                       digest[:12], exc)
    return saved


async def save_requirements(
    content: str, expected_hash: str | None = None, change: str = "put"
) -> CachedRequirements:
    return await asyncio.to_thread(save_requirements_sync, content, expected_hash, change)
