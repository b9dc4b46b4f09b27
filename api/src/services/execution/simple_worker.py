"""Worker process: install the requirements, then run work items.

Start-up order, as every worker process runs it:

1. logging;
2. the packages dir (`BIFROST_PACKAGES_DIR`) on `sys.path`, after the
   platform's own site-packages so the platform's versions always win;
3. `_install_requirements_from_cache_sync(worker_id)`: packages added at
   runtime are installed again, so they survive restarts of the process, the
   container and the whole stack;
4. `install_virtual_import_hook()`: workspace modules import from the cache;
5. the loop: take an item from `work_queue`, run it in a process of its own
   (forked by this worker's execution template, `template.py`, a small
   interpreter with this worker's `sys.path`; nothing an execution does
   reaches the next), put the result's bytes on `result_queue`; `None` ends
   it; SIGTERM lets the item in hand finish; SIGUSR1 cancels it.

This module is imported by every worker process, so it keeps to the standard
library, redis and packaging: no web stack, no ORM.
"""

from __future__ import annotations

import importlib
import logging
import os
import queue
import subprocess  # noqa: F401  # a patch point of the start-up tests (see below)
import sys
import tempfile  # noqa: F401
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

# The start-up tests in tests/unit/execution/test_simple_worker.py (their
# first section is fixed by the worker start-up spec) patch
# `simple_worker.redis.from_url`, `.subprocess.run`, `.time.sleep` and
# `.tempfile.NamedTemporaryFile`: the same module objects the requirements
# cache and the install engine call through.
import redis

from src.core import metrics_store
from src.core.requirements_cache import CachedRequirements, cached_hash, get_requirements_sync
from src.foundation.hardening import drop_secrets_from_environment
from src.foundation.hashing import sha256_hex
from src.foundation.redis_client import get_redis
from src.foundation.requirements import requirement_lines
from src.foundation.settings import get_settings
from src.services.execution.limits import timeout_of
from src.services.execution.protocol import WorkerInstalling, WorkerReady
from src.services.execution.store_truth import StoreTruth, read_store_truth
from src.services.execution.template_handle import worker_template
from src.services.execution.virtual_import import prefetch_workspace
from src.services.execution.worker_signals import Flag, PoolWatch, on_cancel, on_stop, restore
from src.services.installer.engine import InstallStopped, ensure_environment, install_outcome
from src.services.installer.outcome import WHOLE_INSTALL, FailedPackage, InstallOutcome

logger = logging.getLogger(__name__)

# How often an idle worker wakes to see whether SIGTERM asked it to stop.
POLL_SECONDS = 0.5


class Inbox(Protocol):
    def get(self, block: bool = True, timeout: float | None = None) -> Any: ...


class Outbox(Protocol):
    def put(self, obj: Any, block: bool = True, timeout: float | None = None) -> None: ...


def _install_requirements_from_cache_sync(worker_id: str) -> InstallOutcome:
    """
    Install packages from cached requirements.txt.

    Called at worker startup to ensure packages persist across restarts.
    Uses synchronous Redis client since we're not in async context.

    Retries: Redis is tried 3 times, 1 s apart, on connection errors (it may
    still be starting next to us). After that the worker logs "Redis
    unavailable after 3 attempts" and reads requirements.txt from the store
    directly, when there is one.

    The install engine does the work: the environment for this requirements
    hash is reused when it is complete (checked in-process, milliseconds),
    else built once per host under a lock; it is then put on `sys.path`.

    Graceful degradation: a worker without its packages can still run every
    workflow that does not need them, while a worker that crashed runs none,
    so every failure here (Redis down, bad JSON, installer error or timeout)
    is logged with the worker id and the worker goes on starting.

    This function never raises - failures are logged and worker continues.
    The returned outcome says what happened, for the pool to report.
    """
    started = time.monotonic()
    try:
        cached = _as_the_store_holds(worker_id, get_requirements_sync(worker_id))
        if cached is None:
            logger.info("[%s] No cached requirements.txt found", worker_id)
            # Nothing anywhere is an empty requirements.txt: the worker is current.
            return install_outcome(started, sha256_hex(""), skipped=True)
        if not cached["content"].strip():
            logger.info("[%s] Cached requirements.txt is empty", worker_id)
            return install_outcome(started, cached["hash"], skipped=True)
        return _install(worker_id, cached["content"], cached["hash"], started)
    except Exception as exc:
        logger.warning("[%s] Failed to install requirements: %s", worker_id, exc)
        failed = FailedPackage(package=WHOLE_INSTALL, error=str(exc)[-2000:])
        return install_outcome(started, None, ok=False, failed=[failed])


