"""Resident memory of a pool's workers, and replacing those that grew too big.

Every `MEASURE_SECONDS` the pool measures each ready worker (`MemoryWatch.check`):
- `rss_mb`: the resident set size of the worker's long-lived processes, the
  worker process and its execution template (`template.py`), together: both
  live as long as the worker, and a recycle replaces both. Executions are the
  template's children and are not counted here;
- `execution_rss_mb`, while the worker is busy: the resident set size of the
  execution's process (the template's child).
An execution's peak (`peak_rss_mb`) is not measured here: the template reads
it from the execution process's exit (`ru_maxrss`) and it comes back with
the outcome (`peak_mb`).

With `BIFROST_WORKER_MAX_RSS_MB` set, a worker whose `rss_mb` is over it is
replaced after the item in hand, as a recycle replaces it. A limit below what
a fresh worker needs would replace every worker as soon as it is ready,
forever; so a slot's worker is replaced for memory at most once every
`REPLACE_INTERVAL_SECONDS`, and a worker over the limit at its first
measurement (the limit is too low, not the worker too big) is logged once, as
a warning, for the pool's life.

A measurement that fails (the process exited meanwhile) is no reading; it
never stops the pool.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil

from src.services.execution.worker_handle import Worker

# The pool's log lines keep one logger name, whichever of its parts writes them.
logger = logging.getLogger("src.services.execution.process_pool")

# As often as the pool's heartbeat (`pool_heartbeat.HEARTBEAT_SECONDS`).
MEASURE_SECONDS = 2.0
# The least time between two replacements for memory of one slot's worker.
REPLACE_INTERVAL_SECONDS = 60.0
MB = 1024 * 1024


def peak_mb(peak_kib: Any) -> float | None:
    """An execution's peak as the template reported it (KiB, Linux's
    `ru_maxrss`), in MB; None when it sent none (or nonsense)."""
    if isinstance(peak_kib, bool) or not isinstance(peak_kib, int) or peak_kib < 0:
        return None
    return round(peak_kib / 1024, 1)


def children(pid: int) -> list[int]:
    """The children of process `pid`, from every thread's `children` list
    (readable even for a process that is not dumpable)."""
    pids: list[int] = []
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(OSError, ValueError):
                pids += [int(p) for p in (task / "children").read_text().split()]
    return pids


def rss_bytes(pid: int) -> int | None:
    """Resident set size of `pid`; None when it cannot be read (it exited)."""
    try:
        return int(psutil.Process(pid).memory_info().rss)
    except (psutil.Error, OSError):
        return None


def measure(pid: int, busy: bool) -> tuple[float | None, float | None]:
    """(`rss_mb`, `execution_rss_mb`) of the worker process `pid`: itself and
    its template; and, when `busy`, the template's children (the execution)."""
    own = rss_bytes(pid)
    if own is None:
        return None, None
    templates = children(pid)
    total = own + sum(rss_bytes(t) or 0 for t in templates)
    execution: float | None = None
    if busy:
        running = [p for t in templates for p in children(t)]
        execution = round(sum(rss_bytes(p) or 0 for p in running) / MB, 1) if running else None
    return round(total / MB, 1), execution


class MemoryWatch:
    """Measures a pool's workers when due, and replaces those over the limit."""

    def __init__(self, limit_mb: int, replace: Callable[[Worker], None],
                 on_change: Callable[[], None]) -> None:
        self.limit_mb = limit_mb  # 0: never replace
        self._replace = replace  # retire the worker, start its replacement
        self._on_change = on_change  # what the registry shows changed
        self._measured = -MEASURE_SECONDS
        self._replaced_at: dict[int, float] = {}  # slot -> time.monotonic()
        self._warned_too_low = False

    def check(self, workers: list[Worker]) -> None:
        """Measure every ready worker if a measurement is due; replace the
        ones over the limit."""
        now = time.monotonic()
        if now - self._measured < MEASURE_SECONDS:
            return
        self._measured = now
        measured = False
        for worker in list(workers):
            measured |= self._check(worker, now)
        if measured:
            self._on_change()

    def _check(self, worker: Worker, now: float) -> bool:
        pid = worker.process.pid
        if pid is None or worker.killed or worker.status not in ("idle", "busy"):
            return False
        first = worker.rss_mb is None
        worker.rss_mb, worker.execution_rss_mb = measure(pid, worker.current is not None)
        if self._over_limit(worker) and self._may_replace(worker, first, now):
            logger.warning("[%s] resident memory %.0f MB is over BIFROST_WORKER_MAX_RSS_MB=%d: "
                           "replacing it after the item in hand",
                           worker.worker_id, worker.rss_mb, self.limit_mb)
            self._replaced_at[worker.slot] = now
            self._replace(worker)
        return True

    def _over_limit(self, worker: Worker) -> bool:
        return (bool(self.limit_mb) and not worker.retiring
                and worker.rss_mb is not None and worker.rss_mb > self.limit_mb)

    def _may_replace(self, worker: Worker, first: bool, now: float) -> bool:
        """Whether the slot's last replacement for memory is long enough ago;
        a fresh worker over the limit says the limit is too low (told once)."""
        last = self._replaced_at.get(worker.slot)
        if last is None or now - last >= REPLACE_INTERVAL_SECONDS:
            return True
        if first and not self._warned_too_low:
            self._warned_too_low = True
            logger.warning(
                "[%s] resident memory %.0f MB is over BIFROST_WORKER_MAX_RSS_MB=%d right after "
                "its start: the limit is below what a fresh worker needs; each worker slot is "
                "replaced for memory at most once every %.0f s",
                worker.worker_id, worker.rss_mb, self.limit_mb, REPLACE_INTERVAL_SECONDS)
        return False
