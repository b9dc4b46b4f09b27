"""Every requirements write resolves the whole set into a lock first, over the
real HTTP API, the real Redis and store, and real uv against a package index
the test fills (a directory of wheels): 422 when it cannot be resolved, 503
when the index cannot be reached, and nothing changes then."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis

from src.core.requirements_cache import REQUIREMENTS_KEY
from src.foundation.hashing import sha256_hex
from src.foundation.local_redis import free_port
from src.services.execution import registry
from tests.support.wheels import build_wheel

from .conftest import Api, ControlWatcher


@pytest.fixture
def index(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The package index of this test: wheels it adds as it goes."""
    house = tmp_path / "index"
    build_wheel(house, "drift", "1.0")
    build_wheel(house, "other", "1.0")
    build_wheel(house, "needs-new", "1.0", requires=["drift>=2"])
    build_wheel(house, "app", "1.0", requires=["drift"])
    monkeypatch.setenv("PIP_FIND_LINKS", str(house))
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    return house


@pytest.fixture
def make_unreachable(monkeypatch: pytest.MonkeyPatch) -> Callable[[], str]:
    """From when it is called, the index is a port nothing listens on."""

    def switch() -> str:
        url = f"http://127.0.0.1:{free_port()}/simple"
        monkeypatch.delenv("PIP_FIND_LINKS", raising=False)
        monkeypatch.delenv("PIP_NO_INDEX", raising=False)
        monkeypatch.setenv("PIP_INDEX_URL", url)
        monkeypatch.setenv("UV_HTTP_RETRIES", "0")  # refused at once, not after 7 s of retries
        return url

    return switch


def install(api: Api, package: str, version: str | None = None) -> Any:
    body = {"package": package} | ({"version": version} if version else {})
    return api.client.post("/api/packages/install", json=body)


def listing(api: Api) -> dict[str, Any]:
    response = api.client.get("/api/packages")
    assert response.status_code == 200, response.text
    return response.json()


def snapshot(api: Api, redis_client: redis.Redis) -> tuple[Any, Any, Any]:
    """What a refused write must leave as it was: the file, the Redis key's
    exact bytes, and the lock."""
    return (api.client.get("/api/requirements").json(), redis_client.get(REQUIREMENTS_KEY),
            listing(api)["lock"])


def test_a_write_stores_the_exact_versions_of_everything(api: Api, index: Path) -> None:
    response = install(api, "app")
    assert response.status_code == 200, response.text
    body = listing(api)
    assert body["requirements"] == ["app"]
    assert body["lock"] == ["app==1.0", "drift==1.0"]
    assert body["hash"] == sha256_hex(response.json()["content"])


def test_adding_a_line_moves_no_other_version(api: Api, index: Path) -> None:
    assert install(api, "drift").status_code == 200
    build_wheel(index, "drift", "1.1")  # the index gains a newer release
    assert install(api, "other").status_code == 200
    assert listing(api)["lock"] == ["drift==1.0", "other==1.0"]


def test_the_same_file_always_brings_back_its_versions(api: Api, index: Path) -> None:
    first = api.client.put("/api/requirements", json={"content": "drift\n"})
    assert first.status_code == 200
    build_wheel(index, "drift", "1.1")
    assert api.client.put("/api/requirements", json={"content": "other\n"}).status_code == 200
    again = api.client.put("/api/requirements", json={"content": "drift\n"})
    assert again.json()["hash"] == first.json()["hash"]
    assert listing(api)["lock"] == ["drift==1.0"]  # one hash, one set of versions


def test_an_unknown_package_is_422_and_changes_nothing(
    api: Api, index: Path, redis_client: redis.Redis, control: ControlWatcher
) -> None:
    assert install(api, "drift").status_code == 200
    assert control.next()["action"] == "recycle"
    before = snapshot(api, redis_client)
    response = install(api, "pandsa")
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    assert detail["package"] == "pandsa"
    assert "pandsa" in detail["reason"] and "pandsa" in detail["message"]
    assert snapshot(api, redis_client) == before
    control.assert_nothing_published()


