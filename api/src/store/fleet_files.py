"""The fleet cache's `store` backend blobs, and the wheels built from sdists,
over a Session; the caller commits.

Keys and names are checked by the caller (the installer's fleet cache):
rows come from every host, so it checks what it reads as well.
"""

from __future__ import annotations

from typing import NamedTuple

from sqlalchemy import select
from sqlalchemy.orm import Session

from src.store.models import FleetBlob, FleetBuiltWheel, utc_now
from src.store.upsert import dialect_insert


def put_blob(session: Session, key: str, data: bytes, *, replace: bool) -> None:
    """Store `data` under `key`; an existing blob is kept unless `replace`."""
    insert = dialect_insert(session, FleetBlob).values(
        key=key, content=data, size=len(data), created_at=utc_now())
    if replace:
        session.execute(insert.on_conflict_do_update(
            index_elements=[FleetBlob.key],
            set_={"content": insert.excluded.content, "size": insert.excluded.size,
                  "created_at": insert.excluded.created_at}))
    else:
        session.execute(insert.on_conflict_do_nothing(index_elements=[FleetBlob.key]))


def get_blob(session: Session, key: str) -> bytes | None:
    found = session.scalar(select(FleetBlob.content).where(FleetBlob.key == key))
    return None if found is None else bytes(found)


def blob_keys(session: Session, prefix: str) -> list[str]:
    """Every key that starts with `prefix` (no wildcard in it is special)."""
    escaped = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return list(session.scalars(
        select(FleetBlob.key).where(FleetBlob.key.like(escaped + "%", escape="\\"))
        .order_by(FleetBlob.key)))


class BuiltWheel(NamedTuple):
    filename: str
    sha256: str


def record_built_wheel(session: Session, source_sha256: str, platform: str,
                       wheel: BuiltWheel) -> BuiltWheel:
    """Record the wheel built from the sdist `source_sha256` for `platform`,
    unless one is recorded already; returns the one recorded (the first
    builder's: every host of the platform then installs the same wheel)."""
    session.execute(
        dialect_insert(session, FleetBuiltWheel)
        .values(source_sha256=source_sha256, platform=platform, filename=wheel.filename,
                sha256=wheel.sha256, created_at=utc_now())
        .on_conflict_do_nothing(index_elements=[FleetBuiltWheel.source_sha256,
                                                FleetBuiltWheel.platform]))
    recorded = built_wheel(session, source_sha256, platform)
    if recorded is None:  # cannot happen: the row is ours or the winner's
        raise RuntimeError(f"no built wheel recorded for {source_sha256}")
    return recorded


def built_wheel(session: Session, source_sha256: str, platform: str) -> BuiltWheel | None:
    row = session.execute(
        select(FleetBuiltWheel.filename, FleetBuiltWheel.sha256)
        .where(FleetBuiltWheel.source_sha256 == source_sha256,
               FleetBuiltWheel.platform == platform)).one_or_none()
    return None if row is None else BuiltWheel(row.filename, row.sha256)
