"""Requirements locks through `src.store.locks`, on SQLite and PostgreSQL:
one hash, one lock, forever; the first writer wins."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

from alembic import command
from sqlalchemy import inspect, select, text

from src.store.database import connection_scope, get_engine, session_scope
from src.store.locks import get_lock, put_lock
from src.store.migrate import _config
from src.store.models import RequirementsLock

HASH = "ab" * 32
OTHER_HASH = "cd" * 32
WRITERS = 12


def _lock_text(version: str, requirements_hash: str = HASH) -> str:
    return (f"# Locked by Bifrost: the exact versions of requirements {requirements_hash},"
            f" do not edit\nhumanize=={version}  # via requirements.txt\n")


def _version(url: str) -> str | None:
    with get_engine(url).connect() as connection:
        return connection.execute(text("SELECT version_num FROM alembic_version")).scalar()


def test_migration_0003_adds_the_lock_table_and_goes_back(empty_store_url: str) -> None:
    with connection_scope(empty_store_url) as connection:
        command.upgrade(_config(connection), "0002")
    assert "requirements_locks" not in inspect(get_engine(empty_store_url)).get_table_names()

    with connection_scope(empty_store_url) as connection:
        command.upgrade(_config(connection), "0003")
    assert _version(empty_store_url) == "0003"
    inspector = inspect(get_engine(empty_store_url))
    assert "requirements_locks" in inspector.get_table_names()
    assert inspector.get_pk_constraint("requirements_locks")["constrained_columns"] == [
        "requirements_hash"
    ]

    with connection_scope(empty_store_url) as connection:
        command.downgrade(_config(connection), "0002")
    assert _version(empty_store_url) == "0002"
    assert "requirements_locks" not in inspect(get_engine(empty_store_url)).get_table_names()


def test_put_then_get(store_url: str) -> None:
    with session_scope(store_url) as session:
        assert get_lock(session, HASH) is None
        assert put_lock(session, HASH, _lock_text("4.9.0")) == _lock_text("4.9.0")
    with session_scope(store_url) as session:
        assert get_lock(session, HASH) == _lock_text("4.9.0")
        assert get_lock(session, OTHER_HASH) is None
        row = session.scalars(select(RequirementsLock)).one()
    assert row.requirements_hash == HASH
    assert row.created_at.tzinfo is not None


def test_a_second_writer_gets_the_first_lock_back(store_url: str) -> None:
    with session_scope(store_url) as session:
        put_lock(session, HASH, _lock_text("4.9.0"))
    with session_scope(store_url) as session:
        assert put_lock(session, HASH, _lock_text("4.8.0")) == _lock_text("4.9.0")
        put_lock(session, OTHER_HASH, _lock_text("1.0", OTHER_HASH))
    with session_scope(store_url) as session:
        assert get_lock(session, HASH) == _lock_text("4.9.0")
        assert get_lock(session, OTHER_HASH) == _lock_text("1.0", OTHER_HASH)
        assert session.query(RequirementsLock).count() == 2


def test_a_rolled_back_write_leaves_no_lock(store_url: str) -> None:
    try:
        with session_scope(store_url) as session:
            put_lock(session, HASH, _lock_text("4.9.0"))
            raise RuntimeError("boom")
    except RuntimeError:
        pass
    with session_scope(store_url) as session:
        assert get_lock(session, HASH) is None


def _write(url: str, version: str, start: threading.Barrier) -> str:
    """What a write request does: its own session, one put_lock, commit."""
    with session_scope(url) as session:
        start.wait()  # every writer in an open transaction before any inserts
        return put_lock(session, HASH, _lock_text(version))


def test_concurrent_writers_all_get_the_one_stored_lock(store_url: str) -> None:
    start = threading.Barrier(WRITERS)
    with ThreadPoolExecutor(WRITERS) as pool:
        futures = [pool.submit(_write, store_url, f"4.{i}.0", start) for i in range(WRITERS)]
        returned = [f.result(timeout=120) for f in futures]

    with session_scope(store_url) as session:
        stored = get_lock(session, HASH)
        assert session.query(RequirementsLock).count() == 1
    assert stored is not None
    assert stored in {_lock_text(f"4.{i}.0") for i in range(WRITERS)}
    assert returned == [stored] * WRITERS
