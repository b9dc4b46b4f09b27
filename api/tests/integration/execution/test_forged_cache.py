"""Someone who reached Redis (the test holds the run's Redis, as anyone with
its password would) rewrites what the workers install: requirements with a
matching hash and a lock of their own, or a lock for the current hash; or
what they import: a workspace module's cached text. The requirements and
modules were written through the real write path, so the store holds the
truth; a real pool starts real workers, which install and import the
store's."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import redis

from src.core import metrics_store, module_cache
from src.core.lock_cache import lock_key
from src.core.requirements_cache import REQUIREMENTS_KEY
from src.foundation.hashing import sha256_hex
from src.foundation.locks import DIRECT, Lock, LockedPackage
from src.services import packages
from src.services.execution import registry
from tests.support.pools import run_to_the_end, running_pool
from tests.support.waiting import wait_for


@pytest.fixture
def pool_env(sqlite_system: str, redis_url: str, isolated_settings: Path,
             test_index: Path) -> dict[str, str]:
    return {"REDIS_URL": redis_url, "DATABASE_URL": sqlite_system,
            "BIFROST_DATA_DIR": str(isolated_settings), "PIP_FIND_LINKS": str(test_index),
            "PIP_NO_INDEX": "1"}


def _ready_worker(client: redis.Redis) -> registry.WorkerState | None:
    workers = [w for p in registry.list_pools(client) for w in p["workers"]]
    return next((w for w in workers if w["status"] == "idle"), None)


def _forged_lock(requirements_hash: str, name: str, version: str) -> str:
    return Lock.of(requirements_hash, [LockedPackage(name, version, (), (DIRECT,))]).text()


def _run_pool(env: dict[str, str], client: redis.Redis, log: Path,
              cache: str) -> registry.WorkerState:
    """A pool of one worker until it is ready and has counted its refusal of `cache`."""
    with running_pool(env, workers=1, log_path=log):
        worker = wait_for(lambda: _ready_worker(client), 120, what="a ready worker")
        wait_for(lambda: _refused(client, cache), 60, what=f"the refusal of the {cache} counted")
    return worker


def _refused(client: redis.Redis, cache: str) -> bool:
    """Whether a worker counted a refusal of `cache` in bifrost_cache_refusals_total."""
    counts = client.hgetall(metrics_store.counter_key(metrics_store.CACHE_REFUSALS))
    return any(cache in field for field in counts)  # type: ignore[union-attr]


def test_requirements_rewritten_in_redis_are_refused_for_the_stores(
        pool_env: dict[str, str], redis_client: redis.Redis, tmp_path: Path) -> None:
    truth = packages.put_requirements("alpha==1\n")  # the real write path: store, then Redis
    forged = "beta==2\n"  # valid, with its own hash and lock: consistent, but not the store's
    forged_hash = sha256_hex(forged)
    redis_client.set(REQUIREMENTS_KEY, json.dumps({"content": forged, "hash": forged_hash}))
    redis_client.set(lock_key(forged_hash), _forged_lock(forged_hash, "beta", "2"))

    log = tmp_path / "pool.log"
    worker = _run_pool(pool_env, redis_client, log, "requirements")
    assert worker["requirements_hash"] == truth["hash"], worker
    assert worker["install"] is not None
    assert [line.split("==")[0] for line in worker["install"]["installed"]] == ["alpha"], (
        worker, log.read_text()[-4000:])
    text = log.read_text()
    assert "Refused the requirements Redis holds" in text, text[-3000:]


def test_a_lock_rewritten_in_redis_is_refused_for_the_stores(
        pool_env: dict[str, str], redis_client: redis.Redis, tmp_path: Path) -> None:
    truth = packages.put_requirements("alpha\n")  # locked at the newest: alpha 3
    redis_client.set(lock_key(truth["hash"]), _forged_lock(truth["hash"], "alpha", "1"))

    log = tmp_path / "pool.log"
    worker = _run_pool(pool_env, redis_client, log, "lock")
    assert worker["requirements_hash"] == truth["hash"], worker
    assert worker["install"] is not None
    assert worker["install"]["installed"] == ["alpha==3"], worker
    assert "Refused the lock Redis holds" in log.read_text()


MODULE = "flows/victim.py"
HELPER = "flows/victim_helper.py"


def test_workspace_modules_rewritten_in_redis_are_refused_for_the_stores(
        pool_env: dict[str, str], redis_client: redis.Redis, tmp_path: Path) -> None:
    module_cache.save_file_sync(MODULE, "def main(secret):\n"
                                        "    from flows import victim_helper\n"
                                        "    return victim_helper.answer()\n")
    module_cache.save_file_sync(HELPER, "def answer():\n    return 'the store'\n")
    log = tmp_path / "pool.log"
    with running_pool(pool_env, workers=1, log_path=log):
        wait_for(lambda: _ready_worker(redis_client), 120, what="a ready worker")
        assert run_to_the_end(redis_client, "flows.victim", "main", secret="s") == "the store"
        # A text of the attacker's own for the module the worker reads ahead,
        # and for the helper it asks for while the execution runs; a sealed
        # copy of another file under the helper's name; and a file the store
        # never held, added to the index.
        stolen = "def main(secret):\n    return 'forged: ' + secret\n"
        redis_client.set(module_cache.module_key(MODULE), stolen)
        assert run_to_the_end(redis_client, "flows.victim", "main", secret="s") == "the store"
        redis_client.set(module_cache.module_key(HELPER),
                         str(redis_client.get(module_cache.module_key(MODULE))))
        assert run_to_the_end(redis_client, "flows.victim", "main", secret="s") == "the store"
        redis_client.set(module_cache.module_key("flows/planted.py"),
                         "def main():\n    return 'planted'\n")
        redis_client.sadd(module_cache.MODULE_INDEX_KEY, "flows/planted.py")
        record = _run_and_fail(redis_client, "flows.planted")
        assert record["error"] == "ImportError: workspace file flows/planted.py vanished", record
    text = log.read_text()
    for path in (MODULE, HELPER, "flows/planted.py"):
        assert f"Refused the cached copy of workspace file {path}" in text, text[-3000:]
    assert _refused(redis_client, "module")


def _run_and_fail(client: redis.Redis, module: str) -> Any:
    from src.services.execution import executions

    execution_id = executions.enqueue_execution(module, "main", {}, client)

    def ended() -> Any:
        record = executions.get_execution(execution_id, client)
        return record if record and record["status"] in executions.FINAL_STATUSES else None

    record = wait_for(ended, 60, what=f"{module} to end")
    assert record["status"] == "Failed", record
    return record
