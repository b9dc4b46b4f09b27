"""The install engine: requirements.txt in, a ready environment out.

`ensure_environment` is the one entry point; worker start-up, the pool and the
API all come through it (directly or via the worker). In order:

1. fast path: the newest environment for this hash is complete, every
   requirement with its dependencies is confirmed satisfied in-process
   (importlib.metadata + packaging), and each distribution that check
   relied on still has its files (a sample of its RECORD, see `integrity`):
   no installer runs, milliseconds;
2. otherwise take the host's lock for the hash (the other processes wait), and
   look again: a sibling may have built it meanwhile;
3. build into a temporary directory: one batch first; if the batch fails,
   each line alone, so the good ones land and each bad one is recorded with
   why; a retry (an environment with failed lines) starts from a copy of the
   last one and installs only the failed lines, unless that one is damaged
   (then everything is installed afresh);
4. rename it into place, and collect environments no process uses.

Metadata is read leniently (see `metadata`); a distribution whose metadata
cannot be read at all is reported in `failed` by name, the others land.

Never raises for a bad requirement or a failing installer: the outcome says.
The one exception is `InstallStopped`: the caller's `should_stop` said nobody
will use this install, so it was abandoned (installer killed, build removed,
lock released).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from filelock import AcquireReturnProxy, BaseFileLock
from filelock import Timeout as LockTimeout
from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from src.foundation.requirements import requirement_lines
from src.foundation.settings import Settings, get_settings
from src.services.installer import commands, fleet_cache
from src.services.installer.environments import (
    IN_USE_FILE,
    RECORD_FILE,
    Environment,
    Environments,
    EnvRecord,
    hold,
)
from src.services.installer.integrity import first_damage, record_samples
from src.services.installer.metadata import Found, Unreadable, scan
from src.services.installer.outcome import WHOLE_INSTALL, FailedPackage, InstallOutcome
from src.services.installer.platform import constraints_file
from src.services.installer.runner import (
    STOP_POLL_SECONDS,
    InstallStopped,
    StopCheck,
    StopPoll,
    run_installer,
)
from src.services.installer.satisfaction import check, platform_paths

__all__ = ["InstallStopped", "ensure_environment", "install_outcome"]

logger = logging.getLogger(__name__)

ERROR_EXCERPT_CHARS = 1500
# Waiters notice a finished build this quickly (filelock polls; its default is 50 ms).
LOCK_POLL_SECONDS = 0.005
# How uv and pip begin the lines that say why ("\u00d7" is pip's cross mark).
ERROR_STARTS = ("error", "\u00d7")


def ensure_environment(
    content: str,
    requirements_hash: str,
    worker_id: str,
    settings: Settings | None = None,
    *,
    should_stop: StopCheck | None = None,
) -> tuple[InstallOutcome, Path | None]:
    """Make sure the environment for `requirements_hash` exists on this host;
    returns the outcome and the environment's path (None when none could be made).

    `should_stop`, when given, is asked about every 0.2 s while the installer
    runs and while another process holds this hash's lock; once it returns
    True the install is abandoned and InstallStopped raised.
    """
    settings = settings or get_settings()
    started = time.monotonic()
    began_at = time.time()
    envs = Environments(settings.packages_dir)
    lines = requirement_lines(content)

    ready = _usable(envs, requirements_hash, lines, began_at, settings, worker_id)
    if ready is not None:
        return _skipped(ready, started, worker_id), ready.path
    lock = envs.lock(requirements_hash, timeout=settings.install_timeout * 2)
    try:
        while True:
            with _acquire(lock, should_stop, requirements_hash, worker_id):
                if not _built_since(envs, requirements_hash, began_at):
                    env = _build(envs, requirements_hash, content, lines, worker_id, settings,
                                 should_stop)
                    with contextlib.suppress(OSError):
                        envs.collect_garbage(requirements_hash)
                    break
            # A sibling built it while we waited. Check it outside the lock, so
            # the waiters do not file through the lock one by one.
            ready = _usable(envs, requirements_hash, lines, began_at, settings, worker_id)
            if ready is not None:
                return _skipped(ready, started, worker_id), ready.path
            began_at = time.time()  # unusable after all: the next round builds it
        # Share the wheels with the fleet, off the start-up path.
        fleet_cache.publish_in_background(requirements_hash, env.path, settings)
    except LockTimeout:
        error = "timed out waiting for another process to build the environment"
        logger.warning("[%s] %s", worker_id, error)
        return install_outcome(started, requirements_hash, ok=False,
                        failed=[FailedPackage(package=WHOLE_INSTALL, error=error)]), None
    if not hold(env.path):
        return install_outcome(started, requirements_hash, ok=False, failed=[FailedPackage(
            package=WHOLE_INSTALL, error="environment vanished after its build")]), None
    outcome = install_outcome(
        started, requirements_hash, ok=not env.record.failed,
        installed=env.record.installed, failed=env.record.failed,
    )
    return outcome, env.path


def _acquire(
    lock: BaseFileLock, should_stop: StopCheck | None, requirements_hash: str, worker_id: str
) -> AcquireReturnProxy:
    """The hash's lock; while another process holds it, `should_stop` is asked
    every STOP_POLL_SECONDS. Raises LockTimeout after the lock's own timeout."""
    if should_stop is None:
        return lock.acquire(poll_interval=LOCK_POLL_SECONDS)
    stop_requested = StopPoll(should_stop)
    deadline = time.monotonic() + lock.timeout
    while True:
        try:
            wait = min(STOP_POLL_SECONDS, max(deadline - time.monotonic(), 0.0))
            return lock.acquire(timeout=wait, poll_interval=LOCK_POLL_SECONDS)
        except LockTimeout:
            if stop_requested():
                logger.info("[%s] Stopped waiting for the build of %s: nobody will use it",
                            worker_id, requirements_hash[:12])
                raise InstallStopped(
                    f"stopped while waiting for another process to build {requirements_hash[:12]}"
                ) from None
            if time.monotonic() >= deadline:
                raise


