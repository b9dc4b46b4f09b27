"""The fleet wheel cache: wheels of built environments, kept where every host
can reach them, so that another host (or this one, after its packages dir was
lost) rebuilds the same requirements with no package index reachable.

    <packages_dir>/.wheels/<wheel>      this host's wheels (a find-links dir)
    backend: wheels by filename, and per key a manifest: the filenames of
             every distribution of that key's environment

The key of an environment built from a lock (`src.foundation.locks`) is the
lock's digest, which names its exact versions and files: every host that
builds a hash from its lock, and later rebuilds it from the cache, installs
the very wheels the cache holds for that lock, and never those of another
resolution of the same requirements. An environment resolved with no lock
(requirements written before locks) is kept under its requirements hash, as
it always was.

After a build, `publish_in_background` repacks each distribution of the new
environment into a wheel (`fleet_repack`), uploads the wheels the backend
lacks and records the manifest. A build that resolves always gets the local
dir as `--find-links`; when a build's batch fails anyway (say, the index is
unreachable), `fetch` downloads the manifest's wheels into it and the batch
runs again (a build from a lock then takes the lock's pins from those wheels
alone, see `locked`). Neither ever raises: the cache only saves work, a build that
cannot use it goes to the index as before.

Backends (`BIFROST_WHEEL_CACHE`, checked by `Settings`; see `fleet_backends`):
`store` (the default: the SQL store every host already shares), `dir:/path`
or `file:///path` (a shared filesystem), `s3://bucket/prefix` (and `gs://`,
`az://`: object storage, `fleet_blobs`). SQLAlchemy and obstore are imported
only by the backends that use them: worker processes import this module.

These wheels serve pins without hashes and builds without a lock: a lock's
pins with hashes install from the lock's own files (`lock_files`).
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
from pathlib import Path

from src.foundation.settings import Settings, get_settings
from src.services.installer.fleet_backends import (
    BlobWheelCache,
    DirectoryWheelCache,
    StoreWheelCache,
    WheelCache,
    checked_hash,
    write_whole,
)
from src.services.installer.fleet_blobs import OBJECT_SCHEMES, open_blobs
from src.services.installer.fleet_repack import produce_wheels, wheel_filename
from src.services.installer.fleet_uploads import DelayedDaemonExecutor

__all__ = [
    "PUBLISH_DELAY_SECONDS",
    "WHEELS_DIR",
    "DirectoryWheelCache",
    "StoreWheelCache",
    "UnsupportedWheelCache",
    "WheelCache",
    "fetch",
    "local_wheel_dir",
    "local_wheel_names",
    "produce_wheels",
    "publish",
    "publish_in_background",
    "wait_for_uploads",
    "wheel_cache",
    "wheel_filename",
]

logger = logging.getLogger(__name__)

WHEELS_DIR = ".wheels"  # a dot-name: nothing in it is importable from the packages dir

# A background publish starts this long after the build, so it does not take
# CPU from the sibling workers starting with the one that built.
PUBLISH_DELAY_SECONDS = 1.0

_uploads = DelayedDaemonExecutor("fleet-wheel-publish", delay=PUBLISH_DELAY_SECONDS)
# A forked child has none of its parent's threads: it starts its own uploader.
os.register_at_fork(after_in_child=_uploads.forget_after_fork)
# At exit, publishes not yet started are dropped; the one running is abandoned
# with its daemon thread (what it writes appears whole or not at all).
atexit.register(_uploads.shutdown, wait=False, cancel_futures=True)


class UnsupportedWheelCache(ValueError):
    """`BIFROST_WHEEL_CACHE` names a backend this build does not have."""


def local_wheel_dir(settings: Settings | None = None) -> Path:
    return (settings or get_settings()).packages_dir / WHEELS_DIR


def local_wheel_names(settings: Settings | None = None) -> frozenset[str]:
    """The wheels this host already holds (no backend is asked: cheap)."""
    local = local_wheel_dir(settings)
    return frozenset(p.name for p in local.glob("*.whl")) if local.is_dir() else frozenset()


def publish(key: str, env_path: Path, settings: Settings | None = None) -> int:
    """Make wheels of the environment's distributions, upload those the backend
    lacks and record the manifest under `key` (the digest of the lock the
    environment was built from, else its requirements hash); returns how many
    were uploaded (0 on error)."""
    settings = settings or get_settings()
    started = time.monotonic()
    try:
        uploaded, total = _publish(checked_hash(key), env_path, settings)
    except Exception as exc:
        logger.warning("Fleet wheel cache: could not publish the wheels of %s: %s",
                       key[:12], exc)
        return 0
    logger.info("Fleet wheel cache: %d wheels for %s, %d uploaded (%d ms)", total,
                key[:12], uploaded, (time.monotonic() - started) * 1000)
    return uploaded


def fetch(key: str, settings: Settings | None = None) -> Path | None:
    """Download the wheels of the manifest under `key` (a lock's digest, or a
    requirements hash) into the local wheel dir, and return that dir; None
    when it holds no wheel (no manifest, no backend)."""
    settings = settings or get_settings()
    local = local_wheel_dir(settings)
    try:
        _download(wheel_cache(settings), checked_hash(key), local)
    except Exception as exc:
        logger.warning("Fleet wheel cache: could not fetch the wheels of %s: %s",
                       key[:12], exc)
    # Wheels of earlier builds help too: the installer takes what fits.
    return local if _holds_wheels(local) else None


def publish_in_background(
    key: str, env_path: Path, settings: Settings | None = None
) -> threading.Thread:
    """`publish` on the uploader's daemon thread, which is returned: repacking
    and uploading never delay the start-up of the worker that built the
    environment, nor its exit. That thread serves every publish of this
    process (joining it would wait for its shutdown): `wait_for_uploads`
    waits for the publishes. Never raises: once the process is exiting,
    nothing more is queued."""
    settings = settings or get_settings()
    try:
        _uploads.submit(publish, key, env_path, settings)
    except RuntimeError as exc:  # the process is exiting
        logger.info("Fleet wheel cache: not publishing the wheels of %s: %s", key[:12], exc)
    return _uploads.thread


def wait_for_uploads(timeout: float) -> bool:
    """Wait for the background publishes; False when one is still pending or
    running at the deadline."""
    return _uploads.wait(timeout)


def wheel_cache(settings: Settings) -> WheelCache:
    """The backend `BIFROST_WHEEL_CACHE` names; raises UnsupportedWheelCache."""
    value = settings.wheel_cache.strip()
    if value == "store":
        return StoreWheelCache(settings)
    if value.startswith("dir:") and value[4:].strip():
        return DirectoryWheelCache(Path(value[4:].strip()).expanduser().resolve())
    if value.startswith("file://") and value[7:].strip():
        return DirectoryWheelCache(Path(value[7:]).expanduser().resolve())
    if value.startswith(OBJECT_SCHEMES):
        return BlobWheelCache(open_blobs(settings))
    raise UnsupportedWheelCache(
        f"BIFROST_WHEEL_CACHE={value!r} is not understood; use 'store', "
        "'s3://bucket/prefix' (or gs://, az://), or 'file:///shared/path'"
    )


# --- publish and fetch ------------------------------------------------------


def _publish(key: str, env_path: Path, settings: Settings) -> tuple[int, int]:
    backend = wheel_cache(settings)  # first: a misconfiguration costs no repacking
    local = local_wheel_dir(settings)
    filenames = produce_wheels(env_path, local)
    if not filenames:
        return 0, 0
    uploaded = sum(_upload(backend, local / name) for name in filenames)
    # Merged with what is known: a host whose build lost a line must not take
    # that line's wheel away from the hosts that come after it.
    known = backend.get_manifest(key) or []
    backend.put_manifest(key, sorted(set(known) | set(filenames)))
    return uploaded, len(filenames)


def _upload(backend: WheelCache, wheel: Path) -> bool:
    if backend.has(wheel.name):
        return False
    backend.put(wheel.name, wheel.read_bytes())
    return True


def _download(backend: WheelCache, key: str, local: Path) -> None:
    started = time.monotonic()
    manifest = backend.get_manifest(key)
    if manifest is None:
        logger.info("Fleet wheel cache: no wheels known for %s", key[:12])
        return
    missing = [name for name in manifest if not (local / name).is_file()]
    fetched = 0
    for name in missing:
        data = backend.get(name)
        if data is None:
            logger.warning("Fleet wheel cache: %s is in the manifest of %s but not in the cache",
                           name, key[:12])
            continue
        write_whole(local / name, data)
        fetched += 1
    logger.info("Fleet wheel cache: %d of %d wheels for %s were here, %d fetched (%d ms)",
                len(manifest) - len(missing), len(manifest), key[:12], fetched,
                (time.monotonic() - started) * 1000)


def _holds_wheels(directory: Path) -> bool:
    return directory.is_dir() and any(directory.glob("*.whl"))
