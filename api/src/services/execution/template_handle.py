"""The worker's handle on its execution template (`template.py`): starts it,
sends it orders, answers their executions' workspace requests, reads their
outcomes, and starts it again if it dies."""

from __future__ import annotations

import json
import os
import select
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from src.foundation.hardening import for_executions
from src.foundation.settings import get_settings
from src.foundation.timing import ms_since
from src.services.execution.frames import OUTCOME, WORKSPACE_REQUEST, recv_frame, send_frame
from src.services.execution.limits import Limits
from src.services.execution.protocol import WorkOrder, WorkResult
from src.services.execution.results import failure
from src.services.execution.workspace_requests import answer_request
from src.services.installer.outcome import InstallOutcome

# A template that has not answered this long after the execution's deadline is stuck.
ANSWER_GRACE_SECONDS = 5.0


class Template:
    """The worker's handle on its template process (started on first use,
    started again if it dies)."""

    def __init__(self, worker_id: str, setup: dict[str, Any],
                 answer: Callable[[bytes], bytes] = answer_request) -> None:
        """`answer`: the answer to an execution's workspace request."""
        self.worker_id = worker_id
        self.setup = setup
        self.answer = answer
        self.process: subprocess.Popen[bytes] | None = None
        self.sock: socket.socket | None = None

    def start(self) -> None:
        mine, theirs = socket.socketpair()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "src.services.execution.template", str(theirs.fileno())],
            pass_fds=(theirs.fileno(),), cwd=Path(__file__).resolve().parents[3],
            stdin=subprocess.DEVNULL,
            # A fresh interpreter: it holds none of the worker's memory, and
            # nothing in its environment reaches Redis or the store.
            env=for_executions(os.environ),
        )
        theirs.close()
        self.sock = mine
        send_frame(mine, json.dumps(self.setup).encode())

    def run(self, order: WorkOrder, workspace: dict[str, Any], timeout: float,
            cancelled: Any) -> WorkResult:
        """The outcome of `order`; `cancelled()` is asked while it runs."""
        started = time.monotonic()
        if self.process is None or self.process.poll() is not None:
            self.restart()
        assert self.sock is not None and self.process is not None
        payload: bytes | None
        try:
            send_frame(self.sock, json.dumps({"order": order, "workspace": workspace}).encode())
            payload = self._answer(str(order.get("id", "")),
                                   started + timeout + ANSWER_GRACE_SECONDS, cancelled)
        except OSError:
            payload = None
        peak_kib, output = self._after() if payload is not None else (None, {})
        if payload is None:
            code = self._stop()
            payload = failure(f"WorkerDied: the execution template exited (code {code}) "
                              "during the execution", ms_since(started))
        return WorkResult(type="result", id=str(order.get("id", "")), worker_id=self.worker_id,
                          payload=payload, peak_rss_kb=peak_kib, **output)

    def _after(self) -> tuple[int | None, dict[str, str]]:
        """The frame that follows an outcome: its execution's peak resident
        memory in KiB (None when not known) and the tails of its output."""
        details: Any = None
        try:
            assert self.sock is not None
            ready, _, _ = select.select([self.sock], [], [], ANSWER_GRACE_SECONDS)
            frame = recv_frame(self.sock) if ready else None
            details = json.loads(frame) if frame else None
        except (OSError, ValueError):
            ready = False
        if not ready:  # out of step with the template: start it afresh next time
            self._stop()
        if not isinstance(details, dict):
            return None, {}
        peak = details.get("peak_rss_kb")
        output = {name: details[name] for name in ("stdout", "stderr")
                  if isinstance(details.get(name), str)}
        return (peak if isinstance(peak, int) and not isinstance(peak, bool) else None), output

    def _answer(self, order_id: str, deadline: float, cancelled: Any) -> bytes | None:
        assert self.sock is not None and self.process is not None
        forwarded = False
        while True:
            if not forwarded and cancelled():
                forwarded = True
                send_frame(self.sock, json.dumps({"cancel": order_id}).encode())
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            ready, _, _ = select.select([self.sock], [], [], min(0.1, remaining))
            if not ready:
                continue
            frame = recv_frame(self.sock)
            if frame is None or frame[:1] == OUTCOME:
                return frame and frame[1:]
            if frame[:1] == WORKSPACE_REQUEST:
                send_frame(self.sock, b'{"answer": ' + self.answer(frame[1:]) + b"}")
            else:
                return None  # out of step with the template

    def restart(self) -> None:
        self._stop()
        self.start()

    def _stop(self) -> int | None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.kill()
        code = self.process.wait()
        self.process = None
        return code

    def close(self) -> None:
        """Let the template end (end of file on its socket), then make sure."""
        if self.sock is not None:
            self.sock.close()
            self.sock = None
        if self.process is not None:
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
            self.process = None


def worker_template(worker_id: str, install: InstallOutcome | None) -> tuple[Template, Limits]:
    """The template of a worker, set up from the settings, and its executions'
    limits. Their scratch dirs live in the data dir, which the sandbox hides:
    an execution reaches its own and no other."""
    settings = get_settings()
    limits = Limits(timeout=settings.execution_timeout,
                    max_result_bytes=settings.max_result_bytes,
                    memory_mb=settings.execution_memory_mb,
                    output_bytes=settings.execution_output_bytes,
                    max_pids=settings.execution_max_pids)
    scratch_root = settings.data_path / "scratch" / f"{os.getpid()}-{worker_id}"
    remove_scratch_of_dead_workers(scratch_root.parent)
    setup = template_setup(worker_id, install, limits, scratch_root, settings.data_path,
                           settings.packages_dir, settings.execution_shm,
                           settings.execution_uid)
    return Template(worker_id, setup), limits


def template_setup(worker_id: str, install: InstallOutcome | None, limits: Limits,
                   scratch_root: Path, data_dir: Path, packages_dir: Path,
                   shm: str = "private", execution_uid: int = 0) -> dict[str, Any]:
    """What `template.py` starts from. `shm`: BIFROST_EXECUTION_SHM;
    `execution_uid`: BIFROST_EXECUTION_UID."""
    return {"worker_id": worker_id, "install": install, "sys_path": sys.path,
            "limits": {"timeout": limits.timeout, "max_result_bytes": limits.max_result_bytes,
                       "memory_mb": limits.memory_mb, "output_bytes": limits.output_bytes,
                       "max_pids": limits.max_pids},
            "shm": shm, "execution_uid": execution_uid,
            "scratch_root": str(scratch_root), "data_dir": str(data_dir),
            "packages_dir": str(packages_dir)}


def remove_scratch_of_dead_workers(scratch_dir: Path) -> None:
    """Scratch roots are named `<pid>-<worker id>`; a killed worker cannot
    remove its own, so whoever starts next does."""
    if not scratch_dir.is_dir():
        return
    for root in scratch_dir.iterdir():
        pid = root.name.split("-", 1)[0]
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            shutil.rmtree(root, ignore_errors=True)
