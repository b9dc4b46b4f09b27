"""The lock's own files, fetched from the index once per fleet.

A lock names each pin's files by sha256: the index's own bytes. Before a
host installs a lock's pins, it gathers their files into
`<packages_dir>/.lock-files` (a find-links dir), and installs from there
alone, each pin checked against its hashes again by the installer:

1. from the fleet cache (`fleet_blobs`). Each host that fetched files for a
   lock lists them, per platform, in `lock-files/<digest>/<platform>.json`;
   the files themselves are `files/<sha256>/<name>`. A file is taken only
   when it suits this interpreter (its wheel tags), when its sha256 is one
   the lock names for that pin (or, for a wheel built from an sdist, the one
   the store recorded for this platform), and when its bytes hash to that:
   anything else is refused (logged with its name, counted in
   `bifrost_cache_refusals_total{cache="fleet-file"}`) and fetched from the
   index instead. A cache that lies cannot put code into a worker;
2. what the cache lacks, from the index, by one host per platform: the one
   that takes the fetch lease (`fleet_lease`) downloads the missing files,
   builds a wheel of each sdist once (`lock_fetch`) and publishes them. The
   others wait for it, up to `BIFROST_FLEET_WAIT_SECONDS`, and take the files
   from the cache; past that bound a host fetches by itself, and says so in
   its log and in its install outcome.

So a lock whose files are all in the cache installs without the index, and
a host on another platform fetches only what is specific to it: pure-Python
wheels and sdists come from the cache.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from src.core import metrics_store
from src.foundation.atomic_files import atomic_write
from src.foundation.locks import LockedPackage
from src.foundation.redis_client import get_redis
from src.services.installer.context import BuildContext
from src.services.installer.fleet_blobs import Blobs, FleetCacheUnreachable, open_blobs
from src.services.installer.fleet_lease import FetchLease
from src.services.installer.lock_fetch import build_from_sdist, fetch_from_index
from src.services.installer.lock_file_entries import (
    FileEntry,
    parse_entries,
    platform_tag,
    sha256_of,
    wheel_rank,
)

LOCK_FILES_DIR = ".lock-files"  # a dot-name: nothing in it is importable
WAIT_POLL_SECONDS = 0.5


@dataclass
class LockFiles:
    """The files gathered for a lock's pins, and how."""

    directory: Path
    # Per pin (canonical name): the sha256 its install accepts, "sha256:<hex>".
    hashes: dict[str, tuple[str, ...]] = field(default_factory=dict)
    source: str = ""  # for the outcome and the log: where they came from

    def covers(self, packages: Iterable[LockedPackage]) -> bool:
        return all(package.key in self.hashes for package in packages)


WaitingReport = Callable[[str | None], None]


def gather(ctx: BuildContext, packages: Sequence[LockedPackage]) -> LockFiles | None:
    """The files of `packages` with hashes, from the cache and, where it lacks
    them, from the index once per fleet; None when no pin has hashes or there
    is no lock, and when the cache cannot be used: that costs a log line, and
    the installer takes the pins from the index itself, as fast as it can.
    Never raises for the cache."""
    hashed = [package for package in packages if sha256_of(package)]
    if not hashed or ctx.lock_digest is None:
        return None
    try:
        blobs = open_blobs(ctx.settings)
    except Exception as exc:
        ctx.log.warning("The fleet cache %s cannot be used: %s; installing from the index",
                        ctx.settings.wheel_cache, exc)
        return None
    directory = ctx.settings.packages_dir / LOCK_FILES_DIR
    directory.mkdir(parents=True, exist_ok=True)
    return Gathering(ctx, blobs, hashed, directory).run()


