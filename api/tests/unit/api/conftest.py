"""Unit tests of the HTTP layer: FastAPI's TestClient, no Redis and no store.

Nothing here reaches a real backend: REDIS_URL points at a closed port (see
tests/conftest.py) and the SQLite file is never created by the paths tested.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator

import pytest
from fastapi import FastAPI

from src.api.app import create_app

with warnings.catch_warnings():
    # Starlette >= 1.x deprecates httpx for its TestClient in favour of a
    # package we do not use; the client still works, and this is test-only.
    warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")
    from fastapi.testclient import TestClient

TOKEN = "unit-test-token"


@pytest.fixture
def app(monkeypatch: pytest.MonkeyPatch) -> FastAPI:
    from src.foundation.settings import get_settings

    monkeypatch.setenv("BIFROST_ADMIN_TOKEN", TOKEN)
    get_settings.cache_clear()
    return create_app()


@pytest.fixture
def client(app: FastAPI) -> Iterator[TestClient]:
    # Server errors become 500 answers, as a real server would send them.
    with TestClient(app, raise_server_exceptions=False) as test_client:
        yield test_client


@pytest.fixture
def auth() -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKEN}"}
