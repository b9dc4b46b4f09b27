"""The store against real SQLite and PostgreSQL databases."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
from sqlalchemy import func, inspect, select, text

from src.foundation.hashing import EMPTY_HASH
from src.foundation.settings import get_settings
from src.store import files
from src.store.database import (
    StoreUnavailable,
    get_engine,
    resolve_database_url,
    session_scope,
    store_exists,
)
from src.store.files import (
    REQUIREMENTS_PATH,
    RequirementsConflict,
    compare_and_set_requirements,
    delete_file,
    entity_type_for,
    get_file,
    list_files,
    put_file,
    read_requirements,
    sha256_hex,
)
from src.store.migrate import upgrade_to_head
from src.store.models import RequirementsChange
from tests.support.sleeps import recorded_sleeps

UNREACHABLE_POSTGRES = "postgresql://postgres@127.0.0.1:1/test"


def _history(url: str) -> list[tuple[str | None, str, str, str]]:
    with session_scope(url) as session:
        rows = session.scalars(select(RequirementsChange).order_by(RequirementsChange.id))
        return [(r.old_hash, r.new_hash, r.content, r.change) for r in rows]


def _revision(url: str) -> str | None:
    with get_engine(url).connect() as connection:
        return connection.execute(text("SELECT version_num FROM alembic_version")).scalar()


def test_migration_creates_tables_and_is_idempotent(empty_store_url: str) -> None:
    upgrade_to_head(empty_store_url)
    inspector = inspect(get_engine(empty_store_url))
    assert {"workspace_files", "requirements_history", "alembic_version"} <= set(
        inspector.get_table_names()
    )
    assert [i["name"] for i in inspector.get_indexes("requirements_history")] == [
        "ix_requirements_history_changed_at"
    ]
    revision = _revision(empty_store_url)
    assert revision == "0005"
    with session_scope(empty_store_url) as session:
        put_file(session, "workflows/hello.py", "x = 1\n")

    upgrade_to_head(empty_store_url)

    assert _revision(empty_store_url) == revision
    with session_scope(empty_store_url) as session:
        assert [f.path for f in list_files(session)] == ["workflows/hello.py"]


def test_entity_types() -> None:
    assert entity_type_for("workflows/hello.py") == "module"
    assert entity_type_for(REQUIREMENTS_PATH) == "requirements"
    assert entity_type_for("data/table.csv") == "data"


def test_put_get_list_delete_files(store_url: str) -> None:
    content = "print('héllo')\n"
    with session_scope(store_url) as session:
        created = put_file(session, "workflows/hello.py", content)
        put_file(session, "data/notes.txt", "notes")
    assert created.hash == sha256_hex(content)
    assert created.size == len(content.encode("utf-8")) == len(content) + 1
    assert created.entity_type == "module"
    assert created.updated_at.tzinfo is not None

    with session_scope(store_url) as session:
        updated = put_file(session, "workflows/hello.py", "x = 2\n")
        assert (updated.id, updated.content, updated.size) == (created.id, "x = 2\n", 6)

    with session_scope(store_url) as session:
        stored = get_file(session, "workflows/hello.py")
        assert stored is not None
        assert (stored.content, stored.hash) == ("x = 2\n", sha256_hex("x = 2\n"))
        assert get_file(session, "workflows/missing.py") is None
        assert [f.path for f in list_files(session)] == ["data/notes.txt", "workflows/hello.py"]
        assert [f.path for f in list_files(session, "module")] == ["workflows/hello.py"]

    with session_scope(store_url) as session:
        assert delete_file(session, "workflows/hello.py") is True
        assert delete_file(session, "workflows/hello.py") is False
    with session_scope(store_url) as session:
        assert get_file(session, "workflows/hello.py") is None


def test_session_scope_rolls_back_on_error(store_url: str) -> None:
    with pytest.raises(RuntimeError), session_scope(store_url) as session:
        put_file(session, "workflows/lost.py", "")
        raise RuntimeError("boom")
    with session_scope(store_url) as session:
        assert get_file(session, "workflows/lost.py") is None


def test_requirements_first_write_expects_hash_of_empty_file(store_url: str) -> None:
    with session_scope(store_url) as session:
        assert read_requirements(session) is None
        result = compare_and_set_requirements(
            session, "humanize==4.9.0\n", EMPTY_HASH, "install humanize==4.9.0"
        )
    assert result == ("humanize==4.9.0\n", sha256_hex("humanize==4.9.0\n"))
    with session_scope(store_url) as session:
        assert read_requirements(session) == result
        stored = get_file(session, REQUIREMENTS_PATH)
        assert stored is not None and stored.entity_type == "requirements"
    assert _history(store_url) == [
        (None, result[1], "humanize==4.9.0\n", "install humanize==4.9.0")
    ]


def test_requirements_stale_hash_conflicts_and_changes_nothing(store_url: str) -> None:
    with session_scope(store_url) as session:
        _, first = compare_and_set_requirements(session, "a\n", EMPTY_HASH, "put")
    with session_scope(store_url) as session:
        _, second = compare_and_set_requirements(session, "a\nb\n", first, "install b")

    with pytest.raises(RequirementsConflict) as conflict, session_scope(store_url) as session:
        compare_and_set_requirements(session, "a\nc\n", first, "install c")
    assert conflict.value.current_hash == second
    # Creating the file again (expecting no file) conflicts as well.
    with pytest.raises(RequirementsConflict), session_scope(store_url) as session:
        compare_and_set_requirements(session, "c\n", EMPTY_HASH, "put")

    with session_scope(store_url) as session:
        assert read_requirements(session) == ("a\nb\n", second)
    assert _history(store_url) == [
        (None, first, "a\n", "put"),
        (first, second, "a\nb\n", "install b"),
    ]


def test_requirements_expecting_content_when_there_is_no_file(store_url: str) -> None:
    with pytest.raises(RequirementsConflict) as conflict, session_scope(store_url) as session:
        compare_and_set_requirements(session, "a\n", sha256_hex("x\n"), "put")
    assert conflict.value.current_hash == EMPTY_HASH
    with session_scope(store_url) as session:
        assert read_requirements(session) is None
    assert _history(store_url) == []


def test_requirements_unconditional_write(store_url: str) -> None:
    with session_scope(store_url) as session:
        _, first = compare_and_set_requirements(session, "a\n", None, "put")
    with session_scope(store_url) as session:
        _, second = compare_and_set_requirements(session, "b\n", None, "remove a")
    with session_scope(store_url) as session:
        assert read_requirements(session) == ("b\n", second)
    assert [(old, new) for old, new, _, _ in _history(store_url)] == [
        (None, first),
        (first, second),
    ]


def test_unconditional_write_that_loses_a_race_conflicts_once(
    store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Another writer lands between reading the hash (for the history) and the
    # swap: the store makes one attempt and says so; retrying is the caller's.
    with session_scope(store_url) as session:
        _, first = compare_and_set_requirements(session, "a\n", None, "put")
    reads: list[str] = []

    def stale_hash(session: object) -> str:
        reads.append("read")
        return sha256_hex("what the file held before\n")

    monkeypatch.setattr(files, "_requirements_hash", stale_hash)
    with pytest.raises(RequirementsConflict), session_scope(store_url) as session:
        compare_and_set_requirements(session, "b\n", None, "put")
    assert len(reads) == 2  # the read for the history, the one for the conflict: no retry
    monkeypatch.undo()
    with session_scope(store_url) as session:
        assert read_requirements(session) == ("a\n", first)
    assert len(_history(store_url)) == 1


def test_sqlite_pragmas(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'store.db'}"
    with get_engine(url).connect() as connection:
        assert connection.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert connection.execute(text("PRAGMA foreign_keys")).scalar() == 1
        assert connection.execute(text("PRAGMA busy_timeout")).scalar() == 30000


def test_store_exists_creates_nothing(tmp_path: Path, isolated_settings: Path) -> None:
    missing = tmp_path / "nowhere" / "bifrost.db"
    assert store_exists(f"sqlite:///{missing}") is False
    assert not missing.parent.exists()

    # The default store: a SQLite file in the data directory, not there yet.
    assert resolve_database_url() == f"sqlite:///{isolated_settings / 'bifrost.db'}"
    assert store_exists() is False
    assert not isolated_settings.exists()

    upgrade_to_head()
    assert store_exists() is True
    assert store_exists(UNREACHABLE_POSTGRES) is True


@pytest.mark.parametrize(
    ("given", "resolved"),
    [
        ("postgresql://u:p@db:5432/bifrost", "postgresql+psycopg://u:p@db:5432/bifrost"),
        ("postgres://u@db/bifrost", "postgresql+psycopg://u@db/bifrost"),
        ("postgresql+psycopg://u@db/bifrost", "postgresql+psycopg://u@db/bifrost"),
        ("sqlite:////srv/bifrost.db", "sqlite:////srv/bifrost.db"),
    ],
)
def test_resolve_database_url_uses_psycopg(
    given: str, resolved: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DATABASE_URL", given)
    get_settings.cache_clear()
    assert resolve_database_url() == resolved


def test_unreachable_postgres_is_store_unavailable_quickly(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    started = time.monotonic()
    with recorded_sleeps(monkeypatch) as slept:
        with (
            pytest.raises(StoreUnavailable, match=re.escape("127.0.0.1:1/")) as unavailable,
            session_scope(UNREACHABLE_POSTGRES) as session,
        ):
            session.scalar(select(func.count()).select_from(RequirementsChange))
        with pytest.raises(StoreUnavailable):
            upgrade_to_head(UNREACHABLE_POSTGRES)
    # Quickly: the refusal itself is the answer (not a connect timeout), and
    # nothing waits to try again. The time bound only catches a hang.
    assert "refused" in str(unavailable.value).lower()
    assert slept == []
    assert time.monotonic() - started < 60