def _built_since(envs: Environments, requirements_hash: str, began_at: float) -> bool:
    latest = envs.latest(requirements_hash)
    return latest is not None and latest.record.built_at >= began_at


def _usable(
    envs: Environments, requirements_hash: str, lines: list[str], began_at: float,
    settings: Settings, worker_id: str,
) -> Environment | None:
    """The newest environment, if it can be used as it is (and is now held)."""
    env = envs.latest(requirements_hash)
    if env is None:
        return None
    failed = {f["package"] for f in env.record.failed}
    # Failed lines are retried once per start-up round, not by every worker:
    # an environment built after we began counts as this round's attempt.
    if failed and env.record.built_at < began_at:
        return None
    wanted = [line for line in lines if line not in failed]
    paths = [str(env.path), *platform_paths(exclude=[settings.packages_dir])]
    # Never trust the record alone: something may be missing or damaged.
    verdict = check(wanted, paths)
    if verdict.unsatisfied:
        first = verdict.unsatisfied[0]
        logger.info("[%s] Environment %s is incomplete (%s: %s); building it again",
                    worker_id, env.path.name, first.requirement, first.reason)
        return None
    damage = first_damage(env.path, (p for p in verdict.distributions if p.parent == env.path))
    if damage is not None:
        logger.warning("[%s] Environment %s is damaged: %s; building it again",
                       worker_id, env.path.name, damage.describe())
        return None
    return env if hold(env.path) else None


def _skipped(env: Environment, started: float, worker_id: str) -> InstallOutcome:
    outcome = install_outcome(
        started, env.record.requirements_hash, ok=not env.record.failed, skipped=True,
        installed=env.record.installed, failed=env.record.failed,
    )
    logger.info(
        "[%s] Requirements already satisfied: %d packages in %s (%d ms)",
        worker_id, len(env.record.installed), env.path.name, outcome["duration_ms"],
    )
    return outcome


