"""The CLI's client: where the API is, which token, and every failure as one
readable line with its exit code (2: unreachable or token refused; 1: the
API answered with an error)."""

from __future__ import annotations

import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from src.cli.client import (
    ApiClient,
    ApiError,
    Credentials,
    PatientReader,
    TokenProblem,
    Unreachable,
    admin_credentials,
    api_url,
    describe_error_payload,
)
from src.foundation.settings import get_settings


def client_answering(handler: Callable[[httpx.Request], httpx.Response],
                     source: str = "BIFROST_ADMIN_TOKEN") -> ApiClient:
    return ApiClient("http://api.test", Credentials("secret", source),
                     transport=httpx.MockTransport(handler))


def test_the_url_is_the_option_else_bifrost_url_else_the_local_port(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert api_url("http://a:1/", {"BIFROST_URL": "http://b:2"}) == "http://a:1"
    assert api_url(None, {"BIFROST_URL": "b:2"}) == "http://b:2"
    monkeypatch.setenv("BIFROST_PORT", "8123")
    get_settings.cache_clear()
    assert api_url(None, {}) == "http://127.0.0.1:8123"


def test_the_token_is_the_variable_else_the_token_file(isolated_settings: Path) -> None:
    assert admin_credentials({"BIFROST_ADMIN_TOKEN": " env-token \n"}) == Credentials(
        "env-token", "BIFROST_ADMIN_TOKEN")
    isolated_settings.mkdir(parents=True)
    token_file = isolated_settings / "admin-token"
    token_file.write_text("file-token\n")
    assert admin_credentials({}) == Credentials("file-token", str(token_file))


def test_no_token_says_so_and_creates_nothing(isolated_settings: Path) -> None:
    with pytest.raises(TokenProblem) as raised:
        admin_credentials({})
    assert raised.value.exit_code == 2
    assert "BIFROST_ADMIN_TOKEN" in str(raised.value)
    assert str(isolated_settings / "admin-token") in str(raised.value)
    assert not isolated_settings.exists()


def test_an_empty_token_file_is_no_token(isolated_settings: Path) -> None:
    isolated_settings.mkdir(parents=True)
    (isolated_settings / "admin-token").write_text("\n")
    with pytest.raises(TokenProblem, match="is empty"):
        admin_credentials({})


def test_answers_are_json_with_the_bearer_token() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"content": "", "hash": "h"})

    assert client_answering(handler).put("/api/requirements", {"content": ""})["hash"] == "h"
    assert seen[0].headers["Authorization"] == "Bearer secret"
    assert seen[0].content == b'{"content":""}'


@pytest.mark.parametrize("status", [401, 403])
def test_a_refused_token_is_exit_2_naming_the_variable(status: int) -> None:
    client = client_answering(
        lambda _request: httpx.Response(status, json={"detail": "Invalid token"}))
    with pytest.raises(TokenProblem) as raised:
        client.get("/api/workers")
    assert raised.value.exit_code == 2
    text = str(raised.value)
    assert f"refused the token ({status}" in text and "set BIFROST_ADMIN_TOKEN" in text
    assert "secret" not in text


@pytest.mark.parametrize(("payload", "expected"), [
    ({"detail": "package 'nope' is not in requirements"}, "package 'nope' is not in requirements"),
    ({"detail": {"message": "the requirements cannot be resolved (nope): no versions",
                 "package": "nope"}},
     "the requirements cannot be resolved (nope): no versions"),
    ({"detail": {"message": "invalid requirements: 1 bad line",
                 "errors": [{"line": 2, "text": "-e .", "reason": "options are refused"}]}},
     "invalid requirements: 1 bad line\n  line 2: '-e .': options are refused"),
    ({"detail": [{"loc": ["body", "package"], "msg": "Input should be a valid string"}]},
     "package: Input should be a valid string"),
    ({"other": 1}, ""),
    (None, ""),
])
def test_error_details_read_as_text(payload: Any, expected: str) -> None:
    assert describe_error_payload(payload) == expected


def test_an_error_answer_is_exit_1_with_its_reason() -> None:
    client = client_answering(lambda _request: httpx.Response(
        422, json={"detail": {"message": "the requirements cannot be resolved (nope): x"}}))
    with pytest.raises(ApiError) as raised:
        client.post("/api/packages/install", {"package": "nope"})
    assert raised.value.exit_code == 1
    assert str(raised.value) == (
        "the API answered 422: the requirements cannot be resolved (nope): x")


def test_an_answer_that_is_not_json_is_quoted() -> None:
    client = client_answering(lambda _request: httpx.Response(502, text="<html>Bad gateway</html>"))
    with pytest.raises(ApiError, match="502: <html>Bad gateway</html>"):
        client.get("/api/workers")


def test_a_closed_port_is_unreachable_exit_2() -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    client = ApiClient(f"http://127.0.0.1:{port}", Credentials("t", "test"))
    with pytest.raises(Unreachable) as raised:
        client.get("/api/workers")
    assert raised.value.exit_code == 2
    assert str(raised.value) == (
        f"cannot reach the API at http://127.0.0.1:{port} (connection refused); "
        "is it running? set BIFROST_URL")


def test_a_timeout_is_unreachable_exit_2() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("timed out", request=request)

    with pytest.raises(Unreachable, match="did not answer GET /api/workers within 30 s"):
        client_answering(handler).get("/api/workers")


def test_a_wait_tolerates_a_short_outage_then_gives_up() -> None:
    answers: list[httpx.Response | None] = [None, None, httpx.Response(200, json={"ok": 1}),
                                            None, None, None]

    def handler(request: httpx.Request) -> httpx.Response:
        answer = answers.pop(0)
        if answer is None:
            raise httpx.ConnectError("[Errno 111] Connection refused", request=request)
        return answer

    now = [0.0]
    reader = PatientReader(client_answering(handler), grace=10.0, clock=lambda: now[0])
    assert reader.get("/x") is None
    now[0] = 9.0
    assert reader.get("/x") is None
    assert reader.get("/x") == {"ok": 1}  # answering again: the outage clock restarts
    now[0] = 15.0
    assert reader.get("/x") is None
    now[0] = 24.0
    assert reader.get("/x") is None
    now[0] = 25.0
    with pytest.raises(Unreachable, match="connection refused"):
        reader.get("/x")
