"""A workflow tries every door to the platform's secrets, and finds nothing.

The pool runs as an operator would run it: the admin token and the store's
URL (with a password) in its environment, the token file, the SQLite store
and a private Redis's files in the data dir. The workflow, a real execution
in a real worker, looks for them in its environment, in /proc/*/environ and
/proc/*/cmdline of every process, in the data dir, in the settings object,
in every live Python object of its process, in its inherited descriptors and
through the pool's forkserver socket.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from src.confinement.landlock import landlock_abi
from src.foundation.local_redis import LocalRedis
from src.services.execution import executions, registry
from src.store.database import session_scope
from src.store.files import put_file
from tests.support.pools import running_pool
from tests.support.waiting import wait_for

DOORS = r'''
import gc, json, os, socket, sys
from pathlib import Path


def _try(found, door, action):
    try:
        value = action()
    except (OSError, ValueError) as exc:
        return f"{type(exc).__name__}"
    text = value if isinstance(value, str) else repr(value)
    for name, hexed in SECRETS.items():  # hex: the plain secret is in no object here
        if bytes.fromhex(hexed).decode() in text:
            found.append(f"{door}: {name}")
    return "open"


def main(secrets, data_dir, files):
    global SECRETS
    SECRETS = secrets
    found, tried = [], {}
    tried["environment"] = _try(found, "os.environ", lambda: json.dumps(dict(os.environ)))
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            for name in ("environ", "cmdline"):
                _try(found, f"/proc/{proc.name}/{name}",
                     lambda p=proc, n=name: (p / n).read_bytes().decode("latin-1"))
    data = Path(data_dir)
    tried["list data dir"] = _try(found, "data dir listing", lambda: os.listdir(data))
    for path in files:
        target = data / path
        def read(target=target):
            if target.is_dir():
                return "".join(f.read_bytes().decode("latin-1") for f in target.iterdir())
            return target.read_bytes().decode("latin-1")
        tried[path] = _try(found, f"data dir {path}", read)
    def settings():
        from src.foundation.settings import get_settings
        return get_settings().model_dump_json()
    tried["settings"] = _try(found, "settings object", settings)
    def every_object():
        texts = []
        for obj in gc.get_objects():
            if isinstance(obj, dict):
                texts += [v for v in obj.values() if isinstance(v, str)]
            elif isinstance(obj, (list, tuple)):
                texts += [v for v in obj if isinstance(v, str)]
        return "\n".join(texts)
    tried["live objects"] = _try(found, "live Python objects", every_object)
    def descriptors():
        out = []
        for fd in os.listdir("/proc/self/fd"):
            try:
                out.append(os.readlink(f"/proc/self/fd/{fd}"))
                os.lseek(int(fd), 0, 0)
                out.append(os.read(int(fd), 1 << 16).decode("latin-1"))
            except OSError:
                pass
        return "\n".join(out)
    tried["descriptors"] = _try(found, "inherited descriptors", descriptors)
    def forkserver():
        reached = []
        for line in Path("/proc/net/unix").read_text().splitlines()[1:]:
            parts = line.split()
            if len(parts) >= 8 and "listener-" in parts[7]:
                s = socket.socket(socket.AF_UNIX)
                try:
                    s.connect(parts[7].lstrip("@") if not parts[7].startswith("@")
                              else "\0" + parts[7][1:])
                    reached.append(parts[7])
                except OSError:
                    pass
                finally:
                    s.close()
        if reached:
            found.append(f"forkserver socket reachable: {reached}")
        return ""
    tried["forkserver"] = _try(found, "forkserver", forkserver)
    return {"found": found, "tried": tried}
'''


@pytest.fixture
def secret_stack(
    system: str, redis_client: redis.Redis, isolated_settings: Path, tmp_path: Path
) -> Iterator[tuple[dict[str, str], Path, redis.Redis]]:
    if landlock_abi() < 6:
        pytest.skip("the kernel has no Landlock with signal and socket scoping (ABI 6+): "
                    "executions cannot be confined here")
    data_dir = isolated_settings
    data_dir.mkdir(parents=True, exist_ok=True)
    token = "admin-token-" + os.urandom(8).hex()
    (data_dir / "admin-token").write_text(token + "\n")
    (data_dir / "admin-token").chmod(0o600)
    if system.startswith("postgresql"):  # trust auth: any password connects
        marker = "store-secret-" + os.urandom(8).hex()
        store_url = system.replace("://postgres@", f"://postgres:{marker}@")
    else:
        marker = str(data_dir / "bifrost.db")  # SQLite: where the file is, and the file
        store_url = f"sqlite:///{marker}"
        from src.store.migrate import upgrade_to_head

        upgrade_to_head(store_url)
    private = LocalRedis(data_dir / "redis", persist=True).start()
    client = redis.Redis.from_url(private.url, decode_responses=True)
    try:
        with session_scope(store_url) as session:  # the pool caches it, sealed
            put_file(session, "flows/doors.py", DOORS)
        client.bgrewriteaof()
        env = {"REDIS_URL": private.url, "DATABASE_URL": store_url,
               "BIFROST_DATA_DIR": str(data_dir), "BIFROST_ADMIN_TOKEN": token}
        secrets = {"admin token": token, "store": marker}
        with running_pool(env, workers=1, log_path=tmp_path / "pool.log"):
            wait_for(lambda: any(w["status"] == "idle" for p in registry.list_pools(client)
                                 for w in p["workers"]), 60, what="a ready worker")
            yield secrets, data_dir, client
    finally:
        client.close()
        private.stop()


def test_a_workflow_finds_no_secret_behind_any_door(
    secret_stack: tuple[dict[str, str], Path, redis.Redis],
) -> None:
    secrets, data_dir, client = secret_stack
    hexed = {name: secret.encode().hex() for name, secret in secrets.items()}
    files = sorted(str(path.relative_to(data_dir)) for path in data_dir.rglob("*")
                   if path.is_file() and "site-packages" not in path.parts
                   and "scratch" not in path.parts)
    assert {"admin-token", "redis/redis.log"} <= set(files), files
    execution_id = executions.enqueue_execution(
        "flows.doors", "main", {"secrets": hexed, "data_dir": str(data_dir), "files": files},
        client)
    record = wait_for(
        lambda: (r := executions.get_execution(execution_id, client))
        and r["status"] in executions.FINAL_STATUSES and r, 60, what="the doors workflow")
    assert record["status"] == "Success", record
    report = record["result"]
    print(json.dumps(report["tried"], indent=1))
    assert report["found"] == []
    # every door was really tried: the data dir refused, it did not simply lack the files
    for door in ("list data dir", *files):  # each file there, the store's too on SQLite
        assert report["tried"][door] == "PermissionError", (door, report["tried"])
    assert report["tried"]["environment"] == "open"  # readable, and without secrets
