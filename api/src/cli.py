"""`bifrost`: the command line.

    bifrost up       init, then the API and one worker pool, in the foreground
    bifrost api      the HTTP API only
    bifrost worker   one worker pool only (run as many as you like, anywhere)
    bifrost init     migrations, then warm the module and requirements caches

Each command imports only what it runs: `worker` never loads the web stack.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType

from src.core.settings import get_settings

logger = logging.getLogger("bifrost")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="bifrost", description="Bifrost runtime: API, worker pools and init."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("up", help="init, then serve the API and a worker pool")
    commands.add_parser("api", help="serve the HTTP API")
    worker = commands.add_parser("worker", help="run one worker pool")
    worker.add_argument("--workers", type=int, default=None,
                        help="processes in this pool (default: BIFROST_WORKERS)")
    commands.add_parser("init", help="migrations and cache warm-up")
    args = parser.parse_args(argv)
    _configure_logging()
    if args.command == "init":
        from scripts.init_container import main as init_main

        return init_main()
    if args.command == "api":
        from src.api.server import serve

        serve(get_settings().host, get_settings().port)
        return 0
    if args.command == "worker":
        from src.services.execution.process_pool import run_pool

        run_pool(args.workers)
        return 0
    return up()


def _configure_logging() -> None:
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def up() -> int:
    """The one-machine default: everything in the foreground until a signal."""
    from src.core.admin_token import load_or_create_admin_token
    from src.core.local_redis import LocalRedis, free_port, redis_answers

    started = time.monotonic()
    settings = get_settings()
    data_dir = settings.data_path
    data_dir.mkdir(parents=True, exist_ok=True)
    # Children resolve the same paths whatever their working directory.
    os.environ["BIFROST_DATA_DIR"] = str(data_dir)

    local_redis: LocalRedis | None = None
    if "REDIS_URL" not in os.environ and not redis_answers("redis://localhost:6379"):
        local_redis = LocalRedis(data_dir / "redis", free_port(), persist=True).start()
        os.environ["REDIS_URL"] = local_redis.url
        print(f"Started a private Redis at {local_redis.url} (files in {data_dir / 'redis'})")
    get_settings.cache_clear()

    children: list[subprocess.Popen[bytes]] = []
    stopping = False

    def request_stop(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, request_stop)

    try:
        token = load_or_create_admin_token(get_settings())
        from scripts.init_container import main as init_main

        if init_main() != 0:
            return 1
        children.append(_child("api", exclude=()))
        # Processes that run user code never see the admin token.
        children.append(_child("worker", exclude=("BIFROST_ADMIN_TOKEN",)))
        url = f"http://127.0.0.1:{get_settings().port}"
        if _wait_for_health(url, children, lambda: stopping):
            print(f"Bifrost is up at {url} in {time.monotonic() - started:.1f} s")
            print(f"Admin token: {token}  (saved in {data_dir / 'admin-token'})")
            sys.stdout.flush()
        while not stopping:
            for child in children:
                if child.poll() is not None:
                    print(f"A child process exited with {child.returncode}; stopping")
                    return 1
            time.sleep(0.2)
        return 0
    finally:
        _stop_children(children)
        if local_redis is not None:
            local_redis.stop()
        print("Bifrost stopped")


def _child(command: str, exclude: tuple[str, ...]) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if k not in exclude}
    # A session of its own: a Ctrl-C reaches `up` alone, which stops the
    # children in order (workers finish their items, Redis goes last).
    return subprocess.Popen(
        [sys.executable, "-m", "src.cli", command],
        env=env, cwd=Path(__file__).resolve().parents[1], start_new_session=True,
    )


def _wait_for_health(url: str, children: list[subprocess.Popen[bytes]],
                     stopping: Callable[[], bool]) -> bool:
    import urllib.request

    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if stopping():
            return False
        if any(child.poll() is not None for child in children):
            return False
        try:
            with urllib.request.urlopen(url + "/health", timeout=1) as response:
                if response.status == 200:
                    return True
        except OSError:
            pass
        time.sleep(0.1)
    return False


def _stop_children(children: list[subprocess.Popen[bytes]]) -> None:
    for child in children:
        if child.poll() is None:
            child.terminate()
    deadline = time.monotonic() + 30
    for child in children:
        try:
            child.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


if __name__ == "__main__":
    sys.exit(main())
