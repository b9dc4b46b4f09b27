"""The process commands: `bifrost up | api | worker | init`.

Each imports only what it runs: `worker` never loads the web stack.

`up`, `api` and `worker` harden their process first (`src/foundation/hardening.py`):
processes that run user code cannot read their /proc entries or memory.
`up` keeps the admin token out of every child's environment and argv (the API
gets the operator's token through an inherited pipe), and restarts the API or
the worker pool when one of them dies (`src/cli/supervisor.py`).
"""

from __future__ import annotations

import hmac
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

from src.foundation.hardening import harden_process, private_directory
from src.foundation.settings import get_settings

if TYPE_CHECKING:
    from src.cli.supervisor import Supervisor
    from src.foundation.local_redis import LocalRedis

logger = logging.getLogger("bifrost")
# The project dir (api/): children run `python -m src.cli` from it.
API_DIR = Path(__file__).resolve().parents[2]


def run_process_command(command: str, workers: int | None = None) -> int:
    """`init`, `api`, `worker` or `up`: the processes of the runtime itself."""
    configure_logging()
    if command == "init":
        from scripts.init_container import main as init_main

        private_directory(get_settings().data_path, what="data dir", create=False)
        return init_main()
    if command == "api":
        from src.api.server import serve
        from src.foundation.admin_token import receive_admin_token

        harden_process()
        receive_admin_token()  # from `bifrost up`, when the operator set the token
        serve(get_settings().host, get_settings().port)
        return 0
    if command == "worker":
        return _worker(workers)
    return up()


def _worker(workers: int | None) -> int:
    from src.foundation.admin_token import ADMIN_TOKEN_VARIABLE
    from src.services.execution.process_pool import run_pool

    harden_process()
    if (refused := _fleet_cache_refused()) is not None:
        print(f"bifrost worker: {refused}", file=sys.stderr)
        return 2
    # The pool never needs the admin token: its processes must not inherit it.
    os.environ.pop(ADMIN_TOKEN_VARIABLE, None)
    data_dir = get_settings().data_path
    if not data_dir.exists():  # made private here, not left to the packages dir's mkdir
        private_directory(data_dir, what="data dir")
    run_pool(workers)
    return 0


def _fleet_cache_refused() -> str | None:
    """Why the fleet cache stops a start (a bucket that does not exist,
    credentials refused), or None."""
    from src.services.installer.fleet_blobs import check_at_start

    return check_at_start(get_settings())


def configure_logging() -> None:
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def up() -> int:
    """The one-machine default: everything in the foreground until a signal."""
    from src.cli.supervisor import Child, Supervisor

    started = time.monotonic()
    harden_process()
    operator_token, token = _prepare_data_dir()
    read_token = get_settings().read_token
    if read_token is not None and hmac.compare_digest(read_token.encode(), token.encode()):
        print("bifrost up: BIFROST_READ_TOKEN is the admin token; give the read-only "
              "token a value of its own", file=sys.stderr)
        return 2
    if (refused := _fleet_cache_refused()) is not None:
        print(f"bifrost up: {refused}", file=sys.stderr)
        return 2
    local_redis = _redis_for_up()
    supervisor = Supervisor([
        Child("the API", lambda: _child("api", token=operator_token)),
        Child("the worker pool", lambda: _child("worker")),
    ])
    stop = _StopRequest()
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, stop.request)
    try:
        from scripts.init_container import main as init_main

        if init_main() != 0:
            return 1
        supervisor.start()
        url = f"http://127.0.0.1:{get_settings().port}"
        if _wait_for_health(url, supervisor, lambda: stop.requested):
            print(f"Bifrost is up at {url} in {time.monotonic() - started:.1f} s")
            _print_token(operator_token, token)
        while not stop.requested:
            if not supervisor.poll():
                return 1
            time.sleep(0.2)
        return 0
    finally:
        supervisor.stop()
        if local_redis is not None:
            local_redis.stop()
        print("Bifrost stopped")


