"""`/api/executions`: queue a workflow function, read its outcome, cancel it."""

from __future__ import annotations

import logging
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, status
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field, ValidationError, field_validator

from src.api.auth import admin_only
from src.api.execution_waits import ended_executions
from src.api.routers.models import StrictRequest
from src.foundation.settings import get_settings
from src.services.execution.executions import (
    FINAL_STATUSES,
    ExecutionFinished,
    ExecutionNotFound,
    QueueFull,
    cancel_execution,
    enqueue_execution,
    get_execution,
    recent_executions,
)
from src.services.execution.protocol import ExecutionStatus
from src.services.execution.results import MAX_RESULT_DEPTH, json_depth

logger = logging.getLogger(__name__)

router = APIRouter(prefix="/api/executions", tags=["executions"], dependencies=admin_only)

# ASCII identifiers only: the module is imported by name in a worker, and a
# dotted path of plain identifiers cannot name a file outside the workspace.
IDENTIFIER = r"[A-Za-z_][A-Za-z0-9_]*"
MAX_MODULE_LENGTH = 200
MAX_FUNCTION_LENGTH = 100
# Ids are uuid4 hex; anything much longer is not one of ours.
MAX_ID_LENGTH = 64
# Executions one list answer can hold.
RECENT_LIMIT = 500


class ExecutionIn(StrictRequest):
    module: str = Field(
        min_length=1, max_length=MAX_MODULE_LENGTH, pattern=rf"^{IDENTIFIER}(\.{IDENTIFIER})*$"
    )
    function: str = Field(min_length=1, max_length=MAX_FUNCTION_LENGTH, pattern=rf"^{IDENTIFIER}$")
    parameters: dict[str, Any] = Field(default_factory=dict)
    # Seconds; at most BIFROST_EXECUTION_TIMEOUT, which is also the default.
    timeout: float | None = Field(default=None, gt=0)
    # Seconds to wait for the end before answering (at most BIFROST_MAX_WAIT_SECONDS).
    wait: float | None = Field(default=None, ge=0)

    @field_validator("wait")
    @classmethod
    def wait_within_the_maximum(cls, wait: float | None) -> float | None:
        return _checked_wait(wait)

    @field_validator("timeout")
    @classmethod
    def timeout_within_the_maximum(cls, timeout: float | None) -> float | None:
        most = get_settings().execution_timeout
        if timeout is not None and timeout > most:
            raise ValueError(
                f"timeout {timeout:g} s is over the maximum of {most:g} s "
                "(BIFROST_EXECUTION_TIMEOUT)"
            )
        return timeout

    @field_validator("function")
    @classmethod
    def function_is_public(cls, function: str) -> str:
        # A workflow names a function its module defines for callers; '_name'
        # is private and '__class__', '__init__', ... are Python's own machinery.
        if function.startswith("_"):
            raise ValueError(
                f"function {function!r} starts with '_': name a public function "
                "of the module (private and dunder names cannot be run)"
            )
        return function


class ExecutionQueued(BaseModel):
    id: str


class ExecutionOut(BaseModel):
    id: str
    status: ExecutionStatus
    result: Any = None
    error: str | None = None
    worker_id: str | None = None
    duration_ms: float | None = None
    # Where the result was changed to fit JSON (NaN -> null, ...).
    notes: list[str] = Field(default_factory=list)
    # The peak resident memory of the execution's process, in MB (when known).
    peak_rss_mb: float | None = None
    # The last part of what it printed (BIFROST_EXECUTION_OUTPUT_BYTES of each).
    stdout: str | None = None
    stderr: str | None = None


class ExecutionSummary(BaseModel):
    id: str
    status: ExecutionStatus
    module: str
    function: str
    error: str | None = None
    worker_id: str | None = None
    duration_ms: float | None = None
    created_at: float
    updated_at: float
    peak_rss_mb: float | None = None  # as in ExecutionOut


class ExecutionList(BaseModel):
    executions: list[ExecutionSummary]


class CancelOut(BaseModel):
    id: str
    status: str
    was: ExecutionStatus


def _checked_wait(wait: float | None) -> float | None:
    most = get_settings().max_wait_seconds
    if wait is not None and wait > most:
        raise ValueError(f"wait {wait:g} s is over the maximum of {most:g} s "
                         "(BIFROST_MAX_WAIT_SECONDS)")
    return wait


@router.post("", status_code=status.HTTP_202_ACCEPTED,
             response_model=ExecutionQueued | ExecutionOut,
             responses={200: {"model": ExecutionOut, "description": "ended within `wait`"}})
