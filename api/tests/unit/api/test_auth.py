"""Every /api route answers 401 without the admin token, whatever else is wrong."""

from __future__ import annotations

import re

import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient

from src.api.app import API_ROUTERS
from src.api.auth import require_admin
from src.api.middleware import ApiAuthGate
from src.services import health

from .conftest import TOKEN

SAMPLE_PARAMS = {"path": "workflows/hello.py", "name": "humanize", "execution_id": "abc123"}
ALL_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


def api_operations(app: FastAPI) -> set[tuple[str, str]]:
    # From the OpenAPI schema: it lists what the app serves, however routers are nested.
    return {
        (method.upper(), path)
        for path, operations in app.openapi()["paths"].items()
        if path.startswith("/api")
        for method in operations
    }


def concrete(path: str) -> str:
    return re.sub(r"\{(\w+)(:\w+)?\}", lambda m: SAMPLE_PARAMS[m.group(1)], path)


def every_path(app: FastAPI) -> list[str]:
    return sorted({concrete(path) for _, path in api_operations(app)})


def assert_unauthorized(response_status: int, headers: dict[str, str]) -> None:
    assert response_status == 401
    assert headers.get("www-authenticate") == "Bearer"


def test_the_contract_routes_exist(app: FastAPI) -> None:
    assert api_operations(app) >= {
        ("GET", "/api/requirements"),
        ("PUT", "/api/requirements"),
        ("POST", "/api/packages/install"),
        ("DELETE", "/api/packages/{name}"),
        ("GET", "/api/packages"),
        ("GET", "/api/workers"),
        ("POST", "/api/workers/recycle-all"),
        ("PUT", "/api/files/{path}"),
        ("GET", "/api/files/{path}"),
        ("POST", "/api/executions"),
        ("GET", "/api/executions/{execution_id}"),
    }


def test_every_api_route_carries_the_auth_dependency(app: FastAPI) -> None:
    # Defence in depth: the middleware gate and each route's own dependency.
    routes = [r for router in API_ROUTERS for r in router.routes if isinstance(r, APIRoute)]
    assert len(routes) >= 11
    for route in routes:
        calls = {dep.call for dep in route.dependant.dependencies}
        assert require_admin in calls, route.path
    assert any(m.cls is ApiAuthGate for m in app.user_middleware)


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong-token"},
        {"Authorization": f"Bearer {TOKEN}x"},
        {"Authorization": "Bearer"},
        {"Authorization": f"Basic {TOKEN}"},
        {"Authorization": TOKEN},
        {"Authorization": "Bearer t\u00f6ken".encode()},
    ],
    ids=["missing", "wrong", "longer", "empty", "basic", "no-scheme", "non-ascii"],
)
def test_every_route_and_method_needs_the_token(
    app: FastAPI, client: TestClient, headers: dict[str, str | bytes]
) -> None:
    for path in every_path(app):
        for method in ALL_METHODS:
            response = client.request(method, path, headers=headers)
            assert_unauthorized(response.status_code, dict(response.headers))
            if method != "HEAD":
                assert response.json() == {"detail": "missing or invalid bearer token"}
                # The answer never echoes what was presented.
                assert "wrong-token" not in response.text


@pytest.mark.parametrize("path", ["/api", "/api/", "/api/nope", "/api/files", "/%61pi/workers"])
def test_unknown_api_paths_need_the_token_too(client: TestClient, path: str) -> None:
    response = client.get(path)
    assert_unauthorized(response.status_code, dict(response.headers))


def test_malformed_and_oversized_bodies_get_401_before_anything_else(client: TestClient) -> None:
    response = client.put(
        "/api/requirements", content=b"{not json", headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 401
    response = client.put("/api/files/a.py", content=b"x" * (3 * 1024 * 1024))
    assert response.status_code == 401


def test_with_the_token_unknown_methods_and_paths_are_405_and_404(
    client: TestClient, auth: dict[str, str]
) -> None:
    response = client.patch("/api/requirements", headers=auth)
    assert response.status_code == 405
    assert client.get("/api/nope", headers=auth).status_code == 404


def test_scheme_is_case_insensitive(client: TestClient) -> None:
    # /api/executions/<id> with Redis down is a 503, which is past the auth check.
    response = client.get("/api/executions/x", headers={"Authorization": f"bearer {TOKEN}"})
    assert response.status_code == 503


def test_health_needs_no_token(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(health, "parts_down", lambda: [])
    response = client.get("/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_health_is_503_naming_what_is_down(client: TestClient) -> None:
    # Here nothing answers: no Redis, no store (a unit test has neither).
    response = client.get("/health")
    assert response.status_code == 503
    assert response.json() == {"status": "unavailable",
                               "detail": "redis unavailable; store unavailable"}
