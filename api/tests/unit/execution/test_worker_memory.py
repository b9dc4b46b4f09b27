"""Workers' resident memory: measuring real processes (a worker, its template,
the execution), reading an execution's peak from its exit and its way from
the template to the worker, and the pool's rule for replacing a worker over
`BIFROST_WORKER_MAX_RSS_MB` (after the item in hand, at most once a minute per
slot, a limit too low told once)."""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest

from src.services.execution import template_handle, worker_memory
from src.services.execution.frames import send_frame
from src.services.execution.processes import reap_with_usage
from src.services.execution.template_handle import Template
from src.services.execution.worker_handle import InFlight, Worker
from src.services.execution.worker_memory import (
    MEASURE_SECONDS,
    REPLACE_INTERVAL_SECONDS,
    MemoryWatch,
    measure,
    peak_mb,
)

MB = 1024 * 1024

# --- an execution's peak, from its exit ------------------------------------------


def test_peak_mb_reads_kib_and_refuses_anything_else() -> None:
    assert peak_mb(153_600) == 150.0
    assert peak_mb(0) == 0.0
    for nonsense in (None, -1, True, "1024", 1.5, [1]):
        assert peak_mb(nonsense) is None


def test_reap_with_usage_gives_the_exit_status_and_the_peak_of_a_child() -> None:
    pid = os.fork()
    if pid == 0:  # the child: touch 64 MB, then exit 3
        block = bytearray(64 * MB)
        for i in range(0, len(block), 4096):
            block[i] = 1
        os._exit(3)
    status, peak_kib = reap_with_usage(pid, within=60)
    assert status is not None and os.WEXITSTATUS(status) == 3
    assert peak_kib is not None and peak_kib >= 64 * 1024
    # Reaped already: not ours any more.
    assert reap_with_usage(pid, within=0.1) == (None, None)


def test_reap_with_usage_does_not_wait_past_its_bound_for_a_running_child() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        assert reap_with_usage(child.pid, within=0.1) == (None, None)
    finally:
        child.kill()
        child.wait()


# --- measuring real processes -------------------------------------------------------

# A stand-in worker: it starts a "template" (a child), which starts an
# "execution" (its own child) that holds 80 MB; each prints its pid.
WORKER = textwrap.dedent("""
    import subprocess, sys, time
    EXECUTION = "b = bytearray(80 * 2**20)\\nfor i in range(0, len(b), 4096): b[i] = 1\\n" \\
        "print('ready', flush=True)\\nimport time; time.sleep(60)"
    TEMPLATE = "import subprocess, sys, time\\n" \\
        f"e = subprocess.Popen([sys.executable, '-c', {EXECUTION!r}], stdout=sys.stdout)\\n" \\
        "print(e.pid, flush=True)\\ntime.sleep(60)"
    t = subprocess.Popen([sys.executable, "-c", TEMPLATE], stdout=sys.stdout)
    print(t.pid, flush=True)
    time.sleep(60)
""")


@pytest.fixture
def worker_tree() -> Iterator[tuple[int, list[str]]]:
    """(the stand-in worker's pid, what the three processes printed)."""
    process = subprocess.Popen([sys.executable, "-c", WORKER], stdout=subprocess.PIPE, text=True,
                               start_new_session=True)
    assert process.stdout is not None
    lines = [process.stdout.readline().strip() for _ in range(3)]
    try:
        yield process.pid, lines
    finally:
        os.killpg(process.pid, 9)
        process.wait()


def test_measure_counts_the_worker_and_its_template_and_shows_the_execution_apart(
        worker_tree: tuple[int, list[str]]) -> None:
    pid, lines = worker_tree
    assert "ready" in lines
    idle_rss, idle_execution = measure(pid, busy=False)
    busy_rss, busy_execution = measure(pid, busy=True)
    own = worker_memory.rss_bytes(pid)
    assert own is not None and idle_rss is not None and busy_rss is not None
    # Worker + template: more than the worker alone, less than with the 80 MB execution.
    assert own / MB < idle_rss < 80
    assert abs(busy_rss - idle_rss) < 20
    assert idle_execution is None  # only while busy
    assert busy_execution is not None and busy_execution >= 80


def test_measure_of_a_process_that_is_gone_is_no_reading() -> None:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    assert measure(process.pid, busy=True) == (None, None)
    assert worker_memory.children(process.pid) == []


# --- the pool's rule ------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    clock = Clock()
    monkeypatch.setattr(worker_memory.time, "monotonic", clock)
    return clock


@pytest.fixture
def readings(monkeypatch: pytest.MonkeyPatch) -> dict[int, float | None]:
    """pid -> the `rss_mb` that `measure` reads for it (a real process each
    test cannot grow on demand)."""
    values: dict[int, float | None] = {}

    def fake(pid: int, busy: bool) -> tuple[float | None, float | None]:
        return values.get(pid), (5.0 if busy else None)

    monkeypatch.setattr(worker_memory, "measure", fake)
    return values


