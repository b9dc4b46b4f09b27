"""GET /api/workers counts the workers that serve from now on.

After a recycle, each replaced worker stays in its pool's published state,
marked `retiring`, until it has finished the item in hand. It is listed (it
still runs an execution) but neither `summary.total` nor `summary.ready`
counts it: a caller waiting for `ready == total` waits for the replacements.
"""

from __future__ import annotations

import time

import redis

from src.foundation.hashing import sha256_hex
from src.services.execution import registry

from .conftest import Api

OLD = sha256_hex("alpha==1\n")
NEW = sha256_hex("alpha==2\n")


def worker(
    worker_id: str, status: str, requirements_hash: str | None, *, retiring: bool | None = None
) -> registry.WorkerState:
    now = time.time()
    state = registry.WorkerState(
        worker_id=worker_id,
        host="host-a",
        pid=2000 + int(worker_id[1:]),
        status=status,  # type: ignore[typeddict-item]
        requirements_hash=requirements_hash,
        install=None,
        started_at=now,
        ready_at=now if status in ("idle", "busy") else None,
    )
    if retiring is not None:
        state["retiring"] = retiring
    return state


def publish(client: redis.Redis, *workers: registry.WorkerState) -> None:
    registry.publish_pool_state(
        registry.PoolState(
            pool_id="pool-a", host="host-a", pid=999, started_at=time.time(), workers=list(workers)
        ),
        client,
    )


def test_retiring_workers_are_listed_but_not_counted(
    api: Api, redis_client: redis.Redis
) -> None:
    response = api.client.put("/api/requirements", json={"content": "alpha==2\n"})
    assert response.status_code == 200, response.text
    publish(
        redis_client,
        worker("w1", "busy", OLD, retiring=True),  # finishing its last item on the old file
        worker("w2", "idle", NEW, retiring=True),  # replaced by a recycle-all, about to exit
        worker("w3", "idle", NEW, retiring=False),
        worker("w4", "installing", None),  # a pool that does not publish the flag
        worker("w5", "stopped", NEW),
    )
    body = api.client.get("/api/workers").json()
    assert [w["worker_id"] for w in body["workers"]] == ["w1", "w2", "w3", "w4"]
    assert [w.get("retiring") for w in body["workers"]] == [True, True, False, None]
    assert body["summary"] == {"total": 2, "ready": 1, "current_hash": NEW}

    # The replacements come up: every serving worker is ready, whatever the
    # retiring ones still do.
    publish(
        redis_client,
        worker("w1", "busy", OLD, retiring=True),
        worker("w3", "idle", NEW, retiring=False),
        worker("w4", "idle", NEW),
    )
    summary = api.client.get("/api/workers").json()["summary"]
    assert summary == {"total": 2, "ready": 2, "current_hash": NEW}
