"""requirements_cache with Redis and the store mocked."""

from __future__ import annotations

import json
from unittest.mock import MagicMock, patch

import pytest
import redis

from src.core import requirements_cache as rc
from src.foundation.hashing import sha256_hex

CONTENT = "alpha==1.0\n"
CACHED = {"content": CONTENT, "hash": sha256_hex(CONTENT)}


@pytest.fixture
def client():
    mock = MagicMock()
    with patch.object(rc, "get_redis", return_value=mock):
        yield mock


@pytest.fixture
def store():
    with patch.object(rc, "read_store_requirements") as read:
        yield read


def test_key_name_and_hash():
    assert rc.REQUIREMENTS_KEY == "bifrost:requirements:content"
    assert rc.REQUIREMENTS_TTL_SECONDS == 86400
    assert sha256_hex("a") == "ca978112ca1bbdcafac231b39a23dc4da786eff8147c4e72b9807785afee48bb"


async def test_set_requirements_is_a_setex_of_the_json(client):
    await rc.set_requirements(CONTENT, CACHED["hash"])
    client.set.assert_called_once_with(rc.REQUIREMENTS_KEY, json.dumps(CACHED), ex=86400)


async def test_hit_does_not_read_the_store(client, store):
    client.get.return_value = json.dumps(CACHED)
    assert await rc.get_requirements() == CACHED
    store.assert_not_called()


async def test_miss_reads_the_store_and_recaches(client, store):
    client.get.return_value = None
    store.return_value = CACHED
    assert await rc.get_requirements() == CACHED
    client.set.assert_called_once_with(rc.REQUIREMENTS_KEY, json.dumps(CACHED), ex=86400)


async def test_redis_down_reads_the_store_without_recaching(client, store):
    client.get.side_effect = redis.ConnectionError("down")
    store.return_value = CACHED
    assert await rc.get_requirements() == CACHED
    client.set.assert_not_called()


async def test_nothing_anywhere_is_none(client, store):
    client.get.return_value = None
    store.return_value = None
    assert await rc.get_requirements() is None


async def test_corrupt_cache_falls_back_to_the_store(client, store):
    client.get.return_value = "{not json"
    store.return_value = CACHED
    assert await rc.get_requirements() == CACHED


def test_sync_read_never_raises_on_store_errors(store):
    store.side_effect = RuntimeError("store exploded")
    with patch("redis.from_url") as from_url:
        from_url.return_value.get.return_value = None
        assert rc.get_requirements_sync("w") is None


def test_sync_read_recaches_what_the_store_had(store):
    store.return_value = CACHED
    with patch("redis.from_url") as from_url:
        from_url.return_value.get.return_value = None
        assert rc.get_requirements_sync("w") == CACHED
        from_url.return_value.set.assert_called_once_with(
            rc.REQUIREMENTS_KEY, json.dumps(CACHED), ex=86400
        )


async def test_warm_without_anything_stored_drops_the_key_and_says_false(client, store):
    store.return_value = None
    assert await rc.warm_requirements_cache() is False
    client.delete.assert_called_once_with(rc.REQUIREMENTS_KEY)


async def test_warm_caches_the_stored_file(client, store):
    store.return_value = CACHED
    assert await rc.warm_requirements_cache() is True
    client.set.assert_called_once_with(rc.REQUIREMENTS_KEY, json.dumps(CACHED), ex=86400)
