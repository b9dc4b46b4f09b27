"""The init step as a user runs it: `python -m scripts.init_container` in api/."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import redis

from src.core import module_cache, requirements_cache

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
        "=== Init Complete ===",
    ]


def test_init_on_a_filled_store_warms_both_caches(
    system: str, redis_client: redis.Redis, redis_url: str
) -> None:
    module_cache.save_file_sync("workflows/hello.py", "def main():\n    return 1\n")
    module_cache.save_file_sync("workflows/__init__.py", "")
    requirements_cache.save_requirements_sync("alpha==1.0\n")
    redis_client.flushall()
    done = _init({"DATABASE_URL": system, "REDIS_URL": redis_url})
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.splitlines() == [
        "=== Bifrost Init Container ===",
        "✓ Migrations: Applied",
        "✓ Module cache: 2 modules loaded",
        "✓ Requirements cache: cached",
        "=== Init Complete ===",
    ]
    assert redis_client.exists(requirements_cache.REQUIREMENTS_KEY)
    assert redis_client.get(module_cache.module_key("workflows/hello.py"))


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
