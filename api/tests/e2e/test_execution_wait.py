"""`wait` on the executions routes, on the real stack (API and pool as
processes): the answer comes when the pool writes the final record (the API
is woken through Redis), or when the wait runs out, with the record as it
stands then."""

from __future__ import annotations

import time
from collections.abc import Callable

from tests.support.stack import Stack

WORKFLOW = '''
import time

def quick(x):
    return x * 2

def slow():
    time.sleep(60)
    return "late"
'''


def test_a_caller_waits_for_the_end_without_polling(make_stack: Callable[..., Stack]) -> None:
    stack = make_stack(pools=1, workers_per_pool=1,
                       extra_env={"BIFROST_MAX_WAIT_SECONDS": "30"}).start()
    stack.upload("workflows/waited.py", WORKFLOW)

    ended = stack.client.post("/api/executions", json={
        "module": "workflows.waited", "function": "quick", "parameters": {"x": 21}, "wait": 30})
    assert ended.status_code == 200, ended.text
    record = ended.json()
    assert record["status"] == "Success" and record["result"] == 42, record

    pending = stack.client.post("/api/executions", json={
        "module": "workflows.waited", "function": "slow", "wait": 0.5})
    assert pending.status_code == 202, pending.text
    assert pending.json()["status"] in ("Pending", "Running"), pending.json()
    slow_id = pending.json()["id"]
    assert stack.client.post(f"/api/executions/{slow_id}/cancel").status_code == 202
    cancelled = stack.client.get(f"/api/executions/{slow_id}", params={"wait": 30})
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["status"] == "Failed", cancelled.json()

    queued = stack.client.post("/api/executions", json={
        "module": "workflows.waited", "function": "quick", "parameters": {"x": 1}})
    assert queued.status_code == 202 and set(queued.json()) == {"id"}, queued.text
    asked = time.monotonic()
    waited = stack.client.get(f"/api/executions/{queued.json()['id']}", params={"wait": 30})
    assert waited.status_code == 200 and waited.json()["result"] == 2, waited.text
    # Woken by the end, not by the wait running out (30 s; the run takes milliseconds).
    assert time.monotonic() - asked < 25

    too_long = stack.client.post("/api/executions", json={
        "module": "workflows.waited", "function": "quick", "wait": 31})
    assert too_long.status_code == 422 and "BIFROST_MAX_WAIT_SECONDS" in too_long.text
    assert stack.client.get(f"/api/executions/{slow_id}", params={"wait": 31}).status_code == 422
    assert stack.client.get("/api/executions/nope", params={"wait": 1}).status_code == 404
