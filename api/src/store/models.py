"""Tables of the store. The schema itself is created by the migrations in
`migrations/versions`; a change here needs a new revision there."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import DateTime, Dialect, LargeBinary, MetaData, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator


def utc_now() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware timestamp on every backend: SQLite keeps no offset, so
    values read back from it are naive and are UTC by construction."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value


class Base(DeclarativeBase):
    # Fixed constraint and index names, so that migrations can refer to them.
    metadata = MetaData(
        naming_convention={
            "ix": "ix_%(column_0_label)s",
            "uq": "uq_%(table_name)s_%(column_0_name)s",
            "pk": "pk_%(table_name)s",
        }
    )


class WorkspaceFile(Base):
    """A file of the user workspace: a module, requirements.txt or data."""

    __tablename__ = "workspace_files"

    id: Mapped[int] = mapped_column(primary_key=True)
    path: Mapped[str] = mapped_column(String(1024), unique=True)
    content: Mapped[str] = mapped_column(Text)
    # sha256 hex of the UTF-8 content: what caches and compare-and-set compare.
    hash: Mapped[str] = mapped_column(String(64))
    size: Mapped[int]  # bytes of the UTF-8 content
    entity_type: Mapped[str] = mapped_column(String(32))
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utc_now)


class RequirementsChange(Base):
    """One successful write of requirements.txt; rows are only ever appended."""

    __tablename__ = "requirements_history"

    id: Mapped[int] = mapped_column(primary_key=True)
    old_hash: Mapped[str | None] = mapped_column(String(64))  # None: there was no file
    new_hash: Mapped[str] = mapped_column(String(64))
    content: Mapped[str] = mapped_column(Text)
    changed_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utc_now, index=True)
    change: Mapped[str] = mapped_column(String(2000))  # e.g. "install humanize==4.9.0"


class FleetWheel(Base):
    """A wheel one host built, kept for every host of the fleet (the fleet wheel
    cache), so that a rebuild of the same requirements needs no package index.
    Rows are written once and never changed: the filename names the content."""

    __tablename__ = "fleet_wheels"

    filename: Mapped[str] = mapped_column(String(512), primary_key=True)
    sha256: Mapped[str] = mapped_column(String(64))  # hex, checked on every read
    size: Mapped[int]  # bytes of content
    content: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utc_now)


class FleetManifest(Base):
    """The wheels that make up the environment of one requirements hash."""

    __tablename__ = "fleet_manifests"

    requirements_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    filenames: Mapped[str] = mapped_column(Text)  # a JSON list of FleetWheel filenames
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utc_now)


class RequirementsLock(Base):
    """The lock of one requirements hash: the exact versions and hashes that
    requirements.txt resolved to, written once by the first writer and never
    changed, so that every host installs the same thing for that hash."""

    __tablename__ = "requirements_locks"

    requirements_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    text: Mapped[str] = mapped_column(Text)  # `Lock.text()`, parsed by the reader
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utc_now)


class PlatformSecret(Base):
    """A random key the hosts of the fleet share, made by the first host that
    needs it and never changed (e.g. the module cache's seal key)."""

    __tablename__ = "platform_secrets"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utc_now)


class FleetBlob(Base):
    """An object of the fleet cache's `store` backend, by key (see
    `src/services/installer/fleet_blobs.py`): a file of a lock, by its
    sha256, or a per-platform list of them."""

    __tablename__ = "fleet_blobs"

    key: Mapped[str] = mapped_column(String(1024), primary_key=True)
    content: Mapped[bytes] = mapped_column(LargeBinary)
    size: Mapped[int]
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utc_now)


class FleetBuiltWheel(Base):
    """The wheel one host built, for its platform, from an sdist a lock names
    (by the sdist's sha256). Written once: every host of that platform
    installs that wheel, checked against this sha256."""

    __tablename__ = "fleet_built_wheels"

    source_sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    platform: Mapped[str] = mapped_column(String(200), primary_key=True)
    filename: Mapped[str] = mapped_column(String(512))
    sha256: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utc_now)
