"""`GET /api/events` over the real stack: two pools on two hosts, one Redis.

One client watches an install (the requirements event, each worker's state,
the progress reaching every worker, a failing package with its error); a
second reconnects with `Last-Event-ID` and gets exactly what it missed; the
progress route answers what the last progress event said.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import redis

from src.api.routers.events import BLOCK_MS
from src.core import events
from tests.support.exchange import Exchange
from tests.support.sse import EventReader
from tests.support.stack import Stack
from tests.support.wheels import build_sdist, build_wheel


def _two_hosts(make_stack: Callable[..., Stack], tmp_path: Path) -> Stack:
    return make_stack(pools=2, workers_per_pool=1, pool_env=[
        {"BIFROST_PACKAGES_DIR": str(tmp_path / f"{host}-packages"), "BIFROST_HOST_NAME": host}
        for host in ("host-a", "host-b")
    ])


def test_an_install_streams_its_change_workers_and_progress(
    make_stack: Callable[..., Stack], tmp_path: Path, exchange: Exchange
) -> None:
    stack = _two_hosts(make_stack, tmp_path)
    # Built from source on each host, and the build waits while `hold` exists:
    # the workers are seen installing, however fast the machine installs.
    hold = exchange / "hold-the-build"
    hold.touch()
    build_sdist(stack.wheelhouse, "evented", "1.0", behaviour=f"wait:{hold}")
    stack.start()
    base = f"http://127.0.0.1:{stack.port}"

    with EventReader(base, stack.token) as watcher:
        assert watcher.status_code == 200
        opening = watcher.wait("progress")  # the state in effect, first
        assert opening.data["total"] == 2 and opening.data["done"], opening.data
        changed = stack.install("evented", "1.0")
        new_hash = changed["hash"]

        change = watcher.wait("requirements", lambda d: d["hash"] == new_hash)
        assert change.data["added"] == ["evented==1.0"] and change.data["removed"] == []
        try:
            watcher.wait("worker", lambda d: d["status"] == "installing", 90)
        finally:
            hold.unlink()
        done = watcher.wait("progress", lambda d: d["hash"] == new_hash and d["done"], 90)
        assert done.data["ready"] == done.data["total"] == 2 and done.data["failed"] == []
        # Each host's worker says it is ready on the new hash (its event may
        # come after the progress that counted it: both are written by pools).
        for host in ("host-a", "host-b"):
            watcher.wait("worker", lambda d, host=host: d["host"] == host and d["status"] == "idle"
                         and d["requirements_hash"] == new_hash)
        workers = watcher.seen("worker")
        assert any(w.data["status"] == "gone" for w in workers), "the replaced workers left"
        assert any(w.data["status"] == "installing" for w in workers)

    answer = stack.client.get("/api/packages/progress", params={"hash": new_hash}).json()
    assert answer == {**done.data, "current_hash": new_hash}


def test_a_failing_package_is_in_the_progress_with_its_error(
    make_stack: Callable[..., Stack], tmp_path: Path
) -> None:
    stack = _two_hosts(make_stack, tmp_path)
    build_sdist(stack.wheelhouse, "needs-gcc", "1.0", behaviour="fail")
    stack.start()
    base = f"http://127.0.0.1:{stack.port}"

    with EventReader(base, stack.token) as watcher:
        watcher.wait("progress")
        new_hash = stack.install("needs-gcc", "1.0")["hash"]
        done = watcher.wait("progress", lambda d: d["hash"] == new_hash and d["done"], 90)
    failed = done.data["failed"]
    assert {f["host"] for f in failed} == {"host-a", "host-b"}, failed
    assert all(f["package"].startswith("needs-gcc") for f in failed), failed
    assert all("gcc" in f["error"] for f in failed), failed


def test_reconnecting_with_last_event_id_resumes_without_a_gap(
    make_stack: Callable[..., Stack], tmp_path: Path
) -> None:
    stack = _two_hosts(make_stack, tmp_path)
    for version in ("1.0", "2.0"):
        build_wheel(stack.wheelhouse, "resumed", version)
    stack.start()
    base = f"http://127.0.0.1:{stack.port}"

    with EventReader(base, stack.token) as first:
        resume_from = first.wait("progress").id
        assert resume_from is not None
        first_hash = stack.install("resumed", "1.0")["hash"]
        first.wait("progress", lambda d: d["hash"] == first_hash and d["done"], 90)
        second_hash = stack.install("resumed", "2.0")["hash"]
        first.wait("progress", lambda d: d["hash"] == second_hash and d["done"], 90)
        # Everything after the opening event, as the first client saw it.
        expected = [(e.id, e.kind, e.data) for e in first.seen()[1:]]

    # A client that stopped at the opening event reconnects now.
    with EventReader(base, stack.token, last_event_id=resume_from) as second:
        second.wait("progress", lambda d: d["hash"] == second_hash and d["done"], 30)
        got = [(e.id, e.kind, e.data) for e in second.seen()[:len(expected)]]
    assert got == expected
    assert not any(e.kind == "reset" for e in second.seen())


def test_events_need_the_token_and_refuse_a_malformed_last_event_id(
    make_stack: Callable[..., Stack],
) -> None:
    stack = make_stack(pools=1, workers_per_pool=1).start()
    base = f"http://127.0.0.1:{stack.port}"
    anonymous = httpx.get(f"{base}/api/events", timeout=10)
    assert anonymous.status_code == 401
    bad: Any = stack.client.get("/api/events", headers={"Last-Event-ID": "../../etc"})
    assert bad.status_code == 400 and "Last-Event-ID" in bad.json()["detail"]
    wrong = httpx.get(f"{base}/api/events?token={stack.token}", timeout=10)
    assert wrong.status_code == 401, "a token in the URL is not a credential"


def test_an_idle_stream_stays_open_past_one_blocking_read(
    make_stack: Callable[..., Stack],
) -> None:
    stack = make_stack(pools=1, workers_per_pool=1).start()
    base = f"http://127.0.0.1:{stack.port}"
    client = redis.from_url(stack.redis_url, decode_responses=True)
    quiet = BLOCK_MS / 1000 + 1.5  # longer than one read waits in Redis
    with EventReader(base, stack.token) as watcher:
        watcher.wait("progress")
        later = threading.Timer(quiet, events.append, (client, "progress", {"marker": 1}))
        later.start()
        try:
            watcher.wait("progress", lambda d: d.get("marker") == 1, timeout=quiet + 20)
        finally:
            later.cancel()
        assert not watcher.seen("unavailable") and not watcher.ended
    client.close()
