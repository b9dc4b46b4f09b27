"""The execution template: a small process each worker forks its executions from.

A fork costs in proportion to what the forking process has loaded (its page
tables are copied, and every page either side writes afterwards is copied
again). The worker process has loaded a lot: Redis's client, the settings,
the install engine, sometimes the store. The template is a fresh interpreter
holding only what an execution needs before user code runs (the executor,
the result encoder, the import hook, the sandbox): a third of the worker's
size. It is started by the worker once its packages are installed, with the
same `sys.path`, and lives as long as the worker.

Between the two, a socket pair carries length-prefixed frames:
- worker -> template, once: the set-up (worker id, install outcome, limits,
  paths), as JSON;
- worker -> template, per execution: `{"order", "workspace"}` as JSON (the
  worker reads the workspace files ahead over its own Redis connection, so
  the execution imports without one);
- worker -> template, while an execution runs: `{"cancel": id}` to kill it
  (a frame, not a signal: a cancel can only ever reach the order it names);
- template -> worker: the outcome's JSON bytes, as the execution encoded them.
The template dies with the worker (`PR_SET_PDEATHSIG`), and its executions
die with it.

Run as `python -m src.services.execution.template FD`.
"""

from __future__ import annotations

import json
import logging
import select
import signal
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from src.foundation.hardening import harden_process
from src.services.execution.execution_process import (
    _PR_SET_PDEATHSIG,
    ExecutionRunner,
    Limits,
    _prctl,
    become_subreaper,
)
from src.services.execution.protocol import WorkOrder, WorkResult
from src.services.execution.results import failure
from src.services.installer.outcome import InstallOutcome

logger = logging.getLogger(__name__)

_HEADER = struct.Struct("!Q")
# How often an idle template looks for processes an execution left behind.
IDLE_SECONDS = 0.5
# A template that has not answered this long after the execution's deadline is stuck.
ANSWER_GRACE_SECONDS = 5.0
START_SECONDS = 30.0


def send_frame(sock: socket.socket, data: bytes) -> None:
    sock.sendall(_HEADER.pack(len(data)) + data)


def recv_frame(sock: socket.socket) -> bytes | None:
    """One frame; None at end of file."""
    header = _recv_exactly(sock, _HEADER.size)
    if header is None:
        return None
    (size,) = _HEADER.unpack(header)
    return _recv_exactly(sock, size)


def _recv_exactly(sock: socket.socket, size: int) -> bytes | None:
    chunks: list[bytes] = []
    while size:
        chunk = sock.recv(min(size, 1 << 20))
        if not chunk:
            return None
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)


# --- the worker's side ------------------------------------------------------------


class Template:
    """The worker's handle on its template process (started on first use,
    started again if it dies)."""

    def __init__(self, worker_id: str, setup: dict[str, Any]) -> None:
        self.worker_id = worker_id
        self.setup = setup
        self.process: subprocess.Popen[bytes] | None = None
        self.sock: socket.socket | None = None

    def start(self) -> None:
        mine, theirs = socket.socketpair()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "src.services.execution.template", str(theirs.fileno())],
            pass_fds=(theirs.fileno(),), cwd=Path(__file__).resolve().parents[3],
            stdin=subprocess.DEVNULL,
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
        if payload is None:
            code = self._stop()
            payload = failure(f"WorkerDied: the execution template exited (code {code}) "
                              "during the execution", int((time.monotonic() - started) * 1000))
        return WorkResult(type="result", id=str(order.get("id", "")), worker_id=self.worker_id,
                          payload=payload)

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
            if ready:
                return recv_frame(self.sock)

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


def template_setup(worker_id: str, install: InstallOutcome | None, limits: Limits,
                   scratch_root: Path, data_dir: Path, packages_dir: Path) -> dict[str, Any]:
    return {"worker_id": worker_id, "install": install, "sys_path": sys.path,
            "limits": {"timeout": limits.timeout, "max_result_bytes": limits.max_result_bytes,
                       "memory_mb": limits.memory_mb},
            "scratch_root": str(scratch_root), "data_dir": str(data_dir),
            "packages_dir": str(packages_dir)}


# --- the template's side ------------------------------------------------------------


def main(fd: int) -> None:
    _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)  # the worker is gone: so are we
    harden_process()
    become_subreaper()
    sock = socket.socket(fileno=fd)
    frame = recv_frame(sock)
    if frame is None:
        return
    setup = json.loads(frame)
    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr,
        format=f"%(asctime)s %(levelname)s template {setup['worker_id']} %(name)s: %(message)s",
    )
    sys.path[:] = setup["sys_path"]
    from src.services.execution.sandbox import build_confinement
    from src.services.execution.virtual_import import (
        install_virtual_import_hook,
        read_workspace_from_cache_only,
    )

    install_virtual_import_hook()
    read_workspace_from_cache_only()
    data_dir, packages_dir = Path(setup["data_dir"]), Path(setup["packages_dir"])

    def confine(root: Path) -> Any:
        return build_confinement(data_dir, packages_dir, scratch_root=root)

    runner = ExecutionRunner(setup["worker_id"], setup["install"], Limits(**setup["limits"]),
                             Path(setup["scratch_root"]), confine)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # the worker ends us, by closing the socket
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        _serve(sock, runner)
    finally:
        runner.close()


def _serve(sock: socket.socket, runner: ExecutionRunner) -> None:
    while True:
        runner.clean_up()
        ready, _, _ = select.select([sock], [], [], IDLE_SECONDS)
        if not ready:
            continue
        frame = recv_frame(sock)
        if frame is None:
            return  # the worker closed its end: it is stopping
        message = json.loads(frame)
        if "order" not in message:
            continue  # a cancel that came after its execution had ended
        order = message["order"]
        result = runner.run(order, message["workspace"], _cancel_watch(sock, order["id"]))
        send_frame(sock, result["payload"])


def _cancel_watch(sock: socket.socket, order_id: str) -> Callable[[], bool]:
    """Whether the worker sent a cancel for this order (nothing else can
    arrive while it runs: the worker sends the next order after the answer)."""
    cancelled = False

    def check() -> bool:
        nonlocal cancelled
        while not cancelled and select.select([sock], [], [], 0)[0]:
            frame = recv_frame(sock)
            if frame is None:
                return True  # the worker is gone: nobody wants this outcome
            cancelled = json.loads(frame).get("cancel") == order_id
        return cancelled

    return check


if __name__ == "__main__":
    main(int(sys.argv[1]))
