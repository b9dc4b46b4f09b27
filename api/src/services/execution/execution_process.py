"""One fresh process per execution, forked from the execution template.

The template (`template.py`) holds the worker's `sys.path` and import hook and
little else; for each execution it forks a child, which runs the workflow
function and dies. Nothing an execution does (a monkeypatch, a global, a
thread, a stray subprocess) outlives it or reaches the next one. The child for
the next order is forked ahead of time and sets itself up while it waits.

The child, before user code runs:
- starts a session of its own (so its process group is its own), and dies
  with its parent (`PR_SET_PDEATHSIG`);
- is confined where the kernel allows it (see `sandbox.py`);
- swaps every inherited descriptor but stdio and its two pipes for
  /dev/null, so user code cannot reach anything its parent holds;
- gets an address-space limit (`BIFROST_EXECUTION_MEMORY_MB` above what its
  parent maps);
then reads its order, encodes its outcome to JSON itself and writes the bytes
to its result pipe.

The parent reads the pipe with the execution's deadline and size limit, kills
the whole process group on timeout, cancel or overflow, and reaps every
process the execution left behind (as the child subreaper it inherits the
orphans, including those that started sessions of their own).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import gc
import json
import logging
import os
import resource
import select
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from src.foundation.hardening import prctl
from src.services.execution.executor import describe_exception, execute_item
from src.services.execution.protocol import WorkItem, WorkOrder, WorkResult
from src.services.execution.results import encode_outcome, failure
from src.services.execution.virtual_import import prefetch_workspace, seed_workspace
from src.services.installer.outcome import InstallOutcome

logger = logging.getLogger(__name__)

# How often the worker looks at the cancel flag while an execution runs.
POLL_SECONDS = 0.1
READ_CHUNK = 1 << 20
# Room for the outcome's own fields around a result of the maximum size.
ENVELOPE_BYTES = 128 * 1024
REAP_SECONDS = 2.0

_PR_SET_PDEATHSIG = 1
_PR_SET_CHILD_SUBREAPER = 36
_PR_GET_CHILD_SUBREAPER = 37


class Confinement(Protocol):
    def apply(self, scratch_dir: Path) -> bool: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class Limits:
    timeout: float  # seconds; also the most a caller may ask for
    max_result_bytes: int
    memory_mb: int  # 0: unbounded


def become_subreaper() -> bool:
    """Orphans of this process's descendants become its children (Linux), so
    the worker can reap what an execution left running."""
    return _prctl(_PR_SET_CHILD_SUBREAPER, 1)


def _prctl(option: int, value: int) -> bool:
    try:
        prctl(option, value)
    except OSError:
        return False
    return True


def _is_subreaper() -> bool:
    flag = ctypes.c_int(0)
    try:
        prctl(_PR_GET_CHILD_SUBREAPER, ctypes.addressof(flag))
    except OSError:
        return False
    return flag.value == 1


@dataclass
class _Spare:
    """A child forked ahead of its order: set up, confined, waiting on a pipe."""

    pid: int
    order_fd: int  # the worker writes the order here
    result_fd: int  # and reads the outcome here


class ExecutionRunner:
    """Runs work orders, one forked child each; `run` never raises for user code.

    The child for the next order is forked, and sets itself up (session,
    sandbox, descriptors, limits), while the worker is otherwise idle, so an
    order only pays for a write to a pipe. A child runs exactly one order.
    """

    def __init__(
        self,
        worker_id: str,
        install: InstallOutcome | None,
        limits: Limits,
        scratch_root: Path,
        confine: Callable[[Path], Confinement | None] | None = None,
    ) -> None:
        """`scratch_root`: a directory of this worker's own, made here, under
        which executions get their scratch dir (working directory, TMPDIR and
        HOME); `confine(scratch_root)` builds the sandbox executions enter."""
        self.worker_id = worker_id
        self.install = install
        self.limits = limits
        self._hunt_orphans = _is_subreaper()
        scratch_root.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._scratch_root = scratch_root
        # One scratch dir, emptied between executions: cheaper than a new one each time.
        self._scratch = scratch_root / "run"
        self._scratch.mkdir(mode=0o700, exist_ok=True)
        self.confinement = confine(scratch_root) if confine is not None else None
        self._spare: _Spare | None = None
        self._last_child: int | None = None
        self._dying: set[int] = set()  # killed, not yet reaped
        _settle_memory()

    def close(self) -> None:
        self.clean_up(prepare=False)
        if self._spare is not None:
            _kill_group(self._spare.pid)
            self._dying.add(self._spare.pid)
            os.close(self._spare.order_fd)
            os.close(self._spare.result_fd)
            self._spare = None
        deadline = time.monotonic() + REAP_SECONDS
        while self._dying and time.monotonic() < deadline:
            self._reap_dying(block=True)
        if self.confinement is not None:
            self.confinement.close()
        shutil.rmtree(self._scratch_root, ignore_errors=True)

    def run(self, order: WorkOrder, workspace: dict[str, Any] | None = None,
            cancelled: Callable[[], bool] = lambda: False) -> WorkResult:
        """Run one order in a child; answers as soon as the child's outcome is
        in. What the child left behind is cleaned up by `clean_up`, which the
        worker calls after handing the answer on (or the next `run` does).
        `workspace`: the files the order's module loads, read ahead (see
        `prefetch_workspace`); read here when not given. `cancelled` is asked
        every `POLL_SECONDS` while the order runs."""
        if self._last_child is not None or self._spare is None:
            self.clean_up()
        spare, self._spare = self._spare, None
        assert spare is not None
        started = time.monotonic()
        timeout = _timeout_of(order, self.limits.timeout)
        self._last_child = spare.pid
        try:
            if workspace is None:
                workspace = prefetch_workspace(str(order.get("module", "")))
            _send_order(spare.order_fd, order, workspace)
            payload = self._await(spare.pid, spare.result_fd, started, timeout, cancelled)
        finally:
            os.close(spare.result_fd)
        return WorkResult(type="result", id=str(order.get("id", "")), worker_id=self.worker_id,
                          payload=payload)

    def clean_up(self, prepare: bool = True) -> None:
        """End the last execution's process group and whatever else it left
        running (its outcome is in: nothing there has work left), reap what
        has died, empty the scratch dir, and fork the next order's child.
        Never waits for a process; the worker also calls it while idle."""
        if self._last_child is not None:
            _kill_group(self._last_child)
            self._dying.add(self._last_child)
            self._last_child = None
            _empty(self._scratch)
        if self._hunt_orphans:  # as the subreaper, whatever escaped the group comes to us
            spare = {self._spare.pid} if self._spare else set()
            for orphan in set(_children()) - self._dying - spare:
                _kill_group(orphan)
                with contextlib.suppress(ProcessLookupError):
                    os.kill(orphan, signal.SIGKILL)
                self._dying.add(orphan)
        self._reap_dying(block=False)
        if prepare and self._spare is None:
            self._spare = self._fork_spare()

    def _reap_dying(self, block: bool) -> None:
        for pid in list(self._dying):
            try:
                reaped, _ = os.waitpid(pid, 0 if block else os.WNOHANG)
            except ChildProcessError:
                reaped = pid  # not ours (any more)
            if reaped:
                self._dying.discard(pid)

    def _fork_spare(self) -> _Spare:
        order_read, order_write = os.pipe()
        result_read, result_write = os.pipe()
        gc.freeze()  # the child's collections leave the template's objects (and pages) alone
        pid = os.fork()
        if pid == 0:  # the execution's process: never returns
            os.close(order_write)
            os.close(result_read)
            self._child(order_read, result_write)
        os.close(order_read)
        os.close(result_write)
        return _Spare(pid, order_write, result_read)

    # --- the worker's side -----------------------------------------------------

    def _await(self, pid: int, read_fd: int, started: float, timeout: float,
               cancelled: Callable[[], bool]) -> bytes:
        """The child's outcome bytes, or a failure the worker writes itself."""
        deadline = started + timeout
        cap = self.limits.max_result_bytes + ENVELOPE_BYTES
        chunks: list[bytes] = []
        size = 0
        pidfd = os.pidfd_open(pid)
        poller = select.poll()
        poller.register(read_fd, select.POLLIN)
        poller.register(pidfd, select.POLLIN)
        try:
            eof = False
            while True:
                if cancelled():
                    return self._stop(pid, started, "Cancelled: the execution was cancelled",
                                      "Failed")
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return self._stop(pid, started, f"execution exceeded {timeout:g} s",
                                      "Timeout")
                ready = {fd for fd, _ in poller.poll(min(POLL_SECONDS, remaining) * 1000)}
                if read_fd in ready and not eof:
                    chunk = os.read(read_fd, READ_CHUNK)
                    if not chunk:
                        eof = True
                        poller.unregister(read_fd)
                        if size:  # the whole outcome is in; the exit is cleaned up later
                            return b"".join(chunks)
                    size += len(chunk)
                    chunks.append(chunk)
                    if size > cap:
                        return self._stop(
                            pid, started,
                            f"ResultTooLarge: the execution sent more than {cap} bytes, over "
                            f"the limit of {self.limits.max_result_bytes} bytes "
                            "(BIFROST_MAX_RESULT_BYTES)", "Failed")
                if pidfd in ready:
                    # What it wrote is in the pipe now; a descendant holding the
                    # pipe open must not keep us waiting for an end of file.
                    if not eof:
                        chunks.append(_drain(read_fd, cap - size))
                    break
        finally:
            os.close(pidfd)
        data = b"".join(chunks)
        if data:
            return data
        self._last_child = None
        status = _reap(pid)  # it has exited: its status says how
        self._last_child = pid  # still end its group (clean_up)
        return failure(self._death_reason(status), _ms_since(started))

    def _stop(self, pid: int, started: float, reason: str, status: Any) -> bytes:
        _kill_group(pid)
        return failure(reason, _ms_since(started), status)

    def _death_reason(self, status: int | None) -> str:
        if status is not None and os.WIFSIGNALED(status):
            signum = os.WTERMSIG(status)
            reason = (f"WorkerDied: the execution's process was killed by "
                      f"{signal.Signals(signum).name}")
            if self.limits.memory_mb and signum in (signal.SIGKILL, signal.SIGSEGV,
                                                      signal.SIGABRT, signal.SIGBUS):
                reason += (f" (it may have gone over its memory limit of "
                           f"{self.limits.memory_mb} MB, BIFROST_EXECUTION_MEMORY_MB)")
            return reason
        code = os.WEXITSTATUS(status) if status is not None else None
        return f"WorkerDied: the execution's process exited (code {code}) without a result"

    # --- the child's side --------------------------------------------------------

    def _child(self, order_fd: int, result_fd: int) -> None:
        started = time.monotonic()
        try:
            self._set_up_child(order_fd, result_fd)
            order, workspace = _receive_order(order_fd)
            started = time.monotonic()
            payload = self._execute(order, workspace)
        except BaseException as exc:  # anything at all: the worker still gets an answer
            payload = failure(describe_exception(exc), _ms_since(started))
        try:
            for stream in (sys.stdout, sys.stderr):  # before the outcome: after it, we may die
                with contextlib.suppress(Exception):
                    stream.flush()
            _write_all(result_fd, payload)
        finally:
            os._exit(0)

    def _set_up_child(self, order_fd: int, result_fd: int) -> None:
        """Everything that does not depend on the order, done before it comes."""
        os.setsid()
        _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1):
            signal.signal(signum, signal.SIG_DFL)
        os.chdir(self._scratch)
        os.environ["TMPDIR"] = os.environ["HOME"] = str(self._scratch)
        tempfile.tempdir = str(self._scratch)
        if self.confinement is not None:
            self.confinement.apply(self._scratch)
        _replace_inherited_descriptors(keep=(0, 1, 2, order_fd, result_fd))
        _limit_memory(self.limits.memory_mb)

    def _execute(self, order: WorkOrder, workspace: dict[str, Any]) -> bytes:
        seed_workspace(workspace)
        item = _work_item(order)
        outcome = execute_item(item, self.worker_id, self.install, fresh_process=True)
        error = outcome["error"]
        if error and error.startswith("MemoryError") and self.limits.memory_mb:
            error += (f" (the execution went over its memory limit of "
                      f"{self.limits.memory_mb} MB, BIFROST_EXECUTION_MEMORY_MB)")
        return encode_outcome(outcome["status"], outcome["result"], error,
                              outcome["duration_ms"], max_bytes=self.limits.max_result_bytes)


