"""The fleet wheel cache: wheels of built environments, kept where every host
can reach them, so that another host (or this one, after its packages dir was
lost) rebuilds the same requirements with no package index reachable.

    <packages_dir>/.wheels/<wheel>      this host's wheels (a find-links dir)
    backend: wheels by filename, and per requirements hash a manifest: the
             filenames of every distribution of that hash's environment

After a build, `publish_in_background` repacks each distribution of the new
environment into a wheel (from the files its RECORD lists), uploads the wheels
the backend lacks and records the manifest. The installer always gets the
local dir as `--find-links`; when a build's batch fails anyway (say, the index
is unreachable), `fetch` downloads the manifest's wheels into it and the batch
runs again. Neither ever raises: the cache only saves work, a build that
cannot use it goes to the index as before.

Backends (`BIFROST_WHEEL_CACHE`): `store` (the default: the SQL store every
host already shares), `dir:/path` (a shared filesystem). SQLAlchemy is imported
only by the store backend: worker processes import this module.
"""

from __future__ import annotations

import contextlib
import email.parser
import email.policy
import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from src.foundation.settings import Settings, get_settings
from src.services.installer.metadata import LenientDistribution

if TYPE_CHECKING:
    from sqlalchemy.dialects.postgresql import Insert as PostgresInsert
    from sqlalchemy.dialects.sqlite import Insert as SqliteInsert
    from sqlalchemy.orm import Session

    from src.store.models import Base

logger = logging.getLogger(__name__)

WHEELS_DIR = ".wheels"  # a dot-name: nothing in it is importable from the packages dir

# Files the installer adds to a dist-info when it installs a wheel (uv_cache.json
# and uv_build.json are uv's); the wheel never had them, and RECORD is written
# afresh by the packer.
_INSTALLER_FILES = frozenset(
    {"INSTALLER", "REQUESTED", "direct_url.json", "uv_cache.json", "uv_build.json", "RECORD"}
)
# Where `--target` installs put scripts: the installer generates them again
# from entry_points.txt, and a copy would carry this host's interpreter path.
_SCRIPT_DIRS = frozenset({"bin", "Scripts"})
_DIST_INFO = re.compile(r"^(?P<namever>[^\s-]+?-[^\s-]+?)\.dist-info$")
# Filenames and hashes come from a store every host writes; they become local
# paths, so nothing but a plain name may pass.
_SAFE_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.+!-]*$")

_uploads: list[threading.Thread] = []
_uploads_lock = threading.Lock()


class UnsupportedWheelCache(ValueError):
    """`BIFROST_WHEEL_CACHE` names a backend this build does not have."""


class WheelCache(Protocol):
    """Where the fleet's wheels live; every method may raise when unreachable."""

    def has(self, filename: str) -> bool: ...

    def put(self, filename: str, data: bytes) -> None: ...

    def get(self, filename: str) -> bytes | None: ...

    def put_manifest(self, requirements_hash: str, filenames: list[str]) -> None: ...

    def get_manifest(self, requirements_hash: str) -> list[str] | None: ...


# --- the public entry points ------------------------------------------------


def local_wheel_dir(settings: Settings | None = None) -> Path:
    return (settings or get_settings()).packages_dir / WHEELS_DIR


def local_wheel_names(settings: Settings | None = None) -> frozenset[str]:
    """The wheels this host already holds (no backend is asked: cheap)."""
    local = local_wheel_dir(settings)
    return frozenset(p.name for p in local.glob("*.whl")) if local.is_dir() else frozenset()


def publish(requirements_hash: str, env_path: Path, settings: Settings | None = None) -> int:
    """Make wheels of the environment's distributions, upload those the backend
    lacks and record the manifest; returns how many were uploaded (0 on error)."""
    settings = settings or get_settings()
    started = time.monotonic()
    try:
        uploaded, total = _publish(_checked_hash(requirements_hash), env_path, settings)
    except Exception as exc:
        logger.warning("Fleet wheel cache: could not publish the wheels of %s: %s",
                       requirements_hash[:12], exc)
        return 0
    logger.info("Fleet wheel cache: %d wheels for %s, %d uploaded (%d ms)", total,
                requirements_hash[:12], uploaded, (time.monotonic() - started) * 1000)
    return uploaded


def fetch(requirements_hash: str, settings: Settings | None = None) -> Path | None:
    """Download the wheels of the hash's manifest into the local wheel dir, and
    return that dir; None when it holds no wheel (no manifest, no backend)."""
    settings = settings or get_settings()
    local = local_wheel_dir(settings)
    try:
        _download(wheel_cache(settings), _checked_hash(requirements_hash), local)
    except Exception as exc:
        logger.warning("Fleet wheel cache: could not fetch the wheels of %s: %s",
                       requirements_hash[:12], exc)
    # Wheels of earlier builds help too: the installer takes what fits.
    return local if _holds_wheels(local) else None


