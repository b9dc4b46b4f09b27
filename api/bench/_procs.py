"""What the benchmark's child processes run (started with multiprocessing "spawn").

Only the standard library at module level: every spawned child imports this
module (and `bench.startup` as `__mp_main__`) before its target runs, and the
memory figure must show the worker, not the benchmark.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Any

# Inherited settings that would change what the installers do; the benchmark's
# own values replace them.
_SCRUBBED_PREFIXES = ("BIFROST_", "PIP_", "UV_")
_SCRUBBED = {"DATABASE_URL"}


def apply_env(env: dict[str, str]) -> None:
    """Give this process exactly the benchmark's settings (no store: DATABASE_URL unset)."""
    for key in list(os.environ):
        if key in _SCRUBBED or key.startswith(_SCRUBBED_PREFIXES):
            del os.environ[key]
    os.environ.update(env)


class _WarningCounter(logging.Handler):
    """Keeps the WARNING+ messages a call logs (the baseline reports pip failures only so)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage()[:300])


def _log_to(path: str) -> _WarningCounter:
    logging.basicConfig(
        filename=path, level=logging.INFO,
        format="%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s",
    )
    counter = _WarningCounter()
    logging.getLogger().addHandler(counter)
    return counter


def _install_function(function: str) -> Callable[[str], Any]:
    """Import everything the function needs before the barrier (not timed)."""
    if function == "baseline":
        # The spec's function imported these at module level too (its tests patch
        # `simple_worker.redis`); the function's own imports then cost nothing.
        import json  # noqa: F401
        import subprocess  # noqa: F401
        import tempfile  # noqa: F401

        import redis  # noqa: F401

        from bench._baseline import _install_requirements_from_cache_sync
    else:
        from src.foundation.settings import get_settings
        from src.services.execution.simple_worker import _install_requirements_from_cache_sync

        # A worker reads its settings before this call (to put the packages dir
        # on sys.path), as the spec's function reads os.environ: start-up, not install work.
        get_settings()
    return _install_requirements_from_cache_sync


def timed_install(
    function: str,
    worker_id: str,
    env: dict[str, str],
    log_path: str,
    barrier: Any,
    results: Any,
    instrument: bool,
) -> None:
    """Import, wait for every sibling, then time one call of the install function."""
    apply_env(env)
    warnings = _log_to(log_path)
    install = _install_function(function)
    steps = StepTimer.instrument_engine() if instrument else None
    barrier.wait(timeout=300)
    started = time.perf_counter()
    outcome = install(worker_id)
    seconds = time.perf_counter() - started
    results.put({
        "worker_id": worker_id,
        "started": started,  # perf_counter is CLOCK_MONOTONIC: comparable across processes
        "seconds": seconds,
        "outcome": outcome,
        "warnings": warnings.messages,
        "steps": steps.report() if steps else None,
    })


def real_worker(
    env: dict[str, str], log_path: str, work_queue: Any, result_queue: Any, worker_id: str
) -> None:
    """A real worker process (`run_worker_process`), its stderr log in `log_path`."""
    apply_env(env)
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 2)
    os.close(fd)
    from src.services.execution.simple_worker import run_worker_process

    run_worker_process(work_queue, result_queue, worker_id)


def idle(work_queue: Any, result_queue: Any) -> None:
    """A spawned interpreter that does nothing: the floor under the worker's memory."""
    result_queue.put({"type": "ready", "pid": os.getpid()})
    work_queue.get()


# Begins the label of a step timed on a thread of its own (the engine reads the
# lock while the fast path runs): it overlaps the others, so is not added up.
CONCURRENT = "(own thread) "


class StepTimer:
    """Wall time of the install's steps, by call path, from wrappers put on the
    modules in this (benchmark child) process only; src/ is not changed. Each
    thread has its call path; a step begun on another thread than the one that
    made the timer is a path of its own, its label prefixed with CONCURRENT."""

    def __init__(self) -> None:
        self.totals: dict[tuple[str, ...], list[float]] = {}  # path -> [seconds, calls]
        self._owner = threading.get_ident()
        self._local = threading.local()

    @property
    def stack(self) -> list[str]:
        stack: list[str] | None = getattr(self._local, "stack", None)
        if stack is None:
            stack = self._local.stack = []
        return stack

    def wrap(self, owner: Any, attribute: str, label: str) -> None:
        original = getattr(owner, attribute, None)
        if original is None:  # not in this version of src/: time what is there
            return
        timer = self

        @functools.wraps(original)
        def timed(*args: Any, **kwargs: Any) -> Any:
            first_on_thread = not timer.stack and threading.get_ident() != timer._owner
            timer.stack.append(CONCURRENT + label if first_on_thread else label)
            entry = timer.totals.setdefault(tuple(timer.stack), [0.0, 0])
            started = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                entry[0] += time.perf_counter() - started
                entry[1] += 1
                timer.stack.pop()

        setattr(owner, attribute, timed)

    def report(self) -> list[tuple[list[str], float, int]]:
        return [(list(path), seconds, int(calls)) for path, (seconds, calls) in self.totals.items()]

    @classmethod
    def instrument_engine(cls) -> StepTimer:
        import filelock

        from src.core import requirements_cache
        from src.services.execution import simple_worker
        from src.services.installer import (
            building,
            commands,
            context,
            engine,
            locked,
            platform,
            satisfaction,
        )
        from src.services.installer.environments import Environments

        timer = cls()
        for owner, attribute, label in [
            (simple_worker, "get_requirements_sync", "read requirements (Redis)"),
            (requirements_cache, "get_settings", "get_settings"),
            (simple_worker, "ensure_environment", "ensure_environment"),
            (simple_worker, "_log_outcome", "log outcome"),
            (engine, "get_settings", "get_settings"),
            (context, "requirement_lines", "parse requirement lines"),
            (context, "read_lock", "read the hash's lock (Redis)"),
            (engine, "_usable", "fast path check (_usable)"),
            (Environments, "latest", "find newest env (read record)"),
            (context, "platform_paths", "platform_paths"),
            (satisfaction, "find_unsatisfied", "find_unsatisfied"),
            (satisfaction, "_index", "index dist-infos"),
            (getattr(satisfaction, "_Index", None), "get", "look up a dist-info"),
            (engine, "hold", "hold env (flock)"),
            (Environments, "lock", "make lock object"),
            (filelock.BaseFileLock, "acquire", "acquire host lock (wait)"),
            (engine, "build", "build"),
            (commands, "choose_installer", "choose installer"),
            (Environments, "new_build_dir", "new build dir"),
            (building, "install", "install"),
            (building, "install_locked", "install the lock's pins"),
            (locked, "constraints_file", "platform constraints file"),
            (locked, "run_before", "run installer subprocess"),
            (building, "constraints_file", "platform constraints file"),
            (platform, "platform_distributions", "scan platform distributions"),
            (building, "run_before", "run installer subprocess"),
            (building, "list_distributions", "list installed distributions"),
            (Environments, "publish", "publish (rename)"),
            (Environments, "collect_garbage", "collect garbage"),
        ]:
            timer.wrap(owner, attribute, label)
        return timer
