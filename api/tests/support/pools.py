"""Real `bifrost worker` processes for integration and end-to-end tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

API_DIR = Path(__file__).resolve().parents[2]


@contextmanager
def running_pool(
    env: dict[str, str], workers: int = 2, log_path: Path | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """`bifrost worker` in a process of its own; stopped (SIGTERM) on exit."""
    log = open(log_path, "ab") if log_path else subprocess.DEVNULL  # noqa: SIM115
    process = subprocess.Popen(
        [sys.executable, "-m", "src.cli", "worker", "--workers", str(workers)],
        cwd=API_DIR, env={**os.environ, **env}, stdout=log, stderr=log,
        start_new_session=True,
    )
    try:
        yield process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        if log_path:
            log.close()  # type: ignore[union-attr]


def run_to_the_end(client: Any, module: str, function: str, wait: float = 60,
                   **parameters: object) -> Any:
    """Enqueue `module:function(**parameters)` on the pool(s) listening on
    `client`'s Redis, wait for its final record, and return its result,
    failing the test (with the error) unless the status is Success."""
    from src.services.execution import executions
    from tests.support.waiting import wait_for

    execution_id = executions.enqueue_execution(module, function, parameters, client)

    def ended() -> Any:
        record = executions.get_execution(execution_id, client)
        return record if record and record["status"] in executions.FINAL_STATUSES else None

    record = wait_for(ended, wait, what=f"{module}:{function} to end")
    assert record["status"] == "Success", (record["error"], record)
    return record["result"]
