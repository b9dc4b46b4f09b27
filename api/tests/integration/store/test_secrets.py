"""Platform secrets through `src.store.secrets`, on SQLite and PostgreSQL:
made once by the first host that asks, the same for every host after."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

from alembic import command
from sqlalchemy import inspect, select

from src.store.database import connection_scope, get_engine, session_scope
from src.store.migrate import _config, upgrade_to_head
from src.store.models import PlatformSecret
from src.store.secrets import SECRET_BYTES, platform_secret

ASKERS = 12


def test_migration_0004_adds_the_secrets_table_and_goes_back(empty_store_url: str) -> None:
    upgrade_to_head(empty_store_url)
    inspector = inspect(get_engine(empty_store_url))
    assert inspector.get_pk_constraint("platform_secrets")["constrained_columns"] == ["name"]
    with connection_scope(empty_store_url) as connection:
        command.downgrade(_config(connection), "0003")
    assert "platform_secrets" not in inspect(get_engine(empty_store_url)).get_table_names()


def test_a_secret_is_made_once_and_kept(store_url: str) -> None:
    with session_scope(store_url) as session:
        first = platform_secret(session, "module-seal")
    with session_scope(store_url) as session:
        assert platform_secret(session, "module-seal") == first
        other = platform_secret(session, "another")
    assert len(first) == len(other) == SECRET_BYTES
    assert first != other


def _ask(url: str, start: threading.Barrier) -> bytes:
    with session_scope(url) as session:
        start.wait()  # every asker in an open transaction before any inserts
        return platform_secret(session, "module-seal")


def test_hosts_asking_at_once_all_get_the_one_stored_secret(store_url: str) -> None:
    start = threading.Barrier(ASKERS)
    with ThreadPoolExecutor(ASKERS) as pool:
        returned = [f.result(timeout=120)
                    for f in [pool.submit(_ask, store_url, start) for _ in range(ASKERS)]]
    with session_scope(store_url) as session:
        stored = session.scalars(select(PlatformSecret)).one()
    assert returned == [stored.value] * ASKERS
