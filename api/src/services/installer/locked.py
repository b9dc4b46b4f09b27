"""Installing a hash's lock: its exact pins, with no resolution.

A lock (`src.foundation.locks`) names every distribution of the environment
at one version, with the sha256 of the index's files where the index gave
them. A build from it installs exactly those, with `--no-deps`: the
installer resolves nothing, so every host that builds the hash, today or in
a year, gets the same versions whatever the index has gained since. The
platform's constraints still apply: a pin that would replace a distribution
the platform runs on fails, alone.

Where the pins come from, in order:

1. the lock's own files, gathered for the fleet (`lock_files`): from the
   fleet cache, checked against the lock's sha256, and what it lacks from the
   index once per fleet. The run sees that directory alone (no index), with
   each pin's hashes: a lock whose files are all in the cache installs with
   no index at all;
2. the index (the operator's settings), the lock's hashes checked: a file
   that is not the one the lock names fails. This host's own wheel dir is
   left out of this run: its wheels are repacked from installed
   environments (`fleet_repack`), so their bytes never match the index's;
3. for pins without hashes only, when that fails (say, the index is
   unreachable), the fleet's repacked wheels of this lock (`fleet_cache`,
   kept under the lock's digest) and nothing else. A wheel's filename is
   written to the cache once, by the first host, so every host that fetches
   it installs the same bytes. Pins with hashes never install from repacked
   wheels: their bytes are not the ones the lock names;
4. when that fails too, each package alone, from where the last run looked:
   the good ones land, and each bad one is recorded with why.

pip will not take a requirements file in which some lines have hashes and
others not (one hash turns on its hash-checking mode for every line; with
`--no-deps`, dependencies are not asked for hashes), so for pip the packages
with hashes and those without are two batches; uv checks the hashes given
and takes the other lines as they are, in one batch.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from src.foundation.locks import LockedPackage
from src.services.installer import commands, fleet_cache, lock_files
from src.services.installer.context import BuildContext
from src.services.installer.failures import ERROR_EXCERPT_CHARS, excerpt
from src.services.installer.outcome import FailedPackage
from src.services.installer.platform import constraints_file
from src.services.installer.runner import RunResult, run_before


def install_locked(
    ctx: BuildContext,
    installer: commands.Installer,
    target: Path,
    packages: Sequence[LockedPackage],
) -> list[FailedPackage]:
    """Install `packages` (the lock's, or those of its pins that failed last
    time) into `target`; returns the pins that failed."""
    if not packages:
        return []
    ctx.log.info("Installing %d locked packages (no resolution)", len(packages))
    files = lock_files.gather(ctx, packages)
    ctx.files_source = None if files is None else files.source
    runs = LockedRuns(
        ctx, installer, target,
        constraints=constraints_file(ctx.envs.root, ctx.settings.packages_dir),
        deadline=time.monotonic() + ctx.settings.install_timeout,
        files=files,
    )
    failed: list[FailedPackage] = []
    for batch in batches(installer, packages):
        failed += runs.batch_then_each(batch)
    return failed


def batches(
    installer: commands.Installer, packages: Sequence[LockedPackage]
) -> list[list[LockedPackage]]:
    """One batch for uv; for pip, the packages with hashes, then those without."""
    if installer == "uv":
        return [list(packages)]
    hashed = [package for package in packages if package.hashes]
    unhashed = [package for package in packages if not package.hashes]
    return [batch for batch in (hashed, unhashed) if batch]


def requirements_text(packages: Sequence[LockedPackage], *, hashes: bool,
                      accepted: dict[str, tuple[str, ...]] | None = None) -> str:
    """The requirements file of `packages`: exact pins, with their hashes or
    without; `accepted`: per pin, the hashes to give instead (a lock's files
    gathered for the fleet, a wheel built from an sdist among them)."""
    lines = [
        package.pin() + "".join(
            f" --hash={digest}"
            for digest in ((accepted or {}).get(package.key, package.hashes) if hashes else ()))
        for package in packages
    ]
    return "\n".join(lines) + "\n"


Source = Literal["index", "fleet", "files"]


@dataclass(frozen=True)
class LockedRuns:
    """The installer runs of one build from a lock into `target`, all before `deadline`."""

    ctx: BuildContext
    installer: commands.Installer
    target: Path
    constraints: Path
    deadline: float
    files: lock_files.LockFiles | None = None

    def batch_then_each(self, batch: list[LockedPackage]) -> list[FailedPackage]:
        """All of `batch` from the lock's files, when they cover it, else from
        the index; for pins without hashes, then from the fleet's repacked
        wheels of this lock; if it still fails, each package alone. Returns
        the pins that failed."""
        source: Source = "index"
        ok, output, elapsed_ms = False, "", 0.0
        if self.files is not None and self.files.covers(batch):
            ok, output, elapsed_ms = self.run(batch, source="files")
            if not ok:
                self.ctx.log.warning("%s install from the lock's files failed; installing "
                                     "from the index: %s", self.installer, excerpt(output, 300))
        if not ok:
            ok, output, elapsed_ms = self.run(batch, source="index")
        if (not ok and not any(package.hashes for package in batch)
                and fleet_cache.fetch(self.ctx.cache_key, self.ctx.settings) is not None):
            self.ctx.log.warning("%s install of the locked packages failed; installing them "
                                 "from the fleet wheel cache: %s",
                                 self.installer, excerpt(output, 300))
            source = "fleet"
            ok, output, elapsed_ms = self.run(batch, source="fleet")
        if ok:
            landed = commands.installed_lines(self.installer, output)
            for pair in landed:
                self.ctx.log.info("+ %s (batch of %d, %d ms)", pair, len(landed), elapsed_ms)
            return []
        self.ctx.log.warning("%s install failed; installing package by package: %s",
                             self.installer, excerpt(output, 300))
        return self.each(batch, source)

    def each(self, batch: list[LockedPackage], source: Source) -> list[FailedPackage]:
        """Each package in a run of its own: the good ones land, each bad one fails with why."""
        failed: list[FailedPackage] = []
        for package in batch:
            ok, output, elapsed_ms = self.run([package], source=source)
            if not ok and source == "fleet":
                # The fleet may simply not have it (it never built anywhere):
                # the index's attempt says why it fails, which is what to report.
                ok, output, elapsed_ms = self.run([package], source="index")
            if ok:
                self.ctx.log.info("+ %s (%d ms)", package.pin(), elapsed_ms)
            else:
                error = excerpt(output, ERROR_EXCERPT_CHARS)
                self.ctx.log.warning("x %s failed (%d ms): %s", package.pin(), elapsed_ms, error)
                failed.append(FailedPackage(package=package.pin(), error=error))
        return failed

    def run(self, packages: Sequence[LockedPackage], *, source: Source) -> RunResult:
        """One installer run of `packages` with `--no-deps`: from the index with
        their hashes, from the lock's gathered files alone with theirs, or from
        the fleet's repacked wheels alone (this host's wheel dir) without
        them. InstallStopped passes through."""
        accepted = self.files.hashes if source == "files" and self.files else None
        with tempfile.NamedTemporaryFile(
            mode="w", suffix=".txt", prefix="lock-", delete=False
        ) as f:
            f.write(requirements_text(packages, hashes=source != "fleet", accepted=accepted))
            lock_file = f.name
        os.chmod(lock_file, 0o644)  # the installer may run as the execution uid
        try:
            local = {"index": [],
                     "fleet": [fleet_cache.local_wheel_dir(self.ctx.settings)],
                     "files": [self.files.directory] if self.files else []}[source]
            call = commands.install_command(
                self.installer, self.target, requirements_file=lock_file,
                constraints_file=self.constraints, find_links=local, no_deps=True,
                local_only=source != "index")
            return run_before(call, self.deadline, self.ctx.should_stop)
        finally:
            with contextlib.suppress(OSError):
                os.unlink(lock_file)
