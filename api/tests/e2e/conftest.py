"""End-to-end fixtures: the real stack (init, API, worker pools) as processes.

`make_stack(...)` builds a `Stack` (tests/support/stack.py) on the run's Redis,
emptied first, with a SQLite store, a data dir and a wheelhouse in the test's
tmp_path. Every stack is stopped at the end of the test; when the test failed,
the tails of the processes' logs are printed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.support.stack import Stack


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report


@pytest.fixture
def make_stack(
    request: pytest.FixtureRequest, tmp_path: Path, redis_url: str, redis_client: redis.Redis
) -> Iterator[Callable[..., Stack]]:
    """A factory of (not yet started) stacks; the Redis is flushed by redis_client."""
    stacks: list[Stack] = []

    def make(**options: Any) -> Stack:
        root = tmp_path / f"stack{len(stacks)}" if stacks else tmp_path
        stack = Stack(root, redis_url, **options)
        stacks.append(stack)
        return stack

    yield make
    for stack in stacks:
        stack.stop()
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        for stack in stacks:
            print(f"\n===== logs of the stack in {stack.root} =====\n{stack.logs(80)}")
