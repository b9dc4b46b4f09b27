"""The init step as a user runs it: `python -m scripts.init_container` in api/."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import redis

from src.core import lock_cache, module_cache, requirements_cache
from src.foundation.locks import DIRECT, Lock, LockedPackage

API_DIR = Path(__file__).resolve().parents[3]


def _init(env_overrides: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "scripts.init_container"],
        cwd=API_DIR, env={**os.environ, **env_overrides},
        capture_output=True, text=True, timeout=120,
    )


def test_init_on_an_empty_store(empty_store_url: str, redis_client: redis.Redis,
                                redis_url: str) -> None:
    done = _init({"DATABASE_URL": empty_store_url, "REDIS_URL": redis_url})
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.splitlines() == [
        "=== Bifrost Init Container ===",
        "✓ Migrations: Applied",
        "✓ Module cache: 0 modules loaded",
        "✓ Requirements cache: empty",
        "✓ Lock cache: none",
        "=== Init Complete ===",
    ]


def test_init_on_a_filled_store_warms_both_caches(
    system: str, redis_client: redis.Redis, redis_url: str
) -> None:
    module_cache.save_file_sync("workflows/hello.py", "def main():\n    return 1\n")
    module_cache.save_file_sync("workflows/__init__.py", "")
    requirements_cache.save_requirements_sync("alpha==1.0\n")
    redis_client.delete(requirements_cache.REQUIREMENTS_KEY,
                        module_cache.module_key("workflows/hello.py"),
                        module_cache.module_key("workflows/__init__.py"))
    done = _init({"DATABASE_URL": system, "REDIS_URL": redis_url})
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.splitlines() == [
        "=== Bifrost Init Container ===",
        "✓ Migrations: Applied",
        "✓ Module cache: 2 modules loaded",
        "✓ Requirements cache: cached",
        "✓ Lock cache: none",
        "=== Init Complete ===",
    ]
    assert redis_client.exists(requirements_cache.REQUIREMENTS_KEY)
    assert redis_client.get(module_cache.module_key("workflows/hello.py"))


def test_init_warms_the_lock_of_the_current_requirements(
    system: str, redis_client: redis.Redis, redis_url: str
) -> None:
    """A lock survives Redis losing it: `bifrost init` puts the current
    requirements' lock back from the store."""
    saved = requirements_cache.save_requirements_sync("alpha==1.0\n")
    lock = lock_cache.save_lock_sync(Lock.of(saved["hash"], [
        LockedPackage("alpha", "1.0", (f"sha256:{'1' * 64}",), (DIRECT,)),
    ]))
    # An older requirements hash's lock is not the current one: init leaves it be.
    old_hash = "0f" * 32
    lock_cache.save_lock_sync(Lock.of(old_hash, [LockedPackage("alpha", "0.9")]))
    current_key, old_key = lock_cache.lock_key(saved["hash"]), lock_cache.lock_key(old_hash)
    redis_client.delete(requirements_cache.REQUIREMENTS_KEY, current_key, old_key)

    done = _init({"DATABASE_URL": system, "REDIS_URL": redis_url})
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.splitlines()[-3:] == [
        "✓ Requirements cache: cached",
        "✓ Lock cache: cached",
        "=== Init Complete ===",
    ]
    assert redis_client.get(current_key) == lock.text()
    assert redis_client.ttl(current_key) > 86000
    assert redis_client.get(old_key) is None
    assert lock_cache.read_lock(saved["hash"], "w-after-init") == lock


def test_init_fails_naming_redis_when_it_is_unreachable(empty_store_url: str) -> None:
    done = _init({"DATABASE_URL": empty_store_url, "REDIS_URL": "redis://127.0.0.1:1/0"})
    assert done.returncode != 0
    assert "✗ Redis unreachable (redis://127.0.0.1:1/0)" in done.stdout


def test_init_fails_naming_the_store_when_it_is_unreachable(redis_url: str) -> None:
    done = _init({
        "DATABASE_URL": "postgresql://nobody:secret@127.0.0.1:1/none",
        "REDIS_URL": redis_url,
    })
    assert done.returncode != 0
    assert "✗ Store unreachable" in done.stdout
    assert "secret" not in done.stdout  # no password in logs
