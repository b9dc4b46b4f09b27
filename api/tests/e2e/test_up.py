"""`bifrost up` (what ./run.sh runs): init, API and pool in the foreground;
SIGINT stops every process it started."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from src.core.local_redis import free_port
from tests.support.waiting import wait_for

API_DIR = Path(__file__).resolve().parents[2]


def _descendants(pid: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            fields = dict(line.split(":\t", 1) for line in status.read_text().splitlines()
                          if ":\t" in line)
            children.setdefault(int(fields["PPid"]), []).append(int(fields["Pid"]))
        except (OSError, KeyError, ValueError):
            continue
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def _alive(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return "State:\tZ" not in status


def test_up_serves_then_stops_everything_on_sigint(
    redis_client: object, redis_url: str, tmp_path: Path
) -> None:
    port = free_port()
    data_dir = tmp_path / "data"
    env = {**os.environ, "REDIS_URL": redis_url, "BIFROST_PORT": str(port),
           "BIFROST_DATA_DIR": str(data_dir), "BIFROST_WORKERS": "2"}
    env.pop("BIFROST_ADMIN_TOKEN", None)
    log = (tmp_path / "up.log").open("wb")
    started = time.monotonic()
    up = subprocess.Popen([sys.executable, "-m", "src.cli", "up"], cwd=API_DIR, env=env,
                          stdout=log, stderr=subprocess.STDOUT)
    try:
        output = lambda: (tmp_path / "up.log").read_text()  # noqa: E731
        wait_for(lambda: "Bifrost is up" in output(), 120, what="`up` to say it is up")
        print(f"time to ready: {time.monotonic() - started:.2f} s")
        token = (data_dir / "admin-token").read_text().strip()
        assert oct((data_dir / "admin-token").stat().st_mode & 0o777) == "0o600"
        assert f"Admin token: {token}" in output()
        base = f"http://127.0.0.1:{port}"
        assert httpx.get(f"{base}/health").json() == {"status": "ok"}
        headers = {"Authorization": f"Bearer {token}"}
        assert httpx.get(f"{base}/api/requirements").status_code == 401
        fleet = wait_for(
            lambda: (f := httpx.get(f"{base}/api/workers", headers=headers).json())
            ["summary"]["ready"] == 2 and f, 60, what="two ready workers")
        assert fleet["summary"]["total"] == 2
        started_processes = _descendants(up.pid)
        assert len(started_processes) >= 4  # api, pool, two workers
        up.send_signal(signal.SIGINT)
        assert up.wait(60) == 0
        wait_for(lambda: not any(_alive(p) for p in started_processes), 30,
                 what="every process `up` started to exit")
        assert "Bifrost stopped" in output()
    finally:
        if up.poll() is None:
            up.kill()
        log.close()
