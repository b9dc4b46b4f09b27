"""Content-addressed environments under `BIFROST_PACKAGES_DIR`.

    <packages_dir>/.envs/<hash>.<generation>/   packages for requirements hash <hash>
    <packages_dir>/.envs/.tmp-*/                 a build in progress
    <packages_dir>/.locks/<hash>.lock            one builder per host per hash

An environment is built in a temporary directory and renamed into place when
complete, so no process ever sees half of one; it is never changed after that
(a retry of failed lines makes the next generation). Directory names start
with a dot so nothing in them is importable from the packages dir itself.

Each worker holds a shared `flock` on the environment it uses for as long as
it lives; garbage collection deletes only environments nobody holds, and keeps
the newest one of the previous hash for rollback. `flock` works across
processes and containers that share the directory on one host.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path

from filelock import FileLock

from src.services.installer.outcome import FailedPackage

RECORD_FILE = ".bifrost-env.json"
IN_USE_FILE = ".bifrost-in-use"
TMP_PREFIX = ".tmp-"

# Environments held open by this process (fds stay open until exit).
_held: dict[Path, int] = {}


@dataclass
class EnvRecord:
    """What a build did, stored inside the environment it made."""

    requirements_hash: str
    content: str
    generation: int = 0
    installer: str = ""
    installed: list[str] = field(default_factory=list)
    failed: list[FailedPackage] = field(default_factory=list)
    built_at: float = field(default_factory=time.time)
    duration_ms: float = 0.0
    # The digest of the lock it was built from (`Lock.digest()`); None when it
    # was resolved here (no lock, or one that could not be read). The engine
    # reuses an environment for a hash that has a lock only when this is that
    # lock's digest.
    lock_digest: str | None = None


@dataclass(frozen=True)
class Environment:
    path: Path
    record: EnvRecord


class Environments:
    def __init__(self, packages_dir: Path) -> None:
        self.packages_dir = packages_dir
        self.root = packages_dir / ".envs"
        self.locks = packages_dir / ".locks"

    def latest(self, requirements_hash: str) -> Environment | None:
        """The newest complete environment for the hash."""
        best: Environment | None = None
        for path in self._candidates(requirements_hash):
            record = read_record(path)
            if record is not None and (best is None or record.generation > best.record.generation):
                best = Environment(path, record)
        return best

    def _candidates(self, requirements_hash: str) -> list[Path]:
        if not self.root.is_dir():
            return []
        return [p for p in self.root.glob(f"{requirements_hash}.*") if p.is_dir()]

    def lock(self, requirements_hash: str, timeout: float) -> FileLock:
        self.locks.mkdir(parents=True, exist_ok=True)
        return FileLock(self.locks / f"{requirements_hash}.lock", timeout=timeout)

    def new_build_dir(self, requirements_hash: str) -> Path:
        """A fresh temporary directory; call with the hash's lock held."""
        self.root.mkdir(parents=True, exist_ok=True)
        # Any earlier build of this hash left here was interrupted (we hold its lock).
        for stale in self.root.glob(f"{TMP_PREFIX}{requirements_hash}-*"):
            shutil.rmtree(stale, ignore_errors=True)
        path = self.root / f"{TMP_PREFIX}{requirements_hash}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        path.mkdir()
        return path

    def publish(
        self, build_dir: Path, record: EnvRecord, previous: Environment | None
    ) -> Environment:
        """Write the record, then rename the build into place (atomic: the whole
        directory appears at once). `previous` is the hash's newest environment,
        read with the hash's lock held (the builder holds it still), so the new
        one is the next generation."""
        record.generation = previous.record.generation + 1 if previous else 1
        (build_dir / RECORD_FILE).write_text(json.dumps(asdict(record)))
        (build_dir / IN_USE_FILE).touch()
        final = self.root / f"{record.requirements_hash}.{record.generation}"
        os.rename(build_dir, final)
        return Environment(final, record)

    def collect_garbage(self, current_hash: str) -> list[Path]:
        """Delete environments no process holds, except the newest of the
        current hash and the newest of the previous one; returns what went."""
        envs = [
            Environment(path, record)
            for path in (self.root.iterdir() if self.root.is_dir() else [])
            if not path.name.startswith(".") and (record := read_record(path)) is not None
        ]
        envs.sort(key=lambda env: env.record.built_at, reverse=True)
        keep: set[Path] = set()
        current = [e for e in envs if e.record.requirements_hash == current_hash]
        others = [e for e in envs if e.record.requirements_hash != current_hash]
        keep.update(e.path for e in current[:1] + others[:1])
        removed = []
        for env in envs:
            if env.path not in keep and _remove_if_unused(env.path):
                removed.append(env.path)
        return removed


def read_record(path: Path) -> EnvRecord | None:
    try:
        data = json.loads((path / RECORD_FILE).read_text())
        return EnvRecord(**data)
    except (OSError, ValueError, TypeError):
        return None


def hold(path: Path) -> bool:
    """Hold a shared lock on an environment for this process's lifetime.
    False when it vanished (garbage-collected) before we got it."""
    if path in _held:
        return True
    try:
        fd = os.open(path / IN_USE_FILE, os.O_RDONLY)
    except OSError:
        return False
    fcntl.flock(fd, fcntl.LOCK_SH)
    if not (path / RECORD_FILE).exists():  # collected between our look and our lock
        os.close(fd)
        return False
    _held[path] = fd
    return True


def _remove_if_unused(path: Path) -> bool:
    try:
        fd = os.open(path / IN_USE_FILE, os.O_RDONLY)
    except OSError:
        return False
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False  # a live process uses it
        # Rename first: a reader either sees the whole environment or none.
        trash = path.parent / f"{TMP_PREFIX}trash-{uuid.uuid4().hex[:8]}"
        os.rename(path, trash)
        shutil.rmtree(trash, ignore_errors=True)
        return True
    finally:
        with contextlib.suppress(OSError):
            os.close(fd)
