"""Fuzzing the real HTTP API over its own OpenAPI schema: no input gets a 5xx,
and no refused (4xx) request changes anything.

The routes come from the app's own OpenAPI schema, so a route added to the
app is fuzzed without a change here; each generator is one test per route (so
that a parallel run spreads them), and a test checks that the running
server's `/openapi.json` names exactly those routes. Two generators, each a
bounded, derandomized Hypothesis run per route (the same requests on every run):

- Schemathesis cases (valid and invalid bodies, path parameters and headers
  for the route's schema), each sent as generated or relabelled with another
  Content-Type or with ASCII escapes (bodies are JSON whatever the label);
- raw requests that Schemathesis seldom sends: bytes that are not UTF-8, JSON
  with NaN, 1e999, lone surrogates, huge integers, duplicate keys or deep
  nesting, form and plain-text bodies, chunked bodies, percent-encoded and
  dot-segment paths, odd and duplicated headers.

Every request carries the token. After each answer: the status is below
500; a 4xx carries its reason; and after a 4xx the state is what it was
before (the requirements as GET /api/requirements reports them, the raw
bytes of the Redis key, every workspace file in the store, the length of the
execution stream). A 2xx may change the state, which is then read afresh.
"""

from __future__ import annotations

import http.client
import json
import math
import time
import urllib.parse
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.generation.modes import GenerationMode

from src.api.app import create_app
from src.foundation.hashing import sha256_hex
from src.foundation.settings import Settings

from .conftest import Api
from .served import ApiState, migrated_sqlite, module_server, read_state, use_backends

# Examples per route for each generator (fewer when a route's schema has fewer
# distinct cases). A route that takes neither a body nor a parameter varies
# only in its target and headers: it gets a quarter of them (GET
# /api/packages/outdated, which asks the index twice per request, is one).
SCHEMA_EXAMPLES_PER_ROUTE = 70
RAW_EXAMPLES_PER_ROUTE = 100
INPUTLESS_SHARE = 4
REQUEST_TIMEOUT = 30.0
# A chunked body goes out as SMALL_CHUNKS pieces of SMALL_CHUNK bytes, then
# pieces of LARGE_CHUNK bytes (see `chunks`).
SMALL_CHUNK, SMALL_CHUNKS, LARGE_CHUNK = 7, 64, 1024

GOOD_REQUIREMENTS = "alpha==1\n"
GOOD_PATH = "workflows/hello.py"
GOOD_SOURCE = "def main():\n    return 'hello'\n"

FUZZ_SETTINGS = settings(
    derandomize=True,  # the same examples on every run of the same code, in CI too
    database=None,  # nothing learnt from earlier runs changes what is sent
    deadline=None,
    # Requests over a socket are slow next to generation, and route bodies are
    # large: neither is a problem of the strategies.
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.large_base_example,
        HealthCheck.filter_too_much,
    ],
    print_blob=True,
)


# --- the server and the state it must keep --------------------------------------------


HTTP_METHODS = frozenset({"get", "put", "post", "delete", "patch", "head", "options"})


def app_routes() -> list[str]:
    """Every route of the app, labelled as Schemathesis labels an operation
    ("GET /api/files/{path}"), from the schema of an app built with a token
    given (so building it writes no file)."""
    schema = create_app(Settings(admin_token="fuzz-route-listing-token-0123456789")).openapi()
    return sorted(
        f"{method.upper()} {path}"
        for path, item in schema["paths"].items()
        for method in item
        if method in HTTP_METHODS
    )


ROUTES = app_routes()


