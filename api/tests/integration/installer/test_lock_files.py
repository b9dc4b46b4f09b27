"""A lock's own files, fetched from the index once per fleet and kept in object
storage: real uv and pip, a real S3 server (moto's, over HTTP), a package
index of the test's own over HTTP that counts each file's downloads, the
run's Redis (the fetch lease) and a real store (the wheels built from
sdists). Each "host" is a packages dir and an installer cache of its own."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from src.core import metrics_store
from src.foundation.hashing import sha256_hex
from src.foundation.locks import DIRECT, Lock, LockedPackage
from src.foundation.settings import get_settings
from src.services.installer import context as build_context
from src.services.installer import fleet_cache
from src.services.installer.engine import ensure_environment
from src.services.installer.fleet_lease import FetchLease
from src.services.installer.lock_file_entries import platform_tag
from src.store.database import session_scope
from src.store.fleet_files import built_wheel
from tests.support.package_index import PackageIndex
from tests.support.s3 import Bucket, new_bucket
from tests.support.wheels import build_sdist, build_wheel

CONTENT = "good-a==1.0\nmade-here==1.0\n"
H = sha256_hex(CONTENT)


@pytest.fixture
def index(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[PackageIndex]:
    """good-a (a wheel) needs good-dep (a wheel); made-here is only an sdist."""
    house = tmp_path / "index"
    build_wheel(house, "good-a", "1.0", requires=["good-dep>=1"])
    build_wheel(house, "good-dep", "1.0")
    build_sdist(house, "made-here", "1.0")
    with PackageIndex(house) as served:
        for name, value in served.env().items():
            monkeypatch.setenv(name, value)
        yield served


@pytest.fixture
def bucket(monkeypatch: pytest.MonkeyPatch) -> Bucket:
    made = new_bucket()
    for name, value in made.env().items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    return made


@pytest.fixture
def lock(index: PackageIndex, sqlite_system: str, monkeypatch: pytest.MonkeyPatch) -> Lock:
    """The hash's lock, with the sha256 of each file the index serves, as the
    write path makes it; read by the engine instead of Redis's."""
    files = {path.name: hashlib.sha256(path.read_bytes()).hexdigest()
             for path in index.wheelhouse.iterdir()}
    pins = [("good-a", "1.0", "good_a-1.0-py3-none-any.whl"),
            ("good-dep", "1.0", "good_dep-1.0-py3-none-any.whl"),
            ("made-here", "1.0", "made_here-1.0.tar.gz")]
    made = Lock.of(H, [LockedPackage(name, version, (f"sha256:{files[file]}",), (DIRECT,))
                       for name, version, file in pins])
    monkeypatch.setattr(build_context, "read_lock",
                        lambda requirements_hash, worker_id="-": made)
    return made


@pytest.fixture(autouse=True)
def _no_upload_left_running() -> Iterator[None]:
    yield
    assert fleet_cache.wait_for_uploads(60)


def _host(monkeypatch: pytest.MonkeyPatch, root: Path) -> None:
    """Act as another host: a packages dir and installer caches of its own."""
    monkeypatch.setenv("BIFROST_PACKAGES_DIR", str(root / "packages"))
    monkeypatch.setenv("UV_CACHE_DIR", str(root / "uv-cache"))
    monkeypatch.setenv("PIP_CACHE_DIR", str(root / "pip-cache"))
    get_settings.cache_clear()


def _build(monkeypatch: pytest.MonkeyPatch, root: Path, worker: str) -> tuple[dict, Path]:
    _host(monkeypatch, root)
    outcome, env = ensure_environment(CONTENT, H, worker)
    assert outcome["ok"], outcome
    assert outcome["installed"] == ["good-a==1.0", "good-dep==1.0", "made_here==1.0"], outcome
    assert env is not None
    for module in ("good_a", "good_dep", "made_here"):
        done = subprocess.run([sys.executable, "-c", f"import {module}; print({module}.VERSION)"],
                              env={"PYTHONPATH": str(env)}, capture_output=True, text=True)
        assert done.stdout.strip() == "1.0", done.stderr
    return dict(outcome), env


