"""A pool's side of the execution stream: its consumer group, reading,
acknowledging, taking over entries of pools that died, and the outcomes it
has not saved yet.

Entries are read through a consumer group, so each goes to one pool. An entry
stays pending until its execution's outcome is recorded (then it is
acknowledged and deleted); one held by a dead pool is claimed by another after
`BIFROST_CLAIM_IDLE_SECONDS`: run if it never started, marked `Failed` if it had.

An outcome is saved, then its entry acknowledged. While Redis is down,
outcomes wait in `unsaved`, in the order they came, and are written on a later
turn. Only an outage keeps one waiting: an outcome Redis refuses (too large,
out of memory) is replaced by a `Failed` record saying why, and when even that
is refused it is dropped, so no outcome is retried forever or blocks those
behind it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, cast

import redis

from src.core import metrics_store
from src.foundation.redis_client import get_redis
from src.foundation.settings import Settings
from src.services.execution import executions
from src.services.execution.protocol import WorkOrder

# The pool's log lines keep one logger name, whichever of its parts writes them.
logger = logging.getLogger("src.services.execution.process_pool")

# Entries of dead pools taken over per heartbeat, at most.
RECLAIM_BATCH = 50

Entry = tuple[str, dict[str, Any]]  # a stream entry: its id and fields
Outcome = tuple[str, str | None, dict[str, Any]]  # execution id, entry id, record changes


class StreamConsumer:
    """One pool reading the execution stream as the consumer `consumer`."""

    def __init__(self, consumer: str, settings: Settings,
                 on_redis_down: Callable[[Exception], None]) -> None:
        self.consumer = consumer
        self.settings = settings
        self._on_redis_down = on_redis_down
        self.backlog: list[Entry] = []  # claimed, not yet handed to a worker
        self.unsaved: list[Outcome] = []  # Redis was down when they came
        self._group_ready = False

    @property
    def redis(self) -> redis.Redis:
        return get_redis(self.settings.redis_url)

    # --- the group ----------------------------------------------------------------

    def ensure_group(self) -> None:
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

    def forget_group(self) -> None:
        """Redis may have restarted empty: make the group again before using it."""
        self._group_ready = False

    # --- reading and acknowledging ------------------------------------------------

    def read(self, count: int, block_ms: int) -> None:
        """When no claimed entry waits, read up to `count` new ones into the
        backlog, waiting at most `block_ms` for them."""
        if self.backlog:
            return
        self.ensure_group()
        try:
            response: Any = self.redis.xreadgroup(
                executions.GROUP, self.consumer, {executions.STREAM_KEY: ">"},
                count=count, block=block_ms,
            )
        except redis.ResponseError as exc:
            if "NOGROUP" in str(exc):  # Redis lost the group: make it again
                self._group_ready = False
                return
            raise
        for _stream, entries in response or []:
            self.backlog.extend(entries)

    def take(self) -> tuple[str, WorkOrder] | None:
        """The backlog's next work order and its entry id; malformed entries
        on the way are dropped. None when the backlog is empty."""
        while self.backlog:
            entry_id, fields = self.backlog.pop(0)
            order = executions.parse_entry(fields)
            if order is not None:
                return entry_id, order
            self._drop_malformed(entry_id, fields)
        return None

    def ack(self, entry_id: str, counted: metrics_store.Increments | None = None) -> None:
        """The entry is done with: acknowledge it and delete it from the stream,
        adding what its end `counted` to the fleet's metrics in the same round trip."""
        with self.redis.pipeline() as pipe:
            pipe.xack(executions.STREAM_KEY, executions.GROUP, entry_id)
            pipe.xdel(executions.STREAM_KEY, entry_id)
            if counted:
                metrics_store.stage(pipe, counted)
            pipe.execute()

    def _drop_malformed(self, entry_id: str, fields: dict[str, Any]) -> None:
        logger.warning("Dropping malformed stream entry %s", entry_id)
        execution_id = fields.get("id")
        if isinstance(execution_id, str) and executions.get_execution(execution_id, self.redis):
            executions.update_execution(execution_id, self.redis, status="Failed",
                                        error="the queued execution could not be read")
        self.ack(entry_id)

    # --- entries of other pools ---------------------------------------------------

    def reclaim(self, held: list[str]) -> None:
        """Keep the entries in `held` (those this pool's workers run) ours,
        and take over those of pools that died."""
        if held:
            # Claiming resets the idle time another pool would judge us by.
            self.redis.xclaim(executions.STREAM_KEY, executions.GROUP, self.consumer,
                              min_idle_time=0, message_ids=cast("list[Any]", held), justid=True)
        _next, claimed, *_ = self.redis.xautoclaim(
            executions.STREAM_KEY, executions.GROUP, self.consumer,
            min_idle_time=int(self.settings.claim_idle_seconds * 1000), start_id="0-0",
            count=RECLAIM_BATCH,
        )
        for entry_id, fields in claimed:
            self._take_over(entry_id, fields)

    def _take_over(self, entry_id: str, fields: dict[str, Any] | None) -> None:
        item = executions.parse_entry(fields or {})
        record = executions.get_execution(item["id"], self.redis) if item else None
        if item is None:
            self.ack(entry_id)
        elif record is not None and record["status"] in executions.FINAL_STATUSES:
            self.ack(entry_id)  # finished, but its pool died before acknowledging
        elif record is not None and record["status"] == "Running":
            logger.warning("Execution %s was running on a pool that died", item["id"])
            executions.update_execution(
                item["id"], self.redis, status="Failed",
                error="PoolDied: the pool running this execution stopped "
                      f"(worker {record.get('worker_id')})",
            )
            self.ack(entry_id, ended("Failed", None))  # how long it ran is not known
        else:
            self.backlog.append((entry_id, fields or {}))  # parsed above: never empty

    # --- outcomes -----------------------------------------------------------------

    def record_outcome(self, execution_id: str, entry_id: str | None,
                       changes: dict[str, Any]) -> None:
        """Save an execution's end (after any still unsaved), then acknowledge its entry."""
        self.unsaved.append((execution_id, entry_id, changes))
        self.flush_unsaved()

    def flush_unsaved(self) -> None:
        """Write finished executions. While Redis is down they wait for the
        next turn; one that Redis refuses (too large, out of memory) is
        recorded as `Failed` saying why, so it never blocks those behind it."""
        while self.unsaved:
            execution_id, entry_id, changes = self.unsaved[0]
            try:
                self._save(execution_id, entry_id, changes)
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                self._on_redis_down(exc)
                return
            self.unsaved.pop(0)

    def _save(self, execution_id: str, entry_id: str | None, changes: dict[str, Any]) -> None:
        try:
            executions.update_execution(execution_id, self.redis, **changes)
        except (redis.ConnectionError, redis.TimeoutError):
            raise
        except (redis.RedisError, ValueError, TypeError, RecursionError) as exc:
            logger.error("Execution %s: its outcome could not be saved: %s", execution_id, exc)
            failed = {**changes, "status": "Failed", "result": None, "notes": [],
                      "error": f"ResultNotSaved: the outcome could not be saved ({exc})"[:2000]}
            changes = failed  # what is counted is what was recorded
            try:
                executions.update_execution(execution_id, self.redis, **failed)
            except (redis.ConnectionError, redis.TimeoutError):
                raise
            except redis.RedisError as again:
                logger.error("Execution %s: not even its failure could be saved (%s); "
                             "dropping it", execution_id, again)
        counted = ended(changes["status"], changes.get("duration_ms"))
        if entry_id is not None:
            self.ack(entry_id, counted)
        else:
            metrics_store.record(counted, self.redis)


def ended(status: str, duration_ms: Any) -> metrics_store.Increments:
    """What an execution's end adds to the fleet's metrics (src.core.metrics_store)."""
    counted = metrics_store.Increments().count(metrics_store.EXECUTIONS, {"status": status})
    if isinstance(duration_ms, int | float):
        counted.observe(metrics_store.EXECUTION_DURATION, None, duration_ms / 1000)
    return counted
