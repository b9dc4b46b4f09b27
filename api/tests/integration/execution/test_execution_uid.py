"""Where the platform runs as root, executions run as an unprivileged uid:
a real pool, real executions, a workflow that looks for what only root may
read and checks that everything it needs still works."""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from src.core import module_cache
from src.services.execution import executions, registry
from tests.support.exchange import Exchange
from tests.support.pools import run_to_the_end, running_pool
from tests.support.waiting import wait_for

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the platform is not root here: "
                                "executions run as its own uid")

EXECUTION_UID = 65534

WORKFLOW = r'''
import os, subprocess, sys, tempfile, time, urllib.request


def tell_pid_and_sleep(url):
    urllib.request.urlopen(urllib.request.Request(url, data=str(os.getpid()).encode(),
                                                  method="POST"), timeout=30)
    time.sleep(300)


def _try(action):
    try:
        return action()
    except OSError as exc:
        return type(exc).__name__


def who_and_what(secret, home):
    with open("made-here.txt", "w") as made:  # its scratch dir, its working directory
        made.write("x")
    import wave  # a module nothing imported before: the interpreter's files are reachable
    child = subprocess.run([sys.executable, "-c", "import os; print(os.getuid())"],
                           capture_output=True, text=True, timeout=60)
    return {
        "uid": os.getuid(), "euid": os.geteuid(), "gid": os.getgid(),
        "groups": os.getgroups(),
        "secret": _try(lambda: open(secret).read()),
        "home": _try(lambda: sorted(os.listdir(home))),
        "scratch_file": os.stat("made-here.txt").st_uid,
        "tmp": _try(lambda: tempfile.mkstemp() and "made"),
        "wave": wave.__name__,
        "child_uid": child.stdout.strip() or child.stderr[-300:],
    }
'''


@pytest.fixture
def pool(sqlite_system: str, redis_url: str, isolated_settings: Path,
         redis_client: redis.Redis, tmp_path: Path) -> Iterator[redis.Redis]:
    module_cache.save_file_sync("flows/who.py", WORKFLOW)
    env = {"REDIS_URL": redis_url, "DATABASE_URL": sqlite_system,
           "BIFROST_DATA_DIR": str(isolated_settings),
           "BIFROST_EXECUTION_UID": str(EXECUTION_UID)}
    with running_pool(env, workers=1, log_path=tmp_path / "pool.log"):
        wait_for(lambda: any(w["status"] == "idle" for p in registry.list_pools(redis_client)
                             for w in p["workers"]), 60, what="an idle worker")
        yield redis_client


def _run(client: redis.Redis, function: str, **parameters: object) -> dict:
    result = run_to_the_end(client, "flows.who", function, **parameters)
    assert isinstance(result, dict)
    return result


@pytest.fixture
def root_only() -> Iterator[tuple[Path, Path]]:
    """A root-only file and a root-only directory (as a home dir holding
    keys) where any uid may look: directly in /tmp, outside the data dir,
    where the sandbox hides nothing."""
    home = Path(tempfile.mkdtemp(prefix="bifrost-home-", dir="/tmp"))  # 0700
    (home / "kept").mkdir()
    fd, name = tempfile.mkstemp(prefix="bifrost-key-", dir="/tmp")  # 0600
    os.write(fd, b"only root may read this")
    os.close(fd)
    try:
        yield Path(name), home
    finally:
        os.unlink(name)
        shutil.rmtree(home)


def test_an_execution_runs_as_the_execution_uid_and_reads_nothing_only_root_may(
        pool: redis.Redis, root_only: tuple[Path, Path]) -> None:
    secret, home = root_only
    seen = _run(pool, "who_and_what", secret=str(secret), home=str(home))
    assert (seen["uid"], seen["euid"], seen["groups"]) == (EXECUTION_UID, EXECUTION_UID, []), seen
    assert seen["secret"] == "PermissionError", seen
    assert seen["home"] == "PermissionError", seen
    assert seen["scratch_file"] == EXECUTION_UID, seen
    assert seen["tmp"] == "made", seen
    assert seen["wave"] == "wave", seen
    assert seen["child_uid"] == str(EXECUTION_UID), seen


def test_directories_only_root_may_search_show_only_the_way_to_what_it_needs(
        pool: redis.Redis, isolated_settings: Path) -> None:
    """The data dir (0700) holds the token and the store: for the execution
    uid it holds only the packages dir and the scratch dirs, bound back."""
    (isolated_settings / "admin-token").write_text("the token")
    seen = _run(pool, "who_and_what", secret=str(isolated_settings / "admin-token"),
                home=str(isolated_settings))
    assert seen["secret"] in ("FileNotFoundError", "PermissionError"), seen
    assert seen["home"] in ("PermissionError", ["scratch", "site-packages"]), seen


def test_the_next_execution_is_the_same_uid_with_a_clean_scratch_dir(
        pool: redis.Redis, tmp_path: Path) -> None:
    first = _run(pool, "who_and_what", secret="/nonexistent", home=str(tmp_path))
    second = _run(pool, "who_and_what", secret="/nonexistent", home=str(tmp_path))
    assert first["uid"] == second["uid"] == EXECUTION_UID


def test_an_execution_dies_with_its_worker_after_dropping_to_its_uid(
        pool: redis.Redis, exchange: Exchange) -> None:
    """A change of uid clears the parent-death signal: the execution sets it
    again, so killing its worker (and so its template) ends it too."""
    told = exchange / "pid"
    executions.enqueue_execution("flows.who", "tell_pid_and_sleep", {"url": str(told)}, pool)
    wait_for(told.exists, 60, what="the execution to start")
    execution_pid = int(told.read_text())
    worker_pid = next(w["pid"] for p in registry.list_pools(pool) for w in p["workers"]
                      if w["pid"])
    os.kill(worker_pid, signal.SIGKILL)
    wait_for(lambda: not _alive(execution_pid), 30, what="the execution to die with its worker")


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False
