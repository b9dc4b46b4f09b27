"""Progress towards a hash, and the worker events between two pool states."""

from __future__ import annotations

from typing import Any

from src.services.execution.fleet_progress import changed_workers, progress
from src.services.execution.registry import PoolState, WorkerState


def worker(worker_id: str, status: str, hash: str | None = None, *,
           failed: list[dict[str, str]] | None = None, retiring: bool = False) -> WorkerState:
    install: Any = None if hash is None else {
        "ok": not failed, "skipped": False, "installed": [], "failed": failed or [],
        "duration_ms": 5, "requirements_hash": hash}
    return WorkerState(worker_id=worker_id, host="h1", pid=1, status=status,  # type: ignore[typeddict-item]
                       requirements_hash=hash, install=install, started_at=0.0, ready_at=None,
                       retiring=retiring)


def pool(*workers: WorkerState) -> PoolState:
    return PoolState(pool_id="p1", host="h1", pid=1, started_at=0.0, workers=list(workers))


def test_counts_serving_workers_ready_on_the_hash() -> None:
    pools = [pool(worker("a", "idle", "new"), worker("b", "busy", "new"),
                  worker("c", "installing"), worker("d", "busy", "old", retiring=True),
                  worker("e", "stopped", "new"))]
    got = progress(pools, "new", "new")
    assert (got["total"], got["ready"], got["installing"], got["done"]) == (3, 2, 1, False)


def test_done_when_every_serving_worker_is_ready_and_lists_failures() -> None:
    failure = {"package": "bad==1", "error": "gcc failed"}
    got = progress([pool(worker("a", "idle", "h", failed=[failure]), worker("b", "idle", "h"))],
                   "h", "h")
    assert got["done"] is True
    assert got["failed"] == [{"worker": "a", "host": "h1", "package": "bad==1",
                              "error": "gcc failed"}]


def test_no_workers_is_never_done() -> None:
    assert progress([], "h", "h")["done"] is False


def test_worker_events_name_what_changed_and_who_left() -> None:
    before = [worker("a", "idle", "h"), worker("b", "installing")]
    after = [worker("a", "busy", "h"), worker("c", "starting")]
    changes, moves = changed_workers(before, after, "p1")
    assert [(c["worker_id"], c["status"]) for c in changes] == [
        ("a", "busy"), ("c", "starting"), ("b", "gone")]
    assert moves is True
    assert all(c["pool_id"] == "p1" for c in changes)


def test_a_busy_idle_flip_does_not_move_the_count() -> None:
    changes, moves = changed_workers([worker("a", "idle", "h")], [worker("a", "busy", "h")], "p")
    assert len(changes) == 1 and moves is False
    assert changed_workers([worker("a", "idle", "h")], [worker("a", "idle", "h")], "p") == ([], False)
