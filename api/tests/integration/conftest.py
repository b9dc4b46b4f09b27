"""Fixtures for tests against real databases.

PostgreSQL tests get a database of their own, created for the test session and
dropped at its end; nothing else on the server is touched. Without a reachable
server they are skipped, with the reason.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, inspect, make_url, text
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.pool import NullPool

from src.foundation.local_redis import LocalRedis
from src.foundation.redis_client import close_clients
from src.foundation.settings import get_settings
from src.store.database import dispose_engines, get_engine, normalise_database_url
from src.store.migrate import upgrade_to_head

DEFAULT_TEST_POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """URL of a fresh, empty PostgreSQL database for this test session."""
    server_url = make_url(
        normalise_database_url(os.environ.get("TEST_POSTGRES_URL", DEFAULT_TEST_POSTGRES_URL))
    )
    shown = server_url.render_as_string(hide_password=True)
    # CREATE/DROP DATABASE cannot run in a transaction.
    server = create_engine(
        server_url,
        isolation_level="AUTOCOMMIT",
        poolclass=NullPool,
        # A refusal comes at once; a server merely slow to accept on a busy
        # machine must not turn the PostgreSQL tests into skips.
        connect_args={"connect_timeout": 30},
    )
    name = f"bifrost_test_{secrets.token_hex(6)}"
    try:
        with server.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
    except (OperationalError, InterfaceError) as exc:
        pytest.skip(f"PostgreSQL not reachable at {shown}: {exc.orig or exc}")
    try:
        yield server_url.set(database=name).render_as_string(hide_password=False)
    finally:
        dispose_engines()
        with server.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def _drop_all_tables(url: str) -> None:
    """Empty the session's own test database, so that every test starts from scratch."""
    with get_engine(url).begin() as connection:
        for table in inspect(connection).get_table_names():
            connection.execute(text(f'DROP TABLE IF EXISTS "{table}" CASCADE'))


@pytest.fixture(
    params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)],
)
def empty_store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A store URL with no schema yet, on each backend."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'store' / 'bifrost.db'}"
    else:
        url = request.getfixturevalue("postgres_url")
        _drop_all_tables(url)
    try:
        yield url
    finally:
        dispose_engines()


@pytest.fixture
def store_url(empty_store_url: str) -> str:
    """A migrated store URL, on each backend."""
    upgrade_to_head(empty_store_url)
    return empty_store_url


@pytest.fixture
def system(store_url: str, redis_client: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A migrated store (each backend) and the run's Redis, emptied, both named
    in the environment so the code under test and its child processes use them."""
    monkeypatch.setenv("DATABASE_URL", store_url)
    get_settings.cache_clear()
    close_clients()
    yield store_url
    close_clients()


@pytest.fixture
def sqlite_system(
    tmp_path: Path, redis_client: Any, monkeypatch: pytest.MonkeyPatch
) -> Iterator[str]:
    """Like `system`, on SQLite only: for tests of processes, not of the store."""
    url = f"sqlite:///{tmp_path / 'store' / 'bifrost.db'}"
    upgrade_to_head(url)
    monkeypatch.setenv("DATABASE_URL", url)
    get_settings.cache_clear()
    close_clients()
    yield url
    close_clients()
    dispose_engines()


@pytest.fixture
def own_redis(redis_server: LocalRedis, monkeypatch: pytest.MonkeyPatch) -> LocalRedis:
    """The code under test on a Redis of this test's own (`redis_server`),
    which the test may stop, reconfigure or fill."""
    monkeypatch.setenv("REDIS_URL", redis_server.url)
    get_settings.cache_clear()
    close_clients()
    return redis_server
