"""Fetching a lock's files from the index, for a host that gathers them
(`lock_files.Gathering`): the index's own files, found with unearth (the
operator's index and find-links, the file that suits this interpreter among
those with the lock's hashes) and downloaded side by side, each checked
against the lock's sha256; and, for a pin the index offers only as an sdist,
the wheel built from it once per platform (uv or pip, confined: the build
runs package code), its sha256 recorded in the store so that every other host
of the platform installs that very wheel.

Downloading runs no package code; it runs in a process of its own
(`lock_download`), so that its HTTP client never stays in a worker's memory.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

from src.foundation.hardening import for_executions
from src.foundation.locks import LockedPackage
from src.services.installer import commands
from src.services.installer.context import BuildContext
from src.services.installer.failures import excerpt
from src.services.installer.lock_file_entries import FileEntry, platform_tag, sha256_of
from src.services.installer.runner import run_before

# Beyond the download's own deadline, what its process gets to answer.
DOWNLOAD_GRACE_SECONDS = 10.0
_API_DIR = Path(__file__).resolve().parents[3]


class Gathering(Protocol):
    """What a fetch adds to: a gathering of a lock's files (`lock_files`)."""

    ctx: BuildContext
    directory: Path  # where the gathered files are
    unbuildable: set[str]  # sdists (sha256) whose build failed here: not tried again

    @property
    def missing(self) -> list[LockedPackage]: ...

    def note(self, entry: FileEntry, *, fetched: bool) -> None: ...

    def accept(self, entry: FileEntry, package: LockedPackage) -> None: ...

    def take_recorded(self, entry: FileEntry, package: LockedPackage) -> bool: ...


def fetch_from_index(gathering: Gathering) -> None:
    """Download the files of the pins `gathering` still misses (not the
    sdists that failed to build here: the install says why)."""
    missing = [p for p in gathering.missing if not sha256_of(p) & gathering.unbuildable]
    if not missing:
        return
    ctx = gathering.ctx
    started = time.monotonic()
    with _work_dir(gathering) as work:
        fetched, problems = download(missing, work, _deadline(gathering))
        for package, path in fetched:
            sha = hashlib.sha256(path.read_bytes()).hexdigest()
            local = gathering.directory / path.name
            os.replace(path, local)
            entry = FileEntry(path.name, sha, package.pin())
            gathering.note(entry, fetched=True)
            if path.name.endswith(".whl"):
                gathering.accept(entry, package)
            else:
                build_from_sdist(gathering, local, entry, package)
    for problem in problems[:5]:
        ctx.log.warning("Could not fetch a file of lock %s from the index: %s",
                        (ctx.lock_digest or "")[:12], problem)
    ctx.log.info("Fetched %d of %d pins' files of lock %s from the index (%d ms)",
                 len(fetched), len(missing), (ctx.lock_digest or "")[:12],
                 (time.monotonic() - started) * 1000)


def download(packages: list[LockedPackage], dest: Path, deadline: float
             ) -> tuple[list[tuple[LockedPackage, Path]], list[str]]:
    """Each pin's file that suits this interpreter, among those with the
    lock's hashes, into `dest`, checked (`lock_download`, in a process of its
    own: its HTTP client would stay in the worker's memory); and what went
    wrong, per pin."""
    by_pin = {package.pin(): package for package in packages}
    seconds = max(deadline - time.monotonic(), 1.0)
    spec = {"dest": str(dest), "seconds": seconds,
            "pins": [{"pin": pin, "sha256": sorted(sha256_of(package))}
                     for pin, package in by_pin.items()]}
    try:
        done = subprocess.run(
            [sys.executable, "-m", "src.services.installer.lock_download"],
            input=json.dumps(spec), capture_output=True, text=True, cwd=_API_DIR,
            env=for_executions(os.environ), timeout=seconds + DOWNLOAD_GRACE_SECONDS)
        answer = json.loads(done.stdout) if done.returncode == 0 else None
    except (subprocess.TimeoutExpired, ValueError, OSError) as exc:
        return [], [f"the download did not finish: {type(exc).__name__}: {exc}"[:300]]
    if not isinstance(answer, dict):
        return [], [f"the download failed: {done.stderr.strip()[-300:]}"]
    fetched = [(by_pin[item["pin"]], dest / item["file"]) for item in answer["fetched"]
               if item.get("pin") in by_pin and (dest / str(item.get("file"))).is_file()]
    return fetched, [str(problem) for problem in answer.get("problems", [])]


def build_from_sdist(gathering: Gathering, sdist: Path, source: FileEntry,
                     package: LockedPackage) -> bool:
    """Build the wheel of `sdist` (checked: `source`) for this platform, and
    install from the one the store records (the first builder's); whether
    `package` has a wheel to install from now."""
    ctx = gathering.ctx
    if source.sha256 in gathering.unbuildable:
        return False
    with _work_dir(gathering) as work:
        installer = commands.choose_installer(ctx.settings.installer)
        call = commands.wheel_command(installer, sdist, work / "wheel")
        ok, output, elapsed_ms = run_before(call, _deadline(gathering), ctx.should_stop)
        wheels = sorted((work / "wheel").glob("*.whl")) if ok else []
        if len(wheels) != 1:
            ctx.log.warning("Could not build a wheel of %s (%d ms): %s", sdist.name,
                            elapsed_ms, excerpt(output, 300))
            gathering.unbuildable.add(source.sha256)
            return False
        built = wheels[0]
        sha = hashlib.sha256(built.read_bytes()).hexdigest()
        ours = FileEntry(built.name, sha, package.pin(), built_from=source.sha256)
        recorded = _record(source.sha256, platform_tag(), built.name, sha)
        os.replace(built, gathering.directory / built.name)
    if recorded is None:  # no store: this host's wheel, for this host alone
        gathering.accept(ours, package)
        return True
    if recorded == (ours.name, ours.sha256):
        ctx.log.info("Built %s from %s for %s (%d ms); the fleet's wheel for this platform",
                     built.name, sdist.name, platform_tag(), elapsed_ms)
        gathering.note(ours, fetched=True)
        gathering.accept(ours, package)
        return True
    # Another host of this platform built it first: install the wheel it recorded.
    theirs = FileEntry(recorded[0], recorded[1], package.pin(), built_from=source.sha256)
    if gathering.take_recorded(theirs, package):
        return True
    gathering.accept(ours, package)  # the recorded one is not in the cache: ours, here only
    return True


def _record(source_sha256: str, platform: str, filename: str, sha: str
            ) -> tuple[str, str] | None:
    from src.store.database import session_scope
    from src.store.fleet_files import BuiltWheel, record_built_wheel

    try:
        with session_scope() as session:
            recorded = record_built_wheel(session, source_sha256, platform,
                                          BuiltWheel(filename, sha))
    except Exception:
        return None
    return recorded.filename, recorded.sha256


def _deadline(gathering: Gathering) -> float:
    return time.monotonic() + gathering.ctx.settings.install_timeout


@contextlib.contextmanager
def _work_dir(gathering: Gathering) -> Iterator[Path]:
    """A directory beside the lock's files (one filesystem: files move in with a rename)."""
    work = Path(tempfile.mkdtemp(prefix=".fetch-", dir=gathering.directory.parent))
    try:
        yield work
    finally:
        shutil.rmtree(work, ignore_errors=True)
