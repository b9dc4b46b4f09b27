"""Waiting for a requirements change to reach every live worker.

After a write that changes the hash, the CLI polls
`GET /api/packages/progress?hash=H` (every POLL_INTERVAL s) and shows a bar on
stderr ("Installing: 3/4 workers ready on 1a2b3c4d") until one of these endings:

- done: there are live workers and every one is ready on H;
- no_workers: nobody is running (for NO_WORKERS_GRACE s, so the gap between a
  pool's old and new processes is not mistaken for it): the change applies
  when workers start;
- superseded: the requirements moved on to another hash (someone else's
  change) before every worker had H;
- timeout: the deadline passed first.

Failed packages seen on the way are all kept (a worker that moves on to a
newer hash no longer reports them) and printed once at the end; the exit code
is 1 when any failed or the wait timed out, else 0 (`exit_code`).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from src.cli.client import ApiClient, PatientReader

POLL_INTERVAL = 0.3
NO_WORKERS_GRACE = 2.0
SHORT_HASH = 8


def short(hash_: str | None) -> str:
    return (hash_ or "none")[:SHORT_HASH]


@dataclass
class Rollout:
    """What a wait for `target` saw: how it ended, the last progress answer,
    and every failure seen, (package, host, worker) -> error."""

    target: str
    timeout: float
    ending: str = "waiting"
    last: dict[str, Any] | None = None
    failures: dict[tuple[str, str, str], str] = field(default_factory=dict)
    # Workers whose failures are old news (a re-sync replaces them).
    stale_workers: frozenset[str] = frozenset()
    workerless_since: float | None = None

    def see(self, progress: dict[str, Any]) -> None:
        self.last = progress
        for failure in progress.get("failed") or []:
            if str(failure.get("worker")) in self.stale_workers:
                continue
            key = (str(failure.get("package")), str(failure.get("host")),
                   str(failure.get("worker")))
            self.failures[key] = str(failure.get("error") or "")

    def workerless_for(self, progress: dict[str, Any], now: float) -> float:
        """Seconds the answers have said `total == 0` in a row, this one included."""
        if int(progress.get("total") or 0) > 0:
            self.workerless_since = None
            return 0.0
        if self.workerless_since is None:
            self.workerless_since = now
        return now - self.workerless_since


def ending_of(progress: dict[str, Any], target: str, workerless_for: float) -> str | None:
    """How the wait ends on this progress answer, or None to go on waiting.
    `workerless_for`: seconds the answers have said `total == 0` in a row."""
    total, ready = int(progress.get("total") or 0), int(progress.get("ready") or 0)
    if progress.get("done") or (total > 0 and ready >= total):
        return "done"
    current = progress.get("current_hash")
    if current and current != target:
        return "superseded"
    if total == 0 and workerless_for >= NO_WORKERS_GRACE:
        return "no_workers"
    return None


def exit_code(rollout: Rollout) -> int:
    return 1 if rollout.failures or rollout.ending == "timeout" else 0


def failure_lines(failures: dict[tuple[str, str, str], str]) -> list[str]:
    """`package on host (worker, ...): error`, workers sharing one error on
    one host grouped; an error's further lines indented under it."""
    grouped: dict[tuple[str, str, str], list[str]] = {}
    for (package, host, worker), error in sorted(failures.items()):
        grouped.setdefault((package, host, error), []).append(worker)
    lines = []
    for (package, host, error), workers in grouped.items():
        first, *rest = (error.strip() or "no reason given").splitlines()
        lines.append(f"{package} on {host} ({', '.join(workers)}): {first}")
        lines.extend(f"    {line}" for line in rest)
    return lines


def ending_message(rollout: Rollout) -> str:
    last = rollout.last or {}
    ready, total = last.get("ready", 0), last.get("total", 0)
    target = short(rollout.target)
    if rollout.ending == "done":
        return f"Every live worker is on {target} ({ready}/{total} ready)"
    if rollout.ending == "no_workers":
        return "no live workers: the change applies when workers start"
    if rollout.ending == "superseded":
        return (f"the requirements changed again (now {short(last.get('current_hash'))}) "
                f"before every worker had {target}: not waiting for that change")
    return (f"timed out after {rollout.timeout:g} s with {ready}/{total} workers ready on "
            f"{target}; the change is stored and goes on rolling out")


def report(rollout: Rollout) -> int:
    """Print how the wait ended and each failed package (stderr); the exit code."""
    print(ending_message(rollout), file=sys.stderr)
    if rollout.failures:
        count = len({package for package, _host, _worker in rollout.failures})
        print(f"{count} package(s) failed to install on {short(rollout.target)}:", file=sys.stderr)
        for line in failure_lines(rollout.failures):
            print(f"  {line}", file=sys.stderr)
    return exit_code(rollout)


def wait_for_rollout(
    client: ApiClient, target: str, *, timeout: float,
    retired: Callable[[], bool] | None = None,
    stale_workers: frozenset[str] = frozenset(),
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> Rollout:
    """Poll the progress of `target` until it ends (see the module doc).
    For a re-sync, which keeps the hash: `retired` says whether the workers
    that ran before it (`stale_workers`) have been replaced; until then their
    being ready is not news, and their failures are the ones being retried.
    An API that stops answering for a moment is waited out (`PatientReader`)."""
    rollout = Rollout(target, timeout, stale_workers=stale_workers)
    reader = PatientReader(client, clock=clock)
    deadline = clock() + timeout
    with _Display(target) as display:
        while True:
            progress = reader.get("/api/packages/progress", params={"hash": target})
            now = clock()
            ending = None
            if progress is not None:
                rollout.see(progress)
                display.show(progress, len({package for package, _, _ in rollout.failures}))
                ending = ending_of(progress, target, rollout.workerless_for(progress, now))
            if ending == "done" and retired is not None and not retired():
                ending = None
            if ending is None and now >= deadline:
                ending = "timeout"
            if ending is not None:
                rollout.ending = ending
                return rollout
            sleep(POLL_INTERVAL)


class _Display:
    """The bar on stderr. When stderr is no terminal (a log, a pipe), rich
    draws the bar once at the end, so each change also gets a plain line."""

    def __init__(self, target: str) -> None:
        self.target = target
        self.console = Console(stderr=True)
        self.progress = Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
            TimeElapsedColumn(), console=self.console,
        )
        self.task = self.progress.add_task(self._describe(0, 0, 0), total=None)
        self.shown: tuple[int, int, int] | None = None

    def __enter__(self) -> _Display:
        self.progress.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.progress.stop()

    def _describe(self, ready: int, total: int, failed: int) -> str:
        if total == 0:
            return f"Waiting for live workers ({short(self.target)})"
        text = f"Installing: {ready}/{total} workers ready on {short(self.target)}"
        return text + (f", {failed} package(s) failed" if failed else "")

    def show(self, progress: dict[str, Any], failed: int) -> None:
        ready, total = int(progress.get("ready") or 0), int(progress.get("total") or 0)
        description = self._describe(ready, total, failed)
        self.progress.update(self.task, description=description,
                             total=total or None, completed=ready)
        if not self.console.is_terminal and self.shown != (ready, total, failed):
            self.console.print(description, markup=False, highlight=False)
        self.shown = (ready, total, failed)
