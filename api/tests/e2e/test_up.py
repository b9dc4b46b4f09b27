"""`bifrost up` (what ./run.sh runs): init, API and pool in the foreground;
SIGINT stops every process it started."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

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


# Runs inside a network namespace of its own, where nothing answers on
# localhost:6379: `bifrost up` must start its private Redis there.
_ISOLATED_DRIVER = r'''
import json, os, signal, subprocess, sys, time, urllib.request
from pathlib import Path

data = Path(sys.argv[1])
env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "BIFROST_ADMIN_TOKEN")}
env.update(BIFROST_DATA_DIR=str(data), BIFROST_PORT="8123", BIFROST_WORKERS="1")
up = subprocess.Popen([sys.executable, "-m", "src.cli", "up"], env=env,
                      stdout=open(data.parent / "up.log", "wb"), stderr=subprocess.STDOUT)
deadline = time.monotonic() + 120
while "Bifrost is up" not in (data.parent / "up.log").read_text(errors="replace"):
    assert up.poll() is None and time.monotonic() < deadline, "up did not come up"
    time.sleep(0.1)
token = (data / "admin-token").read_text().strip()
request = urllib.request.Request("http://127.0.0.1:8123/api/workers",
                                 headers={"Authorization": "Bearer " + token})
while json.load(urllib.request.urlopen(request))["summary"]["ready"] != 1:
    assert time.monotonic() < deadline, "no ready worker"
    time.sleep(0.1)
up.send_signal(signal.SIGINT)
print("exit", up.wait(60))
'''


def test_up_starts_a_private_redis_when_none_answers(tmp_path: Path) -> None:
    if os.geteuid() != 0 or not shutil.which("unshare") or not shutil.which("ip"):
        pytest.skip("needs root with unshare and ip, to run `up` where no Redis answers")
    data = tmp_path / "data"
    data.mkdir()
    driver = tmp_path / "driver.py"
    driver.write_text(_ISOLATED_DRIVER)
    done = subprocess.run(
        ["unshare", "--net", "sh", "-c",
         f'ip link set lo up && exec "{sys.executable}" "{driver}" "{data}"'],
        cwd=API_DIR, capture_output=True, text=True, timeout=240,
        env={k: v for k, v in os.environ.items() if k != "REDIS_URL"},
    )
    log = (tmp_path / "up.log").read_text(errors="replace")
    assert done.returncode == 0, done.stdout + done.stderr + log
    assert done.stdout.strip() == "exit 0", log
    assert "Started a private Redis at redis://127.0.0.1:" in log
    assert (data / "redis" / "redis.log").exists()  # its files live in the data dir
    assert "Bifrost stopped" in log
