"""Workspace files and requirements.txt over a Session; the caller commits.

Paths are validated by the callers (routers, services), not here.
"""

from __future__ import annotations

from typing import Any, cast

from sqlalchemy import CursorResult, Result, delete, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from src.foundation.hashing import EMPTY_HASH, sha256_hex
from src.store.models import RequirementsChange, WorkspaceFile, utc_now
from src.store.upsert import dialect_insert

REQUIREMENTS_PATH = "requirements.txt"


def entity_type_for(path: str) -> str:
    if path == REQUIREMENTS_PATH:
        return "requirements"
    if path.endswith(".py"):
        return "module"
    return "data"


class RequirementsConflict(Exception):
    """requirements.txt no longer has the hash the writer read."""

    def __init__(self, current_hash: str) -> None:
        super().__init__(f"requirements.txt changed meanwhile; its hash is now {current_hash}")
        self.current_hash = current_hash


def _file_values(path: str, content: str) -> dict[str, Any]:
    return {
        "content": content,
        "hash": sha256_hex(content),
        "size": len(content.encode("utf-8")),
        "entity_type": entity_type_for(path),
        "updated_at": utc_now(),
    }


def _insert(session: Session, path: str, content: str) -> postgresql.Insert | sqlite.Insert:
    """INSERT of a file row in the dialect of the session, for ON CONFLICT clauses
    (both PostgreSQL and SQLite have them, with the same spelling)."""
    return dialect_insert(session, WorkspaceFile).values(path=path, **_file_values(path, content))


def _rowcount(result: Result[Any]) -> int:
    return cast(CursorResult[Any], result).rowcount


def get_file(session: Session, path: str) -> WorkspaceFile | None:
    return session.scalars(select(WorkspaceFile).where(WorkspaceFile.path == path)).one_or_none()


def list_files(session: Session, entity_type: str | None = None) -> list[WorkspaceFile]:
    query = select(WorkspaceFile).order_by(WorkspaceFile.path)
    if entity_type is not None:
        query = query.where(WorkspaceFile.entity_type == entity_type)
    return list(session.scalars(query))


def put_file(session: Session, path: str, content: str) -> WorkspaceFile:
    """Create or replace a file. An upsert, so that two writers of a new path
    do not fail on the unique path: the last one wins."""
    stmt = _insert(session, path, content)
    session.execute(
        stmt.on_conflict_do_update(
            index_elements=[WorkspaceFile.path],
            set_={key: stmt.excluded[key] for key in _file_values(path, content)},
        )
    )
    return session.scalars(
        select(WorkspaceFile)
        .where(WorkspaceFile.path == path)
        .execution_options(populate_existing=True)
    ).one()


def delete_file(session: Session, path: str) -> bool:
    """Whether there was such a file."""
    return _rowcount(session.execute(delete(WorkspaceFile).where(WorkspaceFile.path == path))) == 1


def read_requirements(session: Session) -> tuple[str, str] | None:
    """(content, hash) of requirements.txt; None when it was never written."""
    row = session.execute(
        select(WorkspaceFile.content, WorkspaceFile.hash).where(
            WorkspaceFile.path == REQUIREMENTS_PATH
        )
    ).one_or_none()
    return None if row is None else (row.content, row.hash)


def _requirements_hash(session: Session) -> str | None:
    return session.scalar(select(WorkspaceFile.hash).where(WorkspaceFile.path == REQUIREMENTS_PATH))


def _swap_requirements(session: Session, content: str, expected_hash: str) -> str | None:
    """Replace requirements.txt if its hash is `expected_hash`, else raise
    RequirementsConflict. Returns the old hash; None when the file was created.

    The hash check is part of the UPDATE (or the INSERT's unique path), so two
    writers that read the same hash cannot both succeed, on any backend.
    """
    updated = session.execute(
        update(WorkspaceFile)
        .where(WorkspaceFile.path == REQUIREMENTS_PATH, WorkspaceFile.hash == expected_hash)
        .values(**_file_values(REQUIREMENTS_PATH, content))
    )
    if _rowcount(updated) == 1:
        return expected_hash
    current = _requirements_hash(session)
    if current is not None or expected_hash != EMPTY_HASH:
        raise RequirementsConflict(current or EMPTY_HASH)
    # RETURNING rather than rowcount: the ORM may run an INSERT in a way whose
    # rowcount is -1 (psycopg); a returned id is proof that this INSERT happened.
    inserted_id = session.scalar(
        _insert(session, REQUIREMENTS_PATH, content)
        .on_conflict_do_nothing(index_elements=[WorkspaceFile.path])
        .returning(WorkspaceFile.id)
    )
    if inserted_id is None:  # another writer created it first
        raise RequirementsConflict(_requirements_hash(session) or EMPTY_HASH)
    return None


def compare_and_set_requirements(
    session: Session, content: str, expected_hash: str | None, change: str
) -> tuple[str, str]:
    """Write requirements.txt if its hash is still `expected_hash` (sha256 of ""
    when there is no file yet), and record the change in the history.

    `expected_hash=None` replaces whatever the file holds when it is read here
    (its hash goes into the history). Raises RequirementsConflict, changing
    nothing, when the hash differs; with `expected_hash=None` that means
    another writer landed between that read and the swap. One attempt: the
    caller decides whether to try again (src.services.packages does, bounded).
    Returns (content, new hash).
    """
    expected = expected_hash if expected_hash is not None else _requirements_hash(session)
    old_hash = _swap_requirements(session, content, expected or EMPTY_HASH)
    new_hash = sha256_hex(content)
    session.add(
        RequirementsChange(old_hash=old_hash, new_hash=new_hash, content=content, change=change)
    )
    session.flush()
    return content, new_hash