class Gathering:
    """One gathering of a lock's files on this host."""

    def __init__(self, ctx: BuildContext, blobs: Blobs,
                 packages: list[LockedPackage], directory: Path) -> None:
        self.ctx, self.blobs, self.directory = ctx, blobs, directory
        self.packages = {package.key: package for package in packages}
        self.found = LockFiles(directory)
        self.used: list[FileEntry] = []  # what this host used: its platform's list
        self.fetched: list[FileEntry] = []  # of those, what the cache lacked
        self.refused: set[str] = set()  # keys whose bytes were not the lock's: repaired
        self.unbuildable: set[str] = set()  # sdists whose build failed here
        self.cache_failed = False

    @property
    def missing(self) -> list[LockedPackage]:
        return [p for key, p in self.packages.items() if key not in self.found.hashes]

    def run(self) -> LockFiles | None:
        self.from_cache()
        if not self.missing:
            return self._done("the fleet cache")
        if self.cache_failed:
            return None  # said so: the installer fetches from the index
        lease = self._lease()
        waited_for, deadline = None, time.monotonic() + self.ctx.settings.fleet_wait_seconds
        while True:
            if lease is None or self._take(lease):
                with lease.renewed() if lease is not None else contextlib.nullcontext():
                    if waited_for:  # published while we took the lease? then less to fetch
                        self.from_cache()
                    fetch_from_index(self)
                    self.publish()
                how = "the index, fetched for the fleet" if lease else "the index"
                return self._done(how if not waited_for else
                                  f"{how} after waiting for {waited_for}")
            waited_for = lease.holder() or waited_for
            self._wait(lease, waited_for, deadline)
            self.from_cache()
            if not self.missing:
                return self._done(f"the fleet cache, fetched by {waited_for}")
            if time.monotonic() >= deadline:
                seconds = self.ctx.settings.fleet_wait_seconds
                self.ctx.log.warning(
                    "Waited %g s (BIFROST_FLEET_WAIT_SECONDS) for %s to fetch the files of lock "
                    "%s: fetching the %d missing from the index by itself", seconds, waited_for,
                    self._short, len(self.missing))
                fetch_from_index(self)
                self.publish()
                return self._done(f"the index, alone: waited {seconds:g} s for {waited_for}")

    @property
    def _short(self) -> str:
        return (self.ctx.lock_digest or "")[:12]

    def _done(self, source: str) -> LockFiles:
        self.found.source = source
        got = len(self.found.hashes)
        self.ctx.log.info("Lock files of %s: %d of %d pins from %s", self._short, got,
                          len(self.packages), source)
        return self.found

    def _lease(self) -> FetchLease | None:
        try:
            client = get_redis(self.ctx.settings.redis_url)
            client.ping()
        except Exception as exc:
            self.ctx.log.warning("No fleet fetch lease (Redis: %s): fetching by itself", exc)
            return None
        return FetchLease(client, self.ctx.lock_digest or "", platform_tag(),
                          self.ctx.log.worker_id, self.ctx.settings.fleet_lease_seconds)

    def _take(self, lease: FetchLease) -> bool:
        try:
            return lease.take()
        except Exception as exc:
            self.ctx.log.warning("No fleet fetch lease (Redis: %s): fetching by itself", exc)
            return True

    def _wait(self, lease: FetchLease, holder: str | None, deadline: float) -> None:
        """Until the holder lets the lease go (or dies), or the bound passes."""
        report = self.ctx.waiting
        what = f"the files of lock {self._short}, fetched for the fleet by {holder}"
        self.ctx.log.info("Waiting for %s", what)
        if report is not None:
            report(what)
        try:
            while time.monotonic() < deadline:
                if self.ctx.should_stop is not None and self.ctx.should_stop():
                    return
                try:
                    if lease.holder() is None:
                        return
                except Exception:
                    return  # Redis away: look at the cache, then decide
                time.sleep(WAIT_POLL_SECONDS)
        finally:
            if report is not None:
                report(None)

    # --- the cache -------------------------------------------------------------------

    def entries(self) -> list[FileEntry]:
        """Every platform's list of this lock's files, as the cache has them."""
        if self.cache_failed:
            return []
        prefix = f"lock-files/{self.ctx.lock_digest}/"
        try:
            lists = [self.blobs.get(key) for key in self.blobs.keys(prefix)]
        except FleetCacheUnreachable as exc:
            self._cache_unreachable(exc)
            return []
        return [entry for data in lists if data for entry in parse_entries(data)]

    def from_cache(self) -> None:
        """Take every missing pin's best file the cache holds, checked."""
        candidates: dict[str, list[tuple[int, FileEntry]]] = {}
        for entry in self.entries():
            key = entry.pin.partition("==")[0]
            package = self.packages.get(_canonical(key))
            if package is None or package.pin().lower() != entry.pin.lower():
                continue
            rank = self._rank(entry, package)
            if rank is not None:
                candidates.setdefault(package.key, []).append((rank, entry))
        for key, ranked in candidates.items():
            if key in self.found.hashes:
                continue
            for _, entry in sorted(ranked, key=lambda pair: pair[0]):
                if self._take_from_cache(entry, self.packages[key]):
                    break

    def _rank(self, entry: FileEntry, package: LockedPackage) -> int | None:
        """Where `entry` stands among a pin's files here; None: not usable here."""
        if entry.built_from is not None:
            if entry.built_from not in sha256_of(package):
                return None
            recorded = recorded_wheel(entry.built_from)
            if recorded is None or recorded != (entry.name, entry.sha256):
                return None  # only the wheel the store recorded for this platform
            return -1 if wheel_rank(entry.name) is not None else None
        if entry.sha256 not in sha256_of(package):
            return None
        rank = wheel_rank(entry.name)
        if rank is not None:
            return rank
        return 10_000 if not entry.name.endswith(".whl") else None  # an sdist: built here

    def _take_from_cache(self, entry: FileEntry, package: LockedPackage) -> bool:
        local = self.directory / entry.name
        data = local.read_bytes() if local.is_file() else None
        if data is None or hashlib.sha256(data).hexdigest() != entry.sha256:
            try:
                data = self.blobs.get(entry.key())
            except FleetCacheUnreachable as exc:
                self._cache_unreachable(exc)
                return False
            if data is None:
                return False
            if hashlib.sha256(data).hexdigest() != entry.sha256:
                self.ctx.log.warning(
                    "Refused %s from the fleet cache %s: its bytes are not the ones the lock "
                    "names (sha256 %s); fetching it from the index", entry.name,
                    self._where, entry.sha256[:12])
                metrics_store.cache_refusal("fleet-file")
                self.refused.add(entry.key())
                return False
            atomic_write(local, data)
        self.note(entry, fetched=False)
        if not entry.name.endswith(".whl"):
            return build_from_sdist(self, local, entry, package)
        self.accept(entry, package)
        return True

    def take_recorded(self, entry: FileEntry, package: LockedPackage) -> bool:
        """Install `package` from the wheel the store recorded (`entry`),
        from the cache, checked; whether it could."""
        try:
            data = self.blobs.get(entry.key())
        except FleetCacheUnreachable as exc:
            self._cache_unreachable(exc)
            return False
        if data is None or hashlib.sha256(data).hexdigest() != entry.sha256:
            return False
        atomic_write(self.directory / entry.name, data)
        self.note(entry, fetched=False)
        self.accept(entry, package)
        return True

    def accept(self, entry: FileEntry, package: LockedPackage) -> None:
        """`entry` (in the directory, checked) is what `package` installs from."""
        self.found.hashes[package.key] = tuple(
            sorted({*package.hashes, f"sha256:{entry.sha256}"}))

    def note(self, entry: FileEntry, *, fetched: bool) -> None:
        """List `entry` as one of this platform's files of the lock; `fetched`:
        the cache lacks it (this host got it from the index, or built it)."""
        self.used.append(entry)
        if fetched:
            self.fetched.append(entry)

    @property
    def _where(self) -> str:
        return self.blobs.where

    def _cache_unreachable(self, exc: Exception) -> None:
        if not self.cache_failed:
            self.ctx.log.warning("The fleet cache did not answer: %s; installing from the "
                                 "index", exc)
        self.cache_failed = True

    def publish(self) -> None:
        """Put what this host fetched in the cache, and its platform's list."""
        if self.cache_failed or not self.fetched:
            return
        key = f"lock-files/{self.ctx.lock_digest}/{platform_tag()}.json"
        try:
            for entry in self.fetched:
                data = (self.directory / entry.name).read_bytes()
                if entry.key() in self.refused:  # the right bytes over the wrong ones
                    self.blobs.replace(entry.key(), data)
                else:
                    self.blobs.add(entry.key(), data)
            known = parse_entries(self.blobs.get(key) or b"[]")
            merged = {entry.key(): entry for entry in [*known, *self.used]}
            self.blobs.replace(key, json.dumps(
                [entry.as_json() for entry in merged.values()]).encode())
        except (FleetCacheUnreachable, OSError) as exc:
            self._cache_unreachable(exc)
            return
        self.ctx.log.info("Published %d files of lock %s to the fleet cache %s",
                          len(self.fetched), self._short, self._where)


def _canonical(name: str) -> str:
    from packaging.utils import canonicalize_name

    return canonicalize_name(name)


def recorded_wheel(source_sha256: str) -> tuple[str, str] | None:
    """The (filename, sha256) of the wheel the store recorded as built from
    this sdist for this platform; None when none is, or the store is away."""
    from src.store.database import session_scope
    from src.store.fleet_files import built_wheel

    try:
        with session_scope() as session:
            found = built_wheel(session, source_sha256, platform_tag())
    except Exception:
        return None
    return None if found is None else (found.filename, found.sha256)