@pytest.fixture(scope="module")
def server(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    with module_server(redis_url, tmp_path_factory) as api:
        yield api


@pytest.fixture(scope="module")
def store_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    return migrated_sqlite(tmp_path_factory)


@pytest.fixture
def raw(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.from_url(redis_url)
    yield client
    client.close()


@pytest.fixture
def api(
    server: Api,
    store_url: str,
    redis_client: redis.Redis,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> Api:
    use_backends(monkeypatch, store_url)
    # No pool runs here: an execution never ends, so a `wait` runs its whole time.
    monkeypatch.setenv("BIFROST_MAX_WAIT_SECONDS", "0.05")
    # Writes resolve against the run's offline index (isolated_settings): what
    # they name that it lacks is a 422, at once.
    response = server.client.put("/api/requirements", json={"content": GOOD_REQUIREMENTS})
    assert response.status_code == 200, response.text
    response = server.client.put(f"/api/files/{GOOD_PATH}", content=GOOD_SOURCE.encode())
    assert response.status_code == 200, response.text
    response = server.client.post(
        "/api/executions", json={"module": "workflows.hello", "function": "main"}
    )
    assert response.status_code == 202, response.text
    return server


@dataclass
class Referee:
    """Judges every answer and counts what was sent."""

    api: Api
    raw: redis.Redis
    state: ApiState = field(init=False)
    requests: int = 0
    per_route: Counter[str] = field(default_factory=Counter)
    per_status: Counter[int] = field(default_factory=Counter)

    def __post_init__(self) -> None:
        self.state = read_state(self.raw)
        assert self.state.requirements["hash"] == sha256_hex(self.state.requirements["content"])
        assert self.state.stream_length >= 1 and self.state.files

    def judge(self, route: str, request: str, status: int, content_type: str, body: bytes) -> None:
        self.requests += 1
        self.per_route[route] += 1
        self.per_status[status] += 1
        shown = f"{request}\n-> {status} {body[:500]!r}"
        assert status < 500, shown
        after = read_state(self.raw)
        if 400 <= status < 500:
            assert body, f"a 4xx without a reason: {shown}"
            if content_type.startswith("application/json"):
                assert "detail" in json.loads(body), shown
            assert after == self.state, f"a refused request changed the state: {shown}"
        self.state = after

    def report(self, name: str, started: float) -> str:
        statuses = ", ".join(f"{status}: {n}" for status, n in sorted(self.per_status.items()))
        return (
            f"{name}: {self.requests} requests to {', '.join(sorted(self.per_route))} "
            f"in {time.monotonic() - started:.1f} s ({statuses})"
        )


@pytest.fixture
def referee(api: Api, raw: redis.Redis) -> Referee:
    return Referee(api, raw)


@pytest.fixture(scope="module")
def schema(server: Api) -> Any:
    """The schema the running server serves, as Schemathesis reads it."""
    return schemathesis.openapi.from_url(f"{server.base_url}/openapi.json", headers=server.auth)


def operations(schema: Any) -> list[Any]:
    return [result.ok() for result in schema.get_all_operations()]


def operation_of(schema: Any, route: str) -> Any:
    found = [operation for operation in operations(schema) if operation.label == route]
    assert len(found) == 1, f"{route} is not served: {[op.label for op in operations(schema)]}"
    return found[0]


def examples(operation: Any, budget: int) -> int:
    """The route's share of `budget`: all of it, unless the route takes no input."""
    definition = operation.definition.raw
    takes_input = "requestBody" in definition or definition.get("parameters")
    return budget if takes_input else budget // INPUTLESS_SHARE


def test_the_fuzzed_routes_are_the_served_ones(schema: Any) -> None:
    served = sorted(operation.label for operation in operations(schema))
    assert len(served) >= 10, served
    assert served == ROUTES


def announce(record_property: Any, line: str) -> None:
    """The volume, on stdout (`-s`) and in the junit report."""
    print(f"\n{line}")
    record_property("fuzz_volume", line)


# --- Schemathesis over the schema -------------------------------------------------------

# How a generated body goes out: the label and the JSON text vary, the value does not.
RELABELLINGS: list[tuple[str, str | None, bool]] = [
    # (name, Content-Type or None to send none, ASCII escapes in the JSON text)
    ("as generated", "", False),
    ("no Content-Type", None, False),
    ("curl -d", "application/x-www-form-urlencoded", False),
    ("text/plain", "text/plain", False),
    ("vendor JSON", "application/vnd.bifrost+json; charset=utf-8", True),
    ("octet-stream", "application/octet-stream", True),
]


EVENT_STREAM = "text/event-stream"


def header_bytes(value: Any) -> bytes:
    return str(value).encode("utf-8", "surrogatepass")


def send_case(
    client: httpx.Client, token: str, case: Any, relabelling: tuple[str, str | None, bool]
) -> tuple[str, httpx.Response]:
    name, content_type, ascii_only = relabelling
    kwargs = case.as_transport_kwargs(base_url=str(client.base_url).rstrip("/"))
    headers: dict[bytes, bytes] = {
        header_bytes(key): header_bytes(value)
        for key, value in kwargs.get("headers", {}).items()
        if str(key).lower() not in ("authorization", "content-length", "host")
    }
    headers[b"Authorization"] = f"Bearer {token}".encode()
    body: bytes | None = None
    if "json" in kwargs:
        body = json.dumps(kwargs["json"], ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")
    elif kwargs.get("data") is not None:
        data = kwargs["data"]
        body = data if isinstance(data, bytes) else str(data).encode("utf-8", "surrogatepass")
    if body is not None and content_type != "":
        headers = {k: v for k, v in headers.items() if k.lower() != b"content-type"}
        if content_type is not None:
            headers[b"Content-Type"] = content_type.encode()
    request = client.build_request(
        kwargs["method"], kwargs["url"], params=kwargs.get("params"), headers=headers, content=body
    )
    shown = f"{case.operation.label} [{name}]: {request.method} {request.url}\n{body!r:.500}"
    response = client.send(request, stream=True)
    try:
        if response.headers.get("content-type", "").startswith(EVENT_STREAM):
            # GET /api/events streams until the client leaves: status and type are judged.
            return shown, httpx.Response(response.status_code, headers=response.headers)
        response.read()
    finally:
        response.close()
    return shown, response


def fuzz_with_schemathesis(
    operation: Any, client: httpx.Client, token: str, referee: Referee
) -> None:
    """Send one route's Schemathesis cases, valid and invalid, and judge each."""
    cases = st.one_of(
        operation.as_strategy(generation_mode=GenerationMode.POSITIVE),
        operation.as_strategy(generation_mode=GenerationMode.NEGATIVE),
    )

    @settings(FUZZ_SETTINGS, max_examples=examples(operation, SCHEMA_EXAMPLES_PER_ROUTE))
    @given(case=cases, relabelling=st.sampled_from(RELABELLINGS))
    def fuzz(case: Any, relabelling: tuple[str, str | None, bool]) -> None:
        shown, response = send_case(client, token, case, relabelling)
        referee.judge(
            operation.label, shown, response.status_code,
            response.headers.get("content-type", ""), response.content,
        )

    fuzz()


@pytest.mark.parametrize("route", ROUTES)
def test_schemathesis_finds_no_5xx_and_no_change_on_4xx(
    route: str, api: Api, schema: Any, referee: Referee, record_property: Any
) -> None:
    started = time.monotonic()
    with httpx.Client(base_url=api.base_url, timeout=REQUEST_TIMEOUT) as client:
        fuzz_with_schemathesis(operation_of(schema, route), client, api.token, referee)
    assert set(referee.per_route) == {route}
    announce(record_property, referee.report("schemathesis", started))


# --- raw requests ------------------------------------------------------------------------

HOSTILE_TOKENS = [
    "1e999", "-1e999", "1E+400", "NaN", "Infinity", "-Infinity", "1" * 4301, "-" + "9" * 5000,
    '"\\ud800"', '"a\\udfff"', '"\\udbff\\udfff"', '"\\u0000"', '"\\u202e"', "[" * 70 + "]" * 70,
    "[" * 600 + "]" * 600,
    "[" * 100_000, "{" * 50_000, '{"a": 1, "a": 2}', "true", "null", '""', "0.5", "-0",
    '"' + "x" * 100_000 + '"', "[1, 2,]", "'single'", "undefined", "0x10",
]

# Tokens that are not storable JSON values (the rest of HOSTILE_TOKENS are
# valid JSON or plain syntax errors).
NOT_STORABLE_TOKENS = [
    "1e999", "-1e999", "NaN", "Infinity", "-Infinity", '"\\ud800"', '"a\\udfff"', "1" * 4301,
]

json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
    st.text(st.characters(categories=["Cs"]), min_size=1, max_size=3),  # lone surrogates
)
json_values = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)


@st.composite
def json_texts(draw: st.DrawFn, fields: list[str]) -> str:
    """JSON text (or nearly), shaped like the route's body: its own fields with
    values Python's encoder writes (NaN, Infinity) or hostile tokens spliced in."""
    keys = st.sampled_from(fields) | st.text(max_size=8) if fields else st.text(max_size=8)
    if draw(st.booleans()):
        value = draw(st.dictionaries(keys, json_values, max_size=4))
        return json.dumps(value, allow_nan=True, ensure_ascii=draw(st.booleans()))
    members = draw(st.lists(st.tuples(keys, st.sampled_from(HOSTILE_TOKENS)), max_size=3))
    return "{" + ", ".join(f"{json.dumps(key)}: {token}" for key, token in members) + "}"


PLACEHOLDER = "__hostile_value__"


@st.composite
def mutated_valid_texts(draw: st.DrawFn, operation: Any) -> str:
    """A body valid for the route's schema with one value, anywhere in it (in a
    free-form object such as `parameters` too), replaced by a hostile token:
    the refusal must come from the value, not from a missing field."""
    case = draw(operation.as_strategy(generation_mode=GenerationMode.POSITIVE))
    body = case.body if isinstance(case.body, dict) else {}
    containers: list[dict[str, Any]] = []
    pending: list[Any] = [body]
    while pending:
        item = pending.pop()
        if isinstance(item, dict):
            containers.append(item)
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)
    # Inner objects when there are any: a value in a free-form object (like
    # `parameters`) passes the model, so only the JSON layer stands between it
    # and the store.
    target = draw(st.sampled_from(containers[1:] or containers))
    key = draw(st.sampled_from(sorted(target)) | st.text(max_size=5)) if target else "x"
    target[key] = PLACEHOLDER
    token = draw(st.sampled_from(NOT_STORABLE_TOKENS) | st.sampled_from(HOSTILE_TOKENS))
    return json.dumps(body).replace(json.dumps(PLACEHOLDER), token, 1)


@st.composite
def bodies(draw: st.DrawFn, operation: Any, fields: list[str]) -> bytes:
    kinds = ["mutated"] * 4 + ["json", "json", "bytes", "form", "text", "empty"]
    kind = draw(st.sampled_from(kinds))
    if kind in ("mutated", "json"):
        text = draw(mutated_valid_texts(operation) if kind == "mutated" else json_texts(fields))
        encoding = draw(st.sampled_from(["utf-8", "utf-8", "utf-8", "utf-16", "latin-1"]))
        return text.encode(encoding, "surrogatepass" if encoding.startswith("utf") else "replace")
    if kind == "bytes":
        return draw(st.binary(max_size=300))
    if kind == "form":
        pairs = draw(st.dictionaries(st.sampled_from([*fields, "x"]), st.text(max_size=10)))
        return urllib.parse.urlencode(pairs).encode()
    if kind == "text":
        return draw(st.text(max_size=100)).encode("utf-8")
    return b""


PATH_SEGMENTS = [
    "alpha", "workflows/hello.py", "workflows/new.py", "data/x.json", "..", ".", "%2e%2e",
    "..%2F..%2Fetc%2Fpasswd", "%00", "%ff", "%ed%a0%80", "%c0%af", "%", "%zz", "a%2Fb",
    "%E2%80%AE", "a" * 3000, "%20", "~", "a;b", "requirements.txt", "-e", "0" * 64,
]

CONTENT_TYPES = [
    None, "application/json", "application/json; charset=latin-1", "text/plain",
    "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", "application/xml",
    "application/vnd.x+json", "*/*", ";", "application/json\t;\tcharset=\"utf-8\"",
]

ODD_HEADERS: list[list[tuple[str, bytes]]] = [
    [],
    [("Accept", b"application/xml")],
    [("Accept-Encoding", b"br, gzip;q=2")],
    [("Content-Type", b"text/plain"), ("Content-Type", b"application/json")],
    [("X-Odd", b"\xff\xfe latin-1 bytes")],
    [("Cookie", b"a=%ff; ;=; b; c=\"\"")],
    [("X-Control", b"a\x01b")],  # not a valid field value: the HTTP parser's own 400
    [("Expect", b"100-continue")],
    [("Range", b"bytes=-1")],
    [("If-None-Match", b"*")],
]


class NotStorable(ValueError):
    pass


def _refuse(token: str) -> Any:
    raise NotStorable(token)


def _finite(literal: str) -> float:
    number = float(literal)
    if math.isinf(number):
        raise NotStorable(literal)
    return number


def storable_json(body: bytes) -> bool:
    """Whether `body` is JSON a route may accept: UTF-8, finite numbers, no
    NaN or Infinity, every string encodable as UTF-8. (The server refuses
    more, such as deep nesting and repeated keys; this is the least.)"""
    try:
        value = json.loads(body.decode("utf-8"), parse_constant=_refuse, parse_float=_finite)
    except (ValueError, RecursionError):  # NotStorable and UnicodeDecodeError included
        return False
    pending = [value]
    while pending:
        item = pending.pop()
        strings = [item] if isinstance(item, str) else []
        if isinstance(item, dict):
            strings = list(item)
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)
        for text in strings:
            try:
                text.encode("utf-8")
            except UnicodeEncodeError:
                return False
    return True