PUBLISH_DELAY_SECONDS = 1.0


def publish_in_background(
    requirements_hash: str, env_path: Path, settings: Settings | None = None
) -> threading.Thread:
    """`publish` in a daemon thread: repacking and uploading never delay the
    start-up of the worker that built the environment. It starts a moment
    later, so it does not take CPU from the sibling workers starting with it."""
    thread = threading.Timer(
        PUBLISH_DELAY_SECONDS, publish,
        args=(requirements_hash, env_path, settings or get_settings()),
    )
    thread.name = f"fleet-wheel-publish-{requirements_hash[:12]}"
    thread.daemon = True
    with _uploads_lock:
        _uploads[:] = [t for t in _uploads if t.is_alive()]
        _uploads.append(thread)
    thread.start()
    return thread


def wait_for_uploads(timeout: float) -> bool:
    """Join the background publishes; False when one is still running at the deadline."""
    deadline = time.monotonic() + timeout
    with _uploads_lock:
        threads = list(_uploads)
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    return not any(thread.is_alive() for thread in threads)


def wheel_cache(settings: Settings) -> WheelCache:
    """The backend `BIFROST_WHEEL_CACHE` names; raises UnsupportedWheelCache."""
    value = settings.wheel_cache.strip()
    if value == "store":
        return StoreWheelCache(settings)
    if value.startswith("dir:") and value[4:].strip():
        return DirectoryWheelCache(Path(value[4:].strip()).expanduser().resolve())
    if value.startswith("s3://"):
        raise UnsupportedWheelCache(
            f"BIFROST_WHEEL_CACHE={value}: S3 is not supported in this build; "
            "use 'store' or 'dir:/shared/path'"
        )
    raise UnsupportedWheelCache(
        f"BIFROST_WHEEL_CACHE={value!r} is not understood; use 'store' or 'dir:/shared/path'"
    )


# --- publish and fetch ------------------------------------------------------


def _publish(requirements_hash: str, env_path: Path, settings: Settings) -> tuple[int, int]:
    backend = wheel_cache(settings)  # first: a misconfiguration costs no repacking
    local = local_wheel_dir(settings)
    filenames = produce_wheels(env_path, local)
    if not filenames:
        return 0, 0
    uploaded = sum(_upload(backend, local / name) for name in filenames)
    # Merged with what is known: a host whose build lost a line must not take
    # that line's wheel away from the hosts that come after it.
    known = backend.get_manifest(requirements_hash) or []
    backend.put_manifest(requirements_hash, sorted(set(known) | set(filenames)))
    return uploaded, len(filenames)


def _upload(backend: WheelCache, wheel: Path) -> bool:
    if backend.has(wheel.name):
        return False
    backend.put(wheel.name, wheel.read_bytes())
    return True


def _download(backend: WheelCache, requirements_hash: str, local: Path) -> None:
    started = time.monotonic()
    manifest = backend.get_manifest(requirements_hash)
    if manifest is None:
        logger.info("Fleet wheel cache: no wheels known for %s", requirements_hash[:12])
        return
    missing = [name for name in manifest if not (local / name).is_file()]
    fetched = 0
    for name in missing:
        data = backend.get(name)
        if data is None:
            logger.warning("Fleet wheel cache: %s is in the manifest of %s but not in the cache",
                           name, requirements_hash[:12])
            continue
        _atomic_write(local / name, data)
        fetched += 1
    logger.info("Fleet wheel cache: %d of %d wheels for %s were here, %d fetched (%d ms)",
                len(manifest) - len(missing), len(manifest), requirements_hash[:12], fetched,
                (time.monotonic() - started) * 1000)


def _holds_wheels(directory: Path) -> bool:
    return directory.is_dir() and any(directory.glob("*.whl"))


# --- wheels from an environment ---------------------------------------------


def produce_wheels(env_path: Path, wheel_dir: Path) -> list[str]:
    """The wheel filename of every distribution of the environment, repacking
    into `wheel_dir` those it lacks. A distribution that cannot be repacked is
    left out (with a warning): the others are still worth keeping."""
    filenames = []
    for dist_info in sorted(env_path.glob("*.dist-info")):
        try:
            filename = wheel_filename(dist_info)
            if not (wheel_dir / filename).is_file():
                _repack(env_path, dist_info, wheel_dir / filename)
            filenames.append(filename)
        except Exception as exc:
            logger.warning("Fleet wheel cache: cannot make a wheel of %s: %s", dist_info.name, exc)
    return filenames