def _build(
    envs: Environments,
    requirements_hash: str,
    content: str,
    lines: list[str],
    worker_id: str,
    settings: Settings,
    should_stop: StopCheck | None = None,
) -> Environment:
    started = time.monotonic()
    installer = commands.choose_installer(settings.installer)
    build_dir = envs.new_build_dir(requirements_hash)
    try:
        previous = envs.latest(requirements_hash)
        to_install = lines
        if previous is not None and previous.record.failed and _sound(previous, worker_id):
            # Keep what landed last time; retry only the lines that failed.
            shutil.copytree(previous.path, build_dir, dirs_exist_ok=True,
                            ignore=shutil.ignore_patterns(RECORD_FILE, IN_USE_FILE))
            to_install = [f["package"] for f in previous.record.failed]
        logger.info("[%s] Building the environment for %s with %s (%d lines)",
                    worker_id, requirements_hash[:12], installer, len(to_install))
        failed = _install(installer, requirements_hash, build_dir, to_install, worker_id,
                          envs, settings, should_stop)
        installed, unreadable = _distributions(build_dir)
        failed += _unreadable_failures(unreadable, lines, failed, build_dir, settings, worker_id)
        record_samples(build_dir)  # what the fast path checks for files, read once here
        record = EnvRecord(
            requirements_hash=requirements_hash, content=content, installer=installer,
            installed=installed, failed=failed,
            duration_ms=int((time.monotonic() - started) * 1000),
        )
        return envs.publish(build_dir, record)
    except InstallStopped as stopped:
        shutil.rmtree(build_dir, ignore_errors=True)
        message = (f"install of {requirements_hash[:12]} by {worker_id} stopped, nobody will "
                   f"use it: {stopped}; its build was removed")
        logger.info("[%s] %s", worker_id, message)
        raise InstallStopped(message) from None
    except BaseException:
        shutil.rmtree(build_dir, ignore_errors=True)
        raise


def _sound(previous: Environment, worker_id: str) -> bool:
    """Whether a retry may start from a copy of `previous`: a distribution in it
    whose metadata cannot be read, or whose files are gone, would be copied
    too, and the installer takes it as installed (uv even refuses a target
    holding unreadable metadata); then everything is installed afresh."""
    unreadable = [found for found in scan([previous.path]) if isinstance(found, Unreadable)]
    if unreadable:
        logger.warning("[%s] Not reusing %s: %s", worker_id, previous.path.name,
                       unreadable[0].describe())
        return False
    damage = first_damage(previous.path, previous.path.glob("*.dist-info"))
    if damage is not None:
        logger.warning("[%s] Not reusing %s: %s", worker_id, previous.path.name,
                       damage.describe())
        return False
    return True


def _install(
    installer: commands.Installer,
    requirements_hash: str,
    target: Path,
    lines: list[str],
    worker_id: str,
    envs: Environments,
    settings: Settings,
    should_stop: StopCheck | None = None,
) -> list[FailedPackage]:
    """One batch; if it fails, line by line. Returns the lines that failed."""
    if not lines:
        return []
    # The one temporary requirements file of this install (the seed's contract).
    with tempfile.NamedTemporaryFile(
        mode="w", suffix=".txt", prefix="requirements-", delete=False
    ) as f:
        f.write("\n".join(lines) + "\n")
        requirements_file = f.name
    try:
        return _install_from(installer, requirements_hash, target, requirements_file, lines,
                             worker_id, envs, settings, should_stop)
    finally:
        with contextlib.suppress(OSError):
            os.unlink(requirements_file)


def _install_from(
    installer: commands.Installer,
    requirements_hash: str,
    target: Path,
    requirements_file: str,
    lines: list[str],
    worker_id: str,
    envs: Environments,
    settings: Settings,
    should_stop: StopCheck | None = None,
) -> list[FailedPackage]:
    constraints = constraints_file(envs.root, settings.packages_dir)
    deadline = time.monotonic() + settings.install_timeout

    def batch(find_links: list[Path]) -> tuple[bool, str, int]:
        return _run(commands.install_command(
            installer, target, requirements_file=requirements_file,
            constraints_file=constraints, find_links=find_links), deadline, should_stop)

    # Wheels this host built or fetched before: no index needed for those.
    local_wheels = fleet_cache.local_wheel_names(settings)
    find_links = [fleet_cache.local_wheel_dir(settings)] if local_wheels else []
    ok, output, elapsed_ms = batch(find_links)
    if not ok and fleet_cache.fetch(requirements_hash, settings) is not None and \
            fleet_cache.local_wheel_names(settings) != local_wheels:
        # Only now ask the fleet (the store: slower, and often not needed):
        # another host built this hash, so its wheels may need no index at all.
        find_links = [fleet_cache.local_wheel_dir(settings)]
        ok, output, elapsed_ms = batch(find_links)
    if ok:
        landed = commands.installed_lines(installer, output)
        for pair in landed:
            logger.info("[%s] + %s (batch of %d, %d ms)", worker_id, pair, len(landed), elapsed_ms)
        return []
    logger.warning("[%s] %s install failed; installing line by line: %s",
                   worker_id, installer, _excerpt(output, 300))
    failed: list[FailedPackage] = []
    for line in lines:
        argv = commands.install_command(installer, target, requirement=line,
                                        constraints_file=constraints, find_links=find_links)
        ok, output, elapsed_ms = _run(argv, deadline, should_stop)
        if ok:
            logger.info("[%s] + %s (%d ms)", worker_id, line, elapsed_ms)
        else:
            error = _excerpt(output, ERROR_EXCERPT_CHARS)
            logger.warning("[%s] x %s failed (%d ms): %s", worker_id, line, elapsed_ms, error)
            failed.append(FailedPackage(package=line, error=error))
    return failed


