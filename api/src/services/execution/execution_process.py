"""One fresh process per execution, forked from the execution template.

The template (`template.py`) holds the worker's `sys.path` and import hook and
little else; for each execution it forks a child, which runs the workflow
function and dies (`execution_child.py`). Nothing an execution does (a
monkeypatch, a global, a thread, a stray subprocess) outlives it or reaches
the next one. The child for the next order is forked ahead of time and sets
itself up while it waits.

The runner here is the parent's side: it reads the child's outcome with the
execution's deadline and size limit, answers the child's requests for
workspace files meanwhile (`workspace_requests.py`), kills the whole process
group on timeout, cancel or overflow, and reaps every process the execution
left behind (as the child subreaper it inherits the orphans, including those
that started sessions of their own).
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import select
import shutil
import signal
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from src.confinement.uid import ExecutionUid
from src.foundation.timing import ms_since
from src.services.execution.execution_child import ChildSetup, Confinement, run_child
from src.services.execution.limits import Limits, timeout_of
from src.services.execution.output_capture import OutcomeReader, OutputTail
from src.services.execution.process_limit import TaskBound
from src.services.execution.processes import (
    children,
    empty_directory,
    is_subreaper,
    kill_group,
    reap_with_usage,
    settle_memory,
    write_all,
)
from src.services.execution.protocol import WorkOrder, WorkResult
from src.services.execution.results import failure
from src.services.execution.virtual_import import prefetch_workspace
from src.services.execution.workspace_requests import (
    WorkspaceReader,
    answer_here,
    answer_waiting_request,
)
from src.services.installer.outcome import InstallOutcome

# How often the runner looks at the cancel flag while an execution runs.
POLL_SECONDS = 0.1
# Room for the outcome's own fields around a result of the maximum size.
ENVELOPE_BYTES = 128 * 1024
REAP_SECONDS = 2.0
# After its outcome (or a kill) an execution's process exits within moments;
# the runner waits this long at most to reap it and read its peak memory.
EXIT_WAIT_SECONDS = 0.5


@dataclass
class _Spare:
    """A child forked ahead of its order: set up, confined, waiting on a pipe."""

    pid: int
    order_fd: int  # the worker writes the order here
    result_fd: int  # and reads the outcome here
    stdout_fd: int  # and what it prints (non-blocking)
    stderr_fd: int
    workspace: socket.socket  # and answers its requests for workspace files here


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
        *,
        also_emptied: Sequence[Path] = (),
        tasks: TaskBound | None = None,
        uid: ExecutionUid | None = None,
    ) -> None:
        """`scratch_root`: a directory of this worker's own, made here, under
        which executions get their scratch dir (working directory, TMPDIR and
        HOME; given to `uid`, which they drop to); `confine(scratch_root)`
        builds their sandbox; `also_emptied`: other directories only they write
        in (a private /dev/shm), emptied after each; `tasks`: their task bound."""
        self.worker_id = worker_id
        self.install = install
        self.limits = limits
        self._hunt_orphans = is_subreaper()
        scratch_root.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._scratch_root = scratch_root
        # One scratch dir, emptied between executions: cheaper than a new one each time.
        self._scratch = scratch_root / "run"
        self._scratch.mkdir(mode=0o700, exist_ok=True)
        if uid is not None:
            uid.give(scratch_root, self._scratch)
        self.confinement = confine(scratch_root) if confine is not None else None
        self._emptied = (self._scratch, *also_emptied)
        self._child_setup = ChildSetup(worker_id, install, self._scratch, self.confinement,
                                       limits.memory_mb, limits.max_result_bytes,
                                       tasks or TaskBound(), uid)
        self._spare: _Spare | None = None
        self._last_child: int | None = None
        self._dying: set[int] = set()  # killed, not yet reaped
        # (wait status, peak RSS in KiB) of the last execution's process, once reaped.
        self._exit: tuple[int | None, int | None] | None = None
        settle_memory()

    def close(self) -> None:
        self.clean_up(prepare=False)
        if self._spare is not None:
            kill_group(self._spare.pid)
            self._dying.add(self._spare.pid)
            for fd in (self._spare.order_fd, self._spare.result_fd, self._spare.stdout_fd,
                       self._spare.stderr_fd):
                os.close(fd)
            self._spare.workspace.close()
            self._spare = None
        deadline = time.monotonic() + REAP_SECONDS
        while self._dying and time.monotonic() < deadline:
            self._reap_dying(block=True)
        if self.confinement is not None:
            self.confinement.close()
        shutil.rmtree(self._scratch_root, ignore_errors=True)

    def run(self, order: WorkOrder, workspace: dict[str, Any] | None = None,
            cancelled: Callable[[], bool] = lambda: False,
            read: WorkspaceReader | None = None) -> WorkResult:
        """Run one order in a child; answers as soon as the child's outcome is
        in. What the child left behind is cleaned up by `clean_up`, which the
        worker calls after handing the answer on (or the next `run` does).
        `workspace`: the files the order's module loads, read ahead (see
        `prefetch_workspace`); read here when not given. `cancelled` is asked
        every `POLL_SECONDS` while the order runs; `read` answers the child's
        requests for other workspace files (this process reads the module
        cache itself when not given)."""
        if self._last_child is not None or self._spare is None:
            self.clean_up()
        spare, self._spare = self._spare, None
        assert spare is not None
        started = time.monotonic()
        timeout = timeout_of(order, self.limits.timeout)
        self._last_child, self._exit = spare.pid, None
        output = {spare.stdout_fd: OutputTail(self.limits.output_bytes),
                  spare.stderr_fd: OutputTail(self.limits.output_bytes)}
        try:
            if workspace is None:
                workspace = prefetch_workspace(str(order.get("module", "")))
            _send_order(spare.order_fd, order, workspace)
            payload = self._await(spare, started, timeout, cancelled, output,
                                  read or answer_here)
            for fd, tail in output.items():  # printed before the outcome was written
                tail.drain(fd)
        finally:
            for fd in (spare.result_fd, spare.stdout_fd, spare.stderr_fd):
                os.close(fd)
            spare.workspace.close()
        # Its outcome is in (or it was killed): it is exiting; its exit tells its peak.
        _, peak_kib = self._exit or reap_with_usage(spare.pid, EXIT_WAIT_SECONDS)
        return WorkResult(type="result", id=str(order.get("id", "")), worker_id=self.worker_id,
                          payload=payload, peak_rss_kb=peak_kib,
                          stdout=output[spare.stdout_fd].text(),
                          stderr=output[spare.stderr_fd].text())

    def clean_up(self, prepare: bool = True) -> None:
        """End the last execution's process group and whatever else it left
        running (its outcome is in: nothing there has work left), reap what
        has died, empty the scratch dir, and fork the next order's child.
        Never waits for a process; the worker also calls it while idle."""
        if self._last_child is not None:
            kill_group(self._last_child)
            self._dying.add(self._last_child)
            self._last_child = None
            for directory in self._emptied:
                empty_directory(directory)
        if self._hunt_orphans:  # as the subreaper, whatever escaped the group comes to us
            spare = {self._spare.pid} if self._spare else set()
            for orphan in set(children()) - self._dying - spare:
                kill_group(orphan)
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
        stdout_read, stdout_write = os.pipe()
        stderr_read, stderr_write = os.pipe()
        ours, theirs = socket.socketpair()
        gc.freeze()  # the child's collections leave the template's objects (and pages) alone
        pid = self._fork()
        if pid == 0:  # the execution's process: never returns
            for fd in (order_write, result_read, stdout_read, stderr_read, ours.detach()):
                os.close(fd)
            # What it prints goes to its own pipes, never to the platform's log.
            os.dup2(stdout_write, 1)
            os.dup2(stderr_write, 2)
            os.close(stdout_write)
            os.close(stderr_write)
            run_child(order_read, result_write, theirs.detach(), self._child_setup)
        for fd in (order_read, result_write, stdout_write, stderr_write):
            os.close(fd)
        theirs.close()
        os.set_blocking(stdout_read, False)
        os.set_blocking(stderr_read, False)
        return _Spare(pid, order_write, result_read, stdout_read, stderr_read, ours)

    def _fork(self) -> int:
        """os.fork(); while the task bound is reached by what the last
        execution left (killed, not yet reaped), reap and try again."""
        deadline = time.monotonic() + REAP_SECONDS
        while True:
            try:
                return os.fork()
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise
                self.clean_up(prepare=False)
                time.sleep(0.01)

    def _await(self, spare: _Spare, started: float, timeout: float,
               cancelled: Callable[[], bool], output: dict[int, OutputTail],
               read: WorkspaceReader) -> bytes:
        """The child's outcome bytes, or a failure the worker writes itself;
        what it prints meanwhile goes into `output` (by descriptor), and its
        workspace requests are answered with `read`."""
        pid, read_fd, asks = spare.pid, spare.result_fd, spare.workspace
        deadline = started + timeout
        reader = OutcomeReader(read_fd, self.limits.max_result_bytes + ENVELOPE_BYTES)
        pidfd = os.pidfd_open(pid)
        poller = select.poll()
        for fd in (read_fd, pidfd, asks.fileno(), *output):
            poller.register(fd, select.POLLIN)
        try:
            while True:
                if cancelled():
                    return self._stop(pid, started, "Cancelled: the execution was cancelled",
                                      "Failed")
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return self._stop(pid, started, f"execution exceeded {timeout:g} s",
                                      "Timeout")
                ready = {fd for fd, _ in poller.poll(min(POLL_SECONDS, remaining) * 1000)}
                for fd in ready & output.keys():
                    if not output[fd].read(fd):  # its end closed: nothing more comes
                        poller.unregister(fd)
                if asks.fileno() in ready:
                    refused = answer_waiting_request(asks, read, deadline)
                    if refused == "":
                        poller.unregister(asks)
                    elif refused is not None:
                        return self._stop(pid, started, refused, "Failed")
                if read_fd in ready and not reader.eof:
                    reader.read()
                    if reader.eof:
                        poller.unregister(read_fd)
                    if reader.complete:  # the exit is cleaned up later
                        return reader.data()
                    if reader.size > reader.cap:
                        return self._stop(pid, started, self._too_large(reader.cap), "Failed")
                if pidfd in ready:
                    # What it wrote is in the pipe now; a descendant holding the
                    # pipe open must not keep us waiting for an end of file.
                    reader.drain()
                    break
        finally:
            os.close(pidfd)
        return reader.data() if reader.size else self._died(pid, started)

    def _died(self, pid: int, started: float) -> bytes:
        """The failure of a child that exited without an outcome."""
        self._last_child = None
        self._exit = reap_with_usage(pid, REAP_SECONDS)  # it has exited: its status says how
        self._last_child = pid  # still end its group (clean_up)
        return failure(self._death_reason(self._exit[0]), ms_since(started))

    def _too_large(self, cap: int) -> str:
        return (f"ResultTooLarge: the execution sent more than {cap} bytes, over the limit "
                f"of {self.limits.max_result_bytes} bytes (BIFROST_MAX_RESULT_BYTES)")

    def _stop(self, pid: int, started: float, reason: str, status: Any) -> bytes:
        kill_group(pid)
        return failure(reason, ms_since(started), status)

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


def _send_order(fd: int, order: WorkOrder, workspace: dict[str, Any]) -> None:
    """The order, and the workspace files its module loads, to the waiting
    child; then end of file."""
    message = {"order": order, "workspace": workspace}
    try:
        write_all(fd, json.dumps(message).encode())
    except BrokenPipeError:
        pass  # the child died waiting: its exit status will say so
    finally:
        os.close(fd)
