"""One fresh process per execution, forked from the worker that has its packages loaded.

The worker process is a template: it installed the requirements and put the
import hook in place once; for each execution it forks a child, which runs
the workflow function and dies. Nothing an execution does (a monkeypatch, a
global, a thread, a stray subprocess) outlives it or reaches the next one.

The child, before user code runs:
- starts a session of its own (so its process group is its own), and dies
  with the worker (`PR_SET_PDEATHSIG`);
- is confined where the kernel allows it (see `sandbox.py`);
- swaps every inherited descriptor but stdio and its result pipe for
  /dev/null, so user code cannot reach the worker's queues or connections;
- gets an address-space limit (`BIFROST_EXECUTION_MEMORY_MB` above what the
  worker maps);
then encodes its outcome to JSON itself and writes the bytes to the pipe.

The worker reads the pipe with the execution's deadline and size limit, kills
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
from types import FrameType
from typing import Any, Protocol

from src.core.hardening import prctl
from src.services.execution.executor import describe_exception, execute_item
from src.services.execution.protocol import InstallOutcome, WorkItem, WorkOrder, WorkResult
from src.services.execution.results import encode_outcome, failure
from src.services.execution.virtual_import import prefetch_workspace_module

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


class ExecutionRunner:
    """Runs work orders, one forked child each; `run` never raises for user code."""

    def __init__(
        self,
        worker_id: str,
        install: InstallOutcome | None,
        limits: Limits,
        scratch_root: Path,
        confine: Callable[[Path], Confinement | None] | None = None,
    ) -> None:
        """`scratch_root`: a directory of this worker's own, made here, under
        which each execution gets a scratch dir (its working directory and
        TMPDIR); `confine(scratch_root)` builds the sandbox executions enter."""
        self.worker_id = worker_id
        self.install = install
        self.limits = limits
        self.cancel_requested = False
        self._hunt_orphans = _is_subreaper()
        scratch_root.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._scratch_root = scratch_root
        self.confinement = confine(scratch_root) if confine is not None else None
        self._left_behind: tuple[int | None, Path] | None = None

    def request_cancel(self, signum: int, frame: FrameType | None) -> None:
        """SIGUSR1 from the pool: cancel the execution in hand."""
        self.cancel_requested = True

    def close(self) -> None:
        self.clean_up()
        if self.confinement is not None:
            self.confinement.close()
        shutil.rmtree(self._scratch_root, ignore_errors=True)

    def run(self, order: WorkOrder) -> WorkResult:
        """Run one order in a child; answers as soon as the child's outcome is
        in. What the child left behind is cleaned up by `clean_up`, which the
        worker calls after handing the answer on (or the next `run` does)."""
        self.clean_up()
        self.cancel_requested = False
        started = time.monotonic()
        timeout = _timeout_of(order, self.limits.timeout)
        prefetch_workspace_module(str(order.get("module", "")))
        scratch = Path(tempfile.mkdtemp(dir=self._scratch_root))
        read_fd, write_fd = os.pipe()
        gc.freeze()  # the child's collections leave the template's objects (and pages) alone
        pid = os.fork()
        if pid == 0:  # the execution's process: never returns
            os.close(read_fd)
            self._child(order, write_fd, scratch)
        os.close(write_fd)
        self._left_behind = (pid, scratch)
        try:
            payload = self._await(pid, read_fd, started, timeout)
        finally:
            os.close(read_fd)
        return WorkResult(type="result", id=str(order.get("id", "")), worker_id=self.worker_id,
                          payload=payload)

    def clean_up(self) -> None:
        """Reap the last child, kill what it left running, remove its scratch dir."""
        if self._left_behind is None:
            return
        pid, scratch = self._left_behind
        self._left_behind = None
        if pid is not None:
            _reap(pid)
            self._end_group(pid)
        shutil.rmtree(scratch, ignore_errors=True)

    # --- the worker's side -----------------------------------------------------

    def _await(self, pid: int, read_fd: int, started: float, timeout: float) -> bytes:
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
                if self.cancel_requested:
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
        if self._left_behind is not None:
            self._left_behind = (None, self._left_behind[1])  # reaped here, not later
        status = _reap(pid)
        self._end_group(pid)
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

    def _end_group(self, pid: int) -> None:
        """Kill what the execution left running and reap it."""
        _kill_group(pid)
        if not self._hunt_orphans:
            return
        deadline = time.monotonic() + REAP_SECONDS
        while time.monotonic() < deadline:
            orphans = _children()
            if not orphans:
                return
            for orphan in orphans:
                _kill_group(orphan)
                with contextlib.suppress(ProcessLookupError):
                    os.kill(orphan, signal.SIGKILL)
            for orphan in orphans:
                _reap(orphan)
        logger.warning("[%s] processes left by an execution would not die: %s",
                       self.worker_id, _children())

    # --- the child's side --------------------------------------------------------

    def _child(self, order: WorkOrder, write_fd: int, scratch: Path) -> None:
        started = time.monotonic()
        try:
            payload = self._run_in_child(order, write_fd, scratch, started)
        except BaseException as exc:  # anything at all: the worker still gets an answer
            payload = failure(describe_exception(exc), _ms_since(started))
        try:
            _write_all(write_fd, payload)
            for stream in (sys.stdout, sys.stderr):
                with contextlib.suppress(Exception):
                    stream.flush()
        finally:
            os._exit(0)

    def _run_in_child(self, order: WorkOrder, write_fd: int, scratch: Path,
                      started: float) -> bytes:
        os.setsid()
        _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1):
            signal.signal(signum, signal.SIG_DFL)
        os.chdir(scratch)
        os.environ["TMPDIR"] = os.environ["HOME"] = str(scratch)
        tempfile.tempdir = str(scratch)
        if self.confinement is not None:
            self.confinement.apply(scratch)
        _replace_inherited_descriptors(keep=(0, 1, 2, write_fd))
        _limit_memory(self.limits.memory_mb)
        item = _work_item(order)
        outcome = execute_item(item, self.worker_id, self.install, fresh_process=True)
        error = outcome["error"]
        if error and error.startswith("MemoryError") and self.limits.memory_mb:
            error += (f" (the execution went over its memory limit of "
                      f"{self.limits.memory_mb} MB, BIFROST_EXECUTION_MEMORY_MB)")
        return encode_outcome(outcome["status"], outcome["result"], error,
                              outcome["duration_ms"], max_bytes=self.limits.max_result_bytes)


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