def _send_order(fd: int, order: WorkOrder, workspace: dict[str, Any]) -> None:
    """The order, and the workspace files its module loads, to the waiting
    child; then end of file."""
    message = {"order": order, "workspace": workspace}
    try:
        _write_all(fd, json.dumps(message).encode())
    except BrokenPipeError:
        pass  # the child died waiting: its exit status will say so
    finally:
        os.close(fd)


def _receive_order(fd: int) -> tuple[WorkOrder, dict[str, Any]]:
    chunks: list[bytes] = []
    while chunk := os.read(fd, READ_CHUNK):
        chunks.append(chunk)
    os.close(fd)
    message = json.loads(b"".join(chunks))
    return message["order"], message["workspace"]


def _settle_memory() -> None:
    """Make the template small before the first fork: a fork copies the page
    tables of every resident page and each execution's first writes copy
    pages, so what start-up freed goes back to the system, and the objects
    that remain are moved out of the collector's reach (a collection in a
    child would touch, and so copy, every one of them)."""
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).malloc_trim(0)
    gc.freeze()


def _timeout_of(order: WorkOrder, most: float) -> float:
    asked = order.get("timeout")
    if isinstance(asked, (int, float)) and not isinstance(asked, bool) and 0 < asked < most:
        return float(asked)
    return most


