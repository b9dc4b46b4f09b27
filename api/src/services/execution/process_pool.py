"""Pool manager (`bifrost worker`): N worker processes fed from the execution stream.

The loop, top to bottom, once per turn:

1. apply control messages (a `recycle` replaces every worker process);
2. collect what workers said (installing, ready, results) and record results;
3. replace worker processes that died; fail the execution a dead one held;
4. kill workers whose execution ran past the timeout (`Timeout`);
5. hand stream entries to idle workers, never more than there are idle ones;
6. heartbeat: publish this pool's state, keep its claimed entries its own,
   take over entries of pools that died, and notice requirements that
   changed while the control channel was down.

Entries are read through a consumer group, so each goes to one pool. An entry
stays pending until its result is recorded (then it is acknowledged and
deleted); one held by a dead pool is claimed by another after
`BIFROST_CLAIM_IDLE_SECONDS`: run if it never started, marked `Failed` if it had.

Worker processes are forked from a `forkserver`: a clean process started once
per pool that has imported the worker's modules and nothing else (no web
stack, no connections, no threads). A new worker then starts in milliseconds
instead of paying the imports again, which is most of a recycle's time.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import queue
import signal
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.process import BaseProcess
from multiprocessing.queues import Queue
from types import FrameType
from typing import Any

import redis

from src.core import module_cache
from src.core.requirements_cache import cached_hash
from src.foundation.hardening import drop_secrets_from_environment
from src.foundation.redis_client import get_redis
from src.foundation.settings import Settings, get_settings
from src.services.execution import executions, registry
from src.services.execution.control import ControlListener
from src.services.execution.registry import PoolState, WorkerState, WorkerStatus
from src.services.execution.results import decode_outcome
from src.services.execution.simple_worker import worker_main
from src.services.installer.environments import Environments
from src.services.installer.outcome import InstallOutcome

logger = logging.getLogger(__name__)

HEARTBEAT_SECONDS = 2.0
STATE_PUBLISH_MIN_INTERVAL = 0.05
# How long a read of the stream may wait for new entries. While a worker is
# busy, its result may arrive during that wait and is only handled after it,
# so the wait is short then; with every worker idle nothing else is due.
STREAM_BLOCK_MS_BUSY = 5
STREAM_BLOCK_MS_IDLE = 50
RESULT_WAIT_SECONDS = 0.05
SHUTDOWN_GRACE_SECONDS = 10.0
# A worker enforces its execution's timeout itself; if it has not answered
# this long after, the worker itself is stuck and is killed.
TIMEOUT_GRACE_SECONDS = 10.0


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
    current: InFlight | None = None
    retiring: bool = False  # replaced: finishes what it holds, takes nothing new
    killed: bool = False

    def state(self) -> WorkerState:
        return WorkerState(
            worker_id=self.worker_id,
            host=self.host,
            pid=self.process.pid,
            status=self.status,
            requirements_hash=self.install["requirements_hash"] if self.install else None,
            install=self.install,
            started_at=self.started_at,
            ready_at=self.ready_at,
            retiring=self.retiring,
        )


class ProcessPool:
    def __init__(self, size: int | None = None, settings: Settings | None = None) -> None:
        self.settings = settings or get_settings()
        self.size = size or self.settings.workers
        self.host = socket.gethostname()
        self.pool_id = f"{self.host}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.context = multiprocessing.get_context("forkserver")
        self.context.set_forkserver_preload(["src.services.execution.simple_worker"])
        # Worker processes descend from a forkserver this process starts: no
        # execution finds the secrets in the environment block it inherits.
        drop_secrets_from_environment()
        self.results: Queue[Any] = self.context.Queue()
        self.workers: list[Worker] = []
        self.control = ControlListener(self.settings.redis_url)
        self.started_at = time.time()
        self._generation = 0
        self._stopping = False
        self._backlog: list[tuple[str, dict[str, Any]]] = []  # claimed, not yet dispatched
        self._unsaved: list[tuple[str, str | None, dict[str, Any]]] = []  # Redis was down
        self._known_hash: str | None = None
        self._last_heartbeat = 0.0
        self._last_publish = 0.0
        self._dirty = True
        self._group_ready = False
        self._redis_down_since: float | None = None

    @property
    def redis(self) -> redis.Redis:
        return get_redis(self.settings.redis_url)

    # --- lifecycle ------------------------------------------------------------

    def run(self) -> None:
        """Run until SIGTERM/SIGINT (or `stop()`), then shut down in order."""
        self._install_signal_handlers()
        self.start()
        try:
            while not self._stopping:
                self.run_once()
        finally:
            self.shutdown()

    def start(self) -> None:
        logger.info("Pool %s starting %d worker processes", self.pool_id, self.size)
        self.control.start()
        for slot in range(self.size):
            self._spawn(slot)
        self._known_hash = self._current_hash()

    def stop(self) -> None:
        self._stopping = True

    def run_once(self) -> None:
        self._handle_control()
        self._collect_results(wait=not self._idle_workers())
        self._reap_dead()
        self._enforce_timeouts()
        self._guard_redis(self._dispatch)
        self._guard_redis(self._heartbeat)

    def shutdown(self) -> None:
        logger.info("Pool %s stopping", self.pool_id)
        self.control.stop()
        for worker in self.workers:
            if worker.current is None:
                worker.inbox.put(None)
            worker.retiring = True
        deadline = time.monotonic() + SHUTDOWN_GRACE_SECONDS
        while any(w.process.is_alive() for w in self.workers) and time.monotonic() < deadline:
            self._collect_results(wait=True)
            for worker in self.workers:
                if worker.current is None and worker.process.is_alive():
                    worker.inbox.put(None)
        self._collect_results(wait=False)
        for worker in self.workers:
            if worker.process.is_alive():
                worker.process.kill()
            worker.process.join(5)
            if worker.current is not None:
                self._finish(worker, "Failed", None,
                             "the pool stopped before the execution finished")
        self._flush_unsaved()
        with contextlib.suppress(redis.RedisError):  # else the key expires by itself
            registry.remove_pool(self.pool_id, self.redis)
        logger.info("Pool %s stopped", self.pool_id)

    def _install_signal_handlers(self) -> None:
        def request_stop(signum: int, frame: FrameType | None) -> None:
            self._stopping = True

        signal.signal(signal.SIGTERM, request_stop)
        signal.signal(signal.SIGINT, request_stop)

    # --- worker processes -------------------------------------------------------

    def _spawn(self, slot: int) -> Worker:
        self._generation += 1
        worker_id = f"{self.host}-{os.getpid()}-w{slot}.{self._generation}"
        inbox: Queue[Any] = self.context.Queue()
        process = self.context.Process(
            target=worker_main,
            args=(inbox, self.results, worker_id, self._store_url_for_worker(), os.getpid()),
            name=f"bifrost-{worker_id}",
            daemon=True,
        )
        process.start()
        _lock_forkserver_socket()
        worker = Worker(slot, worker_id, process, inbox, self.host)
        self.workers.append(worker)
        self._dirty = True
        logger.info("[%s] started (pid %s)", worker_id, process.pid)
        return worker

    def _store_url_for_worker(self) -> str | None:
        """A worker reads the store only when Redis cannot answer at its start;
        only then does it get the store's URL (it may hold a password)."""
        if self.settings.database_url is None:
            return None  # the SQLite file in the data dir: no secret in its path
        try:
            self.redis.ping()
            return None
        except redis.RedisError:
            return self.settings.database_url

    def _busy(self) -> bool:
        return any(w.current is not None for w in self.workers)

    def _idle_workers(self) -> list[Worker]:
        return [w for w in self.workers if w.status == "idle" and not w.retiring]

    def recycle(self, reason: str) -> None:
        """Replace every worker process; items in hand finish first."""
        logger.info("Pool %s recycling its workers (%s)", self.pool_id, reason)
        self._known_hash = self._current_hash()
        for worker in [w for w in self.workers if not w.retiring]:
            worker.retiring = True
            if worker.current is None:
                worker.inbox.put(None)
            self._spawn(worker.slot)
        self._dirty = True

    def _reap_dead(self) -> None:
        dead = [w for w in self.workers if not w.process.is_alive()]
        if not dead:
            return
        retired = False
        self._collect_results(wait=False)  # what a worker said just before it exited
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
            elif not self._stopping:
                logger.warning("[%s] died (exit code %s); replacing it", worker.worker_id, exitcode)
                self._spawn(worker.slot)
        self._dirty = True
        if retired:
            self._collect_environments()

    def _collect_environments(self) -> None:
        """Retired workers released their environments: delete the ones no
        process on this host uses any more (the engine keeps one for rollback)."""
        if self._known_hash is None:
            return
        try:
            removed = Environments(self.settings.packages_dir).collect_garbage(self._known_hash)
        except OSError as exc:
            logger.warning("Could not collect old environments: %s", exc)
            return
        for path in removed:
            logger.info("Removed the unused environment %s", path.name)

    def _enforce_timeouts(self) -> None:
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
                    self._spawn(worker.slot)

    def _cancel(self, execution_ids: set[str]) -> None:
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

    # --- messages from workers ---------------------------------------------------

    def _collect_results(self, wait: bool) -> None:
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
        elif kind == "ready":
            worker.status = "idle"
            worker.install = message["install"]
            worker.ready_at = time.time()
            logger.info("[%s] ready (install: %s)", worker.worker_id, _summary(message["install"]))
        elif kind == "result":
            if worker.current is None or worker.current.execution_id != message.get("id"):
                logger.warning("[%s] result for an execution it was not given", worker.worker_id)
                return
            payload = message.get("payload")
            outcome = decode_outcome(payload if isinstance(payload, bytes) else b"")
            self._finish(worker, outcome["status"], outcome["result"], outcome["error"],
                         outcome["duration_ms"], outcome["notes"])
            if worker.retiring:
                worker.inbox.put(None)
        self._dirty = True

    def _finish(
        self,
        worker: Worker,
        status: str,
        result: Any,
        error: str | None,
        duration_ms: int | None = None,
        notes: list[str] | None = None,
    ) -> None:
        """Record an execution's end, then acknowledge its stream entry."""
        held = worker.current
        if held is None:
            return
        worker.current = None
        if worker.status == "busy":
            worker.status = "idle"
        if duration_ms is None:
            duration_ms = int((time.monotonic() - held.started) * 1000)
        changes = {"status": status, "result": result, "error": error,
                   "worker_id": worker.worker_id, "duration_ms": duration_ms,
                   "notes": notes or []}
        self._unsaved.append((held.execution_id, held.entry_id, changes))
        self._flush_unsaved()

    def _flush_unsaved(self) -> None:
        """Write finished executions. While Redis is down they wait for the
        next turn; one that Redis refuses (too large, out of memory) is
        recorded as `Failed` saying why, so it never blocks those behind it."""
        while self._unsaved:
            execution_id, entry_id, changes = self._unsaved[0]
            try:
                self._save(execution_id, entry_id, changes)
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                self._note_redis_down(exc)
                return
            self._unsaved.pop(0)

    def _save(self, execution_id: str, entry_id: str | None, changes: dict[str, Any]) -> None:
        try:
            executions.update_execution(execution_id, self.redis, **changes)
        except (redis.ConnectionError, redis.TimeoutError):
            raise
        except (redis.RedisError, ValueError, TypeError, RecursionError) as exc:
            logger.error("Execution %s: its outcome could not be saved: %s", execution_id, exc)
            failed = {**changes, "status": "Failed", "result": None, "notes": [],
                      "error": f"ResultNotSaved: the outcome could not be saved ({exc})"[:2000]}
            try:
                executions.update_execution(execution_id, self.redis, **failed)
            except (redis.ConnectionError, redis.TimeoutError):
                raise
            except redis.RedisError as again:
                logger.error("Execution %s: not even its failure could be saved (%s); "
                             "dropping it", execution_id, again)
        if entry_id is not None:
            self._ack(entry_id)

    # --- the stream -----------------------------------------------------------------

    def _ensure_group(self) -> None:
        if self._group_ready:
            return
        try:
            # From 0: entries added while no group existed (Redis restarted
            # empty) are still run; acknowledged entries are deleted, so 0
            # never replays old work.
            self.redis.xgroup_create(executions.STREAM_KEY, executions.GROUP, id="0",
                                     mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        self._group_ready = True

    def _ack(self, entry_id: str) -> None:
        with self.redis.pipeline() as pipe:
            pipe.xack(executions.STREAM_KEY, executions.GROUP, entry_id)
            pipe.xdel(executions.STREAM_KEY, entry_id)
            pipe.execute()

    def _dispatch(self) -> None:
        self._flush_unsaved()
        idle = self._idle_workers()
        if not idle:
            return
        if not self._backlog:
            self._ensure_group()
            try:
                response: Any = self.redis.xreadgroup(
                    executions.GROUP, self.pool_id, {executions.STREAM_KEY: ">"},
                    count=len(idle),
                    block=STREAM_BLOCK_MS_BUSY if self._busy() else STREAM_BLOCK_MS_IDLE,
                )
            except redis.ResponseError as exc:
                if "NOGROUP" in str(exc):  # Redis lost the group: make it again
                    self._group_ready = False
                    return
                raise
            for _stream, entries in response or []:
                self._backlog.extend(entries)
        while idle and self._backlog:
            entry_id, fields = self._backlog.pop(0)
            order = executions.parse_entry(fields)
            if order is None:
                self._drop_malformed(entry_id, fields)
                continue
            worker = idle[0]
            if not executions.start_execution(order["id"], worker.worker_id, self.redis):
                self._ack(entry_id)  # cancelled (or ended) before it started
                continue
            idle.pop(0)
            timeout = order.get("timeout") or self.settings.execution_timeout
            worker.current = InFlight(entry_id, order["id"],
                                      min(timeout, self.settings.execution_timeout))
            worker.status = "busy"
            worker.inbox.put(order)
            self._dirty = True

    def _drop_malformed(self, entry_id: str, fields: dict[str, Any]) -> None:
        logger.warning("Dropping malformed stream entry %s", entry_id)
        execution_id = fields.get("id")
        if isinstance(execution_id, str) and executions.get_execution(execution_id, self.redis):
            executions.update_execution(execution_id, self.redis, status="Failed",
                                        error="the queued execution could not be read")
        self._ack(entry_id)

    def _reclaim(self) -> None:
        """Keep our entries ours, and take over those of pools that died."""
        held: list[Any] = [w.current.entry_id for w in self.workers if w.current is not None]
        if held:
            # Claiming resets the idle time another pool would judge us by.
            self.redis.xclaim(executions.STREAM_KEY, executions.GROUP, self.pool_id,
                              min_idle_time=0, message_ids=held, justid=True)
        _next, claimed, *_ = self.redis.xautoclaim(
            executions.STREAM_KEY, executions.GROUP, self.pool_id,
            min_idle_time=int(self.settings.claim_idle_seconds * 1000), start_id="0-0", count=50,
        )
        for entry_id, fields in claimed:
            item = executions.parse_entry(fields or {})
            record = executions.get_execution(item["id"], self.redis) if item else None
            if item is None:
                self._ack(entry_id)
            elif record is not None and record["status"] in executions.FINAL_STATUSES:
                self._ack(entry_id)  # finished, but its pool died before acknowledging
            elif record is not None and record["status"] == "Running":
                logger.warning("Execution %s was running on a pool that died", item["id"])
                executions.update_execution(
                    item["id"], self.redis, status="Failed",
                    error="PoolDied: the pool running this execution stopped "
                          f"(worker {record.get('worker_id')})",
                )
                self._ack(entry_id)
            else:
                self._backlog.append((entry_id, fields))

    # --- heartbeat ----------------------------------------------------------------

    def _heartbeat(self) -> None:
        now = time.monotonic()
        beat = now - self._last_heartbeat >= HEARTBEAT_SECONDS
        if beat or (self._dirty and now - self._last_publish >= STATE_PUBLISH_MIN_INTERVAL):
            registry.publish_pool_state(self._state(), self.redis)
            self._last_publish, self._dirty = now, False
        if not beat:
            return
        self._last_heartbeat = now
        self._ensure_group()
        self._reclaim()
        self._check_requirements_drift()
        self._check_cancel_flags()
        self._keep_module_cache_warm()

    def _check_cancel_flags(self) -> None:
        """A cancel broadcast missed while the channel was down is still flagged."""
        held = [w.current.execution_id for w in self.workers if w.current is not None]
        self._cancel(executions.cancel_requested(held, self.redis))

    def _keep_module_cache_warm(self) -> None:
        """Executions read workspace modules from Redis alone: when Redis lost
        them (restarted empty, flushed), the pool, which may read the store,
        puts them back."""
        try:
            module_cache.ensure_warm_sync(self.redis)
        except redis.RedisError:
            raise
        except Exception as exc:  # the store is down: executions wait, the pool goes on
            logger.warning("Could not warm the module cache from the store: %s", exc)

    def _check_requirements_drift(self) -> None:
        """A recycle broadcast missed while the channel was down shows up as a
        new requirements hash; act on it as if it had been heard."""
        current = self._current_hash()
        if current is not None and self._known_hash is not None and current != self._known_hash:
            self.recycle("requirements changed while the control channel was away")
        elif self._known_hash is None:
            self._known_hash = current

    def _current_hash(self) -> str | None:
        try:
            return cached_hash(self.redis)
        except redis.RedisError:
            return None

    def _state(self) -> PoolState:
        return PoolState(
            pool_id=self.pool_id, host=self.host, pid=os.getpid(),
            started_at=self.started_at, workers=[w.state() for w in self.workers],
        )

    # --- control messages ----------------------------------------------------------

    def _handle_control(self) -> None:
        recycle_reasons: list[str] = []
        while True:
            try:
                message = self.control.messages.get_nowait()
            except queue.Empty:
                break
            if message.get("action") == "recycle":
                recycle_reasons.append(str(message.get("reason", "requested")))
            elif message.get("action") == "cancel" and isinstance(message.get("id"), str):
                self._cancel({message["id"]})
        if recycle_reasons:  # several broadcasts at once need one recycle
            self.recycle(", ".join(sorted(set(recycle_reasons))))
        if self.control.resubscribed.is_set():
            self.control.resubscribed.clear()
            self._group_ready = False  # Redis may have restarted empty
            self._last_heartbeat = 0.0  # check for a missed broadcast now

    # --- Redis trouble ------------------------------------------------------------

    def _guard_redis(self, step: Callable[[], None]) -> None:
        try:
            step()
        except redis.RedisError as exc:
            self._note_redis_down(exc)
            time.sleep(0.5)  # do not spin against a Redis that is down
            return
        if self._redis_down_since is not None:
            logger.info("Redis is back after %.1f s", time.monotonic() - self._redis_down_since)
            self._redis_down_since = None
            self._group_ready = False

    def _note_redis_down(self, exc: Exception) -> None:
        if self._redis_down_since is None:
            self._redis_down_since = time.monotonic()
            logger.warning("Redis unavailable (%s); workers keep running, retrying", exc)


def _summary(install: InstallOutcome) -> str:
    if install["skipped"]:
        return "nothing to install"
    failed = ", ".join(f["package"] for f in install["failed"])
    return (f"{len(install['installed'])} installed"
            + (f", failed: {failed}" if failed else "")
            + f" in {install['duration_ms']} ms")


def _lock_forkserver_socket() -> None:
    """The forkserver runs whatever a connection to its socket sends, and an
    execution could find the socket's path in /proc/net/unix. As root, the
    socket's directory is closed to everyone (mode 0): the pool still connects
    (it has CAP_DAC_OVERRIDE), executions, whose sandbox drops every
    capability, cannot. Without root nothing here stops a same-uid process
    (README, "What executions cannot reach")."""
    from multiprocessing import forkserver

    address = getattr(forkserver._forkserver, "_forkserver_address", None)
    if os.geteuid() != 0 or not isinstance(address, str) or address.startswith("\0"):
        return
    with contextlib.suppress(OSError):
        os.chmod(os.path.dirname(address), 0)


def run_pool(size: int | None = None) -> None:
    """Entry point of `bifrost worker`."""
    ProcessPool(size).run()