class _StopRequest:
    """SIGINT, SIGTERM or SIGHUP: `up` stops its children in order and exits."""

    def __init__(self) -> None:
        self.requested = False

    def request(self, signum: int, frame: FrameType | None) -> None:
        self.requested = True


def _prepare_data_dir() -> tuple[str | None, str]:
    """Make the data dir private and settle the admin token: (the operator's
    own token, if BIFROST_ADMIN_TOKEN gave one; the token the API will use)."""
    from src.foundation.admin_token import (
        ADMIN_TOKEN_VARIABLE,
        configured_admin_token,
        load_or_create_admin_token,
    )

    settings = get_settings()
    data_dir = settings.data_path
    private_directory(data_dir, what="data dir")
    # Children resolve the same paths whatever their working directory.
    os.environ["BIFROST_DATA_DIR"] = str(data_dir)
    # The operator's token leaves the environment now, before any child starts:
    # the API gets it through a pipe, no other child needs it.
    operator_token = configured_admin_token(settings)
    token = load_or_create_admin_token(settings)
    os.environ.pop(ADMIN_TOKEN_VARIABLE, None)
    get_settings.cache_clear()
    return operator_token, token


def _redis_for_up() -> LocalRedis | None:
    """A private Redis in the data dir when none is configured or answering locally."""
    from src.foundation.local_redis import LocalRedis, free_port, redis_answers

    local_redis: LocalRedis | None = None
    if "REDIS_URL" not in os.environ and not redis_answers("redis://localhost:6379"):
        data_dir = get_settings().data_path
        local_redis = LocalRedis(data_dir / "redis", free_port(), persist=True,
                                 hardened=True).start()
        os.environ["REDIS_URL"] = local_redis.url
        print(f"Started a private Redis at 127.0.0.1:{local_redis.port}, with a password "
              f"(files and password in {data_dir / 'redis'})")
    get_settings.cache_clear()
    return local_redis


def _print_token(operator_token: str | None, token: str) -> None:
    from src.foundation.admin_token import admin_token_path

    if operator_token:
        print("Admin token: the one BIFROST_ADMIN_TOKEN gives (not saved to disk)")
    else:
        print(f"Admin token: {token}  (saved in {admin_token_path(get_settings())})")
    sys.stdout.flush()


def _child(command: str, token: str | None = None) -> subprocess.Popen[bytes]:
    """`bifrost <command>` as a child of `up`; `token` reaches it through an
    inherited pipe (never argv, which /proc/<pid>/cmdline shows to anyone)."""
    from src.foundation.admin_token import ADMIN_TOKEN_FD_VARIABLE, ADMIN_TOKEN_VARIABLE, token_pipe

    env = {k: v for k, v in os.environ.items()
           if k not in (ADMIN_TOKEN_VARIABLE, ADMIN_TOKEN_FD_VARIABLE)}
    pass_fds: tuple[int, ...] = ()
    if token is not None:
        pipe = token_pipe(token)
        env[ADMIN_TOKEN_FD_VARIABLE] = str(pipe)
        pass_fds = (pipe,)
    try:
        # A session of its own: a Ctrl-C reaches `up` alone, which stops the
        # children in order (workers finish their items, Redis goes last).
        return subprocess.Popen(
            [sys.executable, "-m", "src.cli", command],
            env=env, cwd=API_DIR, start_new_session=True,
            pass_fds=pass_fds,
        )
    finally:
        for fd in pass_fds:
            os.close(fd)


def _wait_for_health(url: str, supervisor: Supervisor, stopping: Callable[[], bool]) -> bool:
    """Whether the API answered /health (children that die meanwhile are restarted)."""
    import urllib.request

    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if stopping() or not supervisor.poll():
            return False
        try:
            with urllib.request.urlopen(url + "/health", timeout=1) as response:
                if response.status == 200:
                    return True
        except OSError:
            pass
        time.sleep(0.1)
    return False
