"""Executions: the stream pools read from, and the records the API answers with.

The API appends an entry to the stream `bifrost:executions` and writes the
record `bifrost:execution:<id>` (status `Pending`). Pools read the stream
through the consumer group `bifrost:pools`, so each entry goes to one pool;
the pool writes `Running` when a worker takes it and the final status when the
worker answers. Records expire after `RESULT_TTL_SECONDS`.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any, TypedDict

import redis

from src.core.redis_client import get_redis
from src.services.execution.protocol import ExecutionStatus, WorkItem

STREAM_KEY = "bifrost:executions"
GROUP = "bifrost:pools"
RECORD_PREFIX = "bifrost:execution:"
RESULT_TTL_SECONDS = 86400
# Entries trimmed beyond this many (acknowledged entries are deleted anyway).
STREAM_MAXLEN = 100_000

FINAL_STATUSES: frozenset[str] = frozenset({"Success", "Failed", "Timeout"})


class ExecutionRecord(TypedDict):
    id: str
    status: ExecutionStatus
    result: Any
    error: str | None
    worker_id: str | None
    duration_ms: int | None
    module: str
    function: str
    created_at: float
    updated_at: float


def record_key(execution_id: str) -> str:
    return RECORD_PREFIX + execution_id


def enqueue_execution(
    module: str, function: str, parameters: dict[str, Any], client: redis.Redis | None = None
) -> str:
    """Record the execution as Pending, then append it to the stream; its id."""
    client = client or get_redis()
    execution_id = uuid.uuid4().hex
    now = time.time()
    record = ExecutionRecord(
        id=execution_id, status="Pending", result=None, error=None, worker_id=None,
        duration_ms=None, module=module, function=function, created_at=now, updated_at=now,
    )
    item = WorkItem(id=execution_id, module=module, function=function, parameters=parameters)
    with client.pipeline() as pipe:
        pipe.set(record_key(execution_id), json.dumps(record), ex=RESULT_TTL_SECONDS)
        pipe.xadd(STREAM_KEY, {"item": json.dumps(item)}, maxlen=STREAM_MAXLEN, approximate=True)
        pipe.execute()
    return execution_id


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
    record: dict[str, Any] = dict(get_execution(execution_id, client) or {
        "id": execution_id, "status": "Pending", "result": None, "error": None,
        "worker_id": None, "duration_ms": None, "module": "", "function": "",
        "created_at": time.time(),
    })
    record.update(changes, updated_at=time.time())
    client.set(record_key(execution_id), json.dumps(record), ex=RESULT_TTL_SECONDS)
    return ExecutionRecord(**record)
