"""The fleet wheel cache's tables over a Session; the caller commits.

Wheels are kept by filename and written once (the filename names the
content); a manifest lists, per requirements hash, the filenames of the
environment's wheels. Names are checked by the caller (the installer's store
backend): rows come from every host, so it checks what it reads as well.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import NamedTuple

from sqlalchemy import select
from sqlalchemy.orm import Session

from src.store.models import FleetManifest, FleetWheel, utc_now
from src.store.upsert import dialect_insert


class StoredWheel(NamedTuple):
    """A wheel's bytes and the sha256 hex recorded when it was written."""

    content: bytes
    sha256: str


def has_wheel(session: Session, filename: str) -> bool:
    found = session.scalar(select(FleetWheel.filename).where(FleetWheel.filename == filename))
    return found is not None


def put_wheel(session: Session, filename: str, data: bytes) -> None:
    """Store a wheel with its sha256 and size; a no-op when a wheel of that
    filename is there already (hosts publishing one wheel race)."""
    insert = dialect_insert(session, FleetWheel).values(
        filename=filename, sha256=hashlib.sha256(data).hexdigest(), size=len(data),
        content=data, created_at=utc_now(),
    )
    session.execute(insert.on_conflict_do_nothing(index_elements=[FleetWheel.filename]))


def get_wheel(session: Session, filename: str) -> StoredWheel | None:
    """The wheel as stored, unchecked: the caller compares it with its sha256."""
    row = session.execute(
        select(FleetWheel.content, FleetWheel.sha256).where(FleetWheel.filename == filename)
    ).one_or_none()
    return None if row is None else StoredWheel(bytes(row.content), row.sha256)


def put_manifest(session: Session, requirements_hash: str, filenames: Sequence[str]) -> None:
    """Record (or replace) the manifest of a requirements hash, as a JSON list."""
    insert = dialect_insert(session, FleetManifest).values(
        requirements_hash=requirements_hash, filenames=json.dumps(list(filenames)),
        created_at=utc_now(),
    )
    session.execute(insert.on_conflict_do_update(
        index_elements=[FleetManifest.requirements_hash],
        set_={"filenames": insert.excluded.filenames, "created_at": insert.excluded.created_at},
    ))


def get_manifest_text(session: Session, requirements_hash: str) -> str | None:
    """The manifest's JSON text as stored (any host wrote it: the caller parses
    and checks it); None when the hash has none."""
    return session.scalar(
        select(FleetManifest.filenames).where(FleetManifest.requirements_hash == requirements_hash)
    )