def _install(worker_id: str, content: str, requirements_hash: str,
             started: float) -> InstallOutcome:
    """Have the install engine make this hash's environment, then put it on `sys.path`."""
    logger.info("[%s] Installing packages from cached requirements.txt", worker_id)
    try:
        store_lock = (_STORE_TRUTH["lock"] if _STORE_TRUTH is not None
                      and _STORE_TRUTH["hash"] == requirements_hash else None)
        outcome, environment = ensure_environment(
            content, requirements_hash, worker_id, should_stop=_Superseded(requirements_hash),
            store_lock=store_lock, waiting=_WAITING)
    except InstallStopped as stopped:
        logger.warning("[%s] Install stopped: %s", worker_id, stopped)
        failed = FailedPackage(package=WHOLE_INSTALL, error=f"install stopped: {stopped}")
        return install_outcome(started, requirements_hash, ok=False, failed=[failed])
    if environment is not None and str(environment) not in sys.path:
        # After the platform's site-packages: user packages never shadow it.
        sys.path.append(str(environment))
        importlib.invalidate_caches()
    _log_outcome(worker_id, content, outcome)
    return outcome


# The running worker's stop flag (SIGTERM: it is retiring), for the install to see.
_STOP: Flag | None = None
# How often a running install asks Redis whether its hash is still the current one.
SUPERSEDED_CHECK_SECONDS = 1.0


class _Superseded:
    """Whether nobody will use the install in progress: the worker was told to
    stop, or Redis names a newer requirements hash (then every pool recycles,
    and this worker with it). The hash Redis named when the install began is
    not newer: when it is not the one installed, it is one the worker refused
    (not the store's), and the store's is installed instead."""

    def __init__(self, requirements_hash: str) -> None:
        self.requirements_hash = requirements_hash
        self._checked = time.monotonic()
        try:
            self._at_start = cached_hash(get_redis())
        except redis.RedisError:
            self._at_start = None

    def __call__(self) -> bool:
        if _STOP is not None and _STOP.requested:
            return True
        now = time.monotonic()
        if now - self._checked < SUPERSEDED_CHECK_SECONDS:
            return False
        self._checked = now
        try:
            current = cached_hash(get_redis())
        except redis.RedisError:
            return False  # Redis away: keep installing what we have
        return current not in (None, self.requirements_hash, self._at_start)


def _log_outcome(worker_id: str, content: str, outcome: InstallOutcome) -> None:
    lines = requirement_lines(content)
    failed = [f["package"] for f in outcome["failed"]]
    landed = len(lines) - len([line for line in lines if line in failed])
    logger.info("[%s] Installed %d packages from requirements.txt", worker_id, landed)
    if failed:
        logger.warning(
            "[%s] %d of %d requirements failed to install: %s",
            worker_id, len(failed), len(lines), ", ".join(failed),
        )


def _add_packages_dir_to_path() -> Path:
    """Append the runtime packages dir to `sys.path` (after the platform's
    site-packages: a user package must never shadow what the platform runs on)."""
    packages_dir = get_settings().packages_dir
    packages_dir.mkdir(parents=True, exist_ok=True)
    if str(packages_dir) not in sys.path:
        sys.path.append(str(packages_dir))
    return packages_dir


def _scrub_environment() -> None:
    """Secrets user code has no business reading from os.environ (nor passing
    on to the processes it starts); start-up reads them from the settings."""
    drop_secrets_from_environment()


def _forget_store() -> None:
    """After start-up the worker needs the store no more: drop its URL (the
    settings read again from an environment already without it) and its
    connections."""
    get_settings.cache_clear()
    database = sys.modules.get("src.store.database")
    if database is not None:
        database.dispose_engines()


def _configure_logging(worker_id: str) -> None:
    logging.basicConfig(
        level=logging.INFO,
        format=f"%(asctime)s %(levelname)s worker {worker_id} %(name)s: %(message)s",
        stream=sys.stderr,
    )