def test_conflicting_lines_are_422_quoting_the_resolver(
    api: Api, index: Path, redis_client: redis.Redis
) -> None:
    before = snapshot(api, redis_client)
    response = api.client.put("/api/requirements", json={"content": "drift==1.0\nneeds-new\n"})
    assert response.status_code == 422, response.text
    reason = response.json()["detail"]["reason"]
    assert "drift" in reason and "needs-new" in reason
    assert snapshot(api, redis_client) == before


def test_an_unreachable_index_is_503_naming_it_and_changes_nothing(
    api: Api, index: Path, redis_client: redis.Redis, control: ControlWatcher,
    make_unreachable: Callable[[], str],
) -> None:
    assert install(api, "drift").status_code == 200
    assert control.next()["action"] == "recycle"
    before = snapshot(api, redis_client)
    url = make_unreachable()
    response = install(api, "other")
    assert response.status_code == 503, response.text
    assert response.headers["retry-after"]
    assert url in response.json()["detail"]["message"]
    assert snapshot(api, redis_client) == before
    control.assert_nothing_published()


def test_removing_a_line_works_while_the_index_is_unreachable(
    api: Api, index: Path, make_unreachable: Callable[[], str]
) -> None:
    assert install(api, "app").status_code == 200
    assert install(api, "other").status_code == 200
    make_unreachable()
    response = api.client.delete("/api/packages/app")
    assert response.status_code == 200, response.text
    body = listing(api)
    assert body["requirements"] == ["other"]
    # drift came in only for app: it goes with it.
    assert body["lock"] == ["other==1.0"]


def test_upgrade_moves_the_lock_to_a_new_hash(
    api: Api, index: Path, control: ControlWatcher
) -> None:
    installed = install(api, "drift").json()
    assert control.next()["action"] == "recycle"
    build_wheel(index, "drift", "1.1")
    outdated = api.client.get("/api/packages/outdated")
    assert outdated.status_code == 200, outdated.text
    assert [(o["name"], o["locked"], o["newest_allowed"], o["newest"])
            for o in outdated.json()] == [("drift", "1.0", "1.1", "1.1")]

    response = api.client.post("/api/packages/upgrade", json={"package": "drift"})
    assert response.status_code == 200, response.text
    upgraded = response.json()
    assert upgraded["changed"] is True
    assert upgraded["hash"] != installed["hash"]
    assert control.next()["action"] == "recycle"
    body = listing(api)
    assert body["requirements"] == ["drift"]
    assert body["lock"] == ["drift==1.1"]
    again = api.client.post("/api/packages/upgrade", json={})
    assert again.json() == upgraded | {"changed": False}
    control.assert_nothing_published()
    assert api.client.post("/api/packages/upgrade", json={"package": "nope"}).status_code == 404


def test_what_runs_where_comes_from_the_workers_of_every_host(
    api: Api, index: Path, redis_client: redis.Redis
) -> None:
    current = install(api, "app").json()["hash"]
    good, drifted = ["app==1.0", "drift==1.0"], ["app==1.0", "drift==1.1"]
    for pool, host, pins in (("p1", "host-a", good), ("p2", "host-b", drifted)):
        registry.publish_pool_state(registry.PoolState(
            pool_id=pool, host=host, pid=1, started_at=time.time(),
            workers=[_worker(f"{pool}-w", current, pins)]), redis_client)
    hosts = {h["host"]: h for h in listing(api)["hosts"]}
    assert hosts["host-a"]["matches_lock"] is True
    assert hosts["host-b"]["matches_lock"] is False
    assert {"name": "drift", "version": "1.1"} in hosts["host-b"]["installed"]
    assert hosts["host-a"]["workers"] == 1


def _worker(worker_id: str, requirements_hash: str, pins: list[str]) -> registry.WorkerState:
    now = time.time()
    return registry.WorkerState(
        worker_id=worker_id, host="", pid=1, status="idle", requirements_hash=requirements_hash,
        install={"ok": True, "skipped": False, "installed": pins, "failed": [],
                 "duration_ms": 1, "requirements_hash": requirements_hash},
        started_at=now, ready_at=now)
