"""Messages between a pool and its worker processes.

They cross process boundaries through multiprocessing queues, so they are plain
dicts of strings, numbers and bytes described by TypedDicts: a user's objects
never cross (an execution's result travels as the JSON bytes its own process
encoded), so nothing a workflow returns can break the pool that reads them.
"""

from __future__ import annotations

from typing import Any, Literal, NotRequired, TypedDict

from src.services.installer.outcome import InstallOutcome

ExecutionStatus = Literal["Pending", "Running", "Success", "Failed", "Timeout"]


class WorkItem(TypedDict):
    """One execution as the workflow function sees it: parameters decoded."""

    id: str
    module: str
    function: str
    parameters: dict[str, Any]


class WorkOrder(TypedDict):
    """One execution as the pool hands it to a worker process.

    The parameters stay the JSON text the API accepted (`parameters_json`):
    only the execution's own process decodes them, so nothing a user sent is
    ever pickled between processes. `parameters` (already decoded) is
    accepted too, for callers inside one process.
    """

    id: str
    module: str
    function: str
    parameters_json: NotRequired[str]
    parameters: NotRequired[dict[str, Any]]
    timeout: NotRequired[float]


class ExecutionOutcome(TypedDict):
    """How an execution ended, as its own process encoded it (JSON)."""

    status: ExecutionStatus
    result: Any
    error: str | None
    duration_ms: float
    notes: list[str]


class WorkResult(TypedDict):
    """A worker's answer for one execution. `payload` is the JSON encoding of an
    `ExecutionOutcome`, produced by the execution's process (or by the worker
    when that process died without one): bytes, never a user's objects.
    `peak_rss_kb`: the execution process's peak resident memory (KiB, its
    `ru_maxrss` when the template reaped it); None when not known.
    `stdout`, `stderr`: the last part of what the execution printed to each
    (`BIFROST_EXECUTION_OUTPUT_BYTES`), saying how much came before it."""

    type: Literal["result"]
    id: str
    worker_id: str
    payload: bytes
    peak_rss_kb: NotRequired[int | None]
    stdout: NotRequired[str]
    stderr: NotRequired[str]


class WorkerInstalling(TypedDict):
    """Sent when the start-up install begins, and again when it starts or
    stops waiting for something (`waiting_for`: what, or None)."""

    type: Literal["installing"]
    worker_id: str
    pid: int
    waiting_for: NotRequired[str | None]


class WorkerReady(TypedDict):
    """Sent once, after the start-up install, before the first item is taken."""

    type: Literal["ready"]
    worker_id: str
    pid: int
    install: InstallOutcome