def wheel_filename(dist_info: Path) -> str:
    """`<name>-<version>[-<build>]-<tags>.whl`, from the dist-info's name and its
    WHEEL file (the tags the wheel was installed from), as `wheel pack` names it."""
    match = _DIST_INFO.match(dist_info.name)
    if match is None:
        raise ValueError(f"not a wheel's dist-info: {dist_info.name}")
    with (dist_info / "WHEEL").open("rb") as f:
        info = email.parser.BytesParser(policy=email.policy.compat32).parse(f)
    tags: list[str] = info.get_all("Tag") or []
    if not tags or any(tag.count("-") != 2 for tag in tags):
        raise ValueError(f"no usable Tag in {dist_info.name}/WHEEL: {tags}")
    build = info.get("Build")
    parts = [match["namever"], *([str(build)] if build else []), _tagline(tags)]
    return "-".join(parts) + ".whl"


def _tagline(tags: list[str]) -> str:
    """Tags compressed as wheel filenames write them (py2.py3-none-any)."""
    columns = zip(*(tag.split("-") for tag in tags), strict=True)
    return "-".join(".".join(sorted(set(column))) for column in columns)


def _repack(env_root: Path, dist_info: Path, dest: Path) -> None:
    """Copy the distribution's files into a tree and pack it as a wheel; the
    packer writes RECORD afresh (the installed one has hashes of other files)."""
    from wheel.wheelfile import WheelFile  # only publishing needs it

    # The packer logs every member at INFO; in a worker's log that is noise.
    logging.getLogger("wheel").setLevel(logging.WARNING)
    members = _wheel_members(env_root, dist_info)
    dest.parent.mkdir(parents=True, exist_ok=True)
    # In the destination dir, so the final rename is atomic; a dot-name, so
    # that a find-links reader never takes it for a wheel.
    with tempfile.TemporaryDirectory(prefix=".repack-", dir=dest.parent) as tmp:
        tree = Path(tmp) / "tree"
        for member in members:
            target = tree / member
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(env_root / member, target)
        packed = Path(tmp) / dest.name
        with WheelFile(packed, "w") as wheel:
            wheel.write_files(str(tree))
        os.replace(packed, dest)


def _wheel_members(env_root: Path, dist_info: Path) -> list[Path]:
    """Paths, relative to the env root, of the distribution's own files (per its
    RECORD). Raises when one is missing: a partial wheel must never be shared."""
    files = LenientDistribution(dist_info).files  # a non-UTF-8 RECORD must not stop the others
    if files is None:
        raise ValueError(f"{dist_info.name} has no RECORD")
    root = Path(os.path.normpath(env_root.absolute()))
    members = []
    for file in files:
        # Lexically: a symlink inside the env must not be followed out of it.
        path = Path(os.path.normpath(root / file))
        if not path.is_relative_to(root):
            continue  # e.g. pip's ../../bin scripts: outside the environment
        relative = path.relative_to(root)
        if _installer_made(relative, dist_info.name):
            continue
        if not path.is_file():
            raise ValueError(f"{relative} is in the RECORD of {dist_info.name} but missing")
        members.append(relative)
    return members


def _installer_made(relative: Path, dist_info_name: str) -> bool:
    parts = relative.parts
    return (
        "__pycache__" in parts
        or relative.suffix == ".pyc"
        or parts[0] in _SCRIPT_DIRS
        or (len(parts) == 2 and parts[0] == dist_info_name and parts[1] in _INSTALLER_FILES)
    )


# --- backends ---------------------------------------------------------------


