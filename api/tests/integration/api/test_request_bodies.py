"""Request bodies through the real server: JSON whatever the Content-Type says,
and every body that is not acceptable JSON refused with a 422 naming why.

Each refusal is sent under every Content-Type a client might use (none,
`curl -d`'s form type, text/plain, JSON types, and types that are plainly not
JSON), to each route that takes a JSON body, and must leave the requirements,
the Redis key, the workspace and the execution stream as they were. Before
this layer existed, most of these answered 500 (bytes that are not UTF-8
under any type but JSON; a lone surrogate echoed in a validation error) or
were accepted and queued (NaN, 1e999, a lone surrogate in `parameters`).
"""

from __future__ import annotations

import socket
from collections.abc import Iterator

import httpx
import pytest
import redis

from src.api.json_body import MAX_DEPTH
from src.foundation.hashing import sha256_hex

from .conftest import Api
from .served import ApiState, migrated_sqlite, module_server, read_state, use_backends

GOOD_REQUIREMENTS = "alpha==1\n"
GOOD_PATH = "workflows/hello.py"
GOOD_SOURCE = "def main():\n    return 'hello'\n"

CONTENT_TYPES = {
    "none": None,
    "json": "application/json",
    "json utf-8": "application/json; charset=utf-8",
    "curl -d": "application/x-www-form-urlencoded",
    "text": "text/plain",
    "vendor json": "application/vnd.bifrost+json",
    "multipart": "multipart/form-data; boundary=xyz",
    "octet-stream": "application/octet-stream",
    "nonsense": "nonsense/;;;=",
}

# Routes that take a JSON body, each with a field a string can be put in.
JSON_ROUTES = {
    "put requirements": ("PUT", "/api/requirements", "content"),
    "install": ("POST", "/api/packages/install", "package"),
    "execution": ("POST", "/api/executions", "module"),
}


def execution_body(parameters: bytes) -> bytes:
    return b'{"module": "workflows.hello", "function": "main", "parameters": ' + parameters + b"}"


