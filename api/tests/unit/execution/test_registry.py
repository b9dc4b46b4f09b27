"""The worker registry on the test run's own Redis: what a pool publishes, how
long it stays, which pools are listed, and how `fleet` counts workers."""

from __future__ import annotations

import json
import time

import redis

from src.services.execution import registry
from src.services.execution.registry import (
    POOL_PREFIX,
    POOL_TTL_SECONDS,
    POOLS_KEY,
    PoolState,
    WorkerState,
    WorkerStatus,
)

CURRENT = "c" * 64
OLD = "0" * 64


def worker(worker_id: str, status: WorkerStatus, requirements_hash: str | None = CURRENT,
           retiring: bool | None = False) -> WorkerState:
    state = WorkerState(worker_id=worker_id, host="host-a", pid=100, status=status,
                        requirements_hash=requirements_hash, install=None,
                        started_at=1.0, ready_at=None)
    if retiring is not None:  # None: a pool that predates the field
        state["retiring"] = retiring
    return state


def pool(pool_id: str, *workers: WorkerState) -> PoolState:
    return PoolState(pool_id=pool_id, host="host-a", pid=4242, started_at=1.0,
                     workers=list(workers))


# --- publishing and listing -----------------------------------------------------


def test_a_published_pool_is_stored_with_a_ttl_and_listed(redis_client: redis.Redis) -> None:
    state = pool("pool-a", worker("w1", "idle"))
    before = time.time()
    registry.publish_pool_state(state, redis_client)
    assert json.loads(redis_client.get(POOL_PREFIX + "pool-a")) == state  # type: ignore[arg-type]
    assert 0 < redis_client.ttl(POOL_PREFIX + "pool-a") <= POOL_TTL_SECONDS
    score = redis_client.zscore(POOLS_KEY, "pool-a")
    assert score is not None and before <= score <= time.time()
    assert registry.list_pools(redis_client) == [state]


def test_publishing_again_replaces_the_state(redis_client: redis.Redis) -> None:
    registry.publish_pool_state(pool("pool-a", worker("w1", "starting")), redis_client)
    registry.publish_pool_state(pool("pool-a", worker("w1", "busy")), redis_client)
    [listed] = registry.list_pools(redis_client)
    assert [w["status"] for w in listed["workers"]] == ["busy"]


def test_nothing_published_lists_nothing(redis_client: redis.Redis) -> None:
    assert registry.list_pools(redis_client) == []
    assert registry.fleet(CURRENT, redis_client) == {
        "workers": [], "summary": {"total": 0, "ready": 0, "current_hash": CURRENT}}


def test_a_pool_whose_key_expired_is_not_listed(redis_client: redis.Redis) -> None:
    registry.publish_pool_state(pool("pool-a"), redis_client)
    registry.publish_pool_state(pool("pool-b"), redis_client)
    redis_client.delete(POOL_PREFIX + "pool-a")  # as when its TTL ran out
    assert [p["pool_id"] for p in registry.list_pools(redis_client)] == ["pool-b"]


def test_a_pool_not_refreshed_within_the_ttl_is_not_listed(redis_client: redis.Redis) -> None:
    registry.publish_pool_state(pool("pool-a"), redis_client)
    redis_client.set(POOL_PREFIX + "pool-stale", json.dumps(pool("pool-stale")))
    redis_client.zadd(POOLS_KEY, {"pool-stale": time.time() - POOL_TTL_SECONDS - 5})
    assert [p["pool_id"] for p in registry.list_pools(redis_client)] == ["pool-a"]


def test_publishing_forgets_ids_of_pools_long_gone(redis_client: redis.Redis) -> None:
    now = time.time()
    redis_client.zadd(POOLS_KEY, {"pool-ancient": now - 10 * POOL_TTL_SECONDS - 5,
                                  "pool-recent": now - 2 * POOL_TTL_SECONDS})
    registry.publish_pool_state(pool("pool-a"), redis_client)
    assert redis_client.zscore(POOLS_KEY, "pool-ancient") is None
    assert redis_client.zscore(POOLS_KEY, "pool-recent") is not None


def test_a_removed_pool_is_gone_at_once(redis_client: redis.Redis) -> None:
    registry.publish_pool_state(pool("pool-a"), redis_client)
    registry.publish_pool_state(pool("pool-b"), redis_client)
    registry.remove_pool("pool-a", redis_client)
    assert redis_client.exists(POOL_PREFIX + "pool-a") == 0
    assert redis_client.zscore(POOLS_KEY, "pool-a") is None
    assert [p["pool_id"] for p in registry.list_pools(redis_client)] == ["pool-b"]


def test_without_a_client_the_settings_redis_is_used(redis_client: redis.Redis) -> None:
    registry.publish_pool_state(pool("pool-a"))  # REDIS_URL points at the test's Redis
    assert [p["pool_id"] for p in registry.list_pools(redis_client)] == ["pool-a"]
    registry.remove_pool("pool-a")
    assert registry.list_pools() == []


# --- the fleet ------------------------------------------------------------------


def test_fleet_counts_the_workers_that_serve_from_now_on(redis_client: redis.Redis) -> None:
    registry.publish_pool_state(pool(
        "pool-b",
        worker("b-idle", "idle"),
        worker("b-old", "idle", OLD),  # still on the requirements before
        worker("b-retiring", "busy", retiring=True),  # replaced: listed, not counted
        worker("b-stopped", "stopped"),  # not listed at all
    ), redis_client)
    registry.publish_pool_state(pool(
        "pool-a",
        worker("a-busy", "busy"),
        worker("a-installing", "installing", None),
        worker("a-legacy", "idle", retiring=None),  # no `retiring`: serving
    ), redis_client)
    fleet = registry.fleet(CURRENT, redis_client)
    assert [w["worker_id"] for w in fleet["workers"]] == [  # pools sorted by id
        "a-busy", "a-installing", "a-legacy", "b-idle", "b-old", "b-retiring"]
    assert fleet["summary"] == {"total": 5, "ready": 3, "current_hash": CURRENT}


def test_fleet_with_no_requirements_counts_workers_without_any_ready(
    redis_client: redis.Redis
) -> None:
    registry.publish_pool_state(pool("pool-a", worker("w1", "idle"), worker("w2", "idle", None)),
                                redis_client)
    summary = registry.fleet(None, redis_client)["summary"]
    assert (summary["total"], summary["ready"]) == (2, 1)  # w2 only: w1 is on CURRENT
