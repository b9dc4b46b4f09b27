"""Fleet registry: every pool's workers, as the API shows them.

Each pool writes `bifrost:pool:<pool_id>` (JSON: host, pid and its workers'
states) with a short TTL and refreshes it on every heartbeat, and scores its
id in the sorted set `bifrost:pools` with the time. A pool that dies stops
refreshing, so its key expires and it drops out of `GET /api/workers` within
`POOL_TTL_SECONDS`.
"""

from __future__ import annotations

import json
import time
from typing import Any, Literal, NotRequired, TypedDict

import redis

from src.foundation.redis_client import get_redis
from src.services.installer.outcome import InstallOutcome

POOLS_KEY = "bifrost:pools"
POOL_PREFIX = "bifrost:pool:"
POOL_TTL_SECONDS = 30

WorkerStatus = Literal["starting", "installing", "idle", "busy", "stopped"]


class WorkerState(TypedDict):
    worker_id: str
    host: str
    pid: int | None
    status: WorkerStatus
    requirements_hash: str | None
    install: InstallOutcome | None
    # While `installing`: what the install waits for, when it waits (another
    # host fetching the lock's files for the fleet); else None.
    waiting_for: NotRequired[str | None]
    started_at: float
    ready_at: float | None
    # True once the worker has been replaced (a recycle, a timeout): it only
    # finishes the item it holds, then exits. Pools that predate the field
    # publish states without it.
    retiring: NotRequired[bool]
    # Resident memory in MB, measured by the pool (`worker_memory.py`): the
    # worker process and its execution template; the running execution's
    # process (while busy); the peak of the last execution's process.
    rss_mb: NotRequired[float | None]
    execution_rss_mb: NotRequired[float | None]
    last_execution_peak_rss_mb: NotRequired[float | None]


class PoolState(TypedDict):
    pool_id: str
    host: str
    pid: int
    started_at: float
    workers: list[WorkerState]


class FleetSummary(TypedDict):
    total: int
    ready: int
    current_hash: str | None


def publish_pool_state(state: PoolState, client: redis.Redis | None = None) -> None:
    client = client or get_redis()
    now = time.time()
    with client.pipeline() as pipe:
        pipe.set(POOL_PREFIX + state["pool_id"], json.dumps(state), ex=POOL_TTL_SECONDS)
        pipe.zadd(POOLS_KEY, {state["pool_id"]: now})
        # Forget ids of pools long gone, so the set stays small.
        pipe.zremrangebyscore(POOLS_KEY, "-inf", now - 10 * POOL_TTL_SECONDS)
        pipe.execute()


def remove_pool(pool_id: str, client: redis.Redis | None = None) -> None:
    client = client or get_redis()
    with client.pipeline() as pipe:
        pipe.delete(POOL_PREFIX + pool_id)
        pipe.zrem(POOLS_KEY, pool_id)
        pipe.execute()


def list_pools(client: redis.Redis | None = None) -> list[PoolState]:
    client = client or get_redis()
    pool_ids = client.zrangebyscore(POOLS_KEY, time.time() - POOL_TTL_SECONDS, "+inf")
    if not pool_ids:
        return []
    raw_states: list[Any] = client.mget([POOL_PREFIX + str(pid) for pid in pool_ids])
    return [json.loads(raw) for raw in raw_states if raw]


def fleet(current_hash: str | None, client: redis.Redis | None = None) -> dict[str, Any]:
    """`{"workers": [...], "summary": {...}}` for `GET /api/workers`.

    `workers` lists every live worker (with its pool's id), retiring ones included (they still run
    an execution). The summary counts the workers that serve from now on:
    `total` the live ones that are not retiring, `ready` those of them idle or
    busy on `current_hash`, the hash of the requirements in effect; so a
    caller waiting for `ready == total` after a change waits for the
    replacements, not for the processes they replace.
    """
    workers = [
        {**worker, "pool_id": pool["pool_id"]}
        for pool in sorted(list_pools(client), key=lambda p: p["pool_id"])
        for worker in pool["workers"]
        if worker["status"] != "stopped"
    ]
    serving = [w for w in workers if not w.get("retiring", False)]
    ready = sum(
        1
        for w in serving
        if w["status"] in ("idle", "busy") and w["requirements_hash"] == current_hash
    )
    summary = FleetSummary(total=len(serving), ready=ready, current_hash=current_hash)
    return {"workers": workers, "summary": summary}
