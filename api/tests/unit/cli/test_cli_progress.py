"""Waiting for a change to reach every worker: how a wait ends, which exit
code each ending gives, and how failures are reported. The API is scripted
(httpx.MockTransport) and the clock is fake: no sleeping."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from src.cli.client import ApiClient, Credentials
from src.cli.progress import (
    NO_WORKERS_GRACE,
    POLL_INTERVAL,
    Rollout,
    ending_of,
    exit_code,
    failure_lines,
    report,
    wait_for_rollout,
)

TARGET = "a1b2c3d4e5f6" * 5


def progress(total: int, ready: int, *, current: str = TARGET,
             failed: list[dict[str, str]] | None = None) -> dict[str, Any]:
    return {"hash": TARGET, "current_hash": current, "total": total, "ready": ready,
            "installing": total - ready, "failed": failed or [],
            "done": total > 0 and ready == total}


def failure(package: str, worker: str, host: str = "h1", error: str = "boom") -> dict[str, str]:
    return {"package": package, "worker": worker, "host": host, "error": error}


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def scripted(answers: list[dict[str, Any]]) -> tuple[ApiClient, list[str]]:
    """A client whose progress route gives `answers` in turn (the last one forever)."""
    asked: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/api/packages/progress"
        asked.append(request.url.params["hash"])
        return httpx.Response(200, json=answers[min(len(asked), len(answers)) - 1])

    return ApiClient("http://api.test", Credentials("t", "test"),
                     transport=httpx.MockTransport(handler)), asked


def wait(answers: list[dict[str, Any]], timeout: float = 60.0, **options: Any) -> Rollout:
    client, asked = scripted(answers)
    clock = FakeClock()
    rollout = wait_for_rollout(client, TARGET, timeout=timeout, clock=clock,
                               sleep=clock.sleep, **options)
    assert set(asked) == {TARGET}
    return rollout


def test_ending_of_each_answer() -> None:
    assert ending_of(progress(2, 2), TARGET, 0) == "done"
    assert ending_of(progress(2, 1), TARGET, 0) is None
    assert ending_of(progress(2, 1, current="other"), TARGET, 0) == "superseded"
    assert ending_of(progress(0, 0), TARGET, 0) is None
    assert ending_of(progress(0, 0), TARGET, NO_WORKERS_GRACE) == "no_workers"


def test_a_wait_ends_when_every_worker_is_ready() -> None:
    rollout = wait([progress(2, 0), progress(3, 1), progress(2, 2)])
    assert rollout.ending == "done" and rollout.last == progress(2, 2)
    assert exit_code(rollout) == 0


def test_failures_seen_on_the_way_are_kept_and_exit_1() -> None:
    rollout = wait([progress(2, 1, failed=[failure("broken", "w1")]), progress(2, 2)])
    assert rollout.ending == "done"
    assert rollout.failures == {("broken", "h1", "w1"): "boom"}
    assert exit_code(rollout) == 1


def test_no_live_workers_ends_after_a_grace_with_exit_0() -> None:
    rollout = wait([progress(0, 0)])
    assert rollout.ending == "no_workers" and exit_code(rollout) == 0


def test_a_gap_between_old_and_new_workers_is_not_no_workers() -> None:
    rollout = wait([progress(0, 0), progress(1, 0), progress(0, 0), progress(2, 2)])
    assert rollout.ending == "done"


def test_another_change_ends_the_wait_with_the_failures_seen() -> None:
    superseded = wait([progress(2, 1, failed=[failure("broken", "w1")]),
                       progress(2, 0, current="f" * 64)])
    assert superseded.ending == "superseded" and exit_code(superseded) == 1
    clean = wait([progress(2, 0, current="f" * 64)])
    assert clean.ending == "superseded" and exit_code(clean) == 0


def test_the_deadline_ends_the_wait_with_exit_1() -> None:
    rollout = wait([progress(2, 1)], timeout=3.0)
    assert rollout.ending == "timeout" and exit_code(rollout) == 1
    assert rollout.last == progress(2, 1)


def test_a_resync_waits_until_the_old_workers_are_replaced() -> None:
    checks: list[bool] = [False, False, True]
    rollout = wait([progress(2, 2)], retired=lambda: checks.pop(0))
    assert rollout.ending == "done" and checks == []


def test_polls_are_spaced() -> None:
    client, asked = scripted([progress(2, 0)])
    clock = FakeClock()
    wait_for_rollout(client, TARGET, timeout=3.0, clock=clock, sleep=clock.sleep)
    assert len(asked) == pytest.approx(3.0 / POLL_INTERVAL + 1, abs=1)


def test_failure_lines_group_workers_sharing_an_error() -> None:
    failures = {("broken", "h1", "w2"): "needs gcc", ("broken", "h1", "w1"): "needs gcc",
                ("broken", "h2", "w3"): "needs gcc",
                ("other", "h1", "w1"): "line one\nline two\n"}
    assert failure_lines(failures) == [
        "broken on h1 (w1, w2): needs gcc",
        "broken on h2 (w3): needs gcc",
        "other on h1 (w1): line one",
        "    line two",
    ]


def test_report_prints_the_ending_and_each_failure(capsys: pytest.CaptureFixture[str]) -> None:
    rollout = Rollout(TARGET, 60.0, ending="done", last=progress(2, 2),
                      failures={("broken", "h1", "w1"): "error: command 'gcc' failed"})
    assert report(rollout) == 1
    err = capsys.readouterr().err
    assert "Every live worker is on a1b2c3d4 (2/2 ready)" in err
    assert "1 package(s) failed to install on a1b2c3d4:" in err
    assert "broken on h1 (w1): error: command 'gcc' failed" in err


def test_report_of_no_workers_and_timeout(capsys: pytest.CaptureFixture[str]) -> None:
    assert report(Rollout(TARGET, 60.0, ending="no_workers", last=progress(0, 0))) == 0
    assert report(Rollout(TARGET, 5.0, ending="timeout", last=progress(3, 1))) == 1
    err = capsys.readouterr().err
    assert "no live workers: the change applies when workers start" in err
    assert "timed out after 5 s with 1/3 workers ready on a1b2c3d4" in err


def test_a_resync_ignores_the_failures_of_the_workers_it_replaces() -> None:
    failed = [failure("broken", "old-1"), failure("broken", "new-1")]
    rollout = wait([progress(2, 2, failed=failed)], stale_workers=frozenset({"old-1"}))
    assert rollout.failures == {("broken", "h1", "new-1"): "boom"}
