"""`bifrost up` (what ./run.sh runs): init, API and pool in the foreground;
SIGINT stops every process it started."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from src.foundation.local_redis import free_port
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

# The private Redis: a password, and the commands that would hand over the
# machine refused even to a client that has it.
import re, redis
log = (data.parent / "up.log").read_text(errors="replace")
port = int(re.search(r"Started a private Redis at 127\.0\.0\.1:(\d+)", log).group(1))
password = (data / "redis" / "password").read_text().strip()
checks = {"password_mode": oct((data / "redis" / "password").stat().st_mode & 0o777),
          "password_in_log": password in log}
try:
    redis.Redis(port=port).ping()
    checks["without_password"] = "answered"
except redis.AuthenticationError as exc:
    checks["without_password"] = "refused"
client = redis.Redis(port=port, password=password)
checks["with_password"] = client.ping()
refused = {}
for command in (["CONFIG", "GET", "dir"], ["MODULE", "LIST"], ["DEBUG", "SLEEP", "0"],
                ["SAVE"], ["BGSAVE"], ["FLUSHALL"], ["ACL", "LIST"], ["SHUTDOWN"],
                ["REPLICAOF", "NO", "ONE"], ["SLAVEOF", "NO", "ONE"]):
    try:
        client.execute_command(*command)
        refused[command[0]] = False
    except redis.ResponseError as exc:
        refused[command[0]] = "unknown command" in str(exc)
checks["refused"] = refused

# What an execution holds: no Redis URL or password, in its environment or in
# any command line it can read.
source = (
    "import os\n"
    "from pathlib import Path\n"
    "def main(password):\n"
    "    lines = []\n"
    "    for p in Path('/proc').glob('[0-9]*/cmdline'):\n"
    "        try:\n"
    "            lines.append(p.read_bytes())\n"
    "        except OSError:\n"
    "            pass\n"
    "    return {'env': sorted(k for k in os.environ if 'REDIS' in k or 'DATABASE' in k\n"
    "                          or 'TOKEN' in k or 'WEBHOOK' in k),\n"
    "            'in_env': any(password in v for v in os.environ.values()),\n"
    "            'in_cmdlines': any(password.encode() in line for line in lines),\n"
    "            'cmdlines_read': len(lines)}\n"
)
def call(method, path, body):
    req = urllib.request.Request("http://127.0.0.1:8123" + path, data=body, method=method,
                                 headers={"Authorization": "Bearer " + token,
                                          "Content-Type": "application/json"})
    return json.load(urllib.request.urlopen(req))
call("PUT", "/api/files/workflows/probe.py", source.encode())
submitted = call("POST", "/api/executions", json.dumps(
    {"module": "workflows.probe", "function": "main",
     "parameters": {"password": password}}).encode())
while True:
    record = call("GET", "/api/executions/" + submitted["id"], None)
    if record["status"] not in ("Pending", "Running"):
        break
    assert time.monotonic() < deadline + 60, "the probe did not finish"
    time.sleep(0.1)
checks["execution"] = record.get("result") if record["status"] == "Success" else record
print("checks", json.dumps(checks))
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
    checks_line, exit_line = done.stdout.strip().splitlines()[-2:]
    assert exit_line == "exit 0", log
    assert "Started a private Redis at 127.0.0.1:" in log
    checks = json.loads(checks_line.removeprefix("checks "))
    assert checks["password_mode"] == "0o600" and not checks["password_in_log"], checks
    assert checks["without_password"] == "refused" and checks["with_password"] is True, checks
    assert all(checks["refused"].values()), checks["refused"]
    execution = checks["execution"]
    assert execution["env"] == [] and not execution["in_env"], execution
    assert not execution["in_cmdlines"] and execution["cmdlines_read"] > 0, execution
    assert (data / "redis" / "redis.log").exists()  # its files live in the data dir
    assert "Bifrost stopped" in log


def _child_of(pid: int, command: str) -> int | None:
    """The child of `pid` running `bifrost <command>` (`python -m src.cli <command>`)."""
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            fields = dict(line.split(":\t", 1) for line in status.read_text().splitlines()
                          if ":\t" in line)
            cmdline = (status.parent / "cmdline").read_bytes()
        except OSError:
            continue
        if int(fields.get("PPid", "0")) == pid and cmdline.endswith(f"src.cli\0{command}\0"
                                                                      .encode()):
            return int(fields["Pid"])
    return None


class _Up:
    """`bifrost up` on the run's Redis, in a data dir of the test's own."""

    def __init__(self, tmp_path: Path, redis_url: str, **env: str) -> None:
        self.port = free_port()
        self.data_dir = tmp_path / "data"
        self.log_path = tmp_path / "up.log"
        self.base = f"http://127.0.0.1:{self.port}"
        full_env = {**os.environ, "REDIS_URL": redis_url, "BIFROST_PORT": str(self.port),
                    "BIFROST_DATA_DIR": str(self.data_dir), "BIFROST_WORKERS": "1"}
        full_env.pop("BIFROST_ADMIN_TOKEN", None)
        full_env.update(env)
        self.log = self.log_path.open("wb")
        self.process = subprocess.Popen([sys.executable, "-m", "src.cli", "up"], cwd=API_DIR,
                                        env=full_env, stdout=self.log, stderr=subprocess.STDOUT)

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_up(self) -> None:
        wait_for(lambda: "Bifrost is up" in self.output() or self.process.poll() is not None,
                 120, what="`up` to say it is up")
        assert "Bifrost is up" in self.output(), self.output()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                assert self.process.wait(60) == 0
            finally:
                if self.process.poll() is None:
                    self.process.kill()
        self.log.close()


class _HealthWatch:
    """Asks GET /health every 50 ms on a thread, and keeps every failure."""

    def __init__(self, base: str) -> None:
        import threading

        self.base = base
        self.answers = 0
        self.failures: list[str] = []
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        # A generous timeout: an answer merely slowed by the restart's load is
        # still an answer; only a refusal or an error response is a failure.
        with httpx.Client(timeout=30) as client:
            while not self.done.is_set():
                try:
                    response = client.get(f"{self.base}/health")
                    if response.status_code == 200:
                        self.answers += 1
                    else:
                        self.failures.append(f"{response.status_code} {response.text}")
                except httpx.HTTPError as exc:
                    self.failures.append(repr(exc))
                self.done.wait(0.05)

    def stop(self) -> None:
        self.done.set()
        self.thread.join(60)


def test_up_restarts_a_worker_pool_that_dies_while_the_api_keeps_serving(
    redis_client: object, redis_url: str, tmp_path: Path
) -> None:
    up = _Up(tmp_path, redis_url)
    try:
        up.wait_up()
        token = (up.data_dir / "admin-token").read_text().strip()
        client = httpx.Client(base_url=up.base, headers={"Authorization": f"Bearer {token}"},
                              timeout=30)
        wait_for(lambda: client.get("/api/workers").json()["summary"]["ready"] == 1, 60,
                 what="the first pool's worker to be ready")
        pool = _child_of(up.process.pid, "worker")
        assert pool is not None
        first_pools_processes = _descendants(pool) | {pool}

        health = _HealthWatch(up.base)
        try:
            os.kill(pool, signal.SIGKILL)
            wait_for(lambda: "the worker pool exited with code -9; restarting it" in up.output(),
                     30, what="`up` to say it restarts the pool")
            new_pool = wait_for(
                lambda: (found := _child_of(up.process.pid, "worker")) not in (None, pool)
                and found, 30, what="a new worker pool")

            def new_ready_worker() -> bool:
                ours = _descendants(new_pool)
                return any(w["pid"] in ours and w["status"] in ("idle", "busy")
                           for w in client.get("/api/workers").json()["workers"])

            wait_for(new_ready_worker, 60, what="a worker of the new pool to be ready")
            client.put("/api/files/workflows/after_restart.py",
                       content=b"def main(n):\n    return n * 2\n").raise_for_status()
            submitted = client.post("/api/executions", json={
                "module": "workflows.after_restart", "function": "main",
                "parameters": {"n": 21}})
            assert submitted.status_code == 202, submitted.text
            execution = submitted.json()["id"]
            record = wait_for(
                lambda: (r := client.get(f"/api/executions/{execution}").json())["status"]
                not in ("Pending", "Running") and r, 60, what="the execution to end")
            assert record["status"] == "Success", record
            assert record["result"] == 42
        finally:
            health.stop()
        assert health.failures == [], health.failures[:5]
        assert health.answers >= 5
        wait_for(lambda: not any(_alive(p) for p in first_pools_processes), 30,
                 what="the killed pool's workers to exit")
        assert up.process.poll() is None  # nothing else stopped
        client.close()
    finally:
        up.stop()
    assert "Bifrost stopped" in up.output()


def test_up_keeps_the_operators_token_out_of_its_children_and_off_disk(
    redis_client: object, redis_url: str, tmp_path: Path
) -> None:
    from src.confinement.sandbox import drop_capabilities
    from src.foundation.hardening import prctl

    secret = "operator-token-" + os.urandom(8).hex()
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    data_dir.chmod(0o755)  # an operator's wider data dir is narrowed
    up = _Up(tmp_path, redis_url, BIFROST_ADMIN_TOKEN=secret)
    try:
        up.wait_up()
        output = up.output()
        assert "Admin token: the one BIFROST_ADMIN_TOKEN gives (not saved to disk)" in output
        assert secret not in output
        assert f"narrowed the data dir {data_dir} from mode 755 to 700" in output
        assert not (data_dir / "admin-token").exists()
        assert stat.S_IMODE(data_dir.stat().st_mode) == 0o700
        for name in ("bifrost.db", "bifrost.db-wal", "bifrost.db-shm"):
            assert stat.S_IMODE((data_dir / name).stat().st_mode) == 0o600, name
        headers = {"Authorization": f"Bearer {secret}"}
        assert httpx.get(f"{up.base}/api/requirements", headers=headers).status_code == 200
        assert httpx.get(f"{up.base}/api/requirements",
                         headers={"Authorization": "Bearer wrong"}).status_code == 401

        api = _child_of(up.process.pid, "api")
        pool = _child_of(up.process.pid, "worker")
        assert api is not None and pool is not None
        wait_for(lambda: _descendants(pool), 60, what="the pool's worker processes")
        for pid in (api, pool, *_descendants(pool)):
            for name in ("environ", "cmdline"):
                with contextlib.suppress(FileNotFoundError, ProcessLookupError):
                    assert secret.encode() not in Path(f"/proc/{pid}/{name}").read_bytes(), \
                        (pid, name)

        # `up`, the API and the pool are hardened: a process without capabilities
        # (as an execution's is) cannot read their environment, though same uid.
        read_fd, write_fd = os.pipe()
        reader = os.fork()
        if reader == 0:
            try:
                os.close(read_fd)
                prctl(38, 1)  # PR_SET_NO_NEW_PRIVS
                drop_capabilities()
                answers = []
                for pid in (up.process.pid, api, pool):
                    try:
                        Path(f"/proc/{pid}/environ").read_bytes()
                        answers.append("read")
                    except PermissionError:
                        answers.append("denied")
                os.write(write_fd, ",".join(answers).encode())
            finally:
                os._exit(0)
        os.close(write_fd)
        try:
            answers = os.read(read_fd, 100).decode()
        finally:
            os.close(read_fd)
            os.waitpid(reader, 0)
        assert answers == "denied,denied,denied"
    finally:
        up.stop()
