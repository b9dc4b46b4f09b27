"""The whole stack as separate processes, for end-to-end tests.

`bifrost init`, then `bifrost api` on a free port and one or more
`bifrost worker` pools, all on the test run's Redis, a SQLite store in the
test's directory, a data dir of their own and an offline wheelhouse
(`PIP_FIND_LINKS` + `PIP_NO_INDEX`). Every process logs to a file; the tails of
those files are added to every failure this helper reports.
"""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import httpx
import redis

from src.foundation.local_redis import free_port
from src.services.execution.control import control_channel
from src.store.database import dispose_engines
from src.store.migrate import upgrade_to_head
from tests.support.waiting import wait_for

API_DIR = Path(__file__).resolve().parents[2]
FINAL_STATUSES = frozenset({"Success", "Failed", "Timeout"})
STOP_TIMEOUT = 20.0
LOG_TAIL_LINES = 40

T = TypeVar("T")


@functools.cache
def migrated_store() -> Path:
    """An empty SQLite store at the schema's head, made once per test process."""
    directory = Path(tempfile.mkdtemp(prefix="bifrost-migrated-store-"))
    path = directory / "bifrost.db"
    url = f"sqlite:///{path}"
    upgrade_to_head(url)
    dispose_engines()  # its writes are in the file itself before it is copied
    return path


