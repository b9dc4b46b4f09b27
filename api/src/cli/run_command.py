"""`bifrost run MODULE:FUNCTION` and `bifrost workers`.

`run` submits an execution, polls it until it ends (quickly at first: most
executions take milliseconds), prints the result as JSON and exits 0 on
Success; on Failed or Timeout it prints the error and exits 1.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from src.cli.arguments import merged_parameters
from src.cli.client import ApiClient, CliError, PatientReader
from src.cli.context import Context
from src.cli.output import message, print_json, print_workers

FINAL_STATUSES = frozenset({"Success", "Failed", "Timeout"})
FIRST_POLL = 0.05
MAX_POLL = 0.5
# Beyond the execution's own limit: the time it may wait in the queue and be recorded.
RUN_WAIT_MARGIN = 30.0


def workers(ctx: Context, args: Any) -> int:
    return ctx.show("/api/workers", print_workers)


def run(ctx: Context, args: Any) -> int:
    module, function = args.target
    body: dict[str, Any] = {
        "module": module, "function": function,
        "parameters": merged_parameters(args.parameters_json, args.params),
    }
    if args.execution_timeout is not None:
        body["timeout"] = args.execution_timeout
    queued = ctx.client.post("/api/executions", body)
    execution_id = str(queued["id"])
    if ctx.no_wait:
        if ctx.json_output:
            print_json(queued)
        else:
            print(execution_id)
        return 0
    wait = ctx.wait_timeout
    if args.execution_timeout is not None:
        wait = max(wait, args.execution_timeout + RUN_WAIT_MARGIN)
    record = wait_for_execution(ctx.client, execution_id, timeout=wait)
    return report_execution(record, ctx.json_output)


def wait_for_execution(
    client: ApiClient, execution_id: str, *, timeout: float,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> dict[str, Any]:
    """GET /api/executions/{id} until its status is final (an API restart
    meanwhile is waited out); CliError at the deadline."""
    reader = PatientReader(client, clock=clock)
    deadline = clock() + timeout
    interval = FIRST_POLL
    while True:
        record: dict[str, Any] | None = reader.get(f"/api/executions/{execution_id}")
        if record is not None and record.get("status") in FINAL_STATUSES:
            return record
        if clock() >= deadline:
            status = record.get("status") if record is not None else "unknown"
            raise CliError(
                f"execution {execution_id} is still {status} after {timeout:g} s; "
                f"it goes on: see GET /api/executions/{execution_id}"
            )
        sleep(interval)
        interval = min(MAX_POLL, interval * 1.5)


def report_execution(record: dict[str, Any], json_output: bool) -> int:
    """Print the outcome: the result (or the whole record with --json) on
    stdout, the error and any notes on stderr. 0 on Success, else 1."""
    status = record.get("status")
    if json_output:
        print_json(record)
    elif status == "Success":
        print_json(record.get("result"))
    for note in record.get("notes") or []:
        message(f"note: {note}")
    if status == "Success":
        return 0
    message(f"bifrost: execution {record.get('id')} ended {status}: "
            f"{record.get('error') or 'no error given'}")
    return 1