async def create_execution(body: ExecutionIn) -> Any:
    """Queue it; 202 with its id. With `wait`, 200 and the final record once
    it ends within that time, else 202 and the record as it stands."""
    try:
        execution_id = await run_in_threadpool(
            enqueue_execution, body.module, body.function, body.parameters,
            timeout=body.timeout)
    except QueueFull as exc:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, str(exc),
                            headers={"Retry-After": str(exc.retry_after)}) from exc
    if body.wait is None:
        return ExecutionQueued(id=execution_id)
    return await _waited(execution_id, body.wait)


async def _waited(execution_id: str, wait: float) -> JSONResponse:
    """The record after waiting up to `wait` s for its end: 200 when final, else 202."""
    latest: list[ExecutionOut] = []

    async def ended() -> bool:
        latest[:] = [await run_in_threadpool(read_execution, execution_id)]
        return latest[0].status in FINAL_STATUSES

    await ended_executions().wait(execution_id, wait, ended)
    record = latest[-1]
    code = status.HTTP_200_OK if record.status in FINAL_STATUSES else status.HTTP_202_ACCEPTED
    return JSONResponse(record.model_dump(mode="json"), status_code=code)


@router.get("", response_model=ExecutionList)
def list_executions(limit: Annotated[int, Query(ge=1, le=RECENT_LIMIT)] = 50) -> ExecutionList:
    """The newest executions (their records are kept a day), newest first."""
    summaries = []
    for record in recent_executions(limit):
        try:
            summaries.append(ExecutionSummary.model_validate(
                {**record, "updated_at": record.get("updated_at", record["created_at"])}))
        except (ValidationError, KeyError, TypeError, AttributeError) as exc:
            # Not a record the platform wrote: left out of the list, never a 500.
            logger.warning("Executions list: a stored record left out (%s)", str(exc)[:500])
    return ExecutionList(executions=summaries)


@router.get("/{execution_id}", response_model=ExecutionOut,
            responses={202: {"model": ExecutionOut, "description": "not ended within `wait`"}})
async def get_execution_route(
        execution_id: str,
        wait: Annotated[float | None, Query(ge=0, description="seconds to wait for its end "
                                                              "(BIFROST_MAX_WAIT_SECONDS)")] = None,
) -> Any:
    """The record; with `wait`, once it ends within that time (200), else as
    it stands (202)."""
    try:
        wait = _checked_wait(wait)
    except ValueError as exc:
        raise HTTPException(422, str(exc)) from exc
    if wait is None:
        return await run_in_threadpool(read_execution, execution_id)
    await run_in_threadpool(read_execution, execution_id)  # 404 before any waiting
    return await _waited(execution_id, wait)


def read_execution(execution_id: str) -> ExecutionOut:
    try:
        record = None if len(execution_id) > MAX_ID_LENGTH else get_execution(execution_id)
    except ValueError as exc:  # not JSON: written by something other than the platform
        return _unreadable(execution_id, f"the stored record is not JSON ({exc})")
    if record is None:
        raise _not_found(execution_id)
    try:
        out = ExecutionOut(
            id=execution_id,
            status=record["status"],
            result=record.get("result"),
            error=record.get("error"),
            worker_id=record.get("worker_id"),
            duration_ms=record.get("duration_ms"),
            notes=record.get("notes") or [],
            peak_rss_mb=record.get("peak_rss_mb"),
            stdout=record.get("stdout"),
            stderr=record.get("stderr"),
        )
    except (ValidationError, KeyError, TypeError, AttributeError) as exc:
        return _unreadable(execution_id, f"the stored record has the wrong shape ({exc})")
    if (depth := json_depth(out.result)) > MAX_RESULT_DEPTH:
        return _unreadable(execution_id, f"the stored result is nested {depth} levels deep, "
                                         f"over the limit of {MAX_RESULT_DEPTH}")
    return out


def _unreadable(execution_id: str, reason: str) -> ExecutionOut:
    """What a record the platform could not have written reads as: Failed,
    saying why (never a 500, whatever is in Redis)."""
    logger.warning("Execution %s: %s", execution_id, reason[:500])
    return ExecutionOut(id=execution_id, status="Failed",
                        error=f"RecordUnreadable: {reason[:2000]}")


@router.post("/{execution_id}/cancel", status_code=status.HTTP_202_ACCEPTED,
             response_model=CancelOut)
def cancel(execution_id: str) -> CancelOut:
    """A Pending execution never runs; a Running one has its process group
    killed by the pool running it. Either way it ends `Failed` (cancelled)."""
    if len(execution_id) > MAX_ID_LENGTH:
        raise _not_found(execution_id)
    try:
        was = cancel_execution(execution_id)
    except ExecutionNotFound as exc:
        raise _not_found(execution_id) from exc
    except ExecutionFinished as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from exc
    return CancelOut(id=execution_id, status="cancelling" if was == "Running" else "cancelled",
                     was=was)


def _not_found(execution_id: str) -> HTTPException:
    return HTTPException(status.HTTP_404_NOT_FOUND,
                         f"execution {execution_id[:MAX_ID_LENGTH]} not found")
