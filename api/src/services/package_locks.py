"""The lock of each requirements write: resolved once, before anything is stored.

One requirements hash has one lock, forever: a hash that has a lock (in the
store, cached in Redis) keeps it, so writing back a file that was written
before brings back exactly the versions it ran. A new hash is resolved by uv
(`src/services/installer/resolver.py`) with the current lock's versions as
preferences, so adding a line moves nothing else. The lock is stored before
the requirements that name its hash, so a worker that sees the new hash
always finds its lock.

When the index cannot be reached, a removal still works: the remaining
versions come from the current lock (`Lock.without`). Everything else gets
`IndexUnreachable` (503) and changes nothing.

An upgrade that moves versions gives requirements.txt a new hash by
rewriting one comment line, `# bifrost: lock <digest>` (installers ignore
comments): a hash never changes its versions, so new versions need a new hash.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress

import redis

from src.core.lock_cache import read_lock, save_lock_sync
from src.foundation.hashing import sha256_hex
from src.foundation.locks import InvalidLock, Lock
from src.foundation.redis_client import get_redis
from src.services.installer.resolver import IndexUnreachable, resolve

logger = logging.getLogger(__name__)

UPGRADE_MARK = "# bifrost: lock "
WRITE_LOCK_KEY = "bifrost:requirements:write-lock"
# Held at most this long (a writer that died lets go by then) ...
WRITE_LOCK_SECONDS = 300.0
# ... and waited for at most this long, before going ahead anyway.
WRITE_WAIT_SECONDS = 120.0


@contextmanager
def one_writer_at_a_time() -> Iterator[None]:
    """Writers of requirements.txt take turns (redis-py's lock), so each
    resolves once instead of losing the compare-and-set to another writer and
    resolving again. The compare-and-set is still what keeps writes correct:
    without Redis, or after waiting too long, a writer goes ahead anyway."""
    lock = None
    try:
        candidate = get_redis().lock(WRITE_LOCK_KEY, timeout=WRITE_LOCK_SECONDS,
                                     blocking_timeout=WRITE_WAIT_SECONDS)
        if candidate.acquire():
            lock = candidate
    except redis.RedisError as exc:
        logger.warning("Writing requirements without the writers' lock: %s", exc)
    try:
        yield
    finally:
        if lock is not None:
            with suppress(redis.RedisError):  # it expired: someone else may hold it now
                lock.release()


def stored_lock(requirements_hash: str) -> Lock | None:
    """The lock of a hash, if it has a readable one."""
    try:
        return read_lock(requirements_hash)
    except InvalidLock as exc:
        logger.warning("The lock for requirements %s cannot be read (%s): resolving again",
                       requirements_hash[:12], exc)
        return None


def lock_for(content: str, requirements_hash: str, current: Lock | None,
             removed: str | None = None) -> Lock:
    """The lock of `content`: the stored one, or a new resolution, saved.

    `current`: the lock in effect, whose versions the resolution prefers.
    `removed`: the package whose line this write removes; when the index is
    unreachable, the lock is then `current` without it.
    """
    existing = stored_lock(requirements_hash)
    if existing is not None:
        return existing
    try:
        lock = resolve(content, requirements_hash, preferences=current)
    except IndexUnreachable:
        if removed is None or current is None:
            raise
        logger.warning("Index unreachable: the lock after removing %s is the current lock "
                       "without it", removed)
        lock = current.without(removed, requirements_hash)
    return save_lock_sync(lock)


def upgraded(content: str, current: Lock | None,
             names: Sequence[str] | None) -> tuple[str, Lock] | None:
    """requirements.txt and its lock after upgrading `names` (None: every
    package) to the newest versions allowed; None when nothing moves."""
    new = resolve(content, sha256_hex(content), preferences=current,
                  upgrade=True if names is None else list(names))
    if current is not None and new.pins() == current.pins():
        return None
    marked = with_lock_mark(content, sha256_hex("\n".join(new.pins()))[:16])
    if marked == content:
        return None
    relabelled = Lock.of(sha256_hex(marked), new.packages)
    return marked, save_lock_sync(relabelled)


def with_lock_mark(content: str, mark: str) -> str:
    """`content` with its `# bifrost: lock` comment line set to `mark`."""
    lines = [line for line in content.splitlines() if not line.startswith(UPGRADE_MARK)]
    lines.append(UPGRADE_MARK + mark)
    return "\n".join(lines) + "\n"
