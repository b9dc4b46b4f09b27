"""The read-only token over the real HTTP server, the real Redis and store.

The routes come from the app itself (`app.routes`), so a route added later is
covered without a change here: with the read token every GET route answers
200 on something that exists (a file, a package line, an execution made
first), and every other route answers 403 naming the reason and changes
nothing; the admin token still changes things; no token, or a wrong one of
the same length, is a 401 on `/metrics` and every `/api` route. Neither token
ever appears in an answer or in the server's log.
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
import redis
from fastapi import FastAPI
from fastapi.routing import APIRoute, iter_route_contexts

from src.api.app import create_app
from src.api.middleware import is_guarded
from src.api.routers.console import SERVABLE
from src.foundation.settings import get_settings
from tests.support.api_server import running_api

from .conftest import TOKEN, Api, ControlWatcher
from .served import read_state

READ = "integration-read-token-9876543210"
HELLO_PATH = "workflows/hello.py"
HELLO_SOURCE = "def main(name='world'):\n    return f'hello {name}'\n"
STREAMS = {"/api/events"}  # GET routes that answer with a stream that never ends
# What each write of today takes to succeed with the admin token; any other
# write is sent `{}` and must at least get past the token check.
WRITE_BODIES: dict[tuple[str, str], Any] = {
    ("PUT", "/api/requirements"): {"content": "alpha==1\n"},
    ("POST", "/api/packages/install"): {"package": "beta", "version": "1"},
    ("POST", "/api/packages/upgrade"): {},
    ("POST", "/api/workers/recycle-all"): None,
    ("PUT", "/api/files/{path:path}"): HELLO_SOURCE,
    ("DELETE", "/api/files/{path:path}"): None,
    ("POST", "/api/executions"): {"module": "workflows.hello", "function": "main"},
    ("POST", "/api/executions/{execution_id}/cancel"): None,
    ("DELETE", "/api/packages/{name}"): None,
}


class Collected(logging.Handler):
    """Every record the server's loggers emit while it serves, formatted."""

    LOGGERS = ("", "uvicorn", "uvicorn.error", "uvicorn.access")
    CLIENT_SIDE = ("httpx", "httpcore")  # this test's own client, not the server

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if not record.name.startswith(self.CLIENT_SIDE):
            self.lines.append(self.format(record))


@dataclass
class Served:
    app: FastAPI
    admin: Api
    reader: httpx.Client
    raw: redis.Redis
    logs: Collected
    samples: dict[str, str] = field(default_factory=dict)
    bodies: list[str] = field(default_factory=list)  # every answer the test read

    def routes(self) -> list[tuple[str, str]]:
        # Routers included in the app are not themselves in `app.routes`:
        # `iter_route_contexts` walks into them.
        return sorted(
            (method, route.path or "")
            for route in iter_route_contexts(self.app.routes)
            if isinstance(route.original_route, APIRoute)
            for method in route.methods or ()
        )

    def url(self, template: str) -> str:
        def fill(match: re.Match[str]) -> str:
            name = match.group(1)
            if template.startswith("/console/"):
                return sorted(SERVABLE)[0]
            assert name in self.samples, f"{template}: add something real for {{{name}}}"
            return self.samples[name]

        return re.sub(r"\{(\w+)(?::\w+)?\}", fill, template)

    def send(self, client: httpx.Client, method: str, url: str, **kwargs: Any) -> httpx.Response:
        response = client.request(method, url, **kwargs)
        self.bodies.append(response.text)
        return response

    def assert_no_token_leaked(self) -> None:
        for token in (TOKEN, READ):
            assert not [body for body in self.bodies if token in body]
            assert not [line for line in self.logs.lines if token in line]
        assert self.logs.lines, "the server logged nothing: the log was not captured"


