"""`/api/executions`: queue a workflow function, read its outcome."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException, status
from pydantic import BaseModel, Field, field_validator

from src.api.auth import admin_only
from src.routers.models import StrictRequest
from src.services.execution.executions import enqueue_execution, get_execution
from src.services.execution.protocol import ExecutionStatus

router = APIRouter(prefix="/api/executions", tags=["executions"], dependencies=admin_only)

# ASCII identifiers only: the module is imported by name in a worker, and a
# dotted path of plain identifiers cannot name a file outside the workspace.
IDENTIFIER = r"[A-Za-z_][A-Za-z0-9_]*"
MAX_MODULE_LENGTH = 200
MAX_FUNCTION_LENGTH = 100
# Ids are uuid4 hex; anything much longer is not one of ours.
MAX_ID_LENGTH = 64


class ExecutionIn(StrictRequest):
    module: str = Field(
        min_length=1, max_length=MAX_MODULE_LENGTH, pattern=rf"^{IDENTIFIER}(\.{IDENTIFIER})*$"
    )
    function: str = Field(min_length=1, max_length=MAX_FUNCTION_LENGTH, pattern=rf"^{IDENTIFIER}$")
    parameters: dict[str, Any] = Field(default_factory=dict)

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
    duration_ms: int | None = None


@router.post("", status_code=status.HTTP_202_ACCEPTED, response_model=ExecutionQueued)
def create_execution(body: ExecutionIn) -> ExecutionQueued:
    return ExecutionQueued(id=enqueue_execution(body.module, body.function, body.parameters))


@router.get("/{execution_id}", response_model=ExecutionOut)
def read_execution(execution_id: str) -> ExecutionOut:
    record = None if len(execution_id) > MAX_ID_LENGTH else get_execution(execution_id)
    if record is None:
        shown = execution_id[:MAX_ID_LENGTH]
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"execution {shown} not found")
    return ExecutionOut(
        id=record["id"],
        status=record["status"],
        result=record.get("result"),
        error=record.get("error"),
        worker_id=record.get("worker_id"),
        duration_ms=record.get("duration_ms"),
    )
