"""The execution's own process: what a child forked by the execution template
does, from the fork to its exit. It never returns.

Before user code runs, while it waits for its order, the child:
- starts a session of its own (so its process group is its own), and dies
  with its parent (`PR_SET_PDEATHSIG`);
- is confined where the kernel allows it (see `sandbox.py`);
- swaps every inherited descriptor but stdio, its two pipes and its
  workspace socket (`workspace_requests.py`) for /dev/null, so user code
  cannot reach anything its parent holds;
- takes its bound on tasks (`process_limit.py`), drops to the execution
  uid where the platform runs as root (`src/confinement/uid.py`), and gets an address-space
  limit (`BIFROST_EXECUTION_MEMORY_MB` above what its parent maps).
Then it reads its order, encodes its outcome to JSON itself and writes the
bytes to its result pipe.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import signal
import socket
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn, Protocol

from src.confinement.uid import ExecutionUid
from src.foundation.timing import ms_since
from src.services.execution.executor import describe_exception, execute_item
from src.services.execution.process_limit import TaskBound
from src.services.execution.processes import READ_CHUNK, die_with_parent, write_all
from src.services.execution.protocol import WorkItem, WorkOrder
from src.services.execution.results import encode_outcome, failure
from src.services.execution.virtual_import import seed_workspace
from src.services.execution.workspace_requests import AskTheWorker
from src.services.installer.outcome import InstallOutcome


class Confinement(Protocol):
    def apply(self, scratch_dir: Path) -> bool: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class ChildSetup:
    """What every execution of one worker shares."""

    worker_id: str
    install: InstallOutcome | None
    scratch: Path  # working directory, TMPDIR and HOME
    confinement: Confinement | None
    memory_mb: int  # 0: unbounded
    max_result_bytes: int
    tasks: TaskBound = field(default_factory=TaskBound)  # the bound on its tasks
    uid: ExecutionUid | None = None  # the uid it drops to (None: the platform's)


def run_child(order_fd: int, result_fd: int, workspace_fd: int,
              setup: ChildSetup) -> NoReturn:
    """Set up, wait for the order, run it, write the outcome, exit.
    `workspace_fd`: its end of the socket it asks for workspace files on."""
    started = time.monotonic()
    try:
        set_up_child(setup, keep=(0, 1, 2, order_fd, result_fd, workspace_fd))
        order, workspace = receive_order(order_fd)
        started = time.monotonic()
        source = AskTheWorker(socket.socket(fileno=workspace_fd))
        payload = execute_order(setup, order, workspace, source)
    except BaseException as exc:  # anything at all: the worker still gets an answer
        payload = failure(describe_exception(exc), ms_since(started))
    try:
        for stream in (sys.stdout, sys.stderr):  # before the outcome: after it, we may die
            with contextlib.suppress(Exception):
                stream.flush()
        write_all(result_fd, payload)
    finally:
        os._exit(0)


def set_up_child(setup: ChildSetup, keep: tuple[int, ...]) -> None:
    """Everything that does not depend on the order, done before it comes."""
    template = os.getppid()
    os.setsid()
    die_with_parent()
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1):
        signal.signal(signum, signal.SIG_DFL)
    os.chdir(setup.scratch)
    os.environ["TMPDIR"] = os.environ["HOME"] = str(setup.scratch)
    tempfile.tempdir = str(setup.scratch)
    setup.tasks.enter()
    if setup.uid is not None:
        setup.uid.become()
        # A change of uid clears the parent-death signal: set it again, and
        # end here if the template died in between.
        die_with_parent()
        if os.getppid() != template:
            os._exit(1)
    if setup.confinement is not None:
        setup.confinement.apply(setup.scratch)
    replace_inherited_descriptors(keep)
    limit_memory(setup.memory_mb)


def receive_order(fd: int) -> tuple[WorkOrder, dict[str, Any]]:
    chunks: list[bytes] = []
    while chunk := os.read(fd, READ_CHUNK):
        chunks.append(chunk)
    os.close(fd)
    message = json.loads(b"".join(chunks))
    return message["order"], message["workspace"]


def execute_order(setup: ChildSetup, order: WorkOrder, workspace: dict[str, Any],
                  source: AskTheWorker | None = None) -> bytes:
    seed_workspace(workspace, source)
    item = work_item(order)
    outcome = execute_item(item, setup.worker_id, setup.install, fresh_process=True)
    error = outcome["error"]
    if error and error.startswith("MemoryError") and setup.memory_mb:
        error += (f" (the execution went over its memory limit of "
                  f"{setup.memory_mb} MB, BIFROST_EXECUTION_MEMORY_MB)")
    return encode_outcome(outcome["status"], outcome["result"], error,
                          outcome["duration_ms"], max_bytes=setup.max_result_bytes)


def work_item(order: WorkOrder) -> WorkItem:
    parameters: Any = order.get("parameters", {})
    if "parameters_json" in order:
        parameters = json.loads(order["parameters_json"])
    if not isinstance(parameters, dict):
        raise TypeError("parameters must be a JSON object")
    return WorkItem(id=str(order.get("id", "")), module=str(order.get("module", "")),
                    function=str(order.get("function", "")), parameters=parameters)


def replace_inherited_descriptors(keep: tuple[int, ...]) -> None:
    """Point every other inherited descriptor at /dev/null. Replacing rather
    than closing keeps the numbers taken, so a Python object that still wraps
    one (a queue, a socket) closes /dev/null when collected, never a
    descriptor the execution opened since."""
    null = os.open(os.devnull, os.O_RDWR)
    try:
        for name in os.listdir("/proc/self/fd"):
            fd = int(name)
            if fd in keep or fd == null:
                continue
            with contextlib.suppress(OSError):  # the listing's own descriptor, gone by now
                os.dup2(null, fd, inheritable=False)
    finally:
        os.close(null)


def limit_memory(memory_mb: int) -> None:
    if memory_mb <= 0:
        return
    with open("/proc/self/statm") as statm:
        mapped = int(statm.read().split()[0]) * resource.getpagesize()
    limit = mapped + memory_mb * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
