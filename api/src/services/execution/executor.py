"""Run one work item inside a worker process and describe what happened."""

from __future__ import annotations

import importlib
import inspect
import json
import time
from typing import Any

from src.services.execution.protocol import ExecutionStatus, WorkItem, WorkResult
from src.services.execution.virtual_import import reset_workspace_modules


def execute_item(item: WorkItem, worker_id: str) -> WorkResult:
    """Import `item["module"]`, call its function with the parameters, and
    return a result; never raises (the worker must outlive any user code)."""
    started = time.monotonic()
    try:
        value = _call(item)
        json.dumps(value)  # the result travels as JSON; refuse what cannot
    except (Exception, SystemExit) as exc:
        # SystemExit too: a workflow calling sys.exit() must not end the worker.
        return _result(item, worker_id, started, "Failed", None, f"{type(exc).__name__}: {exc}")
    return _result(item, worker_id, started, "Success", value, None)


def _call(item: WorkItem) -> Any:
    reset_workspace_modules()  # edits to workspace files take effect at once
    module = importlib.import_module(item["module"])
    function = getattr(module, item["function"])
    value = function(**item.get("parameters", {}))
    if inspect.isawaitable(value):
        import asyncio  # only async workflows pay for the import

        async def _await() -> Any:
            return await value

        value = asyncio.run(_await())
    return value


def _result(
    item: WorkItem,
    worker_id: str,
    started: float,
    status: ExecutionStatus,
    value: Any,
    error: str | None,
) -> WorkResult:
    return WorkResult(
        type="result",
        id=item.get("id", ""),
        status=status,
        result=value,
        error=error,
        worker_id=worker_id,
        duration_ms=int((time.monotonic() - started) * 1000),
    )
