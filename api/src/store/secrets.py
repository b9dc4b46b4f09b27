"""Platform secrets over a Session; the caller commits.

A secret is made once, by the first host that asks for it, and never
changes: every host of the fleet gets the same value. Like the lock table,
the first writer wins (ON CONFLICT DO NOTHING), so two hosts asking at once
never end up with different keys.
"""

from __future__ import annotations

import secrets

from sqlalchemy import select
from sqlalchemy.orm import Session

from src.store.models import PlatformSecret, utc_now
from src.store.upsert import dialect_insert

SECRET_BYTES = 32


def platform_secret(session: Session, name: str) -> bytes:
    """The secret `name`, made (random, `SECRET_BYTES` long) if there is none."""
    stored = session.scalar(select(PlatformSecret.value).where(PlatformSecret.name == name))
    if stored is not None:
        return bytes(stored)
    session.execute(
        dialect_insert(session, PlatformSecret)
        .values(name=name, value=secrets.token_bytes(SECRET_BYTES), created_at=utc_now())
        .on_conflict_do_nothing(index_elements=[PlatformSecret.name])
    )
    stored = session.scalar(select(PlatformSecret.value).where(PlatformSecret.name == name))
    if stored is None:  # cannot happen: the row is ours or the winner's
        raise RuntimeError(f"no platform secret {name} stored")
    return bytes(stored)
