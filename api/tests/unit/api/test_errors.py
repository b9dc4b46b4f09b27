"""Backend failures map to 503 with the reason, everything else to a bare 500."""

from __future__ import annotations

from collections.abc import Callable
from typing import NoReturn

import pytest
from fastapi.testclient import TestClient

from src.api.routers import requirements as requirements_router
from src.services import packages
from src.store.database import StoreUnavailable
from src.store.files import RequirementsConflict


def raising(exc: Exception) -> Callable[..., NoReturn]:
    def fail(*_args: object, **_kwargs: object) -> NoReturn:
        raise exc

    return fail


def test_store_unavailable_is_503(
    client: TestClient, auth: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(
        packages, "current_requirements", raising(StoreUnavailable("store unavailable at x: down"))
    )
    response = client.get("/api/requirements", headers=auth)
    assert response.status_code == 503
    assert response.json() == {"detail": "store unavailable at x: down"}


def test_redis_unavailable_is_503(client: TestClient, auth: dict[str, str]) -> None:
    # REDIS_URL points at a closed port (tests/conftest.py).
    response = client.post(
        "/api/executions", json={"module": "workflows.hello", "function": "main"}, headers=auth
    )
    assert response.status_code == 503
    assert response.json()["detail"].startswith("redis unavailable: ")
    response = client.post("/api/workers/recycle-all", headers=auth)
    assert response.status_code == 503


def test_conflict_is_409_with_the_current_hash(
    client: TestClient, auth: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(
        requirements_router.packages, "put_requirements", raising(RequirementsConflict("abc"))
    )
    response = client.put(
        "/api/requirements", json={"content": "a\n", "expected_hash": "0" * 64}, headers=auth
    )
    assert response.status_code == 409
    assert response.json()["detail"]["current_hash"] == "abc"


def test_unexpected_errors_are_500_without_a_traceback(
    client: TestClient, auth: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(
        packages, "current_requirements", raising(RuntimeError("secret internals"))
    )
    response = client.get("/api/requirements", headers=auth)
    assert response.status_code == 500
    assert "secret internals" not in response.text
    assert "Traceback" not in response.text
