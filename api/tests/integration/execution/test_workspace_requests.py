"""Executions import any workspace file, not only the ones read ahead for
them: they ask their worker, over a socket of their own (real pool, real
Redis and store). A hostile execution's requests get errors, never a key
outside the workspace, and one too large fails its execution alone."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from src.core import module_cache
from src.services.execution import executions, registry
from tests.support.pools import run_to_the_end, running_pool
from tests.support.waiting import wait_for

FILES = {
    "flows/main.py": (
        "import importlib\n"
        "from flows import helper\n"
        "import tools.numbers as numbers\n"
        "def main(which):\n"
        "    chosen = importlib.import_module('tools.' + which)\n"
        "    return [helper.greet(), numbers.TWO, chosen.NAME]\n"
        "def missing():\n"
        "    import flows.not_there  # noqa\n"
    ),
    "flows/helper.py": "def greet():\n    return 'hi'\n",
    "tools/__init__.py": "",
    "tools/numbers.py": "TWO = 2\n",
    "tools/picked.py": "NAME = 'picked at run time'\n",
    # Speaks on the execution's workspace socket directly, as hostile code can.
    "flows/asker.py": '''
import json, socket, struct, time

_found = []

def _socket():
    for fd in range(3, 1024):
        if _found:
            break
        try:
            _found.append(socket.socket(fileno=fd))  # ENOTSOCK, EBADF for the others
        except OSError:
            pass
    return _found[0]

def _ask(raw):
    sock = _socket()
    sock.sendall(struct.pack("!Q", len(raw)) + raw)
    size = struct.unpack("!Q", sock.recv(8, socket.MSG_WAITALL))[0]
    return json.loads(sock.recv(size, socket.MSG_WAITALL))

def probe():
    return {"garbage": _ask(b"\\x80 not json"),
            "outside": _ask(json.dumps({"file": "../bifrost:requirements:content"}).encode()),
            "not a path": _ask(json.dumps({"file": ["a"]}).encode()),
            "index": _ask(b'{"index": true}'),
            "file": _ask(b'{"file": "flows/helper.py"}')}

def oversized():
    _socket().sendall(struct.pack("!Q", 1 << 40))
    time.sleep(60)
''',
}


@pytest.fixture
def pool(sqlite_system: str, redis_url: str, isolated_settings: Path,
         redis_client: redis.Redis, tmp_path: Path) -> Iterator[None]:
    for path, text in FILES.items():
        module_cache.save_file_sync(path, text)
    env = {"REDIS_URL": redis_url, "DATABASE_URL": sqlite_system,
           "BIFROST_DATA_DIR": str(isolated_settings)}
    with running_pool(env, workers=1, log_path=tmp_path / "pool.log"):
        wait_for(lambda: any(w["status"] == "idle" for p in registry.list_pools(redis_client)
                             for w in p["workers"]), 60, what="a ready worker")
        yield


def _final(client: redis.Redis, module: str, function: str) -> Any:
    execution_id = executions.enqueue_execution(module, function, {}, client)

    def ended() -> Any:
        record = executions.get_execution(execution_id, client)
        return record if record and record["status"] in executions.FINAL_STATUSES else None

    return wait_for(ended, 60, what=f"{module}:{function} to end")


def test_an_execution_imports_files_it_was_not_given(
        pool: None, redis_client: redis.Redis) -> None:
    assert run_to_the_end(redis_client, "flows.main", "main", which="picked") == [
        "hi", 2, "picked at run time"]
    module_cache.save_file_sync("flows/helper.py", "def greet():\n    return 'edited'\n")
    assert run_to_the_end(redis_client, "flows.main", "main", which="picked")[0] == "edited"
    missing = _final(redis_client, "flows.main", "missing")
    assert missing["error"] == "ModuleNotFoundError: No module named 'flows.not_there'"


def test_hostile_requests_get_errors_and_a_flood_fails_its_execution_alone(
        pool: None, redis_client: redis.Redis) -> None:
    answers = run_to_the_end(redis_client, "flows.asker", "probe")
    assert answers["garbage"] == {"error": "a request must be a JSON object"}
    assert "error" in answers["outside"] and "file" not in answers["outside"], answers
    assert "error" in answers["not a path"], answers
    assert set(FILES) <= set(answers["index"]["index"])
    assert answers["file"] == {"file": FILES["flows/helper.py"]}

    flood = _final(redis_client, "flows.asker", "oversized")
    assert flood["status"] == "Failed", flood
    assert flood["error"].startswith("WorkspaceRequestRefused: the execution sent a frame of "
                                     f"{1 << 40} bytes"), flood["error"]
    assert run_to_the_end(redis_client, "flows.main", "main", which="picked")[0] == "hi"
