"""Call one workflow function and describe what happened.

This runs inside the execution's own process (forked from a worker for each
execution, see `execution_process.py`); the outcome it returns is encoded to
JSON there, by `results.encode_outcome`.
"""

from __future__ import annotations

import importlib
import inspect
import time
from typing import Any, TypedDict

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from src.foundation.timing import ms_since
from src.services.execution.protocol import ExecutionStatus, WorkItem
from src.services.execution.virtual_import import reset_workspace_modules
from src.services.installer.outcome import WHOLE_INSTALL, InstallOutcome


class ItemOutcome(TypedDict):
    id: str
    status: ExecutionStatus
    result: Any  # whatever the function returned: not yet JSON
    error: str | None
    worker_id: str
    duration_ms: float


def execute_item(
    item: WorkItem,
    worker_id: str,
    install: InstallOutcome | None = None,
    *,
    fresh_process: bool = False,
) -> ItemOutcome:
    """Import `item["module"]`, call its function with the parameters, and
    return a result; never raises (the caller must outlive any user code).
    `install` is this worker's start-up outcome, to explain a missing module.
    `fresh_process`: this process has loaded no workspace module yet, so
    there are none to forget first."""
    started = time.monotonic()
    try:
        value = _call(item, reset=not fresh_process)
    except (Exception, SystemExit) as exc:
        # SystemExit too: a workflow calling sys.exit() fails, it does not vanish.
        error = describe_exception(exc)
        if isinstance(exc, ModuleNotFoundError) and install is not None:
            error += _install_failure_for(exc.name, install)
        return _result(item, worker_id, started, "Failed", None, error)
    return _result(item, worker_id, started, "Success", value, None)


def describe_exception(exc: BaseException) -> str:
    """`Type: message`, even for an exception whose `__str__` itself raises."""
    name = type(exc).__name__
    try:
        message = str(exc)
    except Exception as inner:  # user code decides what str() does
        message = f"<the message could not be read: {type(inner).__name__} in __str__>"
    return f"{name}: {message}"


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


def _call(item: WorkItem, reset: bool = True) -> Any:
    if reset:
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
) -> ItemOutcome:
    return ItemOutcome(
        id=item.get("id", ""),
        status=status,
        result=value,
        error=error,
        worker_id=worker_id,
        duration_ms=ms_since(started),
    )
