"""How a worker process hears its pool: SIGTERM asks it to stop after the item
in hand, SIGUSR1 cancels the execution in hand, and a pool that is gone
altogether is noticed between items."""

from __future__ import annotations

import os
import signal
import threading
from types import FrameType
from typing import Any


class Flag:
    """Set by a signal handler, read by the loop."""

    def __init__(self) -> None:
        self.requested = False

    def request(self, signum: int, frame: FrameType | None) -> None:
        self.requested = True


Handlers = dict[int, Any]


def on_stop(stop: Flag) -> Handlers:
    """SIGTERM stops after the item in hand; SIGINT (a Ctrl-C sent to the whole
    process group) is left to the pool, which stops its workers in order.
    Returns the handlers replaced, for `restore`."""
    if threading.current_thread() is not threading.main_thread():
        return {}
    return {
        signal.SIGTERM: signal.signal(signal.SIGTERM, stop.request),
        signal.SIGINT: signal.signal(signal.SIGINT, signal.SIG_IGN),
    }


def on_cancel(cancel: Flag) -> Handlers:
    """SIGUSR1 from the pool cancels the execution in hand."""
    if threading.current_thread() is not threading.main_thread():
        return {}
    return {signal.SIGUSR1: signal.signal(signal.SIGUSR1, cancel.request)}


def restore(previous: Handlers) -> None:
    for signum, handler in previous.items():
        signal.signal(signum, handler)


class PoolWatch:
    """Whether the pool this worker answers to is gone (workers descend from
    the pool's forkserver, so their parent is not the pool itself)."""

    def __init__(self, pool_pid: int | None) -> None:
        self.parent = os.getppid()
        self.pool_pid = pool_pid

    def pool_gone(self) -> bool:
        if os.getppid() != self.parent:
            return True
        if self.pool_pid is None:
            return False
        try:
            os.kill(self.pool_pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        return False
