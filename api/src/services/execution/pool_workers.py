"""A pool's worker processes: starting, replacing, retiring and stopping them,
and what they say back (installing, ready, an execution's outcome).

Worker processes are forked from a `forkserver`: a clean process started once
per pool that has imported the worker's modules and nothing else (no web
stack, no connections, no threads). A new worker then starts in milliseconds
instead of paying the imports again, which is most of a recycle's time.

A worker that is replaced (a recycle, a timeout) is `retiring`: its
replacement starts at once, and it finishes the execution it holds, then
exits. One that dies otherwise is replaced, and the execution it held is
`Failed`. Every execution's end goes to `on_finished`, which records it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import signal
import time
from collections.abc import Callable
from multiprocessing.context import ForkServerContext
from multiprocessing.queues import Queue
from typing import Any

from src.core import alerts
from src.core.module_seal import seal_key_for_a_worker
from src.foundation.redis_client import get_redis
from src.foundation.settings import Settings
from src.foundation.timing import ms_since
from src.services.execution.protocol import WorkOrder
from src.services.execution.registry import WorkerState
from src.services.execution.results import decode_outcome
from src.services.execution.simple_worker import worker_main
from src.services.execution.store_truth import read_store_truth
from src.services.execution.worker_handle import InFlight, Worker, install_summary
from src.services.execution.worker_memory import peak_mb
from src.services.installer.environments import Environments

# The pool's log lines keep one logger name, whichever of its parts writes them.
logger = logging.getLogger("src.services.execution.process_pool")

RESULT_WAIT_SECONDS = 0.05
SHUTDOWN_GRACE_SECONDS = 10.0
# A worker enforces its execution's timeout itself; if it has not answered
# this long after, the worker itself is stuck and is killed.
TIMEOUT_GRACE_SECONDS = 10.0

# How an execution's end is recorded: its id, its stream entry's id, the
# changes to its record.
OnFinished = Callable[[str, str | None, dict[str, Any]], None]


class WorkerSupervisor:
    """The worker processes of one pool, `size` slots of them."""

    def __init__(self, context: ForkServerContext, settings: Settings, host: str, *,
                 on_finished: OnFinished, on_change: Callable[[], None],
                 stopping: Callable[[], bool]) -> None:
        self.context = context
        self.settings = settings
        self.host = host
        self.results: Queue[Any] = context.Queue()  # what every worker says
        self.workers: list[Worker] = []
        # The requirements the workers were last started for: environments
        # other than its own are garbage once no process uses them.
        self.known_hash: str | None = None
        self._on_finished = on_finished
        self._on_change = on_change  # the pool's published state changed
        self._stopping = stopping  # the pool is stopping: a dead worker is not replaced
        self._generation = 0

    # --- who is doing what --------------------------------------------------------

    def busy(self) -> bool:
        return any(w.current is not None for w in self.workers)

    def idle(self) -> list[Worker]:
        return [w for w in self.workers if w.status == "idle" and not w.retiring]

    def states(self) -> list[WorkerState]:
        return [w.state() for w in self.workers]

    def held_entry_ids(self) -> list[str]:
        return [w.current.entry_id for w in self.workers if w.current is not None]

    def held_execution_ids(self) -> list[str]:
        return [w.current.execution_id for w in self.workers if w.current is not None]

    def assign(self, worker: Worker, entry_id: str, order: WorkOrder) -> None:
        """Hand `order` (its execution already marked Running) to an idle worker."""
        timeout = order.get("timeout") or self.settings.execution_timeout
        worker.current = InFlight(entry_id, order["id"],
                                  min(timeout, self.settings.execution_timeout))
        worker.status = "busy"
        worker.inbox.put(order)
        self._on_change()

    # --- starting and replacing -----------------------------------------------------

    def spawn(self, slot: int) -> Worker:
        self._generation += 1
        worker_id = f"{self.host}-{os.getpid()}-w{slot}.{self._generation}"
        inbox: Queue[Any] = self.context.Queue()
        process = self.context.Process(
            target=worker_main,
            args=(inbox, self.results, worker_id, self._store_url_for_worker(), os.getpid(),
                  read_store_truth(), seal_key_for_a_worker()),
            name=f"bifrost-{worker_id}",
            daemon=True,
        )
        process.start()
        worker = Worker(slot, worker_id, process, inbox, self.host)
        self.workers.append(worker)
        self._on_change()
        logger.info("[%s] started (pid %s)", worker_id, process.pid)
        return worker

    def _store_url_for_worker(self) -> str | None:
        """A worker reads the store while it starts (Redis down, a lock Redis
        lost) and publishes the wheels it built to the fleet cache (the
        `store` backend), so it gets the store's URL: as an argument, never in
        an environment, and the worker drops it once started."""
        return self.settings.database_url  # None: the SQLite file in the data dir

    def replace_all(self) -> None:
        """Retire every worker and start its replacement; items in hand finish first."""
        for worker in [w for w in self.workers if not w.retiring]:
            self.replace(worker)
        self._on_change()

    def replace(self, worker: Worker) -> None:
        """Retire `worker` and start its replacement; the item in hand finishes first."""
        worker.retiring = True
        if worker.current is None:
            worker.inbox.put(None)
        self.spawn(worker.slot)

    def reap_dead(self) -> None:
        """Forget workers that exited: fail what a dead one held, replace it
        unless it was retiring, and collect environments retired ones released."""
        dead = [w for w in self.workers if not w.process.is_alive()]
        if not dead:
            return
        retired = False
        self.collect(wait=False)  # what a worker said just before it exited
        for worker in dead:
            self.workers.remove(worker)
            worker.process.join(1)
            exitcode = worker.process.exitcode
            if worker.current is not None:
                self._finish(
                    worker, "Failed", None,
                    f"WorkerDied: worker process {worker.worker_id} exited "
                    f"(exit code {exitcode}) during the execution",
                )
            if worker.retiring:  # its replacement already exists
                logger.info("[%s] retired (exit code %s)", worker.worker_id, exitcode)
                retired = True
            elif not self._stopping():
                logger.warning("[%s] died (exit code %s); replacing it", worker.worker_id, exitcode)
                self.spawn(worker.slot)
        self._on_change()
        if retired:
            self._collect_environments()

    def _collect_environments(self) -> None:
        """Retired workers released their environments: delete the ones no
        process on this host uses any more (the engine keeps one for rollback)."""
        if self.known_hash is None:
            return
        try:
            removed = Environments(self.settings.packages_dir).collect_garbage(self.known_hash)
        except OSError as exc:
            logger.warning("Could not collect old environments: %s", exc)
            return
        for path in removed:
            logger.info("Removed the unused environment %s", path.name)

    # --- executions that must end ---------------------------------------------------

    def enforce_timeouts(self) -> None:
        """Workers end executions that run too long themselves; one that has
        not answered well after its execution's deadline is stuck: kill it."""
        now = time.monotonic()
        for worker in self.workers:
            held = worker.current
            if held is None or worker.killed:
                continue
            if now - held.started > held.timeout + TIMEOUT_GRACE_SECONDS:
                logger.warning(
                    "[%s] execution %s exceeded %g s and the worker did not stop it; "
                    "killing the worker", worker.worker_id, held.execution_id, held.timeout,
                )
                worker.killed = True
                worker.process.kill()
                self._finish(worker, "Timeout", None, f"execution exceeded {held.timeout:g} s")
                if not worker.retiring:
                    worker.retiring = True
                    self.spawn(worker.slot)

    def cancel(self, execution_ids: set[str]) -> None:
        """Ask the workers holding these executions to kill them (SIGUSR1)."""
        for worker in self.workers:
            held = worker.current
            if held is None or held.cancel_sent or held.execution_id not in execution_ids:
                continue
            pid = worker.process.pid
            if pid is not None and worker.process.is_alive():
                logger.info("[%s] cancelling execution %s", worker.worker_id, held.execution_id)
                held.cancel_sent = True
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGUSR1)

    def stop_all(self) -> None:
        """Stop every worker: idle ones at once, busy ones when their execution
        ends, within `SHUTDOWN_GRACE_SECONDS`; then kill the rest and fail what
        they still held."""
        for worker in self.workers:
            if worker.current is None:
                worker.inbox.put(None)
            worker.retiring = True
        deadline = time.monotonic() + SHUTDOWN_GRACE_SECONDS
        while any(w.process.is_alive() for w in self.workers) and time.monotonic() < deadline:
            self.collect(wait=True)
            for worker in self.workers:
                if worker.current is None and worker.process.is_alive():
                    worker.inbox.put(None)
        self.collect(wait=False)
        for worker in self.workers:
            if worker.process.is_alive():
                worker.process.kill()
            worker.process.join(5)
            if worker.current is not None:
                self._finish(worker, "Failed", None,
                             "the pool stopped before the execution finished")

    # --- messages from workers ------------------------------------------------------

    def collect(self, wait: bool) -> None:
        """Act on every message workers sent, waiting briefly for one if `wait`."""
        timeout = RESULT_WAIT_SECONDS if wait else 0
        while True:
            try:
                message = self.results.get(timeout=timeout) if timeout else \
                    self.results.get_nowait()
            except queue.Empty:
                return
            timeout = 0
            self._on_message(message)

    def _on_message(self, message: Any) -> None:
        """Act on one message; whatever it holds, the pool goes on."""
        try:
            self._handle_message(message)
        except Exception:
            logger.exception("Could not handle a message from a worker: %.200r", message)

    def _handle_message(self, message: dict[str, Any]) -> None:
        worker = next((w for w in self.workers if w.worker_id == message.get("worker_id")), None)
        if worker is None:
            logger.warning("Message from an unknown worker: %r", message.get("worker_id"))
            return
        kind = message.get("type")
        if kind == "installing":
            worker.status = "installing"
            waiting = message.get("waiting_for")
            worker.waiting_for = str(waiting)[:500] if waiting is not None else None
        elif kind == "ready":
            worker.status = "idle"
            worker.install = message["install"]
            worker.ready_at = time.time()
            logger.info("[%s] ready (install: %s)", worker.worker_id,
                        install_summary(message["install"]))
            # One alert per failed package per hash, fleet-wide (never raises).
            alerts.note_outcome(message["install"], self.host, get_redis(self.settings.redis_url))
        elif kind == "result":
            if worker.current is None or worker.current.execution_id != message.get("id"):
                logger.warning("[%s] result for an execution it was not given", worker.worker_id)
                return
            payload = message.get("payload")
            outcome = decode_outcome(payload if isinstance(payload, bytes) else b"")
            worker.last_execution_peak_rss_mb = peak = peak_mb(message.get("peak_rss_kb"))
            output = {name: text for name in ("stdout", "stderr")
                      if isinstance(text := message.get(name), str)}
            self._finish(worker, outcome["status"], outcome["result"], outcome["error"],
                         outcome["duration_ms"], outcome["notes"], peak, output)
            if worker.retiring:
                worker.inbox.put(None)
        self._on_change()

    def _finish(
        self,
        worker: Worker,
        status: str,
        result: Any,
        error: str | None,
        duration_ms: float | None = None,
        notes: list[str] | None = None,
        peak_rss_mb: float | None = None,
        output: dict[str, str] | None = None,
    ) -> None:
        """The worker is done with its execution: hand its end to `on_finished`
        (`peak_rss_mb`: its process's peak resident memory, when known;
        `output`: the tails of its stdout and stderr)."""
        held = worker.current
        if held is None:
            return
        worker.current = None
        if worker.status == "busy":
            worker.status = "idle"
        if duration_ms is None:
            duration_ms = ms_since(held.started)
        changes = {"status": status, "result": result, "error": error,
                   "worker_id": worker.worker_id, "duration_ms": duration_ms,
                   "notes": notes or [], "peak_rss_mb": peak_rss_mb, **(output or {})}
        self._on_finished(held.execution_id, held.entry_id, changes)