# id -> (body for the route's field `{field}`, fragment of the reason)
BAD_VALUES: dict[str, tuple[bytes, str]] = {
    "not UTF-8": (b'"\xff\xfe"', "request body is not valid UTF-8 (byte"),
    "UTF-8 of a surrogate": (b'"\xed\xa0\x80"', "request body is not valid UTF-8"),
    "overlong UTF-8": (b'"\xc0\xaf"', "request body is not valid UTF-8"),
    "1e999": (b"1e999", "number 1e999 is out of range"),
    "-1e999": (b"-1e999", "number -1e999 is out of range"),
    "NaN": (b"NaN", "holds NaN, which is not a JSON number"),
    "Infinity": (b"Infinity", "holds Infinity, which is not a JSON number"),
    "-Infinity": (b"-Infinity", "holds -Infinity, which is not a JSON number"),
    "lone high surrogate": (b'"a\\ud800"', "line 1: lone surrogate U+D800 at column 2"),
    "lone low surrogate": (b'"\\udfff"', "lone surrogate U+DFFF"),
    "surrogate on line 2": (b'"a\\nb\\ud800"', "line 2: lone surrogate U+D800"),
    "huge integer": (b"1" * 5000, "integer has 5000 digits"),
    "one level too deep": (  # the field's value is one level inside the body
        b"[" * MAX_DEPTH + b"]" * MAX_DEPTH, f"nested too deeply (more than {MAX_DEPTH} levels)"
    ),
    "100000 levels": (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
}


def with_field(field: str, value: bytes) -> bytes:
    return b'{"' + field.encode() + b'": ' + value + b"}"


BAD_BODIES: dict[str, tuple[bytes, str]] = {
    "form pairs": (b"package=humanize&version=1", "JSON decode error"),
    "single quotes": (b"{'package': 'humanize'}", "JSON decode error"),
    "trailing comma": (b'{"package": "humanize",}', "JSON decode error"),
    "two documents": (b"{} {}", "JSON decode error"),
    "not UTF-8 at all": (b"\xff\xfe\xfd", "not valid UTF-8 (byte 0"),
    "UTF-16": ('{"package": "x"}'.encode("utf-16"), "not valid UTF-8"),
    "NUL byte": (b'{"package": "x"}\x00', "JSON decode error"),
    "duplicate key": (b'{"package": "a", "package": "b"}', 'repeats the key "package"'),
    "duplicate nested key": (
        execution_body(b'{"x": 1, "x": 2}'), 'repeats the key "x"'
    ),
    "surrogate in a key": (execution_body(b'{"\\ud800": 1}'), "a key in request body field"),
    "NaN in parameters": (execution_body(b'{"x": NaN}'), "NaN"),
    "1e999 in parameters": (execution_body(b'{"x": [1, 1e999]}'), "1e999 is out of range"),
    "surrogate in parameters": (
        execution_body(b'{"x": {"y": "\\udbff"}}'), "parameters.x.y, line 1: lone surrogate U+DBFF"
    ),
}


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
    server: Api, store_url: str, redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> Api:
    use_backends(monkeypatch, store_url)
    return server


@pytest.fixture
def before(api: Api, raw: redis.Redis) -> ApiState:
    """A known good state: requirements, a workspace file and one queued execution."""
    response = api.client.put("/api/requirements", json={"content": GOOD_REQUIREMENTS})
    assert response.status_code == 200, response.text
    response = api.client.put(f"/api/files/{GOOD_PATH}", content=GOOD_SOURCE.encode())
    assert response.status_code == 200, response.text
    response = api.client.post(
        "/api/executions", json={"module": "workflows.hello", "function": "main"}
    )
    assert response.status_code == 202, response.text
    state = read_state(raw)
    good = {"content": GOOD_REQUIREMENTS, "hash": sha256_hex(GOOD_REQUIREMENTS)}
    assert state.requirements == good
    assert state.stream_length == 1
    return state


def send(api: Api, method: str, path: str, body: bytes, content_type: str | None) -> httpx.Response:
    headers = dict(api.auth)
    if content_type is not None:
        headers["Content-Type"] = content_type
    return api.anonymous.request(method, path, content=body, headers=headers)


def assert_refused(response: httpx.Response, fragment: str) -> None:
    assert response.status_code == 422, response.text[:2000]
    detail = response.json()["detail"]
    assert isinstance(detail, str), detail
    assert fragment in detail, (fragment, detail)


@pytest.mark.parametrize("case", BAD_VALUES, ids=str)
@pytest.mark.parametrize("route", JSON_ROUTES, ids=str)
def test_bad_values_are_422_under_every_content_type(
    api: Api, raw: redis.Redis, before: ApiState, route: str, case: str
) -> None:
    method, path, field = JSON_ROUTES[route]
    value, fragment = BAD_VALUES[case]
    for content_type in CONTENT_TYPES.values():
        response = send(api, method, path, with_field(field, value), content_type)
        assert_refused(response, fragment)
        assert read_state(raw) == before, content_type


@pytest.mark.parametrize("case", BAD_BODIES, ids=str)
def test_bad_bodies_are_422_under_every_content_type(
    api: Api, raw: redis.Redis, before: ApiState, case: str
) -> None:
    body, fragment = BAD_BODIES[case]
    path = "/api/executions" if body.startswith(b'{"module"') else "/api/packages/install"
    for content_type in CONTENT_TYPES.values():
        response = send(api, "POST", path, body, content_type)
        assert_refused(response, fragment)
        assert read_state(raw) == before, content_type


@pytest.mark.parametrize("content_type", CONTENT_TYPES.values(), ids=CONTENT_TYPES.keys())
def test_json_is_read_whatever_the_content_type(
    api: Api, raw: redis.Redis, before: ApiState, content_type: str | None
) -> None:
    """`curl -d '{"package": "humanize"}'` installs humanize, and so does every other label."""
    response = send(
        api, "POST", "/api/packages/install", b'{"package": "humanize"}', content_type
    )
    assert response.status_code == 200, response.text
    content = GOOD_REQUIREMENTS + "humanize\n"
    assert response.json() == {"content": content, "hash": sha256_hex(content), "changed": True}
    assert read_state(raw).requirements["content"] == content

    body = b'{"module": "workflows.hello", "function": "main", "parameters": {"n": 1.5e300}}'
    response = send(api, "POST", "/api/executions", body, content_type)
    assert response.status_code == 202, response.text
    assert read_state(raw).stream_length == before.stream_length + 1


def test_a_byte_order_mark_is_ignored(api: Api, raw: redis.Redis, before: ApiState) -> None:
    body = b"\xef\xbb\xbf" + b'{"content": "beta==2\\n"}'
    response = send(api, "PUT", "/api/requirements", body, "text/plain")
    assert response.status_code == 200, response.text
    assert read_state(raw).requirements["content"] == "beta==2\n"


@pytest.mark.parametrize("content_type", ["application/json", "text/plain", None])
def test_files_still_take_the_raw_body(
    api: Api, raw: redis.Redis, before: ApiState, content_type: str | None
) -> None:
    """PUT /api/files/{path} stores the bytes as text, JSON-looking or not."""
    for source in ('{"a": NaN, "a": 1e999}', "x = '\\ud800'\n", "print('hi')\n"):
        response = send(api, "PUT", "/api/files/data/raw.py", source.encode(), content_type)
        assert response.status_code == 200, response.text
        assert api.client.get("/api/files/data/raw.py").text == source
    response = send(api, "PUT", "/api/files/data/raw.py", b"x = '\xff'\n", content_type)
    assert response.status_code == 422
    assert "file content is not valid UTF-8" in response.json()["detail"]


def test_the_size_limit_still_applies(api: Api, raw: redis.Redis, before: ApiState) -> None:
    big = b'{"content": "' + b"#" * (3 * 1024 * 1024) + b'"}'
    for content in (big, iter([big[i : i + 65536] for i in range(0, len(big), 65536)])):
        headers = {**api.auth, "Content-Type": "text/plain"}
        response = api.anonymous.request(
            "PUT", "/api/requirements", content=content, headers=headers
        )
        assert response.status_code == 413, response.text
        assert "larger than 2097152 bytes" in response.json()["detail"]
    assert read_state(raw) == before


def test_an_empty_body_is_a_missing_body(api: Api, raw: redis.Redis, before: ApiState) -> None:
    for content_type in CONTENT_TYPES.values():
        response = send(api, "PUT", "/api/requirements", b"", content_type)
        assert response.status_code == 422, response.text
        assert response.json()["detail"][0]["msg"] == "Field required"
    assert read_state(raw) == before


def exchange(api: Api, raw_request: bytes) -> bytes:
    """Send bytes as they are on a new connection; everything the server
    answers before it closes; fails if it is still open after 60 s."""
    url = httpx.URL(api.base_url)
    with socket.create_connection((url.host, url.port or 80), timeout=60) as sock:
        sock.sendall(raw_request)
        sock.shutdown(socket.SHUT_WR)  # nothing more is coming: the server must answer now
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
        return received


CONTENT_LENGTH_CASES = {
    "not a number": (b"Content-Length: abc\r\n", 400),
    "negative": (b"Content-Length: -1\r\n", 400),
    "two values": (b"Content-Length: 2\r\nContent-Length: 3\r\n", 400),
    "a list": (b"Content-Length: 2, 2\r\n", 400),
    "with chunked": (b"Content-Length: 2\r\nTransfer-Encoding: chunked\r\n", 400),
    "beyond the limit": (b"Content-Length: 3000000\r\n", 413),  # refused before it is read
    "beyond 64 bits": (b"Content-Length: 99999999999999999999\r\n", 400),
    "bad chunk size": (b"Transfer-Encoding: chunked\r\n", 400),
}


@pytest.mark.parametrize("case", CONTENT_LENGTH_CASES, ids=str)
def test_invalid_content_lengths_are_400_or_413(
    api: Api, raw: redis.Redis, before: ApiState, case: str
) -> None:
    framing, status = CONTENT_LENGTH_CASES[case]
    body = b"zz\r\n{}\r\n0\r\n\r\n" if case == "bad chunk size" else b"{}"
    request = (
        b"POST /api/packages/install HTTP/1.1\r\nHost: test\r\n"
        b"Authorization: Bearer " + api.token.encode() + b"\r\n" + framing + b"\r\n" + body
    )
    answer = exchange(api, request)
    assert answer.startswith(b"HTTP/1.1 %d " % status), answer[:300]
    assert read_state(raw) == before
