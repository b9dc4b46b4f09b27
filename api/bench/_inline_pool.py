"""The baseline for `bench.load`'s HTTP batch: a pool whose workers run each
execution inside the worker itself, as workers did before every execution got
a process of its own (the loop body below is that former one, verbatim in
effect: call, check the result is JSON, answer).

Run as `python -m bench._inline_pool --workers N`. The pool's forkserver
preloads this module, so the worker processes it forks run the baseline loop.
Benchmark only: it gives up every isolation the real loop provides.
"""

from __future__ import annotations

import json
import os
import queue
import sys
from typing import Any

from src.services.execution import simple_worker
from src.services.execution.executor import execute_item
from src.services.execution.process_pool import ProcessPool
from src.services.execution.protocol import WorkItem
from src.services.execution.results import encode_outcome
from src.services.installer.outcome import InstallOutcome


def _inline_work_loop(work_queue: Any, result_queue: Any, worker_id: str, stop: Any,
                      install: InstallOutcome) -> None:
    parent = os.getppid()
    while not stop.requested:
        try:
            item = work_queue.get(timeout=simple_worker.POLL_SECONDS)
        except queue.Empty:
            if os.getppid() != parent:
                return
            continue
        if item is None:
            return
        parameters = json.loads(item.get("parameters_json", "{}"))
        work = WorkItem(id=item["id"], module=item["module"], function=item["function"],
                        parameters=parameters)
        outcome = execute_item(work, worker_id, install)
        json.dumps(outcome["result"])  # the former loop's check that the result is JSON
        payload = encode_outcome(outcome["status"], outcome["result"], outcome["error"],
                                 outcome["duration_ms"], max_bytes=16 * 1024 * 1024)
        result_queue.put({"type": "result", "id": item["id"], "worker_id": worker_id,
                          "payload": payload})


simple_worker._work_loop = _inline_work_loop  # type: ignore[assignment]


class InlinePool(ProcessPool):
    def __init__(self, size: int) -> None:
        super().__init__(size)
        self.context.set_forkserver_preload(["src.services.execution.simple_worker", __name__])


if __name__ == "__main__":
    InlinePool(int(sys.argv[sys.argv.index("--workers") + 1])).run()
