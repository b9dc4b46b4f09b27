"""What the code under test slept: "it did not wait" as a fact the test can
assert, rather than a duration that depends on how fast the machine is."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest


@contextmanager
def recorded_sleeps(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[float]]:
    """Every `time.sleep(seconds)` this thread makes inside the block (each
    still sleeps). Code that bound `sleep` itself (`from time import sleep`)
    is not seen: redis-py's own reconnect backoff, for one."""
    slept: list[float] = []
    real_sleep = time.sleep
    caller = threading.get_ident()

    def sleep(seconds: float) -> None:
        if threading.get_ident() == caller:
            slept.append(seconds)
        real_sleep(seconds)

    with monkeypatch.context() as patched:
        patched.setattr(time, "sleep", sleep)
        yield slept
