"""Private file modes for the data dir and what it holds; secrets out of child environments."""

from __future__ import annotations

import logging
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import text

from src.foundation.hardening import is_dumpable, private_directory, private_file, without_secrets
from src.foundation.local_redis import LocalRedis
from src.store.database import dispose_engines, session_scope


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_new_private_directory_is_0700_with_its_parents(tmp_path: Path) -> None:
    path = tmp_path / "a" / "data"
    private_directory(path)
    assert mode(path) == 0o700


def test_a_wider_directory_is_narrowed_and_the_log_says_so(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "data"
    path.mkdir()
    path.chmod(0o755)
    with caplog.at_level(logging.WARNING):
        private_directory(path, what="data dir")
    assert mode(path) == 0o700
    assert f"narrowed the data dir {path} from mode 755 to 700" in caplog.text
    caplog.clear()
    private_directory(path, what="data dir")  # already private: nothing to say
    assert caplog.text == ""


def test_create_false_leaves_a_missing_directory_missing(tmp_path: Path) -> None:
    private_directory(tmp_path / "absent", create=False)
    assert not (tmp_path / "absent").exists()


def test_a_wider_file_is_narrowed_to_0600(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text("x")
    path.chmod(0o644)
    private_file(path)
    assert mode(path) == 0o600


def test_secrets_are_left_out_of_a_childs_environment() -> None:
    env = {"BIFROST_ADMIN_TOKEN": "t", "DATABASE_URL": "postgresql://u:p@h/db", "PATH": "/bin"}
    assert without_secrets(env) == {"PATH": "/bin"}


def test_the_sqlite_store_and_its_journals_are_0600(isolated_settings: Path) -> None:
    assert not isolated_settings.exists()
    try:
        with session_scope() as session:
            session.execute(text("CREATE TABLE probe (x INTEGER)"))
            session.execute(text("INSERT INTO probe VALUES (1)"))
        assert mode(isolated_settings) == 0o700  # the data dir the store made
        files = sorted(p.name for p in isolated_settings.iterdir())
        assert files == ["bifrost.db", "bifrost.db-shm", "bifrost.db-wal"]
        for name in files:
            assert mode(isolated_settings / name) == 0o600, name
    finally:
        dispose_engines()


def test_an_existing_wider_store_is_narrowed_on_connect(isolated_settings: Path) -> None:
    isolated_settings.mkdir(mode=0o700)
    store = isolated_settings / "bifrost.db"
    store.touch(mode=0o644)
    store.chmod(0o644)
    try:
        with session_scope() as session:
            session.execute(text("SELECT 1"))
        assert mode(store) == 0o600
    finally:
        dispose_engines()


def test_the_private_redis_dir_is_0700_and_the_server_gets_no_secrets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BIFROST_ADMIN_TOKEN", "never-in-redis")
    monkeypatch.setenv("DATABASE_URL", "postgresql://user:never-in-redis@db/bifrost")
    (tmp_path / "redis").mkdir(mode=0o755)
    (tmp_path / "redis").chmod(0o755)
    server = LocalRedis(tmp_path / "redis").start()
    try:
        assert mode(tmp_path / "redis") == 0o700
        assert server.process is not None
        environ = Path(f"/proc/{server.process.pid}/environ").read_bytes()
        assert b"never-in-redis" not in environ
        assert b"BIFROST_ADMIN_TOKEN" not in environ
    finally:
        server.stop()


def test_a_hardened_process_is_not_dumpable() -> None:
    api_dir = Path(__file__).resolve().parents[3]
    done = subprocess.run(
        [sys.executable, "-c", "from src.foundation.hardening import harden_process, is_dumpable\n"
         "print(is_dumpable(), harden_process(), is_dumpable())"],
        cwd=api_dir, capture_output=True, text=True, timeout=60,
        env={**os.environ, "PYTHONPATH": str(api_dir)},
    )
    assert done.stdout.split() == ["True", "True", "False"], done.stderr
    assert is_dumpable()  # the test process itself is left as it was
