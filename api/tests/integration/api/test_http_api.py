"""The HTTP API contract, over a real uvicorn server, Redis and store.

Every test that uses `api` runs on SQLite and on PostgreSQL (the `system`
fixture). Requests go through httpx over TCP, exactly as a client's would.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest
import redis

from src.core.module_cache import sealed
from src.core.requirements_cache import REQUIREMENTS_KEY, read_store_requirements
from src.foundation.hashing import sha256_hex
from src.foundation.local_redis import free_port
from src.foundation.redis_client import close_clients
from src.foundation.settings import get_settings
from src.services.execution import registry
from src.services.execution.executions import (
    RECENT_KEY,
    STREAM_KEY,
    record_key,
    update_execution,
)
from src.store.database import dispose_engines
from tests.support.waiting import wait_for
from tests.support.wheels import build_wheel

from .conftest import Api, ControlWatcher, serving

EMPTY_HASH = sha256_hex("")

# Every /api route of the contract, with sample parameters.
API_ROUTES = [
    ("GET", "/api/requirements"),
    ("PUT", "/api/requirements"),
    ("POST", "/api/packages/install"),
    ("DELETE", "/api/packages/humanize"),
    ("GET", "/api/packages"),
    ("GET", "/api/workers"),
    ("POST", "/api/workers/recycle-all"),
    ("PUT", "/api/files/workflows/hello.py"),
    ("GET", "/api/files/workflows/hello.py"),
    ("DELETE", "/api/files/workflows/hello.py"),
    ("POST", "/api/executions"),
    ("GET", "/api/executions/0123abcd"),
]


def cached(redis_client: redis.Redis) -> Any:
    raw = redis_client.get(REQUIREMENTS_KEY)
    return None if raw is None else json.loads(str(raw))


def stream_items(redis_client: redis.Redis) -> list[dict[str, Any]]:
    entries = cast(list[tuple[str, dict[str, str]]], redis_client.xrange(STREAM_KEY))
    return [{**fields, "parameters": json.loads(fields["parameters"])} for _, fields in entries]


def in_effect(content: str) -> dict[str, str]:
    return {"content": content, "hash": sha256_hex(content)}


def assert_everywhere(redis_client: redis.Redis, content: str) -> None:
    """The store and the Redis key both hold `content`."""
    assert read_store_requirements() == in_effect(content)
    assert cached(redis_client) == in_effect(content)


def put(api: Api, content: str, expected_hash: str | None = None) -> Any:
    body: dict[str, Any] = {"content": content}
    if expected_hash is not None:
        body["expected_hash"] = expected_hash
    return api.client.put("/api/requirements", json=body)


# --- auth -----------------------------------------------------------------------


def test_health_needs_no_token(api: Api) -> None:
    response = api.anonymous.get("/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_every_api_route_is_401_without_or_with_a_wrong_token(
    api: Api, redis_client: redis.Redis, control: ControlWatcher
) -> None:
    put(api, "alpha==1\n")
    control.next()
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {api.token}"}):
        for method, path in [*API_ROUTES, ("PATCH", "/api/requirements"), ("GET", "/api/nope")]:
            response = api.anonymous.request(method, path, headers=headers, json={"content": ""})
            assert response.status_code == 401, (method, path, headers)
            assert response.headers["www-authenticate"] == "Bearer"
    # Nothing any of them asked for happened.
    assert_everywhere(redis_client, "alpha==1\n")
    assert redis_client.xlen(STREAM_KEY) == 0
    control.assert_nothing_published()


def test_the_token_is_never_logged(system: str, admin_token: str) -> None:
    records: list[logging.LogRecord] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    handler = Collect()
    with serving(admin_token) as api:
        # uvicorn configured its loggers when the server was made; add ours now.
        loggers = [logging.getLogger(name) for name in ("uvicorn.access", "uvicorn.error", "")]
        for logger in loggers:
            logger.addHandler(handler)
        try:
            api.client.get("/api/requirements")
            api.anonymous.get("/api/requirements", headers={"Authorization": "Bearer guess"})
            api.client.put("/api/requirements", json={"content": "-e .\n"})
            wait_for(lambda: len([r for r in records if r.name == "uvicorn.access"]) >= 3, 60,
                     what="the three requests' access log lines")
        finally:
            for logger in loggers:
                logger.removeHandler(handler)
    text = "\n".join(record.getMessage() for record in records)
    assert admin_token not in text
    assert "guess" not in text


def test_token_from_the_data_dir_file(system: str, isolated_settings: Path) -> None:
    # No BIFROST_ADMIN_TOKEN: the app creates the 0600 file and uses it.
    with serving("placeholder") as api:
        token = (isolated_settings / "admin-token").read_text().strip()
        assert api.client.get("/api/requirements").status_code == 401
        response = api.anonymous.get(
            "/api/requirements", headers={"Authorization": f"Bearer {token}"}
        )
        assert response.status_code == 200
    assert (isolated_settings / "admin-token").stat().st_mode & 0o777 == 0o600


# --- requirements ---------------------------------------------------------------


def test_get_requirements_before_anything_was_saved(api: Api) -> None:
    response = api.client.get("/api/requirements")
    assert response.status_code == 200
    assert response.json() == {"content": "", "hash": EMPTY_HASH}


def test_put_persists_caches_and_recycles_before_answering(
    api: Api, redis_client: redis.Redis, control: ControlWatcher
) -> None:
    content = "# our deps\nalpha==1.0\nbeta>=2  # why\n"
    response = put(api, content)
    assert response.status_code == 200
    assert response.json() == in_effect(content)
    # Store and Redis were written before the answer; so was the broadcast.
    assert_everywhere(redis_client, content)
    assert 86000 < redis_client.ttl(REQUIREMENTS_KEY) <= 86400
    message = control.next()
    assert message["action"] == "recycle"

    assert api.client.get("/api/requirements").json() == in_effect(content)
    redis_client.flushdb()  # Redis lost everything: the store still answers
    assert api.client.get("/api/requirements").json() == in_effect(content)
    assert cached(redis_client) == in_effect(content)


def test_put_with_the_current_expected_hash(api: Api, redis_client: redis.Redis) -> None:
    assert put(api, "alpha==1\n", expected_hash=EMPTY_HASH).status_code == 200
    response = put(api, "alpha==2\n", expected_hash=sha256_hex("alpha==1\n"))
    assert response.status_code == 200
    assert_everywhere(redis_client, "alpha==2\n")


def test_put_with_a_stale_expected_hash_is_409_and_changes_nothing(
    api: Api, redis_client: redis.Redis, control: ControlWatcher
) -> None:
    put(api, "alpha==1\n")
    put(api, "alpha==2\n")
    control.next()
    control.next()
    for stale in (sha256_hex("alpha==1\n"), EMPTY_HASH, "not-a-hash"):
        response = put(api, "gamma==3\n", expected_hash=stale)
        assert response.status_code == 409
        detail = response.json()["detail"]
        assert detail["current_hash"] == sha256_hex("alpha==2\n")
        assert detail["message"]
    assert_everywhere(redis_client, "alpha==2\n")
    control.assert_nothing_published()


def test_put_with_bad_lines_is_422_naming_each_and_changes_nothing(
    api: Api, redis_client: redis.Redis, control: ControlWatcher
) -> None:
    put(api, "alpha==1\n")
    control.next()
    response = put(api, "ok==1\n--index-url https://evil.example/simple\nok2\n../local\nx===\n")
    assert response.status_code == 422
    detail = response.json()["detail"]
    assert [error["line"] for error in detail["errors"]] == [2, 4, 5]
    for error in detail["errors"]:
        assert f"line {error['line']}: {error['reason']}" in detail["message"]
    assert detail["errors"][1]["text"] == "../local"
    assert_everywhere(redis_client, "alpha==1\n")
    control.assert_nothing_published()


# --- packages -------------------------------------------------------------------


def install(api: Api, body: dict[str, Any]) -> Any:
    return api.client.post("/api/packages/install", json=body)


def test_install_adds_then_replaces_a_line(
    api: Api, redis_client: redis.Redis, control: ControlWatcher
) -> None:
    put(api, "# our deps\r\nalpha==1\r\n")
    control.next()

    response = install(api, {"package": "Beta_Pkg"})
    assert response.status_code == 200
    content = "# our deps\r\nalpha==1\r\nBeta_Pkg\r\n"
    assert response.json() == {**in_effect(content), "changed": True}
    assert_everywhere(redis_client, content)
    assert control.next()["action"] == "recycle"

    response = install(api, {"package": "beta-pkg", "version": "2.0"})
    content = "# our deps\r\nalpha==1\r\nbeta-pkg==2.0\r\n"
    assert response.json() == {**in_effect(content), "changed": True}
    assert_everywhere(redis_client, content)
    assert control.next()["action"] == "recycle"

    response = install(api, {"package": "alpha", "version": ">=1,<3"})
    content = "# our deps\r\nalpha<3,>=1\r\nbeta-pkg==2.0\r\n"
    assert response.json() == {**in_effect(content), "changed": True}
    assert control.next()["action"] == "recycle"

    # The same request again changes nothing, yet still recycles: a retry after a
    # failed install must make the workers try again.
    response = install(api, {"package": "beta-pkg", "version": "2.0"})
    assert response.json() == {**in_effect(content), "changed": False}
    assert control.next()["action"] == "recycle"
    assert_everywhere(redis_client, content)


def test_install_with_no_package_resyncs_redis_from_the_store(
    api: Api, redis_client: redis.Redis, control: ControlWatcher
) -> None:
    put(api, "alpha==1\n")
    control.next()
    redis_client.delete(REQUIREMENTS_KEY)
    response = install(api, {})
    assert response.status_code == 200
    assert response.json() == {**in_effect("alpha==1\n"), "changed": False}
    assert_everywhere(redis_client, "alpha==1\n")
    assert control.next()["action"] == "recycle"


def test_install_with_no_package_and_nothing_saved(
    api: Api, redis_client: redis.Redis, control: ControlWatcher
) -> None:
    response = install(api, {})
    assert response.status_code == 200
    assert response.json() == {**in_effect(""), "changed": False}
    assert control.next()["action"] == "recycle"


@pytest.mark.parametrize(
    "body",
    [
        {"package": "bad name"},
        {"package": "git+https://example.com/x.git"},
        {"package": "alpha", "version": "one point oh"},
        {"package": "alpha", "version": "==1; os_name == 'nt'"},
        {"version": "1.0"},
    ],
)
def test_install_with_a_bad_name_or_version_is_422_and_changes_nothing(
    api: Api, redis_client: redis.Redis, control: ControlWatcher, body: dict[str, str]
) -> None:
    put(api, "alpha==1\n")
    control.next()
    response = install(api, body)
    assert response.status_code == 422
    detail = response.json()["detail"]
    assert detail["message"] and detail["errors"][0]["reason"]
    assert_everywhere(redis_client, "alpha==1\n")
    control.assert_nothing_published()


def test_delete_removes_the_line_and_404s_when_absent(
    api: Api, redis_client: redis.Redis, control: ControlWatcher
) -> None:
    put(api, "alpha==1\nbeta  # keep me\n")
    control.next()
    response = api.client.delete("/api/packages/Alpha")
    assert response.status_code == 200
    assert response.json() == in_effect("beta  # keep me\n")
    assert_everywhere(redis_client, "beta  # keep me\n")
    assert control.next()["action"] == "recycle"

    response = api.client.delete("/api/packages/Alpha")
    assert response.status_code == 404
    assert response.json() == {"detail": "package Alpha is not in requirements.txt"}
    assert_everywhere(redis_client, "beta  # keep me\n")
    control.assert_nothing_published()


def test_list_packages_shows_requirements_the_lock_and_this_hosts_environment(
    api: Api, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from src.services.installer.engine import ensure_environment

    assert api.client.get("/api/packages").json() == {
        "requirements": [], "hash": EMPTY_HASH, "lock": [], "hosts": [], "installed": [],
    }
    for name, version in (("tiny-pkg", "1.2.3"), ("Another_One", "0.1")):
        build_wheel(tmp_path / "wheels", name, version)
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path / "wheels"))
    saved = put(api, "# deps\ntiny-pkg==1.2.3  # pinned\nAnother_One>=0.1\n").json()
    outcome, _ = ensure_environment(saved["content"], saved["hash"], "w-test")
    assert outcome["ok"], outcome
    response = api.client.get("/api/packages")
    assert response.status_code == 200
    assert response.json() == {
        "requirements": ["tiny-pkg==1.2.3", "Another_One>=0.1"],
        "hash": saved["hash"],
        "lock": ["another-one==0.1", "tiny-pkg==1.2.3"],
        "hosts": [],  # no pool has reported a worker
        "installed": [
            {"name": "Another_One", "version": "0.1"},
            {"name": "tiny-pkg", "version": "1.2.3"},
        ],
    }


# --- workers --------------------------------------------------------------------


def test_recycle_all_is_202_and_broadcast(api: Api, control: ControlWatcher) -> None:
    response = api.client.post("/api/workers/recycle-all")
    assert response.status_code == 202
    assert response.json() == {"status": "accepted", "subscribers": 1}
    message = control.next()
    assert message["action"] == "recycle"
    assert message["reason"] == "api"


def test_workers_with_an_empty_fleet(api: Api) -> None:
    response = api.client.get("/api/workers")
    assert response.status_code == 200
    assert response.json() == {
        "workers": [],
        "summary": {"total": 0, "ready": 0, "current_hash": EMPTY_HASH},
    }
    put(api, "alpha==1\n")
    summary = api.client.get("/api/workers").json()["summary"]
    assert summary == {"total": 0, "ready": 0, "current_hash": sha256_hex("alpha==1\n")}


def worker(worker_id: str, status: str, requirements_hash: str | None) -> registry.WorkerState:
    now = time.time()
    ready = status in ("idle", "busy")
    return registry.WorkerState(
        worker_id=worker_id,
        host="host-a",
        pid=1000 + len(worker_id),
        status=status,  # type: ignore[typeddict-item]
        requirements_hash=requirements_hash,
        install={
            "ok": True, "skipped": False, "installed": ["alpha==1"], "failed": [],
            "duration_ms": 12, "requirements_hash": requirements_hash,
        } if ready else None,
        started_at=now,
        ready_at=now if ready else None,
    )


def test_workers_from_a_published_pool_state(api: Api, redis_client: redis.Redis) -> None:
    put(api, "alpha==1\n")
    current = sha256_hex("alpha==1\n")
    registry.publish_pool_state(
        registry.PoolState(
            pool_id="pool-a",
            host="host-a",
            pid=999,
            started_at=time.time(),
            workers=[
                worker("w1", "idle", current),
                worker("w2", "busy", EMPTY_HASH),  # still on the old file
                worker("w3", "installing", None),
                worker("w4", "stopped", current),  # not counted
            ],
        ),
        redis_client,
    )
    response = api.client.get("/api/workers")
    assert response.status_code == 200
    body = response.json()
    assert body["summary"] == {"total": 3, "ready": 1, "current_hash": current}
    assert [w["worker_id"] for w in body["workers"]] == ["w1", "w2", "w3"]
    first = body["workers"][0]
    assert set(first) >= {
        "worker_id", "host", "pid", "status", "requirements_hash", "install",
        "started_at", "ready_at",
    }
    assert set(first["install"]) >= {"ok", "skipped", "installed", "failed", "duration_ms"}


# --- files ----------------------------------------------------------------------


def test_files_put_get_delete(api: Api, redis_client: redis.Redis) -> None:
    source = "def main(name='world'):\n    return f'h\u00e9llo {name}'\n"
    response = api.client.put(
        "/api/files/workflows/hello.py",
        content=source.encode(),
        headers={"Content-Type": "application/octet-stream"},
    )
    assert response.status_code == 200
    assert response.json() == {
        "path": "workflows/hello.py",
        "hash": sha256_hex(source),
        "size": len(source.encode()),
    }
    assert redis_client.get("bifrost:module:workflows/hello.py") == sealed(
        "workflows/hello.py", source)

    response = api.client.get("/api/files/workflows/hello.py")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    assert response.text == source

    redis_client.flushdb()  # read through to the store
    assert api.client.get("/api/files/workflows/hello.py").text == source

    assert api.client.delete("/api/files/workflows/hello.py").status_code == 200
    assert api.client.get("/api/files/workflows/hello.py").status_code == 404
    assert api.client.delete("/api/files/workflows/hello.py").status_code == 404


def test_files_missing_is_404(api: Api) -> None:
    response = api.client.get("/api/files/workflows/absent.py")
    assert response.status_code == 404
    assert "workflows/absent.py" in response.json()["detail"]


@pytest.mark.parametrize(
    ("target", "fragment"),
    [
        ("/api/files/workflows/../secret.py", "'..'"),
        ("/api/files/../api/secret.py", "'..'"),
        ("/api/files/./hello.py", "'.'"),
        ("/api/files//etc/hello.py", "absolute"),
        ("/api/files/workflows%2Fhello.py", "encoded"),
        ("/api/files/%2E%2E/secret.py", "'..'"),
        ("/api/files/hello%00.py", "NUL"),
        ("/api/files/hello.sh", "file type"),
    ],
)
def test_files_with_bad_paths_are_422_naming_the_problem(
    api: Api, redis_client: redis.Redis, target: str, fragment: str
) -> None:
    for method in ("PUT", "GET"):
        status, body = api.raw(method, target, b"x = 1\n" if method == "PUT" else None)
        assert status == 422, (method, target, body)
        assert fragment in body["detail"]
    assert redis_client.keys("bifrost:module:*") == []


def test_files_body_not_utf8_is_422(api: Api) -> None:
    response = api.client.put("/api/files/workflows/x.py", content=b"\xc3\x28")
    assert response.status_code == 422
    assert "UTF-8" in response.json()["detail"]
    assert api.client.get("/api/files/workflows/x.py").status_code == 404


# --- executions -----------------------------------------------------------------


def test_executions_post_queues_and_get_reads(api: Api, redis_client: redis.Redis) -> None:
    response = api.client.post(
        "/api/executions",
        json={"module": "workflows.hello", "function": "main", "parameters": {"name": "x"}},
    )
    assert response.status_code == 202
    execution_id = response.json()["id"]
    assert set(response.json()) == {"id"}

    assert stream_items(redis_client) == [{
        "id": execution_id, "module": "workflows.hello", "function": "main",
        "parameters": {"name": "x"},
    }]

    response = api.client.get(f"/api/executions/{execution_id}")
    assert response.status_code == 200
    assert response.json() == {
        "id": execution_id, "status": "Pending", "result": None, "error": None,
        "worker_id": None, "duration_ms": None, "notes": [], "peak_rss_mb": None,
        "stdout": None, "stderr": None,
    }

    update_execution(
        execution_id, redis_client, status="Success", result={"greeting": "hi"},
        worker_id="w1", duration_ms=7, stdout="printed\n", stderr="",
    )
    assert api.client.get(f"/api/executions/{execution_id}").json() == {
        "id": execution_id, "status": "Success", "result": {"greeting": "hi"}, "error": None,
        "worker_id": "w1", "duration_ms": 7, "notes": [], "peak_rss_mb": None,
        "stdout": "printed\n", "stderr": "",
    }


def test_executions_parameters_default_to_empty(api: Api, redis_client: redis.Redis) -> None:
    response = api.client.post("/api/executions", json={"module": "hello", "function": "main"})
    assert response.status_code == 202
    assert stream_items(redis_client)[0]["parameters"] == {}


def test_no_stored_record_makes_the_execution_routes_answer_5xx(
    api: Api, redis_client: redis.Redis
) -> None:
    """Anything in Redis may have been written by a workflow: a record the
    platform could not have written reads as Failed, saying why."""
    deep: object = None
    for _ in range(256):
        deep = [deep]
    forged = {
        "deep": json.dumps({"id": "deep", "status": "Success", "result": deep}),
        "notjson": "{not json",
        "shape": json.dumps({"id": "shape", "status": "Exploded", "result": 1}),
        "list": json.dumps([1, 2, 3]),
        "nostatus": json.dumps({"id": "nostatus"}),
    }
    now = time.time()
    for execution_id, text in forged.items():
        redis_client.set(record_key(execution_id), text)
        redis_client.zadd(RECENT_KEY, {execution_id: now})
    update_execution("good1234", redis_client, status="Success", result=[1], module="m",
                     function="main", created_at=now)
    redis_client.zadd(RECENT_KEY, {"good1234": now + 1})
    for execution_id in forged:
        response = api.client.get(f"/api/executions/{execution_id}")
        assert response.status_code == 200, (execution_id, response.text)
        record = response.json()
        assert record["status"] == "Failed" and record["id"] == execution_id, record
        assert record["error"].startswith("RecordUnreadable: "), record
    listed = api.client.get("/api/executions")
    assert listed.status_code == 200, listed.text
    assert [e["id"] for e in listed.json()["executions"]] == ["good1234"]


def test_executions_unknown_is_404(api: Api) -> None:
    response = api.client.get("/api/executions/0123456789abcdef")
    assert response.status_code == 404
    assert api.client.get(f"/api/executions/{'a' * 500}").status_code == 404


def test_executions_bad_request_is_422_and_queues_nothing(
    api: Api, redis_client: redis.Redis
) -> None:
    for body in (
        {"module": "../etc", "function": "main"},
        {"module": "workflows.hello", "function": "os.system"},
        {"module": "workflows.hello", "function": "main", "parameters": [1]},
    ):
        assert api.client.post("/api/executions", json=body).status_code == 422
    assert redis_client.exists(STREAM_KEY) == 0


# --- backends down --------------------------------------------------------------


@pytest.fixture
def redis_down(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("REDIS_URL", f"redis://127.0.0.1:{free_port()}/0")
    get_settings.cache_clear()
    close_clients()
    yield
    close_clients()


def test_redis_down_is_503_for_executions_and_workers(
    admin_token: str, redis_down: None
) -> None:
    with serving(admin_token) as api:
        for method, path, body in (
            ("POST", "/api/executions", {"module": "workflows.hello", "function": "main"}),
            ("GET", "/api/executions/0123abcd", None),
            ("POST", "/api/workers/recycle-all", None),
        ):
            response = api.client.request(method, path, json=body)
            assert response.status_code == 503, path
            assert response.json()["detail"].startswith("redis unavailable: ")
            assert "Traceback" not in response.text
        health = api.anonymous.get("/health")
        assert health.status_code == 503
        assert health.json()["detail"].split("; ")[0] == "redis unavailable", health.text


def test_store_down_is_503_and_redis_is_untouched(
    admin_token: str, redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DATABASE_URL", f"postgresql://nobody@127.0.0.1:{free_port()}/none")
    get_settings.cache_clear()
    before = json.dumps({"content": "kept==1\n", "hash": sha256_hex("kept==1\n")})
    redis_client.set(REQUIREMENTS_KEY, before)
    try:
        with serving(admin_token) as api:
            response = api.client.put("/api/requirements", json={"content": "alpha==1\n"})
            assert response.status_code == 503
            assert response.json()["detail"].startswith("store unavailable")
            assert api.client.post(
                "/api/packages/install", json={"package": "alpha"}
            ).status_code == 503
            health = api.anonymous.get("/health")
            assert health.status_code == 503
            # No token needed to ask: the answer names the part, not its address.
            assert health.json() == {"status": "unavailable", "detail": "store unavailable"}
        assert redis_client.get(REQUIREMENTS_KEY) == before  # not changed
    finally:
        dispose_engines()


# --- platform guard -----------------------------------------------------------------


def test_a_line_that_would_replace_a_platform_package_is_409_and_changes_nothing(
    api: Api, redis_client: redis.Redis, control: ControlWatcher
) -> None:
    put(api, "alpha==1\n")
    control.next()
    answer = put(api, "alpha==1\npydantic<2\n")
    assert answer.status_code == 409
    detail = answer.json()["detail"]
    assert detail["conflicts"][0].startswith("pydantic<2: the platform runs on pydantic 2.")
    install = api.client.post("/api/packages/install",
                              json={"package": "SQLAlchemy", "version": "1.4.0"})
    assert install.status_code == 409
    assert "the platform runs on SQLAlchemy 2." in install.json()["detail"]["message"]
    # A requirement the platform's own version satisfies is fine.
    assert api.client.post("/api/packages/install",
                           json={"package": "pydantic", "version": ">=2"}).status_code == 200
    assert read_store_requirements() == in_effect("alpha==1\npydantic>=2\n")
