"""Requirements locks over a Session; the caller commits.

One requirements hash has exactly one lock, forever: the table is append-only,
and the first writer of a hash wins. A later writer (another API host that
resolved the same requirements meanwhile) gets the stored text back and uses
that, so no two hosts ever install different versions for one hash. The text
is stored as given; readers parse it (`src.foundation.locks.Lock.parse`).
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from src.store.models import RequirementsLock, utc_now
from src.store.upsert import dialect_insert


def get_lock(session: Session, requirements_hash: str) -> str | None:
    """The lock text stored for the hash; None when there is none."""
    return session.scalar(
        select(RequirementsLock.text).where(
            RequirementsLock.requirements_hash == requirements_hash
        )
    )


def put_lock(session: Session, requirements_hash: str, text: str) -> str:
    """Store `text` as the hash's lock unless it has one already; returns the
    text that is stored (the first writer's). ON CONFLICT DO NOTHING on the
    primary key, so concurrent writers never fail and never replace a lock."""
    session.execute(
        dialect_insert(session, RequirementsLock)
        .values(requirements_hash=requirements_hash, text=text, created_at=utc_now())
        .on_conflict_do_nothing(index_elements=[RequirementsLock.requirements_hash])
    )
    stored = get_lock(session, requirements_hash)
    if stored is None:  # cannot happen: the row is ours or the winner's
        raise RuntimeError(f"no lock stored for requirements {requirements_hash}")
    return stored