@pytest.fixture
def served(
    sqlite_system: str, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Served]:
    monkeypatch.setenv("BIFROST_ADMIN_TOKEN", TOKEN)
    monkeypatch.setenv("BIFROST_READ_TOKEN", READ)
    get_settings.cache_clear()
    app = create_app()
    logs = Collected()
    root_level = logging.getLogger().level
    with (
        running_api(app) as base_url,
        httpx.Client(base_url=base_url, headers={"Authorization": f"Bearer {TOKEN}"},
                     timeout=30) as client,
        httpx.Client(base_url=base_url, timeout=30) as anonymous,
        httpx.Client(base_url=base_url, headers={"Authorization": f"Bearer {READ}"},
                     timeout=30) as reader,
        redis.from_url(redis_url) as raw,
    ):
        # Attached once uvicorn has configured its own loggers (it replaces their handlers).
        for name in Collected.LOGGERS:
            logging.getLogger(name).addHandler(logs)
        logging.getLogger().setLevel(logging.DEBUG)
        try:
            served = Served(app, Api(base_url, TOKEN, client, anonymous), reader, raw, logs)
            make_the_world(served)
            yield served
        finally:
            logging.getLogger().setLevel(root_level)
            for name in Collected.LOGGERS:
                logging.getLogger(name).removeHandler(logs)


def make_the_world(served: Served) -> None:
    """Something real behind every path parameter: a file, a package line, an execution."""
    admin = served.admin.client
    assert served.send(admin, "PUT", f"/api/files/{HELLO_PATH}",
                       content=HELLO_SOURCE).status_code == 200
    installed = served.send(admin, "POST", "/api/packages/install",
                            json={"package": "alpha", "version": "1"})
    assert installed.status_code == 200, installed.text
    queued = served.send(admin, "POST", "/api/executions",
                         json={"module": "workflows.hello", "function": "main"})
    assert queued.status_code == 202, queued.text
    served.samples.update(path=HELLO_PATH, name="alpha", execution_id=queued.json()["id"])


def first_event(served: Served) -> tuple[int, list[str]]:
    """Open GET /api/events with the read token, read its first event, close."""
    lines: list[str] = []
    with served.reader.stream("GET", "/api/events") as response:
        for line in response.iter_lines():
            if line == "" and any(item.startswith("data:") for item in lines):
                break
            lines.append(line)
    served.bodies.append("\n".join(lines))
    return response.status_code, lines


def test_the_read_token_reads_every_get_route(served: Served) -> None:
    gets = [path for method, path in served.routes() if method == "GET"]
    assert {"/api/requirements", "/api/files/{path:path}", "/api/events"} <= set(gets)
    for template in gets:
        if template in STREAMS:
            status, lines = first_event(served)
            assert status == 200
            assert "event: progress" in lines, lines
            continue
        response = served.send(served.reader, "GET", served.url(template))
        assert response.status_code == 200, (template, response.text)
    # HEAD is a read too: past the gate, the routes answer as they do for the admin.
    for template in gets:
        if template not in STREAMS:
            response = served.send(served.reader, "HEAD", served.url(template))
            assert response.status_code not in (401, 403), template
    served.assert_no_token_leaked()


def test_the_read_token_changes_nothing(served: Served, control: ControlWatcher) -> None:
    writes = [(method, path) for method, path in served.routes() if method not in ("GET", "HEAD")]
    assert ("POST", "/api/packages/install") in writes
    before = read_state(served.raw)
    for method, template in writes:
        url = served.url(template)
        response = served.send(served.reader, method, url, json={})
        assert response.status_code == 403, (method, template, response.text)
        assert response.json() == {"detail": f"the read-only token cannot change anything: "
                                              f"{method} {url} needs the admin token"}
        assert read_state(served.raw) == before, (method, template)
    # What the state above does not show: the execution was not cancelled, no recycle went out.
    execution = served.send(served.reader, "GET", served.url("/api/executions/{execution_id}"))
    assert execution.json()["status"] == "Pending"
    control.assert_nothing_published()
    served.assert_no_token_leaked()


