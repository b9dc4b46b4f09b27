"""Module cache: workspace files in the store, cached in Redis.

`bifrost:module:<path>` holds a file's text, sealed (`module_seal.py`); the
set `bifrost:module:index` lists every path, and `bifrost:module:index:sealed`
says the index is complete and its files are cached sealed. Redis may lose
all of it at any time: a reader that finds no complete index rebuilds it from
the store, and a reader that misses a file reads the store and re-caches it.
Writes go to the store first, then to Redis.

A cached text whose seal is not the platform's (written by someone who
reached Redis without the store) is refused: logged with its path, counted
in `bifrost_cache_refusals_total{cache="module"}`, and read again from the
store (a reader without the store drops it and the index's mark, and waits
for a process with the store to cache it again, as for a lost index).

Workers call the `*_sync` functions from the import hook. The store
(`src.store.database`, `src.store.files`) is imported inside the functions that
use it, not at the top: worker processes and their executions load this module
to import workspace files, and SQLAlchemy would add about half a second and
20 MB to each of them, although they read the store only when Redis cannot
answer (and executions never do).
"""

from __future__ import annotations

import contextlib
import logging
import time
from typing import Any, TypedDict

import redis

from src.core import metrics_store
from src.core.module_seal import seal, seal_key, unseal
from src.foundation.redis_client import CacheNotCleared, get_redis
from src.foundation.workspace_paths import validate_content, validate_path

logger = logging.getLogger(__name__)

MODULE_KEY_PREFIX = "bifrost:module:"
MODULE_INDEX_KEY = "bifrost:module:index"
MODULE_INDEX_WARM_KEY = "bifrost:module:index:sealed"
MODULE_TTL_SECONDS = 86400
# How long a reader without the store waits for someone to warm a lost index.
WARM_WAIT_SECONDS = 10.0
WARM_POLL_SECONDS = 0.05


class CachedFileRefused(RuntimeError):
    """The cached copy of a file is not the platform's, and no process with
    the store cached it again in time."""


class FileInfo(TypedDict):
    path: str
    hash: str
    size: int


def module_key(path: str) -> str:
    return MODULE_KEY_PREFIX + path


def sealed(path: str, content: str) -> str:
    """What the cache holds for the file `path`."""
    return seal(seal_key(), path, content)


def _checked(path: str, cached: str) -> str | None:
    """The text of a cached value, or None (logged, counted) when its seal
    is not the platform's."""
    text = unseal(seal_key(), path, cached)
    if text is None:
        logger.warning("Refused the cached copy of workspace file %s: it does not carry the "
                       "platform's seal (someone who reached Redis wrote it); reading the "
                       "store's", path)
        metrics_store.cache_refusal("module")
    return text


# --- writing ----------------------------------------------------------------


def save_file_sync(path: str, content: str) -> FileInfo:
    """Validate, store, then cache. InvalidPath for a bad path or content."""
    from src.store.database import session_scope
    from src.store.files import put_file

    validate_path(path)
    validate_content(content)
    with session_scope() as session:
        row = put_file(session, path, content)
        info = FileInfo(path=row.path, hash=row.hash, size=row.size)
    try:
        client = get_redis()
        with client.pipeline() as pipe:
            pipe.set(module_key(path), sealed(path, content), ex=MODULE_TTL_SECONDS)
            pipe.sadd(MODULE_INDEX_KEY, path)
            pipe.execute()
    except redis.RedisError as exc:
        _forget(path, "saved to", exc)
    return info


def _forget(path: str, done: str, exc: redis.RedisError) -> None:
    """After a failed cache write: drop the file's cached copy and the index's
    completeness mark, so that every reader goes to the store for it. DEL is
    taken even by a Redis over its `maxmemory`, which refuses the SET. Raises
    CacheNotCleared when that fails too: the write must not look done."""
    try:
        get_redis().delete(module_key(path), MODULE_INDEX_WARM_KEY)
    except redis.RedisError as again:
        logger.error("File %s %s the store, but Redis could neither update nor drop its "
                     "cached copy: %s; then %s", path, done, exc, again)
        raise CacheNotCleared(
            f"the file {path} is {done} the store, but Redis could neither update nor drop "
            f"its cached copy ({exc}): readers may get the old version until Redis answers "
            "and the write is repeated") from again
    logger.warning("File %s %s the store; Redis refused the new cached copy (%s), so the old "
                   "one was dropped: readers read the store", path, done, exc)


def delete_file_sync(path: str) -> bool:
    from src.store.database import session_scope
    from src.store.files import delete_file

    validate_path(path)
    with session_scope() as session:
        deleted = delete_file(session, path)
    try:
        client = get_redis()
        with client.pipeline() as pipe:
            pipe.delete(module_key(path))
            pipe.srem(MODULE_INDEX_KEY, path)
            pipe.execute()
    except redis.RedisError as exc:
        _forget(path, "deleted from", exc)
    return deleted


# --- reading ----------------------------------------------------------------


