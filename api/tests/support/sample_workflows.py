"""Workflows the worker tests run (imported by module name, like user code)."""

from __future__ import annotations

import sys
import time

from tests.support.exchange_client import exchange_append, exchange_exists, exchange_touch


def add(a: int, b: int) -> int:
    return a + b


async def async_add(a: int, b: int) -> int:
    return a + b


def boom() -> None:
    raise ValueError("boom")


def exit_now() -> None:
    sys.exit(3)


def not_json() -> object:
    return object()


def slow(seconds: float, marker: str | None = None) -> str:
    """`marker`: an exchange URL (tests/support/exchange.py) touched first."""
    if marker:
        exchange_touch(marker)
    time.sleep(seconds)
    return "done"


def held(started: str, release: str, hold: float = 120.0) -> str:
    """Touch `started`, then wait until the test creates `release` (at most
    `hold` seconds): an item in hand for exactly as long as the test needs.
    Both are exchange URLs (tests/support/exchange.py)."""
    exchange_touch(started)
    deadline = time.monotonic() + hold
    while not exchange_exists(release) and time.monotonic() < deadline:
        time.sleep(0.01)
    return "done"


def probe_version() -> str:
    import bifrost_probe  # type: ignore[import-not-found]  # installed at runtime

    return bifrost_probe.VERSION


def mark(token: str, log: str, seconds: float = 0.0) -> str:
    """Append `token` to the exchange file `log` (one line per run), to count runs."""
    if seconds:
        time.sleep(seconds)
    exchange_append(log, token + "\n")
    return token


def pid() -> int:
    import os

    return os.getpid()
