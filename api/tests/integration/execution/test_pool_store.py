"""A pool's workers and the store, with an explicit `DATABASE_URL` (a store
outside the data dir, as a PostgreSQL server is): a real pool, real workers.

A worker publishes the wheels it built to the fleet wheel cache, whose
default backend is the store: with the store's URL in the pool's settings
only, the worker must get it too, or the publish finds "no store" and the
fleet cache silently stays empty."""

from __future__ import annotations

from pathlib import Path

import redis
from sqlalchemy import func, select

from src.services import packages
from src.services.execution import registry
from src.store.database import session_scope
from src.store.models import FleetManifest, FleetWheel
from tests.support.pools import running_pool
from tests.support.waiting import wait_for


def _published(store_url: str) -> tuple[int, int]:
    with session_scope(store_url) as session:
        return (session.scalar(select(func.count()).select_from(FleetManifest)) or 0,
                session.scalar(select(func.count()).select_from(FleetWheel)) or 0)


def test_a_worker_publishes_its_wheels_to_a_store_named_by_database_url(
        sqlite_system: str, redis_url: str, redis_client: redis.Redis,
        isolated_settings: Path, test_index: Path, tmp_path: Path) -> None:
    assert not sqlite_system.endswith(f"{isolated_settings}/bifrost.db")  # not the data dir's
    packages.put_requirements("alpha==1\nbeta==2\n")
    env = {"REDIS_URL": redis_url, "DATABASE_URL": sqlite_system,
           "BIFROST_DATA_DIR": str(isolated_settings), "PIP_FIND_LINKS": str(test_index),
           "PIP_NO_INDEX": "1"}
    log = tmp_path / "pool.log"
    with running_pool(env, workers=1, log_path=log):
        wait_for(lambda: any(w["status"] == "idle" for p in registry.list_pools(redis_client)
                             for w in p["workers"]), 120, what="a ready worker")
        wait_for(lambda: _published(sqlite_system) == (1, 2), 60,
                 what="the manifest and both wheels in the store")
    assert "no store" not in log.read_text()