class StoreWheelCache:
    """Wheels and manifests in the SQL store (tables fleet_wheels, fleet_manifests)."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings

    @contextlib.contextmanager
    def _session(self) -> Iterator[Session]:
        from src.store.database import (
            StoreUnavailable,
            resolve_database_url,
            session_scope,
            store_exists,
        )

        url = resolve_database_url(self._settings)
        if not store_exists(url):
            # A worker must not leave an empty SQLite file where the store should be.
            raise StoreUnavailable(f"there is no store at {url}")
        with session_scope(url) as session:
            yield session

    def has(self, filename: str) -> bool:
        from sqlalchemy import select

        from src.store.models import FleetWheel

        with self._session() as session:
            found = session.scalar(
                select(FleetWheel.filename).where(FleetWheel.filename == _checked_name(filename))
            )
        return found is not None

    def put(self, filename: str, data: bytes) -> None:
        """A no-op when the wheel is there already (hosts publishing one wheel race)."""
        from src.store.models import FleetWheel, utc_now

        values = {
            "filename": _checked_name(filename), "sha256": hashlib.sha256(data).hexdigest(),
            "size": len(data), "content": data, "created_at": utc_now(),
        }
        with self._session() as session:
            insert = _dialect_insert(session, FleetWheel).values(**values)
            session.execute(insert.on_conflict_do_nothing(index_elements=[FleetWheel.filename]))

    def get(self, filename: str) -> bytes | None:
        from sqlalchemy import select

        from src.store.models import FleetWheel

        with self._session() as session:
            row = session.execute(
                select(FleetWheel.content, FleetWheel.sha256)
                .where(FleetWheel.filename == _checked_name(filename))
            ).one_or_none()
        if row is None:
            return None
        data = bytes(row.content)
        if hashlib.sha256(data).hexdigest() != row.sha256:
            logger.warning("Fleet wheel cache: %s in the store does not match its sha256", filename)
            return None
        return data

    def put_manifest(self, requirements_hash: str, filenames: list[str]) -> None:
        from src.store.models import FleetManifest, utc_now

        values = {
            "requirements_hash": _checked_hash(requirements_hash),
            "filenames": json.dumps([_checked_name(name) for name in filenames]),
            "created_at": utc_now(),
        }
        with self._session() as session:
            insert = _dialect_insert(session, FleetManifest).values(**values)
            session.execute(insert.on_conflict_do_update(
                index_elements=[FleetManifest.requirements_hash],
                set_={"filenames": insert.excluded.filenames,
                      "created_at": insert.excluded.created_at},
            ))

    def get_manifest(self, requirements_hash: str) -> list[str] | None:
        from sqlalchemy import select

        from src.store.models import FleetManifest

        with self._session() as session:
            text = session.scalar(
                select(FleetManifest.filenames)
                .where(FleetManifest.requirements_hash == _checked_hash(requirements_hash))
            )
        return None if text is None else _parse_manifest(text)


def _dialect_insert(session: Session, table: type[Base]) -> PostgresInsert | SqliteInsert:
    """INSERT in the session's dialect, for ON CONFLICT (PostgreSQL and SQLite
    spell it alike)."""
    from sqlalchemy.dialects import postgresql, sqlite

    dialect = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
    return dialect.insert(table)


class DirectoryWheelCache:
    """Wheels and `<hash>.json` manifests in a directory every host mounts."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def has(self, filename: str) -> bool:
        return (self.root / _checked_name(filename)).is_file()

    def put(self, filename: str, data: bytes) -> None:
        path = self.root / _checked_name(filename)
        if not path.is_file():
            _atomic_write(path, data)

    def get(self, filename: str) -> bytes | None:
        try:
            return (self.root / _checked_name(filename)).read_bytes()
        except FileNotFoundError:
            return None

    def put_manifest(self, requirements_hash: str, filenames: list[str]) -> None:
        names = [_checked_name(name) for name in filenames]
        _atomic_write(self._manifest(requirements_hash), json.dumps(names).encode())

    def get_manifest(self, requirements_hash: str) -> list[str] | None:
        try:
            text = self._manifest(requirements_hash).read_text()
        except FileNotFoundError:
            return None
        return _parse_manifest(text)

    def _manifest(self, requirements_hash: str) -> Path:
        return self.root / f"{_checked_hash(requirements_hash)}.json"


# --- helpers ------------------------------------------------------------------


def _parse_manifest(text: str) -> list[str]:
    """The manifest's filenames; a name that is not a plain wheel filename is
    dropped (it would become a path on this host)."""
    data = json.loads(text)
    if not isinstance(data, list):
        raise ValueError("a manifest must be a JSON list of wheel filenames")
    names = [name for name in data if isinstance(name, str) and _is_wheel_name(name)]
    if len(names) != len(data):
        logger.warning("Fleet wheel cache: ignored %d bad names in a manifest",
                       len(data) - len(names))
    return names


def _is_wheel_name(name: str) -> bool:
    return name.endswith(".whl") and _SAFE_NAME.match(name) is not None


def _checked_name(name: str) -> str:
    if not _is_wheel_name(name):
        raise ValueError(f"not a wheel filename: {name!r}")
    return name


def _checked_hash(requirements_hash: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", requirements_hash):
        raise ValueError(f"not a requirements hash: {requirements_hash!r}")
    return requirements_hash


def _atomic_write(path: Path, data: bytes) -> None:
    """Readers (installers, other hosts) see the whole file or none of it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.part")
    try:
        with partial.open("wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(partial, path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
