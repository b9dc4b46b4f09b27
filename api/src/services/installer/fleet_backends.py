"""Where the fleet wheel cache keeps its wheels and manifests: the SQL store
every host already shares, a directory every host mounts, or object storage
(`fleet_blobs`).

Filenames and hashes come from a backend every host writes, and become local
paths on the host that reads them: nothing but a plain wheel name (or hash)
passes, on the way in and on the way out.

SQLAlchemy is imported only when the store backend is used: worker processes
import this module and must stay small.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import re
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from src.foundation.atomic_files import atomic_write
from src.foundation.settings import Settings
from src.services.installer.fleet_blobs import Blobs, store_session

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

logger = logging.getLogger(__name__)

_SAFE_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.+!-]*$")
_SAFE_HASH = re.compile(r"[A-Za-z0-9_-]{1,64}")


class WheelCache(Protocol):
    """Where the fleet's wheels live; every method may raise when unreachable."""

    def has(self, filename: str) -> bool: ...

    def put(self, filename: str, data: bytes) -> None: ...

    def get(self, filename: str) -> bytes | None: ...

    def put_manifest(self, requirements_hash: str, filenames: list[str]) -> None: ...

    def get_manifest(self, requirements_hash: str) -> list[str] | None: ...


class StoreWheelCache:
    """Wheels and manifests in the SQL store (tables fleet_wheels, fleet_manifests)."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings

    def _session(self) -> contextlib.AbstractContextManager[Session]:
        return store_session(self._settings)

    def has(self, filename: str) -> bool:
        from src.store import fleet_wheels

        with self._session() as session:
            return fleet_wheels.has_wheel(session, checked_name(filename))

    def put(self, filename: str, data: bytes) -> None:
        """A no-op when the wheel is there already (hosts publishing one wheel race)."""
        from src.store import fleet_wheels

        with self._session() as session:
            fleet_wheels.put_wheel(session, checked_name(filename), data)

    def get(self, filename: str) -> bytes | None:
        """The wheel's bytes; None when it is missing or does not match its sha256."""
        from src.store import fleet_wheels

        with self._session() as session:
            stored = fleet_wheels.get_wheel(session, checked_name(filename))
        if stored is None:
            return None
        if hashlib.sha256(stored.content).hexdigest() != stored.sha256:
            logger.warning("Fleet wheel cache: %s in the store does not match its sha256", filename)
            return None
        return stored.content

    def put_manifest(self, requirements_hash: str, filenames: list[str]) -> None:
        from src.store import fleet_wheels

        names = [checked_name(name) for name in filenames]
        with self._session() as session:
            fleet_wheels.put_manifest(session, checked_hash(requirements_hash), names)

    def get_manifest(self, requirements_hash: str) -> list[str] | None:
        from src.store import fleet_wheels

        with self._session() as session:
            text = fleet_wheels.get_manifest_text(session, checked_hash(requirements_hash))
        return None if text is None else parse_manifest(text)


class DirectoryWheelCache:
    """Wheels and `<hash>.json` manifests in a directory every host mounts."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def has(self, filename: str) -> bool:
        return (self.root / checked_name(filename)).is_file()

    def put(self, filename: str, data: bytes) -> None:
        path = self.root / checked_name(filename)
        if not path.is_file():
            write_whole(path, data)

    def get(self, filename: str) -> bytes | None:
        try:
            return (self.root / checked_name(filename)).read_bytes()
        except FileNotFoundError:
            return None

    def put_manifest(self, requirements_hash: str, filenames: list[str]) -> None:
        names = [checked_name(name) for name in filenames]
        write_whole(self._manifest(requirements_hash), json.dumps(names).encode())

    def get_manifest(self, requirements_hash: str) -> list[str] | None:
        try:
            text = self._manifest(requirements_hash).read_text()
        except FileNotFoundError:
            return None
        return parse_manifest(text)

    def _manifest(self, requirements_hash: str) -> Path:
        return self.root / f"{checked_hash(requirements_hash)}.json"


class BlobWheelCache:
    """Wheels under `wheels/<name>` and manifests under `manifests/<hash>.json`
    in object storage (`fleet_blobs.ObjectBlobs`)."""

    def __init__(self, blobs: Blobs) -> None:
        self.blobs = blobs

    def has(self, filename: str) -> bool:
        return f"wheels/{checked_name(filename)}" in self.blobs.keys(
            f"wheels/{checked_name(filename)}")

    def put(self, filename: str, data: bytes) -> None:
        self.blobs.add(f"wheels/{checked_name(filename)}", data)

    def get(self, filename: str) -> bytes | None:
        return self.blobs.get(f"wheels/{checked_name(filename)}")

    def put_manifest(self, requirements_hash: str, filenames: list[str]) -> None:
        names = [checked_name(name) for name in filenames]
        self.blobs.replace(f"manifests/{checked_hash(requirements_hash)}.json",
                           json.dumps(names).encode())

    def get_manifest(self, requirements_hash: str) -> list[str] | None:
        text = self.blobs.get(f"manifests/{checked_hash(requirements_hash)}.json")
        return None if text is None else parse_manifest(text.decode())


# --- names and files ------------------------------------------------------------


def parse_manifest(text: str) -> list[str]:
    """The manifest's filenames; a name that is not a plain wheel filename is
    dropped (it would become a path on this host)."""
    data = json.loads(text)
    if not isinstance(data, list):
        raise ValueError("a manifest must be a JSON list of wheel filenames")
    names = [name for name in data if isinstance(name, str) and is_wheel_name(name)]
    if len(names) != len(data):
        logger.warning("Fleet wheel cache: ignored %d bad names in a manifest",
                       len(data) - len(names))
    return names


def is_wheel_name(name: str) -> bool:
    return name.endswith(".whl") and _SAFE_NAME.match(name) is not None


def checked_name(name: str) -> str:
    if not is_wheel_name(name):
        raise ValueError(f"not a wheel filename: {name!r}")
    return name


def checked_hash(requirements_hash: str) -> str:
    if not _SAFE_HASH.fullmatch(requirements_hash):
        raise ValueError(f"not a requirements hash: {requirements_hash!r}")
    return requirements_hash


def write_whole(path: Path, data: bytes) -> None:
    """Write a wheel or manifest so that readers (installers, other hosts) see
    the whole file or none of it; its directory is made when missing."""
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, data)