def path_parameter_names(template: str) -> list[str]:
    return [part[1:-1] for part in template.split("/") if part.startswith("{")]


@st.composite
def targets(draw: st.DrawFn, template: str) -> str:
    target = template
    for name in path_parameter_names(template):
        segment = draw(
            st.sampled_from(PATH_SEGMENTS)
            | st.text(max_size=30).map(lambda text: urllib.parse.quote(text, safe=""))
        )
        target = target.replace("{" + name + "}", segment)
    if draw(st.booleans()):
        query = draw(st.text(max_size=20)).encode("utf-8", "surrogatepass")
        target += "?" + urllib.parse.quote(query, safe="=&")
    return target


def body_fields(schema: Any, operation: Any) -> list[str]:
    """The property names of the route's JSON body, from the schema."""
    body = operation.definition.raw.get("requestBody", {})
    media = body.get("content", {}).get("application/json", {}).get("schema", {})
    ref = media.get("$ref", "")
    if ref.startswith("#/components/schemas/"):
        media = schema.raw_schema["components"]["schemas"][ref.rsplit("/", 1)[1]]
    return sorted(media.get("properties", {}))


def chunks(body: bytes) -> Iterator[bytes]:
    """The pieces of a chunked body: 7 bytes at first, so that chunk edges fall
    inside tokens, escapes and UTF-8 sequences, then 1 KiB, so that a large
    body does not cost a write (and a parse on the server) per 7 bytes."""
    small = SMALL_CHUNK * SMALL_CHUNKS
    for start in range(0, min(len(body), small), SMALL_CHUNK):
        yield body[start : start + SMALL_CHUNK]
    for start in range(small, len(body), LARGE_CHUNK):
        yield body[start : start + LARGE_CHUNK]


