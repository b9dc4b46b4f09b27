"""Pool manager (`bifrost worker`): N worker processes fed from the execution stream.

The loop, top to bottom, once per turn (`ProcessPool.run_once`):

1. apply control messages (a `recycle` replaces every worker process);
2. collect what workers said (installing, ready, results) and record results;
3. replace worker processes that died; fail the execution a dead one held;
4. kill workers whose execution ran past the timeout (`Timeout`);
5. hand stream entries to idle workers, never more than there are idle ones;
6. every 2 s, measure the workers' resident memory, and replace those over
   `BIFROST_WORKER_MAX_RSS_MB` after the item in hand;
7. heartbeat: publish this pool's state, keep its claimed entries its own,
   take over entries of pools that died, and notice requirements that
   changed while the control channel was down.

The pool wires together one part per job:

- `pool_workers`: the worker processes (start, recycle, retire, replace, stop)
  and what they say back (`worker_handle`: one worker as the pool sees it);
- `stream_consumer`: the consumer group, reading, acknowledging, taking over
  entries of dead pools, and outcomes not saved yet;
- `pool_heartbeat`: the pool's state in the worker registry, and when the
  periodic checks are due;
- `redis_outage`: Redis being down, noticed and logged once, and its return;
- `worker_memory`: the workers' resident memory, and replacing those over the limit.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import queue
import signal
import time
import uuid
from collections.abc import Callable
from multiprocessing.queues import Queue
from types import FrameType
from typing import Any

import redis

from src.core.requirements_cache import cached_hash
from src.foundation.hardening import drop_secrets_from_environment, redis_without_password
from src.foundation.redis_client import get_redis
from src.foundation.settings import Settings, get_settings
from src.services.execution import executions
from src.services.execution.control import ControlListener
from src.services.execution.pool_heartbeat import PoolHeartbeat, keep_module_cache_warm
from src.services.execution.pool_ipc import lock_ipc_directory, remove_dead_ipc_directories
from src.services.execution.pool_workers import WorkerSupervisor
from src.services.execution.redis_outage import RedisOutage
from src.services.execution.stream_consumer import StreamConsumer
from src.services.execution.worker_handle import InFlight, Worker
from src.services.execution.worker_memory import MemoryWatch

__all__ = ["InFlight", "ProcessPool", "Worker", "run_pool"]

logger = logging.getLogger(__name__)

# How long a read of the stream may wait for new entries. While a worker is
# busy, its result may arrive during that wait and is only handled after it,
# so the wait is short then; with every worker idle nothing else is due.
STREAM_BLOCK_MS_BUSY = 5
STREAM_BLOCK_MS_IDLE = 50


class ProcessPool:
    """One `bifrost worker`: its parts, wired together, and the loop that runs them."""

    def __init__(self, size: int | None = None, settings: Settings | None = None) -> None:
        self.settings = settings or get_settings()
        self.size = size or self.settings.workers
        self.host = self.settings.host_name
        self.pool_id = f"{self.host}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        remove_dead_ipc_directories()
        lock_ipc_directory()  # before the forkserver's socket is bound there
        self.context = multiprocessing.get_context("forkserver")
        self.context.set_forkserver_preload(["src.services.execution.simple_worker"])
        # Worker processes descend from a forkserver this process starts: no
        # execution finds the secrets in the environment block it inherits.
        drop_secrets_from_environment()
        if redis_without_password(self.settings.redis_url):
            logger.warning(
                "Pool %s: REDIS_URL gives no password. Executions hold no Redis URL, "
                "but a workflow that finds the server on the network could rewrite what "
                "every worker reads: give Redis a password (README, \"What executions "
                "cannot reach\")", self.pool_id)
        self.control = ControlListener(self.settings.redis_url)
        self.started_at = time.time()
        self._stopping = False
        self.outage = RedisOutage()
        self.stream = StreamConsumer(self.pool_id, self.settings,
                                     on_redis_down=self.outage.note_down)
        self.heartbeat = PoolHeartbeat(self.pool_id, self.host, self.started_at)
        self.supervisor = WorkerSupervisor(
            self.context, self.settings, self.host,
            on_finished=self.stream.record_outcome, on_change=self.heartbeat.changed,
            stopping=lambda: self._stopping,
        )
        self.memory = MemoryWatch(self.settings.worker_max_rss_mb, self.supervisor.replace,
                                  on_change=self.heartbeat.changed)

    @property
    def redis(self) -> redis.Redis:
        return get_redis(self.settings.redis_url)

    @property
    def workers(self) -> list[Worker]:
        return self.supervisor.workers

    @property
    def results(self) -> Queue[Any]:
        return self.supervisor.results

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
            self.supervisor.spawn(slot)
        self.supervisor.known_hash = self._current_hash()

    def stop(self) -> None:
        self._stopping = True

    def run_once(self) -> None:
        """One turn of the loop (the module's docstring lists the steps)."""
        self._apply_control_messages()
        self.supervisor.collect(wait=not self.supervisor.idle())
        self.supervisor.reap_dead()
        self.supervisor.enforce_timeouts()
        self._guard_redis(self._dispatch)
        self._check_memory()
        self._guard_redis(self._heartbeat)

    def shutdown(self) -> None:
        logger.info("Pool %s stopping", self.pool_id)
        self.control.stop()
        self.supervisor.stop_all()
        self.stream.flush_unsaved()
        with contextlib.suppress(redis.RedisError):  # else the key expires by itself
            self.heartbeat.leave(self.redis)
        logger.info("Pool %s stopped", self.pool_id)

    def recycle(self, reason: str) -> None:
        """Replace every worker process; items in hand finish first."""
        logger.info("Pool %s recycling its workers (%s)", self.pool_id, reason)
        self.supervisor.known_hash = self._current_hash()
        self.supervisor.replace_all()

    def _install_signal_handlers(self) -> None:
        def request_stop(signum: int, frame: FrameType | None) -> None:
            self._stopping = True

        signal.signal(signal.SIGTERM, request_stop)
        signal.signal(signal.SIGINT, request_stop)

    # --- the steps of a turn --------------------------------------------------------

    def _apply_control_messages(self) -> None:
        recycle_reasons: list[str] = []
        while True:
            try:
                message = self.control.messages.get_nowait()
            except queue.Empty:
                break
            if message.get("action") == "recycle":
                recycle_reasons.append(str(message.get("reason", "requested")))
            elif message.get("action") == "cancel" and isinstance(message.get("id"), str):
                self.supervisor.cancel({message["id"]})
        if recycle_reasons:  # several broadcasts at once need one recycle
            self.recycle(", ".join(sorted(set(recycle_reasons))))
        if self.control.resubscribed.is_set():
            self.control.resubscribed.clear()
            self.stream.forget_group()  # Redis may have restarted empty
            self.heartbeat.beat_now()  # check for a missed broadcast now

    def _dispatch(self) -> None:
        """Hand stream entries to idle workers, never more than there are idle ones."""
        self.stream.flush_unsaved()
        idle = self.supervisor.idle()
        if not idle:
            return
        self.stream.read(len(idle), STREAM_BLOCK_MS_BUSY if self.supervisor.busy()
                         else STREAM_BLOCK_MS_IDLE)
        while idle and (taken := self.stream.take()) is not None:
            entry_id, order = taken
            if not executions.start_execution(order["id"], idle[0].worker_id, self.redis):
                self.stream.ack(entry_id)  # cancelled (or ended) before it started
                continue
            self.supervisor.assign(idle.pop(0), entry_id, order)

    def _check_memory(self) -> None:
        """Measure the workers' memory when due (after the hand-out: a worker
        given an item this turn finishes it before it is replaced)."""
        try:
            self.memory.check(self.workers)
        except Exception:  # a measurement must never stop the pool
            logger.exception("Could not check the workers' memory")

    def _heartbeat(self) -> None:
        """Publish the pool's state when due; on a heartbeat, the periodic checks."""
        if not self.heartbeat.tick(self.supervisor.states, self.redis):
            return
        self.stream.ensure_group()
        self.stream.reclaim(self.supervisor.held_entry_ids())
        self._check_requirements_drift()
        self._check_cancel_flags()
        keep_module_cache_warm(self.redis)

    def _check_cancel_flags(self) -> None:
        """A cancel broadcast missed while the channel was down is still flagged."""
        held = self.supervisor.held_execution_ids()
        self.supervisor.cancel(executions.cancel_requested(held, self.redis))

    def _check_requirements_drift(self) -> None:
        """A recycle broadcast missed while the channel was down shows up as a
        new requirements hash; act on it as if it had been heard."""
        current = self._current_hash()
        known = self.supervisor.known_hash
        if current is not None and known is not None and current != known:
            self.recycle("requirements changed while the control channel was away")
        elif known is None:
            self.supervisor.known_hash = current

    def _current_hash(self) -> str | None:
        try:
            return cached_hash(self.redis)
        except redis.RedisError:
            return None

    def _guard_redis(self, step: Callable[[], None]) -> None:
        """Run a step that needs Redis; while Redis is down the pool goes on."""
        if self.outage.guard(step):  # Redis is back, and may have restarted empty
            self.stream.forget_group()


def run_pool(size: int | None = None) -> None:
    """Entry point of `bifrost worker`."""
    ProcessPool(size).run()
