"""Executions: the stream pools read from, and the records the API answers with.

The API appends an entry to the stream `bifrost:executions` and writes the
record `bifrost:execution:<id>` (status `Pending`). Pools read the stream
through the consumer group `bifrost:pools`, so each entry goes to one pool;
the pool writes `Running` when a worker takes it (only if it is still
`Pending`: a cancelled one is skipped) and the final status when the worker
answers. Records expire after `RESULT_TTL_SECONDS`.

The stream is never trimmed: an entry leaves it only when its execution's
outcome is recorded (acknowledged and deleted). When more than
`BIFROST_MAX_QUEUED_EXECUTIONS` entries wait (no pool has taken them; the
running ones do not count), new executions are refused
(`QueueFull`, 503 with Retry-After) rather than old ones dropped.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
import uuid
from typing import Any, NotRequired, TypedDict

import redis

from src.core import metrics_store
from src.foundation.redis_client import get_redis
from src.foundation.settings import get_settings
from src.services.execution.protocol import ExecutionStatus, WorkOrder

logger = logging.getLogger(__name__)

STREAM_KEY = "bifrost:executions"
GROUP = "bifrost:pools"
RECORD_PREFIX = "bifrost:execution:"
CANCEL_PREFIX = "bifrost:execution-cancel:"
# An execution's id is published here when its record becomes final, so that
# callers waiting for it (`wait` on the API) are woken, never polling. Pub/sub
# is server-wide: database N uses `<channel>@N`, as the control channel does.
ENDED_CHANNEL = "bifrost:executions:ended"
# The newest executions' ids, scored by creation time, for listing.
RECENT_KEY = "bifrost:executions:recent"
RECENT_KEPT = 500
RESULT_TTL_SECONDS = 86400
# What a refused caller is told to wait before trying again.
QUEUE_FULL_RETRY_AFTER_SECONDS = 5

FINAL_STATUSES: frozenset[str] = frozenset({"Success", "Failed", "Timeout"})
CANCELLED_ERROR = "Cancelled: the execution was cancelled"


class QueueFull(Exception):
    """Too many executions wait already; nothing was queued."""

    def __init__(self, waiting: int, limit: int) -> None:
        super().__init__(f"{waiting} executions are waiting, the limit is {limit} "
                         "(BIFROST_MAX_QUEUED_EXECUTIONS); try again later")
        self.retry_after = QUEUE_FULL_RETRY_AFTER_SECONDS


class ExecutionNotFound(Exception):
    pass


class ExecutionFinished(Exception):
    """The execution ended already; there is nothing to cancel."""


class ExecutionRecord(TypedDict):
    id: str
    status: ExecutionStatus
    result: Any
    error: str | None
    worker_id: str | None
    duration_ms: float | None
    module: str
    function: str
    timeout: NotRequired[float | None]
    notes: NotRequired[list[str]]
    peak_rss_mb: NotRequired[float | None]  # the execution process's peak resident memory
    stdout: NotRequired[str]  # the last part of what it printed (BIFROST_EXECUTION_OUTPUT_BYTES)
    stderr: NotRequired[str]
    created_at: float
    updated_at: float


def ended_channel(db: int) -> str:
    return ENDED_CHANNEL if db == 0 else f"{ENDED_CHANNEL}@{db}"


def _ended_channel_of(client: redis.Redis) -> str:
    return ended_channel(int(client.connection_pool.connection_kwargs.get("db") or 0))


def record_key(execution_id: str) -> str:
    return RECORD_PREFIX + execution_id


def cancel_key(execution_id: str) -> str:
    return CANCEL_PREFIX + execution_id


def enqueue_execution(
    module: str,
    function: str,
    parameters: dict[str, Any],
    client: redis.Redis | None = None,
    *,
    timeout: float | None = None,
) -> str:
    """Record the execution as Pending, then append it to the stream; its id.
    Raises `QueueFull` when the backlog is at its bound."""
    client = client or get_redis()
    limit = get_settings().max_queued_executions
    waiting = waiting_executions(client)
    if waiting >= limit:
        raise QueueFull(waiting, limit)
    execution_id = uuid.uuid4().hex
    now = time.time()
    record = ExecutionRecord(
        id=execution_id, status="Pending", result=None, error=None, worker_id=None,
        duration_ms=None, module=module, function=function, timeout=timeout,
        created_at=now, updated_at=now,
    )
    entry: dict[str, str] = {"id": execution_id, "module": module, "function": function,
                             "parameters": json.dumps(parameters)}
    if timeout is not None:
        entry["timeout"] = repr(float(timeout))
    with client.pipeline() as pipe:
        pipe.set(record_key(execution_id), json.dumps(record), ex=RESULT_TTL_SECONDS)
        pipe.xadd(STREAM_KEY, entry)  # type: ignore[arg-type]
        pipe.zadd(RECENT_KEY, {execution_id: now})
        pipe.zremrangebyrank(RECENT_KEY, 0, -RECENT_KEPT - 1)
        pipe.execute()
    return execution_id


def waiting_executions(client: redis.Redis) -> int:
    """Entries no pool has taken yet: the stream's length less what the pools
    hold (delivered, not yet acknowledged: running, or about to)."""
    length = int(client.xlen(STREAM_KEY))  # type: ignore[arg-type]
    try:
        held = int(client.xpending(STREAM_KEY, GROUP)["pending"])  # type: ignore[index]
    except redis.ResponseError:  # no group yet: no pool has read the stream
        held = 0
    return max(length - held, 0)


def recent_executions(limit: int, client: redis.Redis | None = None) -> list[ExecutionRecord]:
    """The newest `limit` executions whose records are still kept, newest first."""
    client = client or get_redis()
    ids: list[Any] = client.zrevrange(RECENT_KEY, 0, max(0, limit - 1))  # type: ignore[assignment]
    if not ids:
        return []
    raw: list[Any] = client.mget([record_key(str(i)) for i in ids])  # type: ignore[assignment]
    records = []
    for text in raw:
        if text is None:
            continue
        try:
            records.append(json.loads(str(text)))
        except ValueError:
            logger.warning("An execution record that is not JSON is left out of the list")
    return records


def parse_entry(fields: dict[str, Any]) -> WorkOrder | None:
    """A stream entry as a work order; None when it is not one of ours.

    The parameters stay JSON text: only the execution's process decodes them.
    Entries written before this layout (one `item` field) are read too."""
    if "item" in fields:
        return _parse_legacy(fields["item"])
    names = ("id", "module", "function")
    if not all(isinstance(fields.get(name), str) and fields[name] for name in names):
        return None
    order = WorkOrder(id=fields["id"], module=fields["module"], function=fields["function"],
                      parameters_json=str(fields.get("parameters") or "{}"))
    try:
        if fields.get("timeout"):
            order["timeout"] = float(fields["timeout"])
    except (TypeError, ValueError):
        return None
    return order


def _parse_legacy(raw: Any) -> WorkOrder | None:
    try:
        item = json.loads(raw)
    except (TypeError, ValueError, RecursionError):
        return None
    names = ("id", "module", "function")
    if not isinstance(item, dict) or not all(isinstance(item.get(k), str) for k in names):
        return None
    return WorkOrder(id=item["id"], module=item["module"], function=item["function"],
                     parameters_json=json.dumps(item.get("parameters", {})))


# Running only if still Pending (or the record was lost), in one round trip.
_START = """
local raw = redis.call('GET', KEYS[1])
local record
if raw then
    record = cjson.decode(raw)
    if record['status'] ~= 'Pending' then return 0 end
