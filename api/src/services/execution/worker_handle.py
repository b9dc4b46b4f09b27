"""The pool's handle on one worker process, and the execution it holds.

`Worker` is what the pool knows of a worker process: its slot, its inbox, what
it is doing (`status`, `current`) and whether it has been replaced
(`retiring`); `state()` is how the worker registry shows it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from multiprocessing.process import BaseProcess
from multiprocessing.queues import Queue
from typing import Any

from src.services.execution.registry import WorkerState, WorkerStatus
from src.services.installer.outcome import InstallOutcome


@dataclass
class InFlight:
    entry_id: str
    execution_id: str
    timeout: float
    started: float = field(default_factory=time.monotonic)
    cancel_sent: bool = False


@dataclass
class Worker:
    slot: int
    worker_id: str
    process: BaseProcess
    inbox: Queue[Any]
    host: str
    status: WorkerStatus = "starting"
    started_at: float = field(default_factory=time.time)
    ready_at: float | None = None
    install: InstallOutcome | None = None
    # While installing: what it waits for (another host fetching for the fleet).
    waiting_for: str | None = None
    current: InFlight | None = None
    retiring: bool = False  # replaced: finishes what it holds, takes nothing new
    killed: bool = False
    # Resident memory in MB (`worker_memory.py`): the worker and its template,
    # the running execution's process, and the last execution's peak.
    rss_mb: float | None = None
    execution_rss_mb: float | None = None
    last_execution_peak_rss_mb: float | None = None

    def state(self) -> WorkerState:
        return WorkerState(
            worker_id=self.worker_id,
            host=self.host,
            pid=self.process.pid,
            status=self.status,
            requirements_hash=self.install["requirements_hash"] if self.install else None,
            install=self.install,
            waiting_for=self.waiting_for if self.status == "installing" else None,
            started_at=self.started_at,
            ready_at=self.ready_at,
            retiring=self.retiring,
            rss_mb=self.rss_mb,
            execution_rss_mb=self.execution_rss_mb if self.current is not None else None,
            last_execution_peak_rss_mb=self.last_execution_peak_rss_mb,
        )


def install_summary(install: InstallOutcome) -> str:
    """A worker's install, in a few words for the log."""
    if install["skipped"]:
        return "nothing to install"
    failed = ", ".join(f["package"] for f in install["failed"])
    return (f"{len(install['installed'])} installed"
            + (f", failed: {failed}" if failed else "")
            + f" in {install['duration_ms']:.1f} ms")