def send_raw(
    api: Api,
    method: str,
    target: str,
    body: bytes,
    content_type: str | None,
    extra: list[tuple[str, bytes]],
    chunked: bool,
) -> tuple[int, str, bytes]:
    """One request exactly as given (http.client keeps dot segments and escapes)."""
    url = urllib.parse.urlsplit(api.base_url)
    connection = http.client.HTTPConnection(url.hostname or "", url.port, timeout=REQUEST_TIMEOUT)
    try:
        connection.putrequest(method, target, skip_accept_encoding=True)
        connection.putheader("Authorization", f"Bearer {api.token}")
        if content_type is not None:
            connection.putheader("Content-Type", content_type)
        for name, value in extra:
            connection.putheader(name, value)
        if chunked:
            connection.putheader("Transfer-Encoding", "chunked")
        else:
            connection.putheader("Content-Length", str(len(body)))
        connection.endheaders()
        try:
            if chunked:
                for piece in chunks(body):
                    connection.send(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
                connection.send(b"0\r\n\r\n")
            else:
                connection.send(body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered before the body was all sent (and closed)
        response = connection.getresponse()
        answer_type = response.getheader("content-type") or ""
        if answer_type.startswith(EVENT_STREAM):  # never ends: status and type are judged
            return response.status, answer_type, b""
        return response.status, answer_type, response.read()
    finally:
        connection.close()


def fuzz_with_raw_requests(api: Api, schema: Any, operation: Any, referee: Referee) -> None:
    """Send one route's raw requests and judge each; a route that takes JSON
    must never accept (2xx) a body that is not storable JSON."""
    method = operation.method.upper()
    takes_json = "requestBody" in operation.definition.raw

    @settings(FUZZ_SETTINGS, max_examples=examples(operation, RAW_EXAMPLES_PER_ROUTE))
    @given(
        target=targets(operation.path),
        body=bodies(operation, body_fields(schema, operation)),
        content_type=st.sampled_from(CONTENT_TYPES),
        extra=st.sampled_from(ODD_HEADERS),
        chunked=st.booleans(),
    )
    def fuzz(
        target: str,
        body: bytes,
        content_type: str | None,
        extra: list[tuple[str, bytes]],
        chunked: bool,
    ) -> None:
        status, answer_type, answer = send_raw(
            api, method, target, body, content_type, extra, chunked
        )
        shown = (
            f"{method} {target} Content-Type={content_type!r} headers={extra!r} "
            f"chunked={chunked}\n{body[:500]!r}"
        )
        referee.judge(operation.label, shown, status, answer_type, answer)
        if takes_json and status < 300:
            assert storable_json(body), f"accepted a body that cannot be stored: {shown}"

    fuzz()


@pytest.mark.parametrize("route", ROUTES)
def test_raw_requests_find_no_5xx_and_no_change_on_4xx(
    route: str, api: Api, schema: Any, referee: Referee, record_property: Any
) -> None:
    started = time.monotonic()
    fuzz_with_raw_requests(api, schema, operation_of(schema, route), referee)
    assert set(referee.per_route) == {route}
    announce(record_property, referee.report("raw requests", started))
