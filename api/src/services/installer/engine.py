"""The install engine: requirements.txt in, a ready environment out.

`ensure_environment` is the one entry point; worker start-up, the pool and the
API all come through it (directly or via the worker). It first reads the
hash's lock (the exact versions the write path resolved, see
`src.core.lock_cache`); then, in order:

1. fast path: the newest environment for this hash was built from that lock
   (any, when the hash has none), is complete, every
   requirement with its dependencies is confirmed satisfied in-process
   (importlib.metadata + packaging), and each distribution that check
   relied on still has its files (a sample of its RECORD, see `integrity`):
   no installer runs, milliseconds;
2. otherwise take the host's lock for the hash (the other processes wait), and
   look again: a sibling may have built it meanwhile;
3. build into a temporary directory (see `building`): the lock's pins with no
   resolution (see `locked`), or, without a lock, the lines resolved here as
   before locks; one batch first; if the
   batch fails, each line alone, so the good ones land and each bad one is
   recorded with why; a retry (an environment with failed lines) starts from
   a copy of the last one and installs only the failed lines, unless that one
   is damaged (then everything is installed afresh);
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
import time
from collections.abc import Callable
from pathlib import Path

from filelock import AcquireReturnProxy, BaseFileLock
from filelock import Timeout as LockTimeout
from packaging.utils import canonicalize_name

from src.core import metrics_store
from src.foundation.settings import Settings, get_settings
from src.foundation.timing import ms_since
from src.services.installer import fleet_cache
from src.services.installer.building import build
from src.services.installer.context import BuildContext
from src.services.installer.environments import Environment, EnvRecord, hold
from src.services.installer.integrity import first_damage
from src.services.installer.outcome import WHOLE_INSTALL, FailedPackage, InstallOutcome
from src.services.installer.runner import STOP_POLL_SECONDS, InstallStopped, StopCheck, StopPoll
from src.services.installer.satisfaction import Unsatisfied, check

__all__ = ["InstallStopped", "ensure_environment", "install_outcome"]

# Waiters notice a finished build this quickly (filelock polls; its default is 50 ms).
LOCK_POLL_SECONDS = 0.005


def ensure_environment(
    content: str,
    requirements_hash: str,
    worker_id: str,
    settings: Settings | None = None,
    *,
    should_stop: StopCheck | None = None,
    store_lock: str | None = None,
    waiting: Callable[[str | None], None] | None = None,
) -> tuple[InstallOutcome, Path | None]:
    """Make sure the environment for `requirements_hash` exists on this host;
    returns the outcome and the environment's path (None when none could be made).

    `should_stop`, when given, is asked about every 0.2 s while the installer
    runs and while another process holds this hash's lock; once it returns
    True the install is abandoned and InstallStopped raised. `store_lock`:
    the store's lock for the hash (the pool read it), which the lock Redis
    holds must be. `waiting` is told what the build waits for (another
    host fetching the lock's files for the fleet), and None once it is done.
    """
    ctx = BuildContext.create(content, requirements_hash, worker_id,
                              settings or get_settings(), should_stop, store_lock, waiting)
    ctx.start_reading_lock()
    try:
        ready = _usable(ctx, ctx.envs.latest(requirements_hash))
    finally:
        ctx.wait_for_lock()
    if ready is not None:
        return _skipped(ctx, ready), ready.path
    try:
        env, built_here = _build_or_wait(ctx)
    except LockTimeout:
        error = "timed out waiting for another process to build the environment"
        ctx.log.warning("%s", error)
        return _failed(ctx, error), None
    if not built_here:
        return _skipped(ctx, env), env.path
    # Share the wheels with the fleet, off the start-up path: under the lock's
    # digest when there is one, so that they are this lock's files and no other.
    fleet_cache.publish_in_background(ctx.cache_key, env.path, ctx.settings)
    if not hold(env.path):
        return _failed(ctx, "environment vanished after its build"), None
    outcome = install_outcome(
        ctx.started, requirements_hash, ok=not env.record.failed,
        installed=env.record.installed, failed=env.record.failed,
    )
    if ctx.files_source is not None:
        outcome["files_from"] = ctx.files_source
    return outcome, env.path


def _build_or_wait(ctx: BuildContext) -> tuple[Environment, bool]:
    """The environment this process built under the hash's lock (True), or a
    usable one a sibling built while we waited for the lock (False, held).
    Raises LockTimeout when the lock never came."""
    lock = ctx.envs.lock(ctx.requirements_hash, timeout=ctx.settings.install_timeout * 2)
    while True:
        with _acquire(ctx, lock):
            latest = ctx.envs.latest(ctx.requirements_hash)
            if latest is None or latest.record.built_at < ctx.began_at:
                env = build(ctx, latest)
                with contextlib.suppress(OSError):
                    ctx.envs.collect_garbage(ctx.requirements_hash)
                return env, True
        # A sibling built it while we waited. Check it outside the lock, so the
        # waiters do not file through the lock one by one (and look again: a
        # newer one may have been published since we let the lock go).
        ready = _usable(ctx, ctx.envs.latest(ctx.requirements_hash))
        if ready is not None:
            return ready, False
        ctx.began_at = time.time()  # unusable after all: the next round builds it


def _acquire(ctx: BuildContext, lock: BaseFileLock) -> AcquireReturnProxy:
    """The hash's lock; while another process holds it, `should_stop` is asked
    every STOP_POLL_SECONDS. Raises LockTimeout after the lock's own timeout."""
    if ctx.should_stop is None:
        return lock.acquire(poll_interval=LOCK_POLL_SECONDS)
    stop_requested = StopPoll(ctx.should_stop)
    deadline = time.monotonic() + lock.timeout
    while True:
        try:
            wait = min(STOP_POLL_SECONDS, max(deadline - time.monotonic(), 0.0))
            return lock.acquire(timeout=wait, poll_interval=LOCK_POLL_SECONDS)
        except LockTimeout:
            if stop_requested():
                ctx.log.info("Stopped waiting for the build of %s: nobody will use it",
                             ctx.short_hash)
                raise InstallStopped(
                    f"stopped while waiting for another process to build {ctx.short_hash}"
                ) from None
            if time.monotonic() >= deadline:
                raise


def _usable(ctx: BuildContext, env: Environment | None) -> Environment | None:
    """`env` (the hash's newest environment), if it can be used as it is (it
    is then held), else None."""
    if env is None:
        return None
    failed = {f["package"] for f in env.record.failed}
    # Failed lines are retried once per start-up round, not by every worker:
    # an environment built after we began counts as this round's attempt.
    if failed and env.record.built_at < ctx.began_at:
        return None
    wanted = [line for line in ctx.lines if line not in failed]
    # Never trust the record alone: something may be missing or damaged.
    verdict = check(wanted, ctx.search_paths(env.path))
    ctx.wait_for_lock()  # read meanwhile: the environment must be of the hash's lock
    if ctx.lock_digest is not None and env.record.lock_digest != ctx.lock_digest:
        ctx.log.info("Environment %s was not built from the lock of %s (%s); building it "
                     "from the lock", env.path.name, ctx.short_hash, ctx.lock_digest[:12])
        return None
    unsatisfied = _unexplained(verdict.unsatisfied, env.record)
    if unsatisfied:
        first = unsatisfied[0]
        ctx.log.info("Environment %s is incomplete (%s: %s); building it again",
                     env.path.name, first.requirement, first.reason)
        return None
    damage = first_damage(env.path, (p for p in verdict.distributions if p.parent == env.path))
    if damage is not None:
        ctx.log.warning("Environment %s is damaged: %s; building it again",
                        env.path.name, damage.describe())
        return None
    return env if hold(env.path) else None


def _unexplained(unsatisfied: list[Unsatisfied], record: EnvRecord) -> list[Unsatisfied]:
    """What the environment lacks beyond what its build recorded as failed. A
    build from a lock records failed pins, which may be dependencies of the
    lines: a line is then unsatisfied because of one of them, as known."""
    if record.lock_digest is None or not record.failed:
        return unsatisfied
    failed = {canonicalize_name(f["package"].partition("==")[0]) for f in record.failed}
    return [u for u in unsatisfied if u.distribution not in failed]


def _skipped(ctx: BuildContext, env: Environment) -> InstallOutcome:
    outcome = install_outcome(
        ctx.started, env.record.requirements_hash, ok=not env.record.failed, skipped=True,
        installed=env.record.installed, failed=env.record.failed,
    )
    ctx.log.info("Requirements already satisfied: %d packages in %s (%d ms)",
                 len(env.record.installed), env.path.name, outcome["duration_ms"])
    metrics_store.incr(metrics_store.REUSES, redis_url=ctx.settings.redis_url)
    return outcome


def _failed(ctx: BuildContext, error: str) -> InstallOutcome:
    """The outcome of an install that made no environment at all."""
    return install_outcome(ctx.started, ctx.requirements_hash, ok=False,
                           failed=[FailedPackage(package=WHOLE_INSTALL, error=error)])


def install_outcome(
    started: float,
    requirements_hash: str | None,
    *,
    ok: bool = True,
    skipped: bool = False,
    installed: list[str] | None = None,
    failed: list[FailedPackage] | None = None,
) -> InstallOutcome:
    """An outcome whose duration runs from `started` (time.monotonic()) to now."""
    return InstallOutcome(
        ok=ok,
        skipped=skipped,
        installed=installed or [],
        failed=failed or [],
        duration_ms=ms_since(started),
        requirements_hash=requirements_hash,
    )
