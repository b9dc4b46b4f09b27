"""Workspace files: store first, Redis as a read-through cache."""

from __future__ import annotations

import pytest
import redis

from src.core import module_cache as mc
from src.foundation.local_redis import LocalRedis
from src.foundation.workspace_paths import InvalidPath

HELLO = "def main():\n    return 'hello'\n"


def test_save_then_read_from_redis(system: str, redis_client: redis.Redis) -> None:
    info = mc.save_file_sync("workflows/hello.py", HELLO)
    assert info["size"] == len(HELLO)
    assert redis_client.get(mc.module_key("workflows/hello.py")) == mc.sealed(
        "workflows/hello.py", HELLO)
    assert mc.read_file_sync("workflows/hello.py") == HELLO
    assert mc.read_file_sync("workflows/missing.py") is None


def test_read_after_flushall_comes_from_the_store_and_recaches(
    system: str, redis_client: redis.Redis
) -> None:
    mc.save_file_sync("workflows/hello.py", HELLO)
    mc.save_file_sync("data/table.csv", "a,b\n")
    redis_client.flushall()
    assert mc.read_file_sync("workflows/hello.py") == HELLO
    assert redis_client.get(mc.module_key("workflows/hello.py")) == mc.sealed(
        "workflows/hello.py", HELLO)
    redis_client.flushall()
    assert mc.index_sync() == {"workflows/hello.py", "data/table.csv"}
    assert redis_client.sismember(mc.MODULE_INDEX_KEY, "data/table.csv")


def test_an_index_holding_only_later_saves_is_completed_from_the_store(
    system: str, redis_client: redis.Redis
) -> None:
    mc.save_file_sync("workflows/a.py", HELLO)
    redis_client.flushall()
    mc.save_file_sync("workflows/b.py", HELLO)  # the index now lists b alone
    assert mc.index_sync() == {"workflows/a.py", "workflows/b.py"}


def test_warm_loads_every_file_but_requirements(system: str, redis_client: redis.Redis) -> None:
    from src.core.requirements_cache import save_requirements_sync

    mc.save_file_sync("workflows/hello.py", HELLO)
    mc.save_file_sync("workflows/__init__.py", "")
    save_requirements_sync("alpha==1\n")
    redis_client.flushall()
    assert mc.warm_module_cache_sync() == 2
    assert redis_client.smembers(mc.MODULE_INDEX_KEY) == {
        "workflows/hello.py", "workflows/__init__.py",
    }


def test_delete_removes_from_store_and_cache(system: str, redis_client: redis.Redis) -> None:
    mc.save_file_sync("workflows/hello.py", HELLO)
    assert mc.delete_file_sync("workflows/hello.py") is True
    assert redis_client.get(mc.module_key("workflows/hello.py")) is None
    assert mc.read_file_sync("workflows/hello.py") is None
    assert mc.delete_file_sync("workflows/hello.py") is False


def test_read_with_redis_stopped_comes_from_the_store(
    system: str, own_redis: LocalRedis
) -> None:
    mc.save_file_sync("workflows/hello.py", HELLO)
    own_redis.stop()
    assert mc.read_file_sync("workflows/hello.py") == HELLO
    assert mc.index_sync() == {"workflows/hello.py"}


@pytest.mark.parametrize(
    "path",
    ["../etc/passwd.py", "/abs.py", "a/../b.py", "a//b.py", "a\\b.py", "a%2Fb.py",
     "a\x00.py", "", ".hidden.py", "x.exe", "requirements.txt", "a/./b.py", "C:/x.py"],
)
def test_bad_paths_are_refused_and_nothing_is_written(
    system: str, redis_client: redis.Redis, path: str
) -> None:
    with pytest.raises(InvalidPath):
        mc.save_file_sync(path, HELLO)
    assert redis_client.keys("bifrost:module:*") == []


def _refusing_writes(client: redis.Redis) -> None:
    """Redis answers reads and refuses every write that adds memory (what
    any client that reaches it could set up): maxmemory at what it uses now."""
    client.config_set("maxmemory-policy", "noeviction")
    used = int(client.info("memory")["used_memory"])
    client.config_set("maxmemory", str(max(used // 2, 1)))
    with pytest.raises(redis.RedisError, match="maxmemory"):
        client.set("bifrost:probe", "x" * 1000)


@pytest.mark.parametrize("change", ["save", "delete"])
def test_a_write_redis_refuses_never_leaves_the_old_version_served(
    system: str, own_redis: LocalRedis, change: str
) -> None:
    mc.save_file_sync("workflows/hello.py", HELLO)
    mc.save_file_sync("workflows/other.py", HELLO)
    assert mc.read_file_sync("workflows/hello.py") == HELLO  # cached, index warm
    client = redis.from_url(own_redis.url, decode_responses=True)
    _refusing_writes(client)
    if change == "save":
        mc.save_file_sync("workflows/hello.py", "def main():\n    return 'new'\n")
        mc.save_file_sync("workflows/added.py", HELLO)
        # Every reader, workers' import hook included, gets the new file.
        assert mc.read_file_sync("workflows/hello.py") == "def main():\n    return 'new'\n"
        assert mc.index_sync() == {"workflows/hello.py", "workflows/other.py",
                                   "workflows/added.py"}
    else:
        assert mc.delete_file_sync("workflows/hello.py")
        assert mc.read_file_sync("workflows/hello.py") is None
        assert mc.index_sync() == {"workflows/other.py"}
    assert client.get(mc.module_key("workflows/hello.py")) is None
    client.close()


def test_a_write_that_can_neither_update_nor_drop_the_cache_says_so(
    system: str, own_redis: LocalRedis
) -> None:
    mc.save_file_sync("workflows/hello.py", HELLO)
    own_redis.stop()
    with pytest.raises(mc.CacheNotCleared, match="readers may get the old version"):
        mc.save_file_sync("workflows/hello.py", "def main():\n    return 'new'\n")
    # The store has the new version all the same.
    assert mc.read_file_sync("workflows/hello.py") == "def main():\n    return 'new'\n"
