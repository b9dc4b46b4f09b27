"""The fleet wheel cache's tables through `src.store.fleet_wheels`, on SQLite
and PostgreSQL; and the dialect INSERT the store's upserts share."""

from __future__ import annotations

import hashlib
import json

from sqlalchemy import text

from src.store import fleet_wheels
from src.store.database import session_scope
from src.store.models import FleetWheel, WorkspaceFile
from src.store.upsert import dialect_insert

HASH = "cd" * 32


def test_a_wheel_is_written_once_with_its_digest(store_url: str) -> None:
    with session_scope(store_url) as session:
        assert not fleet_wheels.has_wheel(session, "w-1.0-py3-none-any.whl")
        assert fleet_wheels.get_wheel(session, "w-1.0-py3-none-any.whl") is None
        fleet_wheels.put_wheel(session, "w-1.0-py3-none-any.whl", b"first")
    with session_scope(store_url) as session:
        fleet_wheels.put_wheel(session, "w-1.0-py3-none-any.whl", b"second")  # a no-op
    with session_scope(store_url) as session:
        assert fleet_wheels.has_wheel(session, "w-1.0-py3-none-any.whl")
        stored = fleet_wheels.get_wheel(session, "w-1.0-py3-none-any.whl")
        size = session.scalar(text("SELECT size FROM fleet_wheels"))
    assert stored == (b"first", hashlib.sha256(b"first").hexdigest())
    assert size == len(b"first")


def test_a_manifest_is_replaced(store_url: str) -> None:
    with session_scope(store_url) as session:
        assert fleet_wheels.get_manifest_text(session, HASH) is None
        fleet_wheels.put_manifest(session, HASH, ["a-1-py3-none-any.whl"])
    with session_scope(store_url) as session:
        fleet_wheels.put_manifest(session, HASH, ["a-1-py3-none-any.whl", "b-2-py3-none-any.whl"])
    with session_scope(store_url) as session:
        stored = fleet_wheels.get_manifest_text(session, HASH)
    assert stored is not None
    assert json.loads(stored) == ["a-1-py3-none-any.whl", "b-2-py3-none-any.whl"]


def test_the_insert_is_in_the_session_dialect(store_url: str) -> None:
    with session_scope(store_url) as session:
        dialect = session.get_bind().dialect.name
        for table in (FleetWheel, WorkspaceFile):
            insert = dialect_insert(session, table)
            assert insert.table.name == table.__tablename__
            assert type(insert).__module__.startswith(f"sqlalchemy.dialects.{dialect}")
