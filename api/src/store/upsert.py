"""INSERT statements that can carry ON CONFLICT, in the session's dialect.

SQLAlchemy's generic `insert` has no ON CONFLICT; PostgreSQL's and SQLite's
inserts have it, with the same spelling, so the store's upserts pick the one
of the database the session is bound to.
"""

from __future__ import annotations

from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from src.store.models import Base

DialectInsert = postgresql.Insert | sqlite.Insert


def dialect_insert(session: Session, table: type[Base]) -> DialectInsert:
    """INSERT into `table` in the dialect of the session, for ON CONFLICT clauses."""
    dialect = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
    return dialect.insert(table)
