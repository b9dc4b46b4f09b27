"""`bifrost run`: waiting for the execution, and its outcome as an exit code."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from src.cli.client import ApiClient, CliError, Credentials
from src.cli.run_command import report_execution, wait_for_execution


def record(status: str, **fields: Any) -> dict[str, Any]:
    return {"id": "e1", "status": status, "result": None, "error": None, **fields}


def client_giving(records: list[dict[str, Any]]) -> ApiClient:
    calls: list[int] = []

    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/api/executions/e1"
        calls.append(1)
        return httpx.Response(200, json=records[min(len(calls), len(records)) - 1])

    return ApiClient("http://api.test", Credentials("t", "test"),
                     transport=httpx.MockTransport(handler))


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def test_the_wait_ends_on_a_final_status() -> None:
    clock = FakeClock()
    client = client_giving([record("Pending"), record("Running"), record("Success", result=3)])
    final = wait_for_execution(client, "e1", timeout=60, clock=clock, sleep=clock.sleep)
    assert final["result"] == 3


def test_the_wait_gives_up_at_the_deadline() -> None:
    clock = FakeClock()
    with pytest.raises(CliError, match="still Running after 5 s") as raised:
        wait_for_execution(client_giving([record("Running")]), "e1", timeout=5,
                           clock=clock, sleep=clock.sleep)
    assert raised.value.exit_code == 1


def test_success_prints_the_result_as_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert report_execution(record("Success", result={"greeting": "hi"}), json_output=False) == 0
    assert json.loads(capsys.readouterr().out) == {"greeting": "hi"}


def test_json_output_prints_the_whole_record(capsys: pytest.CaptureFixture[str]) -> None:
    assert report_execution(record("Success", result=1), json_output=True) == 0
    assert json.loads(capsys.readouterr().out)["status"] == "Success"


@pytest.mark.parametrize("status", ["Failed", "Timeout"])
def test_failed_and_timeout_print_the_error_and_exit_1(
    status: str, capsys: pytest.CaptureFixture[str],
) -> None:
    assert report_execution(record(status, error="ValueError: nope"), json_output=False) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert f"execution e1 ended {status}: ValueError: nope" in captured.err
