"""One real API server for a whole test module, and the state its refusals must not touch.

`module_server` serves the app (uvicorn on a free port) with the token bound;
the store and Redis come from the settings, which each test points at its own
with `use_backends` (the autouse `isolated_settings` resets them per test).
`read_state` is what a refused request must leave exactly as it was: the
requirements as the API reports them, the Redis key's raw bytes, every
workspace file in the store and the length of the execution stream.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, cast

import pytest
import redis

from src.core.requirements_cache import REQUIREMENTS_KEY
from src.foundation.redis_client import close_clients
from src.foundation.settings import get_settings
from src.services import packages
from src.services.execution.executions import STREAM_KEY
from src.store.database import dispose_engines, session_scope
from src.store.files import list_files
from src.store.migrate import upgrade_to_head

from .conftest import TOKEN, Api, serving


@contextmanager
def module_server(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("BIFROST_ADMIN_TOKEN", TOKEN)
        patch.setenv("BIFROST_DATA_DIR", str(tmp_path_factory.mktemp("served-data")))
        patch.setenv("REDIS_URL", redis_url)
        get_settings.cache_clear()
        try:
            with serving(TOKEN) as api:
                yield api
        finally:
            close_clients()
            dispose_engines()
            get_settings.cache_clear()


def migrated_sqlite(tmp_path_factory: pytest.TempPathFactory) -> str:
    url = f"sqlite:///{tmp_path_factory.mktemp('served-store') / 'bifrost.db'}"
    upgrade_to_head(url)
    return url


def use_backends(monkeypatch: pytest.MonkeyPatch, store_url: str) -> None:
    """Point the module's server at `store_url` (and the Redis `redis_client` set)."""
    monkeypatch.setenv("DATABASE_URL", store_url)
    monkeypatch.setenv("BIFROST_ADMIN_TOKEN", TOKEN)
    get_settings.cache_clear()


@dataclass(frozen=True)
class ApiState:
    requirements: Any
    requirements_key: bytes | None
    files: tuple[tuple[str, str], ...]
    stream_length: int


def read_state(raw: redis.Redis) -> ApiState:
    """The state, read without changing it (the Redis key is read before the
    API, which would put it back if it were missing)."""
    key = cast(bytes | None, raw.get(REQUIREMENTS_KEY))
    # What GET /api/requirements answers, read in this process, where the
    # server runs (half the requests of a fuzz run were these reads otherwise).
    requirements = dict(packages.current_requirements())
    with session_scope() as session:
        files = tuple((row.path, row.hash) for row in list_files(session))
    return ApiState(
        requirements=requirements,
        requirements_key=key,
        files=files,
        stream_length=cast(int, raw.xlen(STREAM_KEY)),
    )