def _work_item(order: WorkOrder) -> WorkItem:
    parameters: Any = order.get("parameters", {})
    if "parameters_json" in order:
        parameters = json.loads(order["parameters_json"])
    if not isinstance(parameters, dict):
        raise TypeError("parameters must be a JSON object")
    return WorkItem(id=str(order.get("id", "")), module=str(order.get("module", "")),
                    function=str(order.get("function", "")), parameters=parameters)


def _replace_inherited_descriptors(keep: tuple[int, ...]) -> None:
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


def _limit_memory(memory_mb: int) -> None:
    if memory_mb <= 0:
        return
    with open("/proc/self/statm") as statm:
        mapped = int(statm.read().split()[0]) * resource.getpagesize()
    limit = mapped + memory_mb * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _drain(fd: int, most: int) -> bytes:
    os.set_blocking(fd, False)
    chunks: list[bytes] = []
    size = 0
    while size <= most:
        try:
            chunk = os.read(fd, READ_CHUNK)
        except BlockingIOError:
            break
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


def _empty(directory: Path) -> None:
    """Remove what an execution left in its scratch dir."""
    with os.scandir(directory) as entries:
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path, ignore_errors=True)
            else:
                with contextlib.suppress(OSError):
                    os.unlink(entry.path)


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def _reap(pid: int) -> int | None:
    """Wait for `pid` (a child of ours) to end; its status, or None if it was not ours."""
    try:
        _, status = os.waitpid(pid, 0)
    except ChildProcessError:
        return None
    except OSError as exc:
        if exc.errno == errno.EINTR:
            return _reap(pid)
        return None
    return status


def _children() -> list[int]:
    """This process's children, from every thread's `children` list."""
    pids: list[int] = []
    task_dir = Path(f"/proc/{os.getpid()}/task")
    with contextlib.suppress(OSError):
        for task in task_dir.iterdir():
            with contextlib.suppress(OSError):
                pids += [int(p) for p in (task / "children").read_text().split()]
    return pids


def _ms_since(started: float) -> int:
    return int((time.monotonic() - started) * 1000)