else
    record = cjson.decode(ARGV[3])
end
record['status'] = 'Running'
record['worker_id'] = ARGV[1]
record['updated_at'] = tonumber(ARGV[2])
redis.call('SET', KEYS[1], cjson.encode(record), 'EX', tonumber(ARGV[4]))
return 1
"""


def start_execution(execution_id: str, worker_id: str, client: redis.Redis) -> bool:
    """Mark it Running for `worker_id`, only if it is still Pending (or its
    record was lost); False when it was cancelled or ended meanwhile."""
    started = client.register_script(_START)(
        keys=[record_key(execution_id)],
        args=[worker_id, time.time(), json.dumps(_new_record(execution_id)), RESULT_TTL_SECONDS],
    )
    return bool(started)


def cancel_execution(execution_id: str, client: redis.Redis | None = None) -> ExecutionStatus:
    """Cancel a Pending or Running execution: a Pending one is `Failed`
    (cancelled) at once and never runs; a Running one is flagged, and the pool
    running it kills its process group. Returns the status it had."""
    client = client or get_redis()
    key = record_key(execution_id)
    with client.pipeline() as pipe:
        while True:
            try:
                pipe.watch(key)
                raw = pipe.get(key)
                if raw is None:
                    raise ExecutionNotFound(execution_id)
                record = json.loads(str(raw))
                status: ExecutionStatus = record.get("status", "Pending")
                if status in FINAL_STATUSES:
                    raise ExecutionFinished(f"execution {execution_id} already ended: {status}")
                pipe.multi()
                pipe.set(cancel_key(execution_id), "1", ex=RESULT_TTL_SECONDS)
                if status == "Pending":
                    record.update(status="Failed", error=CANCELLED_ERROR, updated_at=time.time())
                    pipe.set(key, json.dumps(record), ex=RESULT_TTL_SECONDS)
                    pipe.publish(_ended_channel_of(client), execution_id)
                    # It ends here, never having run: counted with the pools' ends.
                    metrics_store.stage(pipe, metrics_store.Increments().count(
                        metrics_store.EXECUTIONS, {"status": "Failed"}))
                pipe.execute()
                break
            except redis.WatchError:
                continue
    if status == "Running":
        from src.services.execution.control import publish_cancel

        publish_cancel(execution_id, client)
    return status


def cancel_requested(execution_ids: list[str], client: redis.Redis) -> set[str]:
    """Which of these executions someone asked to cancel."""
    if not execution_ids:
        return set()
    flags = client.mget([cancel_key(i) for i in execution_ids])
    return {i for i, flag in zip(execution_ids, flags, strict=True) if flag}  # type: ignore[arg-type]


def _new_record(execution_id: str) -> dict[str, Any]:
    return {"id": execution_id, "status": "Pending", "result": None, "error": None,
            "worker_id": None, "duration_ms": None, "module": "", "function": "",
            "created_at": time.time()}


def get_execution(execution_id: str, client: redis.Redis | None = None) -> ExecutionRecord | None:
    raw = (client or get_redis()).get(record_key(execution_id))
    return None if raw is None else json.loads(str(raw))


def update_execution(
    execution_id: str,
    client: redis.Redis | None = None,
    **changes: Any,
) -> ExecutionRecord:
    """Merge `changes` into the record (re-created if Redis lost it)."""
    client = client or get_redis()
    try:
        stored: Any = get_execution(execution_id, client)
    except ValueError:  # not JSON: not the platform's, so written afresh
        stored = None
    record: dict[str, Any] = dict(stored if isinstance(stored, dict)
                                  else _new_record(execution_id))
    record.update(changes, updated_at=time.time())
    client.set(record_key(execution_id), json.dumps(record), ex=RESULT_TTL_SECONDS)
    if record.get("status") in FINAL_STATUSES:
        # Only wakes callers that wait: one that is not woken reads the
        # record when its wait runs out.
        with contextlib.suppress(redis.RedisError):
            client.publish(_ended_channel_of(client), execution_id)
    return ExecutionRecord(**record)