def _run(
    argv: list[str], deadline: float, should_stop: StopCheck | None = None
) -> tuple[bool, str, int]:
    """Run the installer (see `runner`); InstallStopped passes through."""
    started = time.monotonic()
    remaining = deadline - started
    if remaining <= 0:
        return False, "install timed out (BIFROST_INSTALL_TIMEOUT)", 0
    try:
        done = run_installer(argv, remaining, should_stop)
    except subprocess.TimeoutExpired:
        return False, f"install timed out after {remaining:.0f} s", int(remaining * 1000)
    except OSError as exc:
        return False, f"could not run the installer: {exc}", 0
    output = f"{done.stdout or ''}\n{done.stderr or ''}".strip()
    return done.returncode == 0, output, int((time.monotonic() - started) * 1000)


def _excerpt(output: str, limit: int) -> str:
    """Where the installer says why: from its first error line, tail kept."""
    lines = [line for line in output.splitlines() if line.strip()]
    first_error = next(
        (i for i, line in enumerate(lines) if line.lstrip().lower().startswith(ERROR_STARTS)),
        0,
    )
    text = "\n".join(lines[first_error:])
    return text if len(text) <= limit else "..." + text[-limit:]


def _distributions(path: Path) -> tuple[list[str], list[Unreadable]]:
    """`name==version` of each distribution in `path`, and those whose metadata
    cannot be read (listed apart, so that one of them costs only itself)."""
    pairs: set[str] = set()
    unreadable: list[Unreadable] = []
    for found in scan([path]):
        if isinstance(found, Found):
            pairs.add(f"{found.name}=={found.version}")
        else:
            unreadable.append(found)
    return sorted(pairs, key=str.lower), unreadable


def _unreadable_failures(
    unreadable: list[Unreadable],
    lines: list[str],
    failed: list[FailedPackage],
    build_dir: Path,
    settings: Settings,
    worker_id: str,
) -> list[FailedPackage]:
    """A failure for each distribution whose metadata cannot be read, under the
    requirement line that brought it (else its own name); lines that failed
    already are not reported twice."""
    if not unreadable:
        return []
    already = {f["package"] for f in failed}
    brought_by = _lines_by_distribution(
        [line for line in lines if line not in already], build_dir, settings)
    extra: list[FailedPackage] = []
    for dist in unreadable:
        package = brought_by.get(canonicalize_name(dist.name), dist.name)
        logger.warning("[%s] x %s: %s", worker_id, package, dist.describe())
        if package not in already:
            already.add(package)
            extra.append(FailedPackage(package=package, error=dist.describe()))
    return extra


def _lines_by_distribution(lines: list[str], build_dir: Path, settings: Settings) -> dict[str, str]:
    """canonical distribution name -> the first line that needs it: the line
    naming it, else a line whose dependencies stop at it."""
    by_name: dict[str, str] = {}
    for line in lines:
        with contextlib.suppress(InvalidRequirement):
            by_name.setdefault(canonicalize_name(Requirement(line).name), line)
    paths = [str(build_dir), *platform_paths(exclude=[settings.packages_dir])]
    for unsatisfied in check(lines, paths).unsatisfied:
        if unsatisfied.distribution is not None:
            by_name.setdefault(unsatisfied.distribution, unsatisfied.requirement)
    return by_name


def install_outcome(
    started: float,
    requirements_hash: str | None,
    *,
    ok: bool = True,
    skipped: bool = False,
    installed: list[str] | None = None,
    failed: list[FailedPackage] | None = None,
) -> InstallOutcome:
    return InstallOutcome(
        ok=ok,
        skipped=skipped,
        installed=installed or [],
        failed=failed or [],
        duration_ms=int((time.monotonic() - started) * 1000),
        requirements_hash=requirements_hash,
    )