def run_worker_process(work_queue: Inbox, result_queue: Outbox, worker_id: str) -> None:
    """Entry point of a worker process (see the module docstring for the order)."""
    _configure_logging(worker_id)
    _scrub_environment()
    global _STOP
    stop = _STOP = Flag()
    previous = on_stop(stop)
    try:
        _add_packages_dir_to_path()

        # Install packages from cached requirements.txt.
        # This ensures packages persist across container restarts.
        logger.info("[%s] Startup: installing packages from cached requirements.txt", worker_id)
        result_queue.put(WorkerInstalling(type="installing", worker_id=worker_id, pid=os.getpid()))
        global _WAITING
        _WAITING = _tell_the_pool_what_it_waits_for(result_queue, worker_id)
        install = _install_requirements_from_cache_sync(worker_id)

        # Install virtual import hook FIRST (before any workspace imports)
        from src.services.execution.virtual_import import install_virtual_import_hook

        logger.info("[%s] Startup: installing the virtual import hook", worker_id)
        install_virtual_import_hook()

        _forget_store()
        result_queue.put(
            WorkerReady(type="ready", worker_id=worker_id, pid=os.getpid(), install=install)
        )
        logger.info("[%s] Startup: ready for work", worker_id)
        _work_loop(work_queue, result_queue, worker_id, stop, install)
    finally:
        restore(previous)
    logger.info("[%s] Stopped", worker_id)


def _work_loop(
    work_queue: Inbox,
    result_queue: Outbox,
    worker_id: str,
    stop: Flag,
    install: InstallOutcome,
) -> None:
    template, limits = worker_template(worker_id, install)
    cancel = Flag()
    previous = on_cancel(cancel)
    pool = PoolWatch(_POOL_PID)
    try:
        template.start()
        while not stop.requested:
            try:
                item = work_queue.get(timeout=POLL_SECONDS)
            except queue.Empty:
                if pool.pool_gone():  # the pool was killed: nobody to answer
                    logger.warning("[%s] Pool process gone; exiting", worker_id)
                    return
                continue
            if item is None:
                return
            cancel.requested = False
            workspace = prefetch_workspace(str(item.get("module", "")))
            result_queue.put(template.run(item, workspace, timeout_of(item, limits.timeout),
                                          lambda: cancel.requested))
    finally:
        template.close()
        restore(previous)


def worker_main(work_queue: Inbox, result_queue: Outbox, worker_id: str,
                store_url: str | None = None, pool_pid: int | None = None,
                store_truth: StoreTruth | None = None,
                seal_key: bytes | None = None) -> None:
    """What a pool starts in each worker process: `run_worker_process`, in a
    process whose /proc entries other processes cannot read. The store's URL
    arrives as an argument, not in the environment, so it is never in the
    environment block the execution processes inherit; so does what the
    store holds (`store_truth.py`), which what Redis holds must match, and
    the key cached workspace files are sealed with (`module_seal.py`)."""
    from src.core.module_seal import use_seal_key
    from src.foundation.hardening import harden_process
    from src.services.execution.virtual_import import read_workspace_from_cache_only

    global _POOL_PID, _STORE_TRUTH
    _POOL_PID, _STORE_TRUTH = pool_pid, store_truth
    use_seal_key(seal_key)
    harden_process()
    if store_url:
        os.environ["DATABASE_URL"] = store_url
        get_settings.cache_clear()
    read_workspace_from_cache_only()
    run_worker_process(work_queue, result_queue, worker_id)


def _tell_the_pool_what_it_waits_for(result_queue: Outbox, worker_id: str
                                     ) -> Callable[[str | None], None]:
    def waiting(what: str | None) -> None:
        result_queue.put(WorkerInstalling(type="installing", worker_id=worker_id,
                                          pid=os.getpid(), waiting_for=what))

    return waiting


# What the start-up install tells when it waits (the pool shows it); None: nobody.
_WAITING: Callable[[str | None], None] | None = None
# The pool this worker answers to; None when run without one.
_POOL_PID: int | None = None
# What the store held when the pool started this worker; None: not known.
_STORE_TRUTH: StoreTruth | None = None


def _as_the_store_holds(worker_id: str, cached: CachedRequirements | None
                        ) -> CachedRequirements | None:
    """`cached` (from Redis) when it is what the store holds, else the store's.
    On a difference the store is read again first: a write may have landed
    since the pool read it, and then Redis is right."""
    global _STORE_TRUTH
    truth = _STORE_TRUTH
    if truth is None or cached is None or cached["hash"] == truth["hash"]:
        return cached
    fresh = read_store_truth()
    if fresh is not None:
        _STORE_TRUTH = truth = fresh
        if cached["hash"] == truth["hash"]:
            return cached
    logger.warning("[%s] Refused the requirements Redis holds (%s): the store's are %s, "
                   "installing those", worker_id, cached["hash"][:12], truth["hash"][:12])
    metrics_store.cache_refusal("requirements")
    return CachedRequirements(content=truth["content"], hash=truth["hash"])
