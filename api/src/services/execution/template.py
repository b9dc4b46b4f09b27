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
- template -> worker, while an execution runs: `r` and the execution's
  request for a workspace file it was not given (`workspace_requests.py`),
  which the worker answers with `{"answer": ...}`;
- template -> worker: `o` and the outcome's JSON bytes, as the execution
  encoded them; then `{"peak_rss_kb", "stdout", "stderr"}`, the execution
  process's peak resident memory (KiB, read from its exit; null when not
  known) and the tails of what it printed, as JSON.
The first byte tells a request from an outcome: both carry bytes the
execution chose.
The template dies with the worker (`PR_SET_PDEATHSIG`), and its executions
die with it. Before its first fork it gives its executions a /dev/shm of
their own (`src/confinement/mounts.py`) and a bound on their tasks (`process_limit.py`).

The worker's side is `template_handle.py`; the frames are `frames.py`.
Run as `python -m src.services.execution.template FD`.
"""

from __future__ import annotations

import json
import logging
import select
import signal
import socket
import sys
import time
from pathlib import Path
from typing import Any

from src.foundation.hardening import harden_process
from src.services.execution.execution_process import ExecutionRunner
from src.services.execution.frames import OUTCOME, WORKSPACE_REQUEST, recv_frame, send_frame
from src.services.execution.limits import Limits
from src.services.execution.process_limit import TaskBound
from src.services.execution.processes import become_subreaper, die_with_parent
from src.services.execution.workspace_requests import unavailable

logger = logging.getLogger(__name__)

# How often an idle template looks for processes an execution left behind.
IDLE_SECONDS = 0.5


def main(fd: int) -> None:
    die_with_parent()  # the worker is gone: so are we
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
    from src.services.execution.virtual_import import (
        install_virtual_import_hook,
        read_workspace_from_cache_only,
    )

    install_virtual_import_hook()
    read_workspace_from_cache_only()
    runner, tasks = _runner(setup)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # the worker ends us, by closing the socket
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        _serve(sock, runner)
    finally:
        runner.close()
        tasks.remove()


def _runner(setup: dict[str, Any]) -> tuple[ExecutionRunner, TaskBound]:
    """The runner, once what its executions get from this process is in
    place: their /dev/shm, their bound on tasks, their uid and the paths it
    may reach. All of it comes before the sandbox is built, which grants
    /dev/shm only when it is the executions' own and lists the paths it
    grants as this mount namespace has them."""
    from src.confinement.mounts import SHM, expose_to, mount_private_shm
    from src.confinement.sandbox import build_confinement
    from src.confinement.uid import execution_uid, paths_an_execution_needs
    from src.services.execution.process_limit import bound_tasks

    data_dir, packages_dir = Path(setup["data_dir"]), Path(setup["packages_dir"])
    limits = Limits(**setup["limits"])
    scratch_root = Path(setup["scratch_root"])
    shm = setup["shm"] == "private" and mount_private_shm(limits.memory_mb)
    tasks = bound_tasks(limits.max_pids)
    uid = execution_uid(setup["execution_uid"])
    if uid is not None:
        scratch_root.mkdir(mode=0o700, parents=True, exist_ok=True)
        try:
            expose_to(uid.uid, uid.gid,
                      paths_an_execution_needs(packages_dir, scratch_root, sys.path))
        except OSError as exc:
            logger.error("executions run as root, not as uid %d (BIFROST_EXECUTION_UID): "
                         "the paths they need cannot be opened to it: %s", uid.uid, exc)
            uid = None

    def confine(root: Path) -> Any:
        return build_confinement(data_dir, packages_dir, scratch_root=root, shm=shm)

    runner = ExecutionRunner(setup["worker_id"], setup["install"], limits, scratch_root,
                             confine, also_emptied=[SHM] if shm else [], tasks=tasks, uid=uid)
    return runner, tasks


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
        worker = _WorkerLink(sock, order["id"])
        result = runner.run(order, message["workspace"], worker.cancelled, worker.read)
        send_frame(sock, OUTCOME + result["payload"])
        send_frame(sock, json.dumps({"peak_rss_kb": result.get("peak_rss_kb"),
                                     "stdout": result.get("stdout", ""),
                                     "stderr": result.get("stderr", "")}).encode())


class _WorkerLink:
    """The worker's side of the socket while one order runs: what it sends
    then is a cancel for that order or an answer to a workspace request
    (the worker sends the next order only after the outcome)."""

    def __init__(self, sock: socket.socket, order_id: str) -> None:
        self.sock, self.order_id = sock, order_id
        self._cancelled = False

    def cancelled(self) -> bool:
        while not self._cancelled and select.select([self.sock], [], [], 0)[0]:
            self._take(recv_frame(self.sock))
        return self._cancelled

    def read(self, request: bytes, deadline: float) -> bytes:
        """The worker's answer to the execution's workspace request."""
        send_frame(self.sock, WORKSPACE_REQUEST + request)
        while not self._cancelled:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([self.sock], [], [], remaining)[0]:
                break
            answer = self._take(recv_frame(self.sock))
            if answer is not None:
                return answer
        return unavailable("the worker did not answer in time")

    def _take(self, frame: bytes | None) -> bytes | None:
        """Note a cancel; return an answer's bytes."""
        if frame is None:
            self._cancelled = True  # the worker is gone: nobody wants this outcome
            return None
        message = json.loads(frame)
        if "answer" in message:
            return json.dumps(message["answer"]).encode()
        self._cancelled = self._cancelled or message.get("cancel") == self.order_id
        return None


if __name__ == "__main__":
    main(int(sys.argv[1]))
