"""Run one work item inside a worker process and describe what happened."""

from __future__ import annotations

import importlib
import inspect
import json
import time
from typing import Any

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from src.services.execution.protocol import (
    WHOLE_INSTALL,
    ExecutionStatus,
    InstallOutcome,
    WorkItem,
    WorkResult,
)
from src.services.execution.virtual_import import reset_workspace_modules


def execute_item(
    item: WorkItem, worker_id: str, install: InstallOutcome | None = None
) -> WorkResult:
    """Import `item["module"]`, call its function with the parameters, and
    return a result; never raises (the worker must outlive any user code).
    `install` is this worker's start-up outcome, to explain a missing module."""
    started = time.monotonic()
    try:
        value = _call(item)
        json.dumps(value)  # the result travels as JSON; refuse what cannot
    except (Exception, SystemExit) as exc:
        # SystemExit too: a workflow calling sys.exit() must not end the worker.
        error = f"{type(exc).__name__}: {exc}"
        if isinstance(exc, ModuleNotFoundError) and install is not None:
            error += _install_failure_for(exc.name, install)
        return _result(item, worker_id, started, "Failed", None, error)
    return _result(item, worker_id, started, "Success", value, None)


def _install_failure_for(module: str | None, install: InstallOutcome) -> str:
    """Why the package providing `module` is missing, when its install failed."""
    if not module:
        return ""
    wanted = canonicalize_name(module.split(".")[0])
    for failure in install["failed"]:
        if failure["package"] == WHOLE_INSTALL:
            name = None  # the whole install failed: any missing module may be why
        else:
            try:
                name = canonicalize_name(Requirement(failure["package"]).name)
            except InvalidRequirement:
                continue
        if name is None or name == wanted:
            return (f" (the requirement {failure['package']} failed to install: "
                    f"{failure['error'][-500:]})")
    return ""


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
