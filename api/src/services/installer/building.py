"""Building one environment: into a temporary directory, then published.

When the hash has a lock, its exact pins are installed with no resolution
(see `locked`); otherwise (requirements written before locks, or a lock that
cannot be read) the requirement lines are resolved here, as they always were.
One batch first; if the batch fails, each line (or pin) alone, so the good
ones land and each bad one is recorded with why. A retry (the newest
environment has failed lines, and was built from the same lock or none)
starts from a copy of it and installs only what failed, unless that one is
damaged: then everything is installed afresh. Called with the hash's
(file) lock held, see `engine`.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from packaging.utils import canonicalize_name

from src.core import metrics_store
from src.foundation.timing import ms_since
from src.services.installer import commands, fleet_cache
from src.services.installer.context import BuildContext
from src.services.installer.environments import IN_USE_FILE, RECORD_FILE, Environment, EnvRecord
from src.services.installer.failures import ERROR_EXCERPT_CHARS, excerpt, unreadable_failures
from src.services.installer.integrity import first_damage, record_samples
from src.services.installer.locked import install_locked
from src.services.installer.metadata import list_distributions
from src.services.installer.outcome import FailedPackage
from src.services.installer.platform import constraints_file
from src.services.installer.runner import InstallStopped, RunResult, run_before


def build(ctx: BuildContext, previous: Environment | None) -> Environment:
    """Build the environment and publish it. `previous` is the hash's newest
    environment, read with its lock held. Raises InstallStopped (the build
    removed) when `ctx.should_stop` says nobody will use it."""
    started = time.monotonic()
    installer = commands.choose_installer(ctx.settings.installer)
    build_dir = ctx.envs.new_build_dir(ctx.requirements_hash)
    try:
        failed = _install_into(ctx, installer, build_dir, _retry_only(ctx, previous, build_dir))
        listing = list_distributions([build_dir])
        failed += unreadable_failures(ctx, build_dir, listing.unreadable, failed)
        record_samples(build_dir)  # what the fast path checks for files, read once here
        record = EnvRecord(
            requirements_hash=ctx.requirements_hash, content=ctx.content, installer=installer,
            installed=listing.pins(), failed=failed,
            duration_ms=ms_since(started), lock_digest=ctx.lock_digest,
        )
        published = ctx.envs.publish(build_dir, record, previous)
        _count_build(ctx, record)
        return published
    except InstallStopped as stopped:
        shutil.rmtree(build_dir, ignore_errors=True)
        message = (f"install of {ctx.short_hash} by {ctx.log.worker_id} stopped, nobody will "
                   f"use it: {stopped}; its build was removed")
        ctx.log.info("%s", message)
        raise InstallStopped(message) from None
    except BaseException:
        shutil.rmtree(build_dir, ignore_errors=True)
        raise


# The project name a failed line or pin starts with (`Foo_Bar[x]>=1` -> `Foo_Bar`).
_PROJECT_NAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?")


def _count_build(ctx: BuildContext, record: EnvRecord) -> None:
    """The build in the fleet's metrics (`src.core.metrics_store`): its outcome,
    its duration and each package that failed, by name (never the whole pin,
    so the labels stay few). One round trip; never raises."""
    counted = metrics_store.Increments()
    counted.count(metrics_store.BUILDS, {"outcome": "failed" if record.failed else "ok"})
    counted.observe(metrics_store.BUILD_DURATION, None, record.duration_ms / 1000)
    for failure in record.failed:
        found = _PROJECT_NAME.match(failure["package"].strip())
        package = canonicalize_name(found.group()) if found else metrics_store.OVERFLOW
        counted.count(metrics_store.PACKAGE_FAILURES, {"package": package},
                      max_series=metrics_store.PACKAGE_LABELS_MAX)
    metrics_store.record(counted, redis_url=ctx.settings.redis_url)


def _install_into(
    ctx: BuildContext, installer: commands.Installer, build_dir: Path, retry: list[str] | None
) -> list[FailedPackage]:
    """Install the lock's pins when the hash has a lock, else resolve its lines;
    all of them, or only `retry` (what failed last time, whose build was
    copied into `build_dir`). Returns what failed."""
    if ctx.lock is None or ctx.lock_digest is None:
        ctx.log_resolving()
        lines = ctx.lines if retry is None else retry
        ctx.log.info("Building the environment for %s with %s (%d lines)",
                     ctx.short_hash, installer, len(lines))
        return install(ctx, installer, build_dir, lines)
    packages = [p for p in ctx.lock.packages if retry is None or p.pin() in retry]
    ctx.log.info("Building the environment for %s from its lock %s with %s (%d packages)",
                 ctx.short_hash, ctx.lock_digest[:12], installer, len(packages))
    return install_locked(ctx, installer, build_dir, packages)


def _retry_only(
    ctx: BuildContext, previous: Environment | None, build_dir: Path
) -> list[str] | None:
    """What failed in `previous`, copied into `build_dir` to retry only that,
    when it has failures and can be reused; None: install everything afresh.
    A copy is reused only when it was built from the same lock (or, like this
    build, from none), and, for a lock, when what failed are its pins."""
    if previous is None or not previous.record.failed:
        return None
    failed = [f["package"] for f in previous.record.failed]
    if previous.record.lock_digest != ctx.lock_digest:
        return None
    if ctx.lock is not None and not set(failed) <= set(ctx.lock.pins()):
        return None
    if not _sound(ctx, previous):
        return None
    # Keep what landed last time; retry only what failed.
    shutil.copytree(previous.path, build_dir, dirs_exist_ok=True,
                    ignore=shutil.ignore_patterns(RECORD_FILE, IN_USE_FILE))
    return failed


def _sound(ctx: BuildContext, previous: Environment) -> bool:
    """Whether a retry may start from a copy of `previous`: a distribution in it
    whose metadata cannot be read, or whose files are gone, would be copied
    too, and the installer takes it as installed (uv even refuses a target
    holding unreadable metadata); then everything is installed afresh."""
    unreadable = list_distributions([previous.path]).unreadable
    if unreadable:
        ctx.log.warning("Not reusing %s: %s", previous.path.name, unreadable[0].describe())
        return False
    damage = first_damage(previous.path, previous.path.glob("*.dist-info"))
    if damage is not None:
        ctx.log.warning("Not reusing %s: %s", previous.path.name, damage.describe())
        return False
    return True


def install(
    ctx: BuildContext, installer: commands.Installer, target: Path, lines: list[str]
) -> list[FailedPackage]:
    """One batch; if it fails, line by line. Returns the lines that failed."""
    if not lines:
        return []
    # The one temporary requirements file of this install (the worker's tests read it).
    with tempfile.NamedTemporaryFile(
        mode="w", suffix=".txt", prefix="requirements-", delete=False
    ) as f:
        f.write("\n".join(lines) + "\n")
        requirements_file = f.name
    os.chmod(requirements_file, 0o644)  # the installer may run as the execution uid
    try:
        runs = InstallerRuns(
            ctx, installer, target,
            constraints=constraints_file(ctx.envs.root, ctx.settings.packages_dir),
            deadline=time.monotonic() + ctx.settings.install_timeout,
        )
        return runs.batch_then_lines(requirements_file, lines)
    finally:
        with contextlib.suppress(OSError):
            os.unlink(requirements_file)


@dataclass(frozen=True)
class InstallerRuns:
    """The installer runs of one build into `target`, all before `deadline`."""

    ctx: BuildContext
    installer: commands.Installer
    target: Path
    constraints: Path
    deadline: float

    def batch_then_lines(self, requirements_file: str, lines: list[str]) -> list[FailedPackage]:
        """All of `requirements_file` in one run (with the fleet's wheels, once
        more, if that fails); if it still fails, each of `lines` alone.
        Returns the lines that failed."""
        settings = self.ctx.settings
        # Wheels this host built or fetched before: no index needed for those.
        local_wheels = fleet_cache.local_wheel_names(settings)
        find_links = [fleet_cache.local_wheel_dir(settings)] if local_wheels else []
        ok, output, elapsed_ms = self.run(find_links, requirements_file=requirements_file)
        if not ok and fleet_cache.fetch(self.ctx.cache_key, settings) is not None and \
                fleet_cache.local_wheel_names(settings) != local_wheels:
            # Only now ask the fleet (the store: slower, and often not needed):
            # another host built this hash, so its wheels may need no index at all.
            find_links = [fleet_cache.local_wheel_dir(settings)]
            ok, output, elapsed_ms = self.run(find_links, requirements_file=requirements_file)
        if ok:
            landed = commands.installed_lines(self.installer, output)
            for pair in landed:
                self.ctx.log.info("+ %s (batch of %d, %d ms)", pair, len(landed), elapsed_ms)
            return []
        self.ctx.log.warning("%s install failed; installing line by line: %s",
                             self.installer, excerpt(output, 300))
        return self.line_by_line(lines, find_links)

    def line_by_line(self, lines: list[str], find_links: list[Path]) -> list[FailedPackage]:
        """Each line in a run of its own: the good ones land, each bad one fails with why."""
        failed: list[FailedPackage] = []
        for line in lines:
            ok, output, elapsed_ms = self.run(find_links, requirement=line)
            if ok:
                self.ctx.log.info("+ %s (%d ms)", line, elapsed_ms)
            else:
                error = excerpt(output, ERROR_EXCERPT_CHARS)
                self.ctx.log.warning("x %s failed (%d ms): %s", line, elapsed_ms, error)
                failed.append(FailedPackage(package=line, error=error))
        return failed

    def run(
        self,
        find_links: list[Path],
        *,
        requirements_file: str | None = None,
        requirement: str | None = None,
    ) -> RunResult:
        """Run the installer once (see `runner`); InstallStopped passes through."""
        call = commands.install_command(
            self.installer, self.target, requirements_file=requirements_file,
            requirement=requirement, constraints_file=self.constraints, find_links=find_links)
        return run_before(call, self.deadline, self.ctx.should_stop)