def test_each_file_comes_from_the_index_once_for_the_fleet(
        index: PackageIndex, bucket: Bucket, lock: Lock, redis_client: redis.Redis,
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level("INFO")
    first, _ = _build(monkeypatch, tmp_path / "host-a", "w-a")
    assert first["files_from"] == "the index, fetched for the fleet"
    # The lock's own files, by sha256, and the wheel built from the sdist.
    recorded = _recorded(lock)
    names = {key.split("/")[-1] for key in bucket.keys("files/")}
    assert names == {"good_a-1.0-py3-none-any.whl", "good_dep-1.0-py3-none-any.whl",
                     "made_here-1.0.tar.gz", recorded[0]}
    for key in bucket.keys("files/"):
        assert hashlib.sha256(bucket.read(key)).hexdigest() == key.split("/")[1]
    assert bucket.keys("lock-files/") == [f"lock-files/{lock.digest()}/{platform_tag()}.json"]

    second, _ = _build(monkeypatch, tmp_path / "host-b", "w-b")
    third, _ = _build(monkeypatch, tmp_path / "host-c", "w-c")
    assert second["files_from"] == third["files_from"] == "the fleet cache"
    assert dict(index.downloads) == {name: 1 for name in index.downloads}
    assert set(index.downloads) == {"good_a-1.0-py3-none-any.whl",
                                    "good_dep-1.0-py3-none-any.whl", "made_here-1.0.tar.gz"}
    assert caplog.text.count("Built made_here-1.0") == 1  # once per platform, by host-a


def test_a_tampered_object_is_refused_and_the_index_gives_the_right_file(
        index: PackageIndex, bucket: Bucket, lock: Lock, redis_client: redis.Redis,
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
) -> None:
    _build(monkeypatch, tmp_path / "host-a", "w-a")
    [key] = [k for k in bucket.keys("files/") if k.endswith("good_dep-1.0-py3-none-any.whl")]
    evil = tmp_path / "evil"
    build_wheel(evil, "good-dep", "6.6.6")  # a wheel that would run, under the lock's name
    bucket.write(key, next(evil.glob("*.whl")).read_bytes())

    second, _ = _build(monkeypatch, tmp_path / "host-b", "w-b")  # its good_dep is 1.0
    assert "Refused good_dep-1.0-py3-none-any.whl from the fleet cache" in caplog.text
    assert index.downloads["good_dep-1.0-py3-none-any.whl"] == 2
    assert index.downloads["good_a-1.0-py3-none-any.whl"] == 1
    metrics_store.flush(redis_client)
    counted = redis_client.hgetall(metrics_store.counter_key(metrics_store.CACHE_REFUSALS))
    assert any("fleet-file" in field for field in counted), counted  # type: ignore[union-attr]
    assert second["files_from"].startswith("the index")


def test_a_host_joins_with_the_index_stopped(
        index: PackageIndex, bucket: Bucket, lock: Lock, redis_client: redis.Redis,
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
) -> None:
    _build(monkeypatch, tmp_path / "host-a", "w-a")
    index.stop()
    caplog.set_level("INFO")
    joined, _ = _build(monkeypatch, tmp_path / "host-b", "w-b")
    assert joined["files_from"] == "the fleet cache"
    assert "Built made_here" not in caplog.text  # the wheel host-a built, checked


def test_an_unreachable_bucket_costs_a_log_line_and_the_index(
        index: PackageIndex, bucket: Bucket, lock: Lock, redis_client: redis.Redis,
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:1")  # nothing listens there
    outcome, _ = _build(monkeypatch, tmp_path / "host-a", "w-a")
    assert "files_from" not in outcome  # the installer took the pins from the index
    assert "The fleet cache did not answer" in caplog.text
    assert "installing from the index" in caplog.text


def test_a_host_waits_for_the_lease_holder_and_then_takes_over(
        index: PackageIndex, bucket: Bucket, lock: Lock, redis_client: redis.Redis,
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    holder = FetchLease(redis_client, lock.digest(), platform_tag(), "host-x-w0", 60)
    assert holder.take()
    told: list[str | None] = []
    took = threading.Event()

    def waiting(what: str | None) -> None:
        told.append(what)
        if what is not None:
            took.set()

    _host(monkeypatch, tmp_path / "host-b")
    result: list[dict] = []
    builder = threading.Thread(target=lambda: result.append(dict(ensure_environment(
        CONTENT, H, "w-b", waiting=waiting)[0])))
    builder.start()
    assert took.wait(60), "the build never said it waits"
    assert told[0] == f"the files of lock {lock.digest()[:12]}, fetched for the fleet by host-x-w0"
    redis_client.delete(holder.name)  # the holder let it go without publishing anything
    builder.join(120)
    assert result and result[0]["ok"], result
    assert result[0]["files_from"] == "the index, fetched for the fleet after waiting for host-x-w0"
    assert told[-1] is None


def test_past_the_wait_bound_a_host_fetches_by_itself_and_says_so(
        index: PackageIndex, bucket: Bucket, lock: Lock, redis_client: redis.Redis,
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv("BIFROST_FLEET_WAIT_SECONDS", "0.5")
    holder = FetchLease(redis_client, lock.digest(), platform_tag(), "host-x-w0", 60)
    assert holder.take()  # and never lets go
    outcome, _ = _build(monkeypatch, tmp_path / "host-b", "w-b")
    assert outcome["files_from"] == "the index, alone: waited 0.5 s for host-x-w0"
    assert "Waited 0.5 s (BIFROST_FLEET_WAIT_SECONDS) for host-x-w0" in caplog.text


def test_a_dead_holder_s_lease_ends_and_another_host_takes_over(
        index: PackageIndex, bucket: Bucket, lock: Lock, redis_client: redis.Redis,
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A holder that stops renewing (it died) loses the lease within its time.
    FetchLease(redis_client, lock.digest(), platform_tag(), "host-dead-w0", 1).take()
    outcome, _ = _build(monkeypatch, tmp_path / "host-b", "w-b")
    assert outcome["files_from"] == ("the index, fetched for the fleet after waiting for "
                                     "host-dead-w0")


def test_a_host_of_another_platform_fetches_only_what_is_its_own(
        index: PackageIndex, bucket: Bucket, lock: Lock, redis_client: redis.Redis,
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    _build(monkeypatch, tmp_path / "host-a", "w-a")
    # What host-a listed is now another platform's list: the wheel it built
    # from the sdist is that platform's, the rest serves every platform.
    [listed] = bucket.keys("lock-files/")
    bucket.write(listed.replace(platform_tag(), "cp311-cp311-other_platform"), bucket.read(listed))
    bucket.client().delete_object(Bucket=bucket.name, Key=f"{bucket.prefix}/{listed}")
    with session_scope() as session:  # the store knows no wheel built for this platform
        from src.store.models import FleetBuiltWheel

        session.query(FleetBuiltWheel).delete()
    before = dict(index.downloads)
    outcome, _ = _build(monkeypatch, tmp_path / "host-b", "w-b")
    assert outcome["files_from"] == "the fleet cache"
    assert dict(index.downloads) == before  # the wheels and the sdist came from the cache
    assert _recorded(lock)  # built again here, from the cache's sdist, for this platform


def _recorded(lock: Lock) -> tuple[str, str]:
    source = next(p for p in lock.packages if p.name == "made-here").hashes[0][7:]
    with session_scope() as session:
        found = built_wheel(session, source, platform_tag())
    assert found is not None
    return found.filename, found.sha256
