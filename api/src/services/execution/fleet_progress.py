"""How far the fleet is on one requirements hash, and the events that say so.

`progress` reads it off the worker registry: of the workers that serve from
now on (live, not retiring), how many are ready (idle or busy) on the hash,
how many are installing, and which packages failed on which worker. A pool
calls `announce` after it published its state: one `worker` event per worker
whose state changed, and, when a change can move the count, one `progress`
event for the hash in effect, on the event stream every API host relays.
"""

from __future__ import annotations

import logging
from typing import Any, TypedDict

import redis

from src.core import events
from src.core.requirements_cache import cached_hash
from src.services.execution import registry
from src.services.execution.registry import PoolState, WorkerState

logger = logging.getLogger(__name__)

# How many times a pool reads the progress again after appending it (see
# `append_settled_progress`).
PROGRESS_CHECKS = 5

READY_STATUSES = frozenset({"idle", "busy"})
INSTALLING_STATUSES = frozenset({"starting", "installing"})
# What a worker event carries; a change in any of these is announced.
WORKER_FIELDS = ("status", "requirements_hash", "install", "retiring")


class FailureOnWorker(TypedDict):
    worker: str
    host: str
    package: str
    error: str


class Progress(TypedDict):
    hash: str
    current_hash: str | None
    total: int
    ready: int
    installing: int
    failed: list[FailureOnWorker]
    done: bool


def progress(pools: list[PoolState], hash: str, current_hash: str | None) -> Progress:
    """The fleet's progress towards `hash`. `done` once every serving worker
    is ready on it (there is at least one)."""
    live = [w for pool in pools for w in pool["workers"] if w["status"] != "stopped"]
    serving = [w for w in live if not w.get("retiring", False)]
    ready = sum(1 for w in serving
                if w["status"] in READY_STATUSES and w["requirements_hash"] == hash)
    installing = sum(1 for w in serving if w["status"] in INSTALLING_STATUSES)
    return Progress(
        hash=hash, current_hash=current_hash, total=len(serving), ready=ready,
        installing=installing, failed=_failures(live, hash),
        done=bool(serving) and ready == len(serving),
    )


def _failures(workers: list[WorkerState], hash: str) -> list[FailureOnWorker]:
    failed: list[FailureOnWorker] = []
    for worker in workers:
        install = worker["install"]
        if worker["requirements_hash"] != hash or install is None:
            continue
        failed.extend(
            FailureOnWorker(worker=worker["worker_id"], host=worker["host"],
                            package=failure["package"], error=failure["error"])
            for failure in install["failed"]
        )
    return failed


def fleet_progress(hash: str, current_hash: str | None,
                   client: redis.Redis | None = None) -> Progress:
    return progress(registry.list_pools(client), hash, current_hash)


# --- events -------------------------------------------------------------------


def worker_event(worker: WorkerState, pool_id: str, status: str | None = None) -> dict[str, Any]:
    return {
        "worker_id": worker["worker_id"], "pool_id": pool_id, "host": worker["host"],
        "status": status or worker["status"], "requirements_hash": worker["requirements_hash"],
        "install": worker["install"], "retiring": worker.get("retiring", False),
    }


def changed_workers(
    before: list[WorkerState], after: list[WorkerState], pool_id: str
) -> tuple[list[dict[str, Any]], bool]:
    """The worker events between two states of one pool, and whether any of
    them can move the progress count (a busy/idle flip cannot)."""
    old = {w["worker_id"]: w for w in before}
    new = {w["worker_id"]: w for w in after}
    changes: list[dict[str, Any]] = []
    moves_count = False
    for worker_id, worker in new.items():
        previous = old.get(worker_id)
        if previous is not None and all(
                previous.get(f) == worker.get(f) for f in WORKER_FIELDS):
            continue
        changes.append(worker_event(worker, pool_id))
        moves_count = moves_count or not _busy_idle_flip(previous, worker)
    for worker_id, gone in old.items():
        if worker_id not in new:
            changes.append(worker_event(gone, pool_id, status="gone"))
            moves_count = True
    return changes, moves_count


def _busy_idle_flip(previous: WorkerState | None, worker: WorkerState) -> bool:
    return (previous is not None
            and {previous["status"], worker["status"]} <= READY_STATUSES
            and all(previous.get(f) == worker.get(f) for f in WORKER_FIELDS if f != "status"))


def announce(client: redis.Redis, pool_id: str,
             before: list[WorkerState], after: list[WorkerState]) -> None:
    """Append the events between two published states of a pool. Never
    raises: an event missed while Redis is down is only a missed update."""
    changes, moves_count = changed_workers(before, after, pool_id)
    if not changes:
        return
    try:
        with client.pipeline(transaction=False) as pipe:
            for change in changes:
                events.add_to(pipe, "worker", change)
            pipe.execute()
        current = cached_hash(client) if moves_count else None
        if current is not None:
            append_settled_progress(client, current)
    except redis.RedisError as exc:
        logger.warning("Pool %s: could not append its worker events: %s", pool_id, exc)


def append_settled_progress(client: redis.Redis, current: str) -> None:
    """Append the progress on `current`, then read it again, and append again
    while it changed meanwhile. Pools on several hosts compute progress while
    the others publish: a count read just before another host's change, but
    appended just after that host's own (correct) event, would otherwise be
    the stream's last word (3/4 ready for good, with all 4 ready). The last
    progress event a pool leaves is one it read again after appending it, so
    the stream's last is never older than the last change."""
    appended: Progress | None = None
    for _ in range(PROGRESS_CHECKS):
        now = fleet_progress(current, current, client)
        if now == appended:
            return
        events.append(client, "progress", dict(now))
        appended = now
