"""The requirements cache against a real Redis and a real store (SQLite and PostgreSQL)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import redis

from src.core import requirements_cache as rc
from src.core.metrics_store import CACHE_REFUSALS, counter_key
from src.foundation.hashing import sha256_hex
from src.foundation.local_redis import LocalRedis
from src.store.database import session_scope
from src.store.files import RequirementsConflict
from src.store.models import RequirementsChange

CONTENT = "alpha==1.0\nbeta>=2  # why\n"


def test_save_writes_key_format_and_ttl(system: str, redis_client: redis.Redis) -> None:
    saved = rc.save_requirements_sync(CONTENT)
    raw = redis_client.get(rc.REQUIREMENTS_KEY)
    assert raw is not None
    assert json.loads(raw) == {"content": CONTENT, "hash": sha256_hex(CONTENT)}
    assert saved == {"content": CONTENT, "hash": sha256_hex(CONTENT)}
    assert 86390 <= redis_client.ttl(rc.REQUIREMENTS_KEY) <= 86400


async def test_async_api_round_trip(system: str, redis_client: redis.Redis) -> None:
    saved = await rc.save_requirements(CONTENT)
    assert await rc.get_requirements() == saved
    await rc.set_requirements("gamma==3\n", sha256_hex("gamma==3\n"))
    assert await rc.get_requirements() == {"content": "gamma==3\n", "hash": sha256_hex("gamma==3\n")}


def test_read_after_flushall_comes_from_the_store_and_recaches(
    system: str, redis_client: redis.Redis
) -> None:
    rc.save_requirements_sync(CONTENT)
    redis_client.flushall()
    assert rc.read_requirements() == {"content": CONTENT, "hash": sha256_hex(CONTENT)}
    assert json.loads(redis_client.get(rc.REQUIREMENTS_KEY) or "{}")["content"] == CONTENT

    redis_client.flushall()
    assert rc.get_requirements_sync("w1") == {"content": CONTENT, "hash": sha256_hex(CONTENT)}
    assert json.loads(redis_client.get(rc.REQUIREMENTS_KEY) or "{}")["content"] == CONTENT


def test_read_with_redis_stopped_comes_from_the_store(
    system: str, own_redis: LocalRedis, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    rc.save_requirements_sync(CONTENT)
    own_redis.stop()
    monkeypatch.setattr(rc, "REDIS_RETRY_DELAY", 0.01)
    assert rc.get_requirements_sync("w-down") == {"content": CONTENT, "hash": sha256_hex(CONTENT)}
    assert "[w-down] Redis unavailable after 3 attempts" in caplog.text
    assert rc.read_requirements() == {"content": CONTENT, "hash": sha256_hex(CONTENT)}


def test_warm_after_flushall_restores_the_key(system: str, redis_client: redis.Redis) -> None:
    assert rc.warm_requirements_cache_sync() is False  # nothing stored yet
    assert redis_client.get(rc.REQUIREMENTS_KEY) is None
    rc.save_requirements_sync(CONTENT)
    redis_client.flushall()
    assert rc.warm_requirements_cache_sync() is True
    assert json.loads(redis_client.get(rc.REQUIREMENTS_KEY) or "{}") == {
        "content": CONTENT, "hash": sha256_hex(CONTENT),
    }
    assert redis_client.ttl(rc.REQUIREMENTS_KEY) > 86000


def test_stale_expected_hash_is_refused_and_nothing_changes(
    system: str, redis_client: redis.Redis
) -> None:
    first = rc.save_requirements_sync(CONTENT)
    rc.save_requirements_sync("alpha==2.0\n", expected_hash=first["hash"])
    cached_before = redis_client.get(rc.REQUIREMENTS_KEY)
    with pytest.raises(RequirementsConflict):
        rc.save_requirements_sync("alpha==3.0\n", expected_hash=first["hash"])
    assert rc.read_store_requirements() == {"content": "alpha==2.0\n",
                                            "hash": sha256_hex("alpha==2.0\n")}
    assert redis_client.get(rc.REQUIREMENTS_KEY) == cached_before
    with session_scope() as session:
        assert session.query(RequirementsChange).count() == 2


def test_worker_read_creates_no_store_when_there_is_none(
    redis_client: redis.Redis, isolated_settings: Path
) -> None:
    assert rc.get_requirements_sync("w-nostore") is None
    assert not (isolated_settings / "bifrost.db").exists()
    assert not isolated_settings.exists()


# --- an attacker who reached Redis ---------------------------------------------------

FORGED_LINE = "evil @ file:///dev/shm/evil-1.0.tar.gz\n"


@pytest.mark.parametrize("forged", [
    pytest.param({"content": FORGED_LINE, "hash": sha256_hex(FORGED_LINE)}, id="a URL line"),
    pytest.param({"content": "--index-url http://attacker/\nalpha==1.0\n",
                  "hash": sha256_hex("--index-url http://attacker/\nalpha==1.0\n")},
                 id="an installer option"),
    pytest.param({"content": ["alpha==1.0"], "hash": "x"}, id="content not a string"),
    pytest.param("not json", id="not JSON"),
])
def test_a_worker_refuses_requirements_the_api_would_refuse_and_reads_the_store(
    system: str, redis_client: redis.Redis, forged: object, caplog: pytest.LogCaptureFixture
) -> None:
    saved = rc.save_requirements_sync(CONTENT)
    redis_client.set(rc.REQUIREMENTS_KEY, forged if isinstance(forged, str) else json.dumps(forged))
    caplog.set_level("WARNING")
    assert rc.get_requirements_sync("w-victim") == saved
    assert "[w-victim] Invalid" in caplog.text and "not used: reading the store" in caplog.text
    # The store's value is back in Redis, and the refusal is counted for /metrics.
    assert json.loads(redis_client.get(rc.REQUIREMENTS_KEY) or "") == saved
    refusals = redis_client.hgetall(counter_key(CACHE_REFUSALS))
    assert sum(int(v) for v in refusals.values()) == 1, refusals


def test_a_hash_that_is_not_the_contents_is_never_used(
    system: str, redis_client: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    """A value is taken under the sha256 of its content, whatever hash it gives:
    it cannot pass for another hash's environment or lock."""
    other = "gamma==3\n"
    redis_client.set(rc.REQUIREMENTS_KEY,
                     json.dumps({"content": other, "hash": sha256_hex(CONTENT)}))
    caplog.set_level("WARNING")
    assert rc.get_requirements_sync("w-victim") == {"content": other, "hash": sha256_hex(other)}
    assert f"the hash {sha256_hex(CONTENT)[:12]} is not the sha256 of the content" in caplog.text


def test_a_requirements_write_redis_refuses_drops_the_old_cached_copy(
    system: str, own_redis: LocalRedis
) -> None:
    rc.save_requirements_sync("alpha==1\n")
    client = redis.from_url(own_redis.url, decode_responses=True)
    assert client.get(rc.REQUIREMENTS_KEY) is not None
    # Reads answered, writes refused: maxmemory below what Redis uses.
    client.config_set("maxmemory-policy", "noeviction")
    client.config_set("maxmemory", str(int(client.info("memory")["used_memory"]) // 2))
    saved = rc.save_requirements_sync("beta==2\n")
    assert client.get(rc.REQUIREMENTS_KEY) is None  # not the old value
    assert rc.get_requirements_sync("worker-1") == saved  # from the store
    own_redis.stop()
    with pytest.raises(rc.CacheNotCleared, match="workers may install the old ones"):
        rc.save_requirements_sync("gamma==3\n")
    client.close()