class Pool:
    """What the watch acts on: the workers, `replace` as the supervisor's
    (retire, start a replacement in the slot), and change notices."""

    def __init__(self, limit_mb: int) -> None:
        self.workers: list[Worker] = []
        self.replaced: list[str] = []
        self.changes = 0
        self.next_pid = 100
        self.watch = MemoryWatch(limit_mb, self.replace, on_change=self.changed)

    def add(self, slot: int, status: Any = "idle") -> Worker:
        self.next_pid += 1
        worker = Worker(slot, f"w{slot}.{self.next_pid}", SimpleNamespace(pid=self.next_pid),  # type: ignore[arg-type]
                        inbox=None, host="h", status=status)  # type: ignore[arg-type]
        self.workers.append(worker)
        return worker

    def replace(self, worker: Worker) -> None:
        worker.retiring = True
        self.replaced.append(worker.worker_id)
        self.add(worker.slot)

    def changed(self) -> None:
        self.changes += 1


def pid(worker: Worker) -> int:
    assert worker.process.pid is not None
    return worker.process.pid


def test_without_a_limit_workers_are_measured_and_never_replaced(
        clock: Clock, readings: dict[int, float | None]) -> None:
    pool = Pool(limit_mb=0)
    worker = pool.add(0)
    readings[pid(worker)] = 5000.0
    pool.watch.check(pool.workers)
    assert worker.rss_mb == 5000.0 and pool.replaced == [] and pool.changes == 1


def test_only_ready_workers_are_measured_and_only_every_measure_interval(
        clock: Clock, readings: dict[int, float | None]) -> None:
    pool = Pool(limit_mb=100)
    starting, installing, idle = pool.add(0, "starting"), pool.add(1, "installing"), pool.add(2)
    busy = pool.add(3, "busy")
    busy.current = InFlight("1-0", "exec-1", 60)
    for worker in pool.workers:
        readings[pid(worker)] = 50.0
    pool.watch.check(pool.workers)
    assert starting.rss_mb is None and installing.rss_mb is None
    assert idle.rss_mb == 50.0 and busy.rss_mb == 50.0
    assert busy.execution_rss_mb == 5.0 and idle.execution_rss_mb is None
    assert busy.state()["execution_rss_mb"] == 5.0 and idle.state()["execution_rss_mb"] is None
    readings[pid(idle)] = 60.0
    clock.now += MEASURE_SECONDS / 2
    pool.watch.check(pool.workers)
    assert idle.rss_mb == 50.0  # not due yet
    clock.now += MEASURE_SECONDS / 2
    pool.watch.check(pool.workers)
    assert idle.rss_mb == 60.0 and pool.changes == 2


def test_a_worker_that_grew_past_the_limit_is_replaced_once_after_the_item_in_hand(
        clock: Clock, readings: dict[int, float | None], caplog: pytest.LogCaptureFixture) -> None:
    pool = Pool(limit_mb=512)
    worker = pool.add(0, "busy")
    worker.current = InFlight("1-0", "exec-1", 60)
    readings[pid(worker)] = 300.0
    pool.watch.check(pool.workers)
    assert pool.replaced == []
    readings[pid(worker)] = 612.4
    clock.now += MEASURE_SECONDS
    with caplog.at_level(logging.INFO, logger="src.services.execution.process_pool"):
        pool.watch.check(pool.workers)
    assert pool.replaced == [worker.worker_id]
    assert (f"[{worker.worker_id}] resident memory 612 MB is over BIFROST_WORKER_MAX_RSS_MB=512: "
            "replacing it after the item in hand") in caplog.messages
    # Retiring now: measured still, never replaced twice.
    clock.now += REPLACE_INTERVAL_SECONDS * 2
    pool.watch.check(pool.workers)
    assert pool.replaced == [worker.worker_id]


def test_a_limit_below_a_fresh_worker_replaces_each_slot_at_most_once_a_minute_and_warns_once(
        clock: Clock, readings: dict[int, float | None], caplog: pytest.LogCaptureFixture) -> None:
    pool = Pool(limit_mb=10)
    for slot in (0, 1):
        pool.add(slot)
    with caplog.at_level(logging.INFO, logger="src.services.execution.process_pool"):
        for _ in range(int(REPLACE_INTERVAL_SECONDS / MEASURE_SECONDS) + 1):  # a minute of beats
            for worker in pool.workers:
                readings.setdefault(pid(worker), 40.0)  # every worker starts above the limit
            pool.watch.check(pool.workers)
            clock.now += MEASURE_SECONDS
    # The first worker of each slot once, then their replacements once the minute was over.
    assert len(pool.replaced) == 4
    assert [w.slot for w in pool.workers if not w.retiring] == [0, 1]
    too_low = [m for m in caplog.messages if "the limit is below what a fresh worker needs" in m]
    assert len(too_low) == 1
    assert "BIFROST_WORKER_MAX_RSS_MB=10 right after its start" in too_low[0]


