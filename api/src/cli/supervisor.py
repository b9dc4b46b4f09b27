"""The children of `bifrost up`: started, restarted when one dies, stopped together.

A child (the API, the worker pool) that exits while `up` is not stopping is
started again after a short backoff (0.5 s, doubling up to 10 s) while the
others keep running: the API keeps serving while the pool comes back, and the
pool's workers keep running executions while the API restarts. More than
`max_restarts` exits of one child within `window` seconds is a crash loop
that a restart will not fix: `poll()` then answers False and `up` stops.

Each child leads a process group of its own (`start_new_session=True`): when
it exits, whatever is left in its group is killed, so a pool that died does
not leave its forkserver and worker processes running with nobody to feed them.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

logger = logging.getLogger("bifrost")

FIRST_BACKOFF = 0.5
MAX_BACKOFF = 10.0
MAX_RESTARTS = 5
WINDOW = 60.0


@dataclass
class Child:
    """One supervised process: `name` as the log says it ("the worker pool"),
    and how to start it (again), in a session of its own."""

    name: str
    start: Callable[[], subprocess.Popen[bytes]]
    process: subprocess.Popen[bytes] | None = None
    exits: deque[float] = field(default_factory=deque)  # when it exited, recent ones
    restart_at: float | None = None


class Supervisor:
    def __init__(
        self,
        children: list[Child],
        *,
        max_restarts: int = MAX_RESTARTS,
        window: float = WINDOW,
        first_backoff: float = FIRST_BACKOFF,
        max_backoff: float = MAX_BACKOFF,
    ) -> None:
        self.children = children
        self.max_restarts = max_restarts
        self.window = window
        self.first_backoff = first_backoff
        self.max_backoff = max_backoff
        self.gave_up = False

    def start(self) -> None:
        for child in self.children:
            child.process = child.start()

    def poll(self) -> bool:
        """Notice exits and restart what is due; False once a child has exited
        too often (it is then left stopped)."""
        if self.gave_up:
            return False
        now = time.monotonic()
        for child in self.children:
            if child.process is None:
                if child.restart_at is not None and now >= child.restart_at:
                    child.restart_at = None
                    child.process = child.start()
                    logger.info("%s started again (pid %d)", child.name, child.process.pid)
                continue
            code = child.process.poll()
            if code is None:
                continue
            _kill_leftovers(child.process)
            child.process = None
            child.exits.append(now)
            while child.exits[0] < now - self.window:
                child.exits.popleft()
            if len(child.exits) > self.max_restarts:
                logger.error("%s exited with code %d, %d times within %g s; stopping",
                             child.name, code, len(child.exits), self.window)
                self.gave_up = True
                return False
            logger.warning("%s exited with code %d; restarting it", child.name, code)
            child.restart_at = now + min(
                self.max_backoff, self.first_backoff * 2 ** (len(child.exits) - 1))
        return True

    def processes(self) -> list[subprocess.Popen[bytes]]:
        return [child.process for child in self.children if child.process is not None]

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM to every child at once (each stops in its own order: workers
        finish the item in hand), then SIGKILL to whatever outlives `timeout`."""
        for child in self.children:
            child.restart_at = None
        processes = self.processes()
        for process in processes:
            if process.poll() is None:
                process.terminate()
        deadline = time.monotonic() + timeout
        for process in processes:
            try:
                process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            _kill_leftovers(process)


def _kill_leftovers(process: subprocess.Popen[bytes]) -> None:
    """SIGKILL what is left in the process group the (exited) child led."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
