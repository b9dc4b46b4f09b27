"""The lock cache against a real Redis and a real store (SQLite and PostgreSQL).

Each test makes its own locks under hashes of its own and removes only those
keys when it needs Redis to have lost them."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis

from src.core import lock_cache as lc
from src.core import requirements_cache as rc
from src.foundation.hashing import sha256_hex
from src.foundation.local_redis import LocalRedis
from src.foundation.locks import DIRECT, InvalidLock, Lock, LockedPackage
from src.store.database import session_scope
from src.store.locks import get_lock, put_lock
from tests.support.sleeps import recorded_sleeps

API_DIR = Path(__file__).resolve().parents[3]
REQUIREMENTS = "humanize==4.9.0\n"
HASH = sha256_hex(REQUIREMENTS)


def _lock(version: str = "4.9.0", requirements_hash: str = HASH) -> Lock:
    return Lock.of(requirements_hash, [
        LockedPackage("humanize", version, (f"sha256:{'0' * 64}",), (DIRECT,)),
    ])


def _stored(requirements_hash: str = HASH) -> str | None:
    with session_scope() as session:
        return get_lock(session, requirements_hash)


def test_key_and_ttl_constants() -> None:
    assert lc.LOCK_KEY_PREFIX == "bifrost:requirements:lock:"
    assert lc.lock_key(HASH) == f"bifrost:requirements:lock:{HASH}"
    assert lc.LOCK_TTL_SECONDS == rc.REQUIREMENTS_TTL_SECONDS == 86400


def test_save_stores_then_caches_with_ttl(system: str, redis_client: redis.Redis) -> None:
    lock = _lock()
    assert lc.save_lock_sync(lock) == lock
    assert _stored() == lock.text()
    assert redis_client.get(lc.lock_key(HASH)) == lock.text()
    assert 86390 <= redis_client.ttl(lc.lock_key(HASH)) <= 86400
    assert lc.read_lock(HASH, "w1") == lock


def test_the_first_saved_lock_wins(system: str, redis_client: redis.Redis) -> None:
    first, second = _lock("4.9.0"), _lock("4.8.0")
    lc.save_lock_sync(first)
    redis_client.delete(lc.lock_key(HASH))
    assert lc.save_lock_sync(second) == first
    assert _stored() == first.text()
    assert redis_client.get(lc.lock_key(HASH)) == first.text()


def test_a_hit_does_not_read_the_store(
    system: str, redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    lc.save_lock_sync(_lock())

    def no_store(requirements_hash: str) -> str | None:
        raise AssertionError("the store was read on a hit")

    monkeypatch.setattr(lc, "read_store_lock", no_store)
    assert lc.read_lock(HASH) == _lock()


def test_a_miss_reads_the_store_and_recaches(system: str, redis_client: redis.Redis) -> None:
    lock = lc.save_lock_sync(_lock())
    redis_client.delete(lc.lock_key(HASH))
    assert lc.read_lock(HASH, "w-miss") == lock
    assert redis_client.get(lc.lock_key(HASH)) == lock.text()
    assert 86390 <= redis_client.ttl(lc.lock_key(HASH)) <= 86400


def test_no_lock_is_none_and_remembered_for_a_while(
    system: str, redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    other = sha256_hex("nothing locked\n")
    assert lc.read_lock(other) is None
    # The next reader learns it from Redis alone, without the store.
    assert redis_client.get(lc.lock_key(other)) == lc.NO_LOCK
    assert 0 < redis_client.ttl(lc.lock_key(other)) <= lc.NO_LOCK_TTL_SECONDS
    with monkeypatch.context() as patched:
        patched.setattr(lc, "read_store_lock", lambda _hash: pytest.fail("read the store"))
        assert lc.read_lock(other) is None
    # A lock saved later replaces the note at once.
    lock = Lock.of(other, [LockedPackage("alpha", "1", (), (DIRECT,))])
    assert lc.save_lock_sync(lock) == lock
    assert lc.read_lock(other) == lock


def test_redis_down_reads_the_store_at_once(
    system: str, own_redis: LocalRedis, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    lock = lc.save_lock_sync(_lock())
    own_redis.stop()
    started = time.monotonic()
    with recorded_sleeps(monkeypatch) as slept:
        assert lc.read_lock(HASH, "w-down") == lock
    # No one-second retries of its own (the requirements cache's): not even one
    # such pause, whatever the machine's speed. The client's own short reconnect
    # backoff is allowed. The time bound only catches a hang.
    assert sum(slept) < rc.REDIS_RETRY_DELAY, slept
    assert time.monotonic() - started < 60
    assert "[w-down] Redis unavailable, reading the lock of" in caplog.text
    assert "Could not re-cache" not in caplog.text  # Redis is down: not tried


def test_save_with_redis_down_keeps_the_lock_in_the_store(
    system: str, own_redis: LocalRedis,
    caplog: pytest.LogCaptureFixture,
) -> None:
    own_redis.stop()
    lock = _lock()
    assert lc.save_lock_sync(lock) == lock
    assert _stored() == lock.text()
    assert "saved to the store, but not cached" in caplog.text


def test_an_unreadable_stored_lock_raises(system: str, redis_client: redis.Redis) -> None:
    with session_scope() as session:
        put_lock(session, HASH, "humanize>=4\n")
    with pytest.raises(InvalidLock):
        lc.read_lock(HASH)
    assert redis_client.get(lc.lock_key(HASH)) is None  # not cached either


def test_a_stored_lock_of_other_requirements_raises(
    system: str, redis_client: redis.Redis
) -> None:
    with session_scope() as session:
        put_lock(session, HASH, _lock(requirements_hash="ef" * 32).text())
    with pytest.raises(InvalidLock, match="is kept under"):
        lc.read_lock(HASH)


def test_an_unreadable_cached_lock_gives_way_to_the_store(
    system: str, redis_client: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    lock = lc.save_lock_sync(_lock())
    redis_client.set(lc.lock_key(HASH), "garbage==", ex=60)
    assert lc.read_lock(HASH, "w-bad") == lock
    assert "[w-bad] Unreadable cached lock" in caplog.text
    assert redis_client.get(lc.lock_key(HASH)) == lock.text()


def test_an_unreadable_cached_lock_with_none_stored_is_none(
    system: str, redis_client: redis.Redis
) -> None:
    redis_client.set(lc.lock_key(HASH), "garbage==", ex=60)
    assert lc.read_lock(HASH) is None


def test_warm_puts_the_stored_lock_back(system: str, redis_client: redis.Redis) -> None:
    lock = lc.save_lock_sync(_lock())
    redis_client.delete(lc.lock_key(HASH))
    assert lc.warm_lock_cache_sync(HASH) is True
    assert redis_client.get(lc.lock_key(HASH)) == lock.text()
    assert redis_client.ttl(lc.lock_key(HASH)) > 86000

    other = sha256_hex("nothing locked\n")
    redis_client.set(lc.lock_key(other), "stale", ex=60)
    assert lc.warm_lock_cache_sync(other) is False
    assert redis_client.get(lc.lock_key(other)) is None


def test_a_worker_read_creates_no_store_when_there_is_none(
    redis_client: redis.Redis, isolated_settings: Path
) -> None:
    assert lc.read_lock(HASH, "w-nostore") is None
    assert not isolated_settings.exists()


def test_a_cached_read_does_not_load_sqlalchemy(system: str, redis_client: redis.Redis) -> None:
    lc.save_lock_sync(_lock())
    script = (
        "import sys\n"
        "from src.core import lock_cache\n"
        f"assert lock_cache.read_lock({HASH!r}) is not None\n"
        "assert 'sqlalchemy' not in sys.modules, 'sqlalchemy was imported'\n"
    )
    done = subprocess.run([sys.executable, "-c", script], cwd=API_DIR, capture_output=True,
                          text=True, env=dict(os.environ), timeout=60)
    assert done.returncode == 0, done.stderr


def test_saving_over_an_unreadable_stored_lock_raises_and_replaces_nothing(
    system: str, redis_client: redis.Redis
) -> None:
    with session_scope() as session:
        put_lock(session, HASH, "humanize>=4\n")
    with pytest.raises(InvalidLock):
        lc.save_lock_sync(_lock())
    assert _stored() == "humanize>=4\n"
    assert redis_client.get(lc.lock_key(HASH)) is None
