"""The install engine: requirements.txt in, a ready environment out.

`ensure_environment` is the one entry point; worker start-up, the pool and the
API all come through it (directly or via the worker). In order:

1. fast path: the newest environment for this hash is complete, and every
   requirement with its dependencies is confirmed satisfied in-process
   (importlib.metadata + packaging): no installer runs, milliseconds;
2. otherwise take the host's lock for the hash (the other processes wait), and
   look again: a sibling may have built it meanwhile;
3. build into a temporary directory: one batch first; if the batch fails,
   each line alone, so the good ones land and each bad one is recorded with
   why; a retry (an environment with failed lines) starts from a copy of the
   last one and installs only the failed lines;
4. rename it into place, and collect environments no process uses.

Never raises for a bad requirement or a failing installer: the outcome says.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import logging
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from filelock import Timeout as LockTimeout

from src.core.requirements import requirement_lines
from src.core.settings import Settings, get_settings
from src.services.execution.protocol import WHOLE_INSTALL, FailedPackage, InstallOutcome
from src.services.installer import commands, fleet_cache
from src.services.installer.environments import (
    IN_USE_FILE,
    RECORD_FILE,
    Environment,
    Environments,
    EnvRecord,
    hold,
)
from src.services.installer.platform import constraints_file
from src.services.installer.satisfaction import find_unsatisfied, platform_paths

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
) -> tuple[InstallOutcome, Path | None]:
    """Make sure the environment for `requirements_hash` exists on this host;
    returns the outcome and the environment's path (None when none could be made)."""
    settings = settings or get_settings()
    started = time.monotonic()
    began_at = time.time()
    envs = Environments(settings.packages_dir)
    lines = requirement_lines(content)

    ready = _usable(envs, requirements_hash, lines, began_at, settings)
    if ready is not None:
        return _skipped(ready, started, worker_id), ready.path
    lock = envs.lock(requirements_hash, timeout=settings.install_timeout * 2)
    try:
        while True:
            with lock.acquire(poll_interval=LOCK_POLL_SECONDS):
                if not _built_since(envs, requirements_hash, began_at):
                    env = _build(envs, requirements_hash, content, lines, worker_id, settings)
                    with contextlib.suppress(OSError):
                        envs.collect_garbage(requirements_hash)
                    break
            # A sibling built it while we waited. Check it outside the lock, so
            # the waiters do not file through the lock one by one.
            ready = _usable(envs, requirements_hash, lines, began_at, settings)
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


def _built_since(envs: Environments, requirements_hash: str, began_at: float) -> bool:
    latest = envs.latest(requirements_hash)
    return latest is not None and latest.record.built_at >= began_at


def _usable(
    envs: Environments, requirements_hash: str, lines: list[str], began_at: float,
    settings: Settings,
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
    if find_unsatisfied(wanted, paths):
        return None  # never trust the record alone: something is missing
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
) -> Environment:
    started = time.monotonic()
    installer = commands.choose_installer(settings.installer)
    build_dir = envs.new_build_dir(requirements_hash)
    try:
        previous = envs.latest(requirements_hash)
        to_install = lines
        if previous is not None and previous.record.failed:
            # Keep what landed last time; retry only the lines that failed.
            shutil.copytree(previous.path, build_dir, dirs_exist_ok=True,
                            ignore=shutil.ignore_patterns(RECORD_FILE, IN_USE_FILE))
            to_install = [f["package"] for f in previous.record.failed]
        logger.info("[%s] Building the environment for %s with %s (%d lines)",
                    worker_id, requirements_hash[:12], installer, len(to_install))
        failed = _install(installer, requirements_hash, build_dir, to_install, worker_id,
                          envs, settings)
        record = EnvRecord(
            requirements_hash=requirements_hash, content=content, installer=installer,
            installed=_distributions(build_dir), failed=failed,
            duration_ms=int((time.monotonic() - started) * 1000),
        )
        return envs.publish(build_dir, record)
    except BaseException:
        shutil.rmtree(build_dir, ignore_errors=True)
        raise


def _install(
    installer: commands.Installer,
    requirements_hash: str,
    target: Path,
    lines: list[str],
    worker_id: str,
    envs: Environments,
    settings: Settings,
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
                             worker_id, envs, settings)
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
) -> list[FailedPackage]:
    constraints = constraints_file(envs.root, settings.packages_dir)
    deadline = time.monotonic() + settings.install_timeout

    def batch(find_links: list[Path]) -> tuple[bool, str, int]:
        return _run(commands.install_command(
            installer, target, requirements_file=requirements_file,
            constraints_file=constraints, find_links=find_links), deadline)

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
        ok, output, elapsed_ms = _run(argv, deadline)
        if ok:
            logger.info("[%s] + %s (%d ms)", worker_id, line, elapsed_ms)
        else:
            error = _excerpt(output, ERROR_EXCERPT_CHARS)
            logger.warning("[%s] x %s failed (%d ms): %s", worker_id, line, elapsed_ms, error)
            failed.append(FailedPackage(package=line, error=error))
    return failed


def _run(argv: list[str], deadline: float) -> tuple[bool, str, int]:
    started = time.monotonic()
    remaining = deadline - started
    if remaining <= 0:
        return False, "install timed out (BIFROST_INSTALL_TIMEOUT)", 0
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=remaining)
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


def _distributions(path: Path) -> list[str]:
    pairs = {
        f"{dist.metadata['Name']}=={dist.version}"
        for dist in importlib.metadata.distributions(path=[str(path)])
        if dist.metadata["Name"]
    }
    return sorted(pairs, key=str.lower)


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