def read_file_sync(
    path: str, client: redis.Redis | None = None, *, from_store: bool = True
) -> str | None:
    """A file's text: Redis, else the store (re-cached). None when absent.

    `from_store=False` is for readers that must not hold the store's URL (an
    execution's process): they wait for a warm index instead (see
    `index_sync`) and read Redis alone."""
    if not from_store:
        return _read_cache_only(path, client or get_redis())
    try:
        client = client or get_redis()
        cached = client.get(module_key(path))
        text = None if cached is None else _checked(path, str(cached))
        metrics_store.flush(client)  # fallbacks counted while Redis was away (no call if none)
        if text is not None:
            return text
    except redis.RedisError as exc:
        logger.warning("Redis unavailable, reading %s from the store: %s", path, exc)
        metrics_store.store_fallback("module")
        client = None
    content = _read_store_file(path)
    if content is not None and client is not None:
        # A failed re-cache costs nothing but the next reader's store read.
        with contextlib.suppress(redis.RedisError):
            client.set(module_key(path), sealed(path, content), ex=MODULE_TTL_SECONDS)
    return content


def _read_cache_only(path: str, client: redis.Redis) -> str | None:
    """Redis alone; a refused copy is dropped with the index's mark, so a
    process with the store (a pool's heartbeat) caches the store's again,
    and read once that is done."""
    cached = client.get(module_key(path))
    if cached is None:
        return None
    text = _checked(path, str(cached))
    if text is not None:
        return text
    client.delete(module_key(path), MODULE_INDEX_WARM_KEY)
    metrics_store.flush(client)  # the refusal
    _index_when_warm(client)
    cached = client.get(module_key(path))
    if cached is None:
        return None  # the store has no such file
    text = unseal(seal_key(), path, str(cached))
    if text is None:
        raise CachedFileRefused(
            f"the cached copy of workspace file {path} does not carry the platform's seal, "
            f"and no process with the store cached it again within {WARM_WAIT_SECONDS:g} s")
    return text


def cached_files_sync(paths: list[str], client: redis.Redis | None = None) -> dict[str, str]:
    """The texts Redis holds for `paths` (one round trip); missing ones, and
    ones without the platform's seal, are left out."""
    if not paths:
        return {}
    values: list[Any] = (client or get_redis()).mget(  # type: ignore[assignment]
        [module_key(path) for path in paths])
    key = seal_key()
    texts = {path: unseal(key, path, str(value))
             for path, value in zip(paths, values, strict=True) if value is not None}
    # A refused copy is left out: its reader (`read_file_sync`) refuses it aloud.
    return {path: text for path, text in texts.items() if text is not None}


def index_sync(client: redis.Redis | None = None, *, from_store: bool = True) -> set[str]:
    """Every workspace path; rebuilt from the store when Redis lost the index.

    `from_store=False`: never touch the store; when Redis lost the index, wait
    (up to `WARM_WAIT_SECONDS`) for a process that may read the store (a pool's
    heartbeat, `bifrost init`, the API) to warm it again."""
    if not from_store:
        return _index_when_warm(client or get_redis())
    try:
        client = client or get_redis()
        with client.pipeline(transaction=False) as pipe:
            pipe.exists(MODULE_INDEX_WARM_KEY)
            pipe.smembers(MODULE_INDEX_KEY)
            warm, members = pipe.execute()
        metrics_store.flush(client)  # fallbacks counted while Redis was away (no call if none)
        if warm:
            return {str(member) for member in members}
    except redis.RedisError as exc:
        logger.warning("Redis unavailable, listing workspace files from the store: %s", exc)
        metrics_store.store_fallback("module")
        return set(_store_files())
    try:
        return set(_warm(client))
    except redis.RedisError as exc:  # answering reads, refusing writes (over maxmemory)
        logger.warning("Redis refused the workspace index, listing it from the store: %s", exc)
        return set(_store_files())


def _index_when_warm(client: redis.Redis) -> set[str]:
    deadline = time.monotonic() + WARM_WAIT_SECONDS
    while True:
        with client.pipeline(transaction=False) as pipe:
            pipe.exists(MODULE_INDEX_WARM_KEY)
            pipe.smembers(MODULE_INDEX_KEY)
            warm, members = pipe.execute()
        if warm or time.monotonic() >= deadline:
            return {str(member) for member in members}
        time.sleep(WARM_POLL_SECONDS)


def ensure_warm_sync(client: redis.Redis | None = None) -> bool:
    """Warm the cache from the store if Redis lost it; whether it had to."""
    client = client or get_redis()
    if client.exists(MODULE_INDEX_WARM_KEY):
        return False
    count = len(_warm(client))
    logger.info("The module cache was empty (Redis lost it); warmed %d files from the store",
                count)
    return True


def _read_store_file(path: str) -> str | None:
    from src.store.database import session_scope, store_exists
    from src.store.files import get_file

    if not store_exists():
        return None
    with session_scope() as session:
        row = get_file(session, path)
        return None if row is None else row.content


def _store_files() -> dict[str, str]:
    from src.store.database import session_scope, store_exists
    from src.store.files import list_files

    if not store_exists():
        return {}
    with session_scope() as session:
        return {
            row.path: row.content
            for row in list_files(session)
            if row.entity_type != "requirements"
        }


def _warm(client: redis.Redis) -> dict[str, str]:
    files = _store_files()
    with client.pipeline() as pipe:
        for path, content in files.items():
            pipe.set(module_key(path), sealed(path, content), ex=MODULE_TTL_SECONDS)
        if files:
            # Union, never replace: a file saved while we read the store stays listed.
            pipe.sadd(MODULE_INDEX_KEY, *files)
        pipe.set(MODULE_INDEX_WARM_KEY, "1")
        pipe.execute()
    return files


def warm_module_cache_sync() -> int:
    """Copy every workspace file from the store to Redis; returns how many."""
    return len(_warm(get_redis()))