def test_a_replacement_that_grows_within_the_minute_waits_for_it_without_a_warning(
        clock: Clock, readings: dict[int, float | None], caplog: pytest.LogCaptureFixture) -> None:
    pool = Pool(limit_mb=100)
    first = pool.add(0)
    readings[pid(first)] = 150.0
    pool.watch.check(pool.workers)
    second = pool.workers[-1]
    readings[pid(second)] = 30.0
    clock.now += MEASURE_SECONDS
    pool.watch.check(pool.workers)
    readings[pid(second)] = 150.0  # grew, within the minute
    clock.now += MEASURE_SECONDS
    with caplog.at_level(logging.INFO, logger="src.services.execution.process_pool"):
        pool.watch.check(pool.workers)
        assert pool.replaced == [first.worker_id]
        clock.now += REPLACE_INTERVAL_SECONDS
        pool.watch.check(pool.workers)
    assert pool.replaced == [first.worker_id, second.worker_id]
    assert not any("fresh worker" in m for m in caplog.messages)


def test_a_failed_measurement_replaces_nothing(
        clock: Clock, readings: dict[int, float | None]) -> None:
    pool = Pool(limit_mb=1)
    worker = pool.add(0)
    readings[pid(worker)] = None  # the process exited meanwhile
    pool.watch.check(pool.workers)
    assert worker.rss_mb is None and pool.replaced == []


def test_a_worker_being_killed_or_without_a_pid_is_left_alone(
        clock: Clock, readings: dict[int, float | None]) -> None:
    pool = Pool(limit_mb=1)
    killed = pool.add(0, "busy")
    killed.killed = True
    gone = pool.add(1)
    gone.process = SimpleNamespace(pid=None)  # type: ignore[assignment]
    readings[pid(killed)] = 500.0
    pool.watch.check(pool.workers)
    assert pool.replaced == [] and killed.rss_mb is None and pool.changes == 0


def test_the_state_shows_the_memory_fields(clock: Clock, readings: dict[int, float | None]) -> None:
    pool = Pool(limit_mb=0)
    worker = pool.add(0)
    assert worker.state()["rss_mb"] is None
    readings[pid(worker)] = 42.5
    worker.last_execution_peak_rss_mb = 151.2
    pool.watch.check(pool.workers)
    state = worker.state()
    assert state["rss_mb"] == 42.5 and state["last_execution_peak_rss_mb"] == 151.2


def test_a_real_process_is_measured_through_the_watch(clock: Clock) -> None:
    """No stand-in for `measure`: this test process itself, as a ready worker."""
    pool = Pool(limit_mb=0)
    worker = pool.add(0)
    worker.process = SimpleNamespace(pid=os.getpid())  # type: ignore[assignment]
    pool.watch.check(pool.workers)
    assert worker.rss_mb is not None and worker.rss_mb > 10


# --- the peak's way from the template to the worker -----------------------------------


@pytest.fixture
def template(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Template, socket.socket]]:
    """A worker's handle on a template, and the template's end of their socket."""
    monkeypatch.setattr(template_handle, "ANSWER_GRACE_SECONDS", 0.2)
    mine, theirs = socket.socketpair()
    handle = Template("w0.1", {})
    handle.sock = mine
    yield handle, theirs
    theirs.close()
    handle.close()


def test_the_frame_after_an_outcome_carries_the_peak(
        template: tuple[Template, socket.socket]) -> None:
    handle, theirs = template
    send_frame(theirs, json.dumps({"peak_rss_kb": 153_600, "stdout": "out\n",
                                   "stderr": 7}).encode())
    assert handle._after() == (153_600, {"stdout": "out\n"})  # text only
    send_frame(theirs, json.dumps({"peak_rss_kb": None}).encode())
    assert handle._after() == (None, {})
    assert handle.sock is not None  # in step: the template is kept


@pytest.mark.parametrize("frame", [b"not json", b"[1]", json.dumps({"peak_rss_kb": True}).encode()])
def test_a_peak_frame_that_makes_no_sense_is_no_peak(
        template: tuple[Template, socket.socket], frame: bytes) -> None:
    handle, theirs = template
    send_frame(theirs, frame)
    assert handle._after()[0] is None


def test_a_template_that_sends_no_peak_frame_is_started_afresh(
        template: tuple[Template, socket.socket]) -> None:
    handle, _theirs = template
    assert handle._after()[0] is None
    assert handle.sock is None  # out of step: the next order restarts the template
