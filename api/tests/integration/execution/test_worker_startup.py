"""Worker start-up for real: a real Redis, a real installer, real worker processes."""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import redis

from src.core.lock_cache import lock_key
from src.core.requirements_cache import REQUIREMENTS_KEY
from src.foundation.hashing import sha256_hex as content_hash
from src.foundation.locks import DIRECT, Lock, LockedPackage
from tests.support.exchange import Exchange
from tests.support.waiting import wait_for
from tests.support.wheels import build_wheel

API_DIR = Path(__file__).resolve().parents[3]
# spawn, as the pool does: a fresh interpreter, settings from the environment
SPAWN = multiprocessing.get_context("spawn")


def _cache(client: redis.Redis, content: str) -> None:
    client.set(REQUIREMENTS_KEY, json.dumps({"content": content, "hash": content_hash(content)}))


@pytest.fixture
def wheelhouse(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    house = tmp_path / "wheelhouse"
    build_wheel(house, "bifrost-probe", "1.2.3")
    monkeypatch.setenv("PIP_FIND_LINKS", str(house))
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    return house


def test_worker_installs_cached_requirements_in_a_fresh_process(
    redis_client: redis.Redis, wheelhouse: Path, isolated_settings: Path
) -> None:
    _cache(redis_client, "bifrost-probe==1.2.3\n")
    script = (
        "import logging, sys\n"
        "logging.basicConfig(level=logging.INFO)\n"
        "from src.services.execution.simple_worker import _install_requirements_from_cache_sync\n"
        "outcome = _install_requirements_from_cache_sync('w-int')\n"
        "print(outcome['ok'], outcome['installed'])\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=API_DIR, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    assert "[w-int] Installing packages from cached requirements.txt" in done.stderr
    assert "[w-int] Installed 1 packages from requirements.txt" in done.stderr, done.stderr
    assert done.stdout.strip() == "True ['bifrost-probe==1.2.3']", done.stderr

    environment = _environment(isolated_settings, "bifrost-probe==1.2.3\n")
    probe = subprocess.run(
        [sys.executable, "-c", "import bifrost_probe; print(bifrost_probe.__file__, bifrost_probe.VERSION)"],
        env={**os.environ, "PYTHONPATH": str(environment)},
        capture_output=True, text=True, timeout=60,
    )
    assert probe.returncode == 0, probe.stderr
    assert probe.stdout.split() == [str(environment / "bifrost_probe.py"), "1.2.3"]


def _environment(data_dir: Path, content: str) -> Path:
    """Where the packages for `content` live: one directory per requirements hash."""
    return data_dir / "site-packages" / ".envs" / f"{content_hash(content)}.1"


def test_unknown_package_is_logged_and_the_worker_still_starts(
    redis_client: redis.Redis, wheelhouse: Path
) -> None:
    _cache(redis_client, "no-such-package-anywhere==9.9\n")
    work, results = SPAWN.Queue(), SPAWN.Queue()
    process = _start_worker(work, results, "w-bad")
    assert results.get(timeout=60)["type"] == "installing"
    ready = results.get(timeout=300)
    assert ready["type"] == "ready"
    assert ready["install"]["ok"] is False
    assert "no-such-package-anywhere" in ready["install"]["failed"][0]["error"]
    work.put({"id": "x", "module": "tests.support.sample_workflows", "function": "add",
              "parameters": {"a": 1, "b": 1}})
    assert _answer(results.get(timeout=30))["result"] == 2
    work.put(None)
    process.join(timeout=30)
    assert process.exitcode == 0


def test_worker_imports_the_installed_package_in_a_workflow(
    redis_client: redis.Redis, wheelhouse: Path, tmp_path: Path
) -> None:
    _cache(redis_client, "bifrost-probe==1.2.3\n")
    work, results = SPAWN.Queue(), SPAWN.Queue()
    process = _start_worker(work, results, "w-imp")
    assert results.get(timeout=60)["type"] == "installing"
    assert results.get(timeout=300)["install"]["ok"] is True
    work.put({"id": "v", "module": "tests.support.sample_workflows", "function": "probe_version",
              "parameters": {}})
    work.put({"id": "w", "module": "importlib.metadata", "function": "version",
              "parameters": {"distribution_name": "bifrost-probe"}})
    results_by_id = {}
    for _ in range(2):
        result = _answer(results.get(timeout=30))
        results_by_id[result["id"]] = result
    assert (results_by_id["v"]["status"], results_by_id["v"]["result"]) == ("Success", "1.2.3")
    assert (results_by_id["w"]["status"], results_by_id["w"]["result"]) == ("Success", "1.2.3")
    work.put(None)
    process.join(timeout=30)


def test_sigterm_lets_the_item_in_hand_finish(
    redis_client: redis.Redis, exchange: Exchange
) -> None:
    work, results = SPAWN.Queue(), SPAWN.Queue()
    process = _start_worker(work, results, "w-term")
    assert results.get(timeout=60)["type"] == "installing"
    assert results.get(timeout=60)["type"] == "ready"
    started, release = exchange / "started", exchange / "release"
    # The item stays in hand until the test releases it: the SIGTERM comes
    # while it runs however fast or slow the machine is.
    work.put({"id": "slow", "module": "tests.support.sample_workflows", "function": "held",
              "parameters": {"started": str(started), "release": str(release)}})
    wait_for(started.exists, 60, what="the worker to start the item")
    assert process.pid is not None
    os.kill(process.pid, signal.SIGTERM)
    release.touch()
    result = _answer(results.get(timeout=60))
    assert (result["id"], result["status"], result["result"]) == ("slow", "Success", "done")
    process.join(timeout=60)
    assert process.exitcode == 0


def _answer(message: dict[str, Any]) -> dict[str, Any]:
    """A worker's result message with its JSON payload read back into fields."""
    from src.services.execution.results import decode_outcome

    return {**message, **decode_outcome(message["payload"])}


def _start_worker(
    work: multiprocessing.Queue[object], results: multiprocessing.Queue[object], worker_id: str
) -> multiprocessing.process.BaseProcess:
    from src.services.execution.simple_worker import run_worker_process

    process = SPAWN.Process(target=run_worker_process, args=(work, results, worker_id))
    process.start()
    return process


def test_with_redis_down_the_worker_installs_from_the_store(
    system: str, redis_server, wheelhouse: Path, isolated_settings: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from src.core.requirements_cache import save_requirements_sync
    from src.foundation.redis_client import close_clients
    from src.foundation.settings import get_settings

    monkeypatch.setenv("REDIS_URL", redis_server.url)
    get_settings.cache_clear()
    close_clients()
    save_requirements_sync("bifrost-probe==1.2.3\n")
    redis_server.stop()
    script = (
        "import logging\n"
        "logging.basicConfig(level=logging.INFO)\n"
        "from src.services.execution.simple_worker import _install_requirements_from_cache_sync\n"
        "print(_install_requirements_from_cache_sync('w-nored')['installed'])\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=API_DIR, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    assert "[w-nored] Redis unavailable after 3 attempts" in done.stderr
    assert "[w-nored] Installed 1 packages from requirements.txt" in done.stderr
    assert done.stdout.strip() == "['bifrost-probe==1.2.3']"
    assert (_environment(isolated_settings, "bifrost-probe==1.2.3\n") / "bifrost_probe.py").exists()


# What a worker process must never load: the web stack, the CLI, and (while
# Redis answers) the ORM.
HEAVY = ("fastapi", "starlette", "uvicorn", "httpx", "sqlalchemy", "alembic", "src.api",
         "src.cli")


def test_a_worker_process_loads_no_web_stack_and_no_orm(
    redis_client: redis.Redis, wheelhouse: Path, isolated_settings: Path
) -> None:
    # As the write path leaves Redis: the requirements, and their lock.
    content = "bifrost-probe==1.2.3\n"
    _cache(redis_client, content)
    wheel = next(wheelhouse.glob("bifrost_probe-1.2.3-*.whl"))
    lock = Lock.of(content_hash(content), [LockedPackage(
        "bifrost-probe", "1.2.3", (f"sha256:{hashlib.sha256(wheel.read_bytes()).hexdigest()}",),
        (DIRECT,))])
    redis_client.set(lock_key(lock.requirements_hash), lock.text())
    script = (
        "import queue, sys\n"
        "from src.services.execution.simple_worker import run_worker_process\n"
        "work, results = queue.Queue(), queue.Queue()\n"
        "work.put(None)\n"
        "run_worker_process(work, results, 'w-lean')\n"
        "ready = [m for m in list(results.queue) if m['type'] == 'ready']\n"
        "print(ready[0]['install']['installed'])\n"
        f"heavy = {HEAVY!r}\n"
        "print(sorted({m for m in sys.modules if m.startswith(heavy)}))\n"
    )
    # The fleet cache in a directory: the store backend's background publish
    # (a second after the build, so only on a machine slower than that) is the
    # worker's one use of the ORM, and it is not start-up's.
    environment = {**os.environ, "BIFROST_WHEEL_CACHE": f"dir:{isolated_settings / 'fleet'}"}
    done = subprocess.run([sys.executable, "-c", script], cwd=API_DIR, env=environment,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    installed, loaded = done.stdout.strip().splitlines()
    assert installed == "['bifrost-probe==1.2.3']", done.stderr
    assert loaded == "[]", f"a worker process loaded {loaded}"