class Stack:
    """API + worker pool(s) over one Redis and one SQLite store, as processes."""

    def __init__(
        self,
        root: Path,
        redis_url: str,
        *,
        pools: int = 1,
        workers_per_pool: int = 2,
        token: str = "e2e-admin-token-5f1c0d9a",
        extra_env: dict[str, str] | None = None,
        pool_env: list[dict[str, str]] | None = None,
    ) -> None:
        """`pool_env`: per pool, what its environment adds (e.g. a packages dir
        and a host name of its own, as a pool on another machine has)."""
        self.root = root
        self.redis_url = redis_url
        self.pools = pools
        self.workers_per_pool = workers_per_pool
        self.token = token
        self.extra_env = extra_env or {}
        self.pool_env = pool_env or [{} for _ in range(pools)]
        self.data_dir = root / "data"
        self.wheelhouse = root / "wheelhouse"
        self.logs_dir = root / "logs"
        self.database_url = f"sqlite:///{root / 'bifrost.db'}"
        self.port = 0
        self.api: subprocess.Popen[bytes] | None = None
        self.pool_processes: list[subprocess.Popen[bytes]] = []
        self._client: httpx.Client | None = None
        self.wheelhouse.mkdir(parents=True, exist_ok=True)
        self.logs_dir.mkdir(parents=True, exist_ok=True)

    # --- paths and environment ------------------------------------------------------

    @property
    def packages_dir(self) -> Path:
        """settings.packages_dir of the stack's processes (no BIFROST_PACKAGES_DIR)."""
        return self.data_dir / "site-packages"

    @property
    def expected_workers(self) -> int:
        return self.pools * self.workers_per_pool

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k != "BIFROST_PACKAGES_DIR"}
        env.update(
            REDIS_URL=self.redis_url,
            DATABASE_URL=self.database_url,
            BIFROST_DATA_DIR=str(self.data_dir),
            BIFROST_ADMIN_TOKEN=self.token,
            BIFROST_PORT=str(self.port),
            BIFROST_HOST="127.0.0.1",
            PIP_FIND_LINKS=str(self.wheelhouse),
            PIP_NO_INDEX="1",
            PIP_DISABLE_PIP_VERSION_CHECK="1",
            PYTHONUNBUFFERED="1",
        )
        env.update(self.extra_env)
        return env

    # --- processes ---------------------------------------------------------------------

    def _log(self, name: str) -> Any:
        log = open(self.logs_dir / f"{name}.log", "ab")  # noqa: SIM115  # closed by Popen's owner
        log.write(f"\n===== {name} started at {time.strftime('%H:%M:%S')} =====\n".encode())
        log.flush()
        return log

    def _popen(self, name: str, args: list[str], env: dict[str, str],
               module: str = "src.cli") -> subprocess.Popen[bytes]:
        with self._log(name) as log:
            return subprocess.Popen(
                [sys.executable, "-m", module, *args],
                cwd=API_DIR, env=env, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,  # a process group of its own: stop() kills it whole
            )

    def init(self) -> None:
        """`bifrost init` (migrations, cache warm-up); fails the test unless it exits 0."""
        with self._log("init") as log:
            result = subprocess.run(
                [sys.executable, "-m", "src.cli", "init"],
                cwd=API_DIR, env=self.env(), stdout=log, stderr=subprocess.STDOUT, timeout=120,
            )
        assert result.returncode == 0, f"bifrost init exited {result.returncode}\n{self.logs()}"

    def start(self, *, init: bool | None = None, wait: bool = True) -> Stack:
        """The store, the API (waits for /health), then the pools (waits until
        every worker is ready on the requirements in effect).

        `init=True` runs `bifrost init` first. By default it runs only for a
        store that exists already (a restart). A new store is a copy of one
        this test process migrated once: on an empty store and an emptied
        Redis, `init` migrates and writes nothing else, so the copy is what it
        would leave, without the start of one more process per test. `init`
        itself is tested in tests/integration/scripts/ and through `bifrost up`.
        """
        store = self.root / "bifrost.db"
        if init is None:
            init = store.exists()
            if not init:
                shutil.copyfile(migrated_store(), store)
        if init:
            self.init()
        self.port = free_port()
        self.api = self._popen("api", ["api"], self.env())
        self._client = httpx.Client(
            base_url=f"http://127.0.0.1:{self.port}",
            headers={"Authorization": f"Bearer {self.token}"},
            timeout=30,
        )
        self.wait(self._healthy, 60, "the API to answer /health")
        self.start_pools()
        if wait:
            self.wait_subscribed()
            self.wait_ready(self.current_hash())
        return self

    def start_pools(self, module: str = "src.cli") -> None:
        """`bifrost worker` pools (or another pool entry point, `module`, that
        takes the same `worker --workers N` arguments after its name)."""
        # Processes that run user code never see the admin token (as `bifrost up`).
        worker_env = {k: v for k, v in self.env().items() if k != "BIFROST_ADMIN_TOKEN"}
        args = ["--workers", str(self.workers_per_pool)]
        for index in range(self.pools):
            self.pool_processes.append(self._popen(
                f"pool-{index}", ["worker", *args] if module == "src.cli" else args,
                worker_env | self.pool_env[index], module,
            ))

    def stop_pools(self) -> None:
        """SIGTERM the pools and wait for them (the API keeps serving)."""
        for process in self.pool_processes:
            process.send_signal(signal.SIGTERM)
        for process in self.pool_processes:
            try:
                process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        self.pool_processes = []

    def _healthy(self) -> bool:
        return self.client.get("/health").status_code == 200

    def _exited(self) -> str | None:
        """Which process of the stack has exited, if one has."""
        for name, process in self._processes():
            code = process.poll()
            if code is not None:
                return f"{name} exited with {code}"
        return None

    def _processes(self) -> list[tuple[str, subprocess.Popen[bytes]]]:
        named = [(f"pool-{i}", p) for i, p in enumerate(self.pool_processes)]
        return ([("api", self.api)] if self.api else []) + named

    def stop(self) -> None:
        """SIGTERM every process, wait, then kill each process group."""
        processes = self._processes()
        for _name, process in processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT
        for _name, process in processes:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(max(0.1, deadline - time.monotonic()))
            # Whatever is left of its group (worker processes of a pool).
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        self.api = None
        self.pool_processes = []
        if self._client is not None:
            self._client.close()
            self._client = None

    # --- diagnostics ---------------------------------------------------------------------

    def logs(self, lines: int = LOG_TAIL_LINES) -> str:
        """The last `lines` lines of every process's log."""
        parts = []
        for path in sorted(self.logs_dir.glob("*.log")):
            # The tests' own polling (successful GETs) would crowd out the rest.
            text = [line for line in path.read_text(errors="replace").splitlines()
                    if not (' - "GET ' in line and '" 200 OK' in line)]
            parts.append(f"----- {path.name} (last {lines} lines) -----\n"
                         + "\n".join(text[-lines:]))
        return "\n".join(parts)

    def wait(self, condition: Callable[[], T | bool | None], timeout: float, what: str) -> T:
        """wait_for, with the processes' log tails on failure; fails at once
        (not at the deadline) when a process of the stack has exited."""
        dead: list[str] = []

        def guarded() -> T | bool | None:
            if (exited := self._exited()) is not None:
                dead.append(exited)
                return True
            return condition()

        try:
            value = wait_for(guarded, timeout, interval=0.1, what=what)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{self.logs()}") from None
        if dead:
            raise AssertionError(f"{dead[0]} while waiting for {what}\n{self.logs()}")
        return value  # type: ignore[return-value]

    # --- HTTP ------------------------------------------------------------------------------

    @property
    def client(self) -> httpx.Client:
        assert self._client is not None, "the stack is not started"
        return self._client

    def current_hash(self) -> str:
        response = self.client.get("/api/requirements")
        assert response.status_code == 200, response.text
        return str(response.json()["hash"])

    def fleet(self) -> dict[str, Any]:
        response = self.client.get("/api/workers")
        assert response.status_code == 200, response.text
        return response.json()

    def upload(self, path: str, text: str) -> None:
        response = self.client.put(f"/api/files/{path}", content=text.encode())
        assert response.status_code == 200, response.text

    def install(self, package: str, version: str | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"package": package}
        if version is not None:
            body["version"] = version
        response = self.client.post("/api/packages/install", json=body)
        assert response.status_code == 200, f"{response.status_code} {response.text}"
        return response.json()

    def submit(self, module: str, function: str = "main",
               params: dict[str, Any] | None = None) -> str:
        response = self.client.post(
            "/api/executions",
            json={"module": module, "function": function, "parameters": params or {}},
        )
        assert response.status_code == 202, f"{response.status_code} {response.text}"
        return str(response.json()["id"])

    def record(self, execution_id: str) -> dict[str, Any]:
        response = self.client.get(f"/api/executions/{execution_id}")
        assert response.status_code == 200, f"{response.status_code} {response.text}"
        return response.json()

    def wait_final(self, execution_id: str, timeout: float = 60) -> dict[str, Any]:
        def final() -> dict[str, Any] | None:
            record = self.record(execution_id)
            return record if record["status"] in FINAL_STATUSES else None

        return self.wait(final, timeout, f"execution {execution_id} to end")

    def execute(self, module: str, function: str = "main",
                params: dict[str, Any] | None = None, timeout: float = 60) -> dict[str, Any]:
        """POST /api/executions, then poll until the status is final; the record."""
        return self.wait_final(self.submit(module, function, params), timeout)

    # --- fleet ---------------------------------------------------------------------------------

    def wait_subscribed(self, timeout: float = 60) -> None:
        """Every pool listens on the control channel (so a broadcast reaches it)."""
        client = redis.from_url(self.redis_url, decode_responses=True)
        try:
            def subscribed() -> bool:
                counts: Any = client.pubsub_numsub(control_channel(client))
                return int(counts[0][1]) >= self.pools

            self.wait(subscribed, timeout, f"{self.pools} pool(s) on the control channel")
        finally:
            client.close()

    def is_ready(self, fleet: dict[str, Any], expected_hash: str,
                 workers: int | None = None) -> bool:
        """`fleet` (GET /api/workers) has `workers` workers, all ready on `expected_hash`."""
        count = self.expected_workers if workers is None else workers
        summary, members = fleet["summary"], fleet["workers"]
        return bool(
            summary["total"] > 0
            and summary["ready"] == summary["total"] == count
            and summary["current_hash"] == expected_hash
            and all(w["requirements_hash"] == expected_hash for w in members)
        )

    def wait_ready(self, expected_hash: str, workers: int | None = None,
                   timeout: float = 90) -> dict[str, Any]:
        """Poll GET /api/workers until every worker is ready on `expected_hash`
        (and there are `workers` of them, by default all the stack runs)."""
        count = self.expected_workers if workers is None else workers

        def ready() -> dict[str, Any] | None:
            fleet = self.fleet()
            return fleet if self.is_ready(fleet, expected_hash, count) else None

        def describe() -> str:
            try:
                return repr(self.fleet())
            except Exception as exc:  # the API itself may be the trouble
                return f"(GET /api/workers failed: {exc!r})"

        try:
            return self.wait(ready, timeout, f"{count} workers ready on {expected_hash[:12]}")
        except AssertionError as exc:
            raise AssertionError(f"fleet: {describe()}\n{exc}") from None