def test_the_admin_token_still_changes_things(served: Served) -> None:
    writes = [(method, path) for method, path in served.routes() if method not in ("GET", "HEAD")]
    # Deletions last: what they remove was there all along.
    for method, template in sorted(writes, key=lambda write: write[0] == "DELETE"):
        body = WRITE_BODIES.get((method, template), {})
        content = body if isinstance(body, str) else None
        json_body = None if content is not None or body is None else body
        response = served.send(served.admin.client, method, served.url(template),
                               content=content, json=json_body)
        if (method, template) in WRITE_BODIES:
            assert response.status_code < 300, (method, template, response.text)
        assert response.status_code not in (401, 403), (method, template)
        assert response.status_code < 500, (method, template, response.text)
    # The writes took effect: the line and the file are gone, the execution was cancelled.
    admin = served.admin.client
    assert "alpha" not in admin.get("/api/requirements").json()["content"]
    assert admin.get(f"/api/files/{HELLO_PATH}").status_code == 404
    cancelled = admin.get(served.url("/api/executions/{execution_id}")).json()
    assert cancelled["status"] == "Failed", cancelled
    served.assert_no_token_leaked()


def guarded_requests(served: Served) -> list[tuple[str, str]]:
    requests = [(method, served.url(path)) for method, path in served.routes() if is_guarded(path)]
    # Paths and methods no route serves: the gate answers before routing would (404, 405).
    unrouted = [("GET", "/api"), ("POST", "/api/nope"), ("POST", "/metrics"), ("GET", "/metrics/x")]
    return [*requests, ("GET", "/metrics"), *unrouted]


@pytest.mark.parametrize(
    "authorization",
    [None, "Bearer " + "x" * len(READ), "Bearer " + "x" * len(TOKEN), f"Bearer {READ[:-1]}X"],
    ids=["none", "wrong-as-long-as-read", "wrong-as-long-as-admin", "read-one-byte-off"],
)
def test_no_valid_token_is_a_401_everywhere_guarded(
    served: Served, authorization: str | None
) -> None:
    headers = {} if authorization is None else {"Authorization": authorization}
    before = read_state(served.raw)
    for method, url in guarded_requests(served):
        response = served.send(served.admin.anonymous, method, url, headers=headers, json={})
        assert response.status_code == 401, (method, url, response.text)
        assert response.headers["www-authenticate"] == "Bearer"
        assert response.json() == {"detail": "missing or invalid bearer token"}
    assert read_state(served.raw) == before
    served.assert_no_token_leaked()


def test_the_console_and_health_stay_open(served: Served) -> None:
    anonymous = served.admin.anonymous
    for url in ("/health", "/", f"/console/{sorted(SERVABLE)[0]}"):
        assert served.send(anonymous, "GET", url).status_code == 200, url


def read_first_event(lines: Iterator[str]) -> list[str]:
    """The lines of the stream's first event, read from `lines`."""
    event: list[str] = []
    for line in lines:
        if line == "" and any(item.startswith("data:") for item in event):
            return event
        event.append(line)
    return event


def test_readers_holding_every_event_stream_never_lock_the_admin_out(
    served: Served, monkeypatch: pytest.MonkeyPatch
) -> None:
    from src.api.routers import events

    monkeypatch.setattr(events, "MAX_STREAMS", 2)
    readers: list[Iterator[str]] = []  # each kept: a line iterator let go closes its stream
    with contextlib.ExitStack() as held:
        for _ in range(2):
            stream = held.enter_context(served.reader.stream("GET", "/api/events"))
            assert stream.status_code == 200
            readers.append(stream.iter_lines())
            # The first event comes once the stream has taken its slot.
            first = read_first_event(readers[-1])
            assert any(line.startswith("data:") for line in first), first
        refused = served.reader.get("/api/events", timeout=30)
        assert refused.status_code == 503, refused.text
        assert "read token" in refused.json()["detail"], refused.text
        with served.admin.client.stream("GET", "/api/events") as admin:
            assert admin.status_code == 200
            first = read_first_event(admin.iter_lines())
            assert any(line.startswith("data:") for line in first), first


def test_the_schema_needs_a_token_and_no_page_loads_scripts_from_elsewhere(
    served: Served,
) -> None:
    assert served.admin.anonymous.get("/openapi.json").status_code == 401
    for client in (served.admin.client, served.reader):
        schema = client.get("/openapi.json")
        assert schema.status_code == 200
        assert "/api/executions" in schema.json()["paths"]
    # FastAPI's /docs and /redoc pages load Swagger UI and ReDoc from a CDN: not served.
    for path in ("/docs", "/redoc", "/docs/oauth2-redirect"):
        assert served.admin.client.get(path).status_code == 404, path
