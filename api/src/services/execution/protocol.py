"""Messages between a pool and its worker processes.

They cross process boundaries through multiprocessing queues, so they are plain
dicts (picklable, JSON-ready) described by TypedDicts.
"""

from __future__ import annotations

from typing import Any, Literal, TypedDict

ExecutionStatus = Literal["Pending", "Running", "Success", "Failed", "Timeout"]


# The `package` of a failure that is not one line's: nothing could be installed.
WHOLE_INSTALL = "requirements.txt"


class FailedPackage(TypedDict):
    package: str
    error: str


class InstallOutcome(TypedDict):
    """What one worker's start-up install did (shown by GET /api/workers)."""

    ok: bool
    skipped: bool
    installed: list[str]
    failed: list[FailedPackage]
    duration_ms: int
    requirements_hash: str | None


class WorkItem(TypedDict):
    id: str
    module: str
    function: str
    parameters: dict[str, Any]


class WorkResult(TypedDict):
    type: Literal["result"]
    id: str
    status: ExecutionStatus
    result: Any
    error: str | None
    worker_id: str
    duration_ms: int


class WorkerInstalling(TypedDict):
    """Sent when the start-up install begins."""

    type: Literal["installing"]
    worker_id: str
    pid: int


class WorkerReady(TypedDict):
    """Sent once, after the start-up install, before the first item is taken."""

    type: Literal["ready"]
    worker_id: str
    pid: int
    install: InstallOutcome
