"""What one `ensure_environment` call carries from step to step.

The engine's steps (the fast path, the wait for the hash's lock, the build,
the explanation of failures) all need the same few things: the settings, the
requirement lines, the hash, its lock of exact versions (when it has one),
the environments on this host, and a logger that names the worker.
`BuildContext` gathers them once per call.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from src.core import metrics_store
from src.core.lock_cache import read_lock
from src.foundation.locks import InvalidLock, Lock
from src.foundation.requirements import requirement_lines
from src.foundation.settings import Settings
from src.services.installer.environments import Environments
from src.services.installer.runner import StopCheck
from src.services.installer.satisfaction import platform_paths

# Every line an install logs goes out under the engine's name, whichever of
# its modules writes it: log configuration and filters name that one logger.
ENGINE_LOGGER = logging.getLogger("src.services.installer.engine")


class WorkerLog(logging.LoggerAdapter[logging.Logger]):
    """The engine's logger, each line prefixed with `[<worker id>] `, the text
    every install log line begins with (tests and operators grep for it)."""

    def __init__(self, worker_id: str, logger: logging.Logger = ENGINE_LOGGER) -> None:
        super().__init__(logger, {"worker_id": worker_id})
        self.worker_id = worker_id
        self._prefix = f"[{worker_id}] "
        # With arguments the message is %-formatted: a "%" in the id is not one.
        self._formatted_prefix = self._prefix.replace("%", "%%")

    def log(self, level: int, msg: object, *args: object, **kwargs: Any) -> None:
        if self.isEnabledFor(level):
            prefix = self._formatted_prefix if args else self._prefix
            # One frame more than LoggerAdapter's own: the caller is the engine's line.
            kwargs["stacklevel"] = kwargs.get("stacklevel", 1) + 1
            self.logger.log(level, f"{prefix}{msg}", *args, **kwargs)


@dataclass
class BuildContext:
    """One `ensure_environment` call: made once, passed to each step."""

    content: str
    requirements_hash: str
    settings: Settings
    lines: list[str]
    envs: Environments
    log: WorkerLog
    should_stop: StopCheck | None = None
    started: float = field(default_factory=time.monotonic)
    # An environment built after this counts as this start-up round's attempt
    # (its failed lines are not retried by every worker); moved on when one
    # built meanwhile turned out unusable, so that the next round builds it.
    began_at: float = field(default_factory=time.time)
    # The hash's lock, read by `load_lock`: what a build installs, pin for pin.
    lock: Lock | None = None
    lock_digest: str | None = None
    # Why there is no lock to install from: set when the lock cannot be read.
    lock_problem: str | None = None
    # The store's lock for the hash, as the pool read it: what Redis's must be.
    store_lock: str | None = None
    # Told what the build waits for (another host's fetch), and None when done.
    waiting: Callable[[str | None], None] | None = None
    # Where the lock's files came from (`lock_files`), for the outcome.
    files_source: str | None = None
    _lock_reader: threading.Thread | None = field(default=None, init=False, repr=False)

    @classmethod
    def create(
        cls,
        content: str,
        requirements_hash: str,
        worker_id: str,
        settings: Settings,
        should_stop: StopCheck | None = None,
        store_lock: str | None = None,
        waiting: Callable[[str | None], None] | None = None,
    ) -> BuildContext:
        return cls(
            content=content,
            requirements_hash=requirements_hash,
            settings=settings,
            lines=requirement_lines(content),
            envs=Environments(settings.packages_dir),
            log=WorkerLog(worker_id),
            should_stop=should_stop,
            store_lock=store_lock,
            waiting=waiting,
        )

    def load_lock(self) -> None:
        """Read the hash's lock (Redis, then the store). Without one (requirements
        written before locks existed) or with one that cannot be read, `lock`
        stays None and a build resolves here, as it always did; a failing read
        never stops a worker's start-up."""
        try:
            lock = read_lock(self.requirements_hash, self.log.worker_id)
        except InvalidLock as exc:
            self.lock_problem = str(exc)
            return
        except Exception as exc:  # read_lock logs its own failures; this is the unforeseen
            self.lock_problem = f"{type(exc).__name__}: {exc}"
            return
        lock = self._as_the_store_holds(lock)
        self.lock = lock
        self.lock_digest = None if lock is None else lock.digest()

    def _as_the_store_holds(self, lock: Lock | None) -> Lock | None:
        """`lock` (from Redis) when it is the store's lock for the hash, else
        the store's (when the pool passed it): a lock Redis was made to hold
        never reaches the installer."""
        if self.store_lock is None:
            return lock
        try:
            stored = Lock.parse(self.store_lock)
        except InvalidLock as exc:
            self.log.warning("the store's lock of %s cannot be read: %s",
                             self.requirements_hash[:12], exc)
            return lock
        if lock is not None and lock.digest() == stored.digest():
            return lock
        self.log.warning("Refused the lock Redis holds for %s: it is not the store's; "
                         "installing the store's", self.requirements_hash[:12])
        metrics_store.cache_refusal("lock")
        return stored

    def start_reading_lock(self) -> None:
        """`load_lock` on a thread of its own: a warm start waits on Redis while
        the fast path reads the environment's metadata, not after it."""
        self._lock_reader = threading.Thread(target=self.load_lock, name="bifrost-lock-read",
                                             daemon=True)
        self._lock_reader.start()

    def wait_for_lock(self) -> None:
        """Return once the lock is read (at once when it was read already)."""
        if self._lock_reader is not None:
            self._lock_reader.join()
            self._lock_reader = None

    def log_resolving(self) -> None:
        """Say that this build resolves the requirements itself, and why."""
        if self.lock_problem is None:
            self.log.info("No lock for requirements %s: resolving here", self.short_hash)
        else:
            self.log.warning("The lock for requirements %s cannot be read (%s): resolving here",
                             self.short_hash, self.lock_problem)

    @property
    def cache_key(self) -> str:
        """What the fleet wheel cache keeps this build's wheels under: the lock's
        digest, which names its exact files; without a lock, the hash."""
        return self.lock_digest or self.requirements_hash

    @property
    def short_hash(self) -> str:
        """The hash as log lines and messages show it."""
        return self.requirements_hash[:12]

    def search_paths(self, env: Path) -> list[str]:
        """`env`, then the platform's site-packages: where an environment's
        requirements are looked for (the packages dir itself is not)."""
        return [str(env), *platform_paths(exclude=[self.settings.packages_dir])]
