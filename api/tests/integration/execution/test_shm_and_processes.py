"""A workflow goes after the pool's semaphores, fills /dev/shm, leaves files
there for the next execution, and forks without end: real pools, real
worker processes, real executions.

A pool's multiprocessing queues lock with POSIX semaphores in the machine's
/dev/shm; an execution that opened one could hold the results queue's lock
and stop the pool for good. Executions get a /dev/shm of their own
(`src/confinement/mounts.py`; as root) or none, and a bound on their tasks
(`process_limit.py`).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from src.confinement.landlock import landlock_abi
from src.core import module_cache
from src.services.execution import registry
from tests.support.pools import run_to_the_end, running_pool
from tests.support.waiting import wait_for

MEMORY_MB = 64
MAX_PIDS = 12

SHM_WORKFLOW = r'''
import errno, os, signal, time
from pathlib import Path

SHM = Path("/dev/shm")


def take_the_pools_locks():
    """Every semaphore in sight, opened as sem_open does (read and write)."""
    seen = sorted(os.listdir(SHM))
    opened = []
    for name in seen:
        try:
            os.close(os.open(SHM / name, os.O_RDWR))
            opened.append(name)
        except OSError:
            pass
    return {"seen": seen, "opened": opened}


def fill_and_leave(megabytes):
    """Leave a file behind in /dev/shm, then write `megabytes` more there
    (unbuffered: each write is the tmpfs's to refuse); what got through."""
    (SHM / "left-behind").write_text("for the next execution")
    written, stopped = 0, None
    with open(SHM / "big", "wb", buffering=0) as big:
        for _ in range(megabytes):
            try:
                big.write(b"x" * (1 << 20))
            except OSError as exc:
                stopped = errno.errorcode.get(exc.errno, str(exc.errno))
                break
            written += 1
    return {"written_mb": written, "stopped": stopped}


def look_for_leftovers():
    return sorted(os.listdir(SHM))


def fork_without_end(most):
    children, refused = [], None
    for _ in range(most):
        try:
            pid = os.fork()
        except OSError as exc:
            refused = errno.errorcode.get(exc.errno, str(exc.errno))
            break
        if pid == 0:
            time.sleep(300)
            os._exit(0)
        children.append(pid)
    for pid in children:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    return {"forked": len(children), "refused": refused}
'''


@pytest.fixture
def pool(sqlite_system: str, redis_url: str, isolated_settings: Path,
         redis_client: redis.Redis, tmp_path: Path) -> Iterator[redis.Redis]:
    if landlock_abi() == 0:
        pytest.skip("this kernel has no Landlock: executions are not confined here")
    module_cache.save_file_sync("flows/shm.py", SHM_WORKFLOW)
    env = {"REDIS_URL": redis_url, "DATABASE_URL": sqlite_system,
           "BIFROST_DATA_DIR": str(isolated_settings),
           "BIFROST_EXECUTION_MEMORY_MB": str(MEMORY_MB),
           "BIFROST_EXECUTION_MAX_PIDS": str(MAX_PIDS)}
    with running_pool(env, workers=1, log_path=tmp_path / "pool.log"):
        wait_for(lambda: _idle(redis_client), 60, what="an idle worker")
        yield redis_client


def _idle(client: redis.Redis) -> bool:
    return any(w["status"] == "idle" for p in registry.list_pools(client) for w in p["workers"])


def _run(client: redis.Redis, function: str, **parameters: object) -> object:
    result = run_to_the_end(client, "flows.shm", function, **parameters)
    return result


def _pool_semaphores() -> set[str]:
    return {name for name in os.listdir("/dev/shm") if name.startswith("sem.mp-")}


def test_the_pools_semaphores_are_out_of_reach(pool: redis.Redis) -> None:
    semaphores = _pool_semaphores()
    assert semaphores, "the pool made no semaphore in /dev/shm: nothing to look for"
    found = _run(pool, "take_the_pools_locks")
    assert isinstance(found, dict)
    assert found["opened"] == [], found
    if os.geteuid() == 0:  # a /dev/shm of their own: the platform's files are not there
        assert not semaphores & set(found["seen"]), found


@pytest.mark.skipif(os.geteuid() != 0, reason="a private /dev/shm needs root")
def test_dev_shm_is_bounded_and_nothing_left_there_reaches_the_next_execution(
        pool: redis.Redis) -> None:
    before = set(os.listdir("/dev/shm"))
    filled = _run(pool, "fill_and_leave", megabytes=MEMORY_MB * 2)
    assert isinstance(filled, dict) and filled["stopped"] == "ENOSPC", filled
    assert MEMORY_MB // 2 <= filled["written_mb"] <= MEMORY_MB, filled  # the tmpfs's size
    assert _run(pool, "look_for_leftovers") == []
    assert not {"big", "left-behind"} & (set(os.listdir("/dev/shm")) - before)


def test_an_execution_cannot_fork_without_end(pool: redis.Redis) -> None:
    result = _run(pool, "fork_without_end", most=MAX_PIDS * 20)
    assert isinstance(result, dict)
    assert result["refused"] == "EAGAIN", result
    assert result["forked"] == MAX_PIDS - 1, result  # the execution is one of them
    # and the worker is none the worse: the next execution forks again
    again = _run(pool, "fork_without_end", most=3)
    assert again == {"forked": 3, "refused": None}, again
