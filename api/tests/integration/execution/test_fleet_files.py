"""A fleet of hosts fetches each of a lock's files from the index once: real
pools (each a host with a packages dir, installer caches and a host name of
its own) on one Redis, one store and one S3 bucket (moto's server, over
HTTP), and a package index of the test's own that counts downloads. The
requirements go through the real write path, which locks them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
import redis

from src.services import packages
from src.services.execution import registry
from tests.support.package_index import PackageIndex
from tests.support.pools import API_DIR, running_pool
from tests.support.s3 import Bucket, new_bucket, s3_server_that_checks_credentials
from tests.support.waiting import wait_for
from tests.support.wheels import build_wheel

FILES = {"fleet_app-1.0-py3-none-any.whl", "fleet_lib-2.0-py3-none-any.whl"}


@pytest.fixture
def index(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[PackageIndex]:
    house = tmp_path / "index"
    build_wheel(house, "fleet-app", "1.0", requires=["fleet-lib>=2"])
    build_wheel(house, "fleet-lib", "2.0")
    with PackageIndex(house) as served:
        for name, value in served.env().items():
            monkeypatch.setenv(name, value)
        yield served


@pytest.fixture
def fleet(sqlite_system: str, redis_url: str, isolated_settings: Path, index: PackageIndex,
          redis_client: redis.Redis) -> tuple[dict[str, str], Bucket]:
    """The environment every host shares, with the requirements written."""
    bucket = new_bucket()
    shared = {"REDIS_URL": redis_url, "DATABASE_URL": sqlite_system,
              "BIFROST_DATA_DIR": str(isolated_settings), **index.env(), **bucket.env()}
    packages.put_requirements("fleet-app\n")
    index.downloads.clear()  # the write path resolved against the index page only
    return shared, bucket


def _host(shared: dict[str, str], root: Path, name: str, **more: str) -> dict[str, str]:
    return {**shared, "BIFROST_PACKAGES_DIR": str(root / name / "packages"),
            "UV_CACHE_DIR": str(root / name / "uv"), "PIP_CACHE_DIR": str(root / name / "pip"),
            "BIFROST_HOST_NAME": name, **more}


def _workers(client: redis.Redis, host: str | None = None) -> list[registry.WorkerState]:
    return [w for p in registry.list_pools(client) for w in p["workers"]
            if host is None or w["host"] == host]


def _all_ready(client: redis.Redis, count: int) -> list[registry.WorkerState] | None:
    workers = _workers(client)
    ready = [w for w in workers if w["status"] == "idle" and w["install"]]
    return ready if len(ready) == count else None


def test_two_hosts_fetch_each_file_once_and_the_waiting_one_says_for_what(
        fleet: tuple[dict[str, str], Bucket], index: PackageIndex, redis_client: redis.Redis,
        tmp_path: Path) -> None:
    shared, bucket = fleet
    index.hold()  # the first host to fetch holds the lease while the index is slow
    with ExitStack() as hosts:
        for name in ("host-a", "host-b"):
            hosts.enter_context(running_pool(_host(shared, tmp_path, name), workers=2,
                                             log_path=tmp_path / f"{name}.log"))
        assert index.asked.wait(120), "no host asked the index for a file"
        waiting = wait_for(lambda: [w for w in _workers(redis_client)
                                    if w["status"] == "installing" and w.get("waiting_for")],
                           120, what="a worker of the other host waiting for the fetch")
        assert "fetched for the fleet by" in str(waiting[0]["waiting_for"]), waiting
        index.release()
        ready = wait_for(lambda: _all_ready(redis_client, 4), 180, what="4 ready workers")
    assert dict(index.downloads) == dict.fromkeys(FILES, 1), index.downloads
    sources = sorted(str(w["install"]["files_from"]) for w in ready  # type: ignore[index]
                     if w["install"] and not w["install"]["skipped"])
    assert sources[0].startswith("the fleet cache, fetched by "), sources
    assert sources[1] == "the index, fetched for the fleet", sources
    assert {key.split("/")[-1] for key in bucket.keys("files/")} == FILES


def test_a_builder_killed_mid_fetch_is_taken_over(
        fleet: tuple[dict[str, str], Bucket], index: PackageIndex, redis_client: redis.Redis,
        tmp_path: Path) -> None:
    shared, _ = fleet
    index.hold()  # host-a's fetch cannot finish: it holds the lease, renewing it
    first = subprocess.Popen(
        [sys.executable, "-m", "src.cli", "worker", "--workers", "1"], cwd=API_DIR,
        env={**os.environ, **_host(shared, tmp_path, "host-a", BIFROST_FLEET_LEASE_SECONDS="2")},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        assert index.asked.wait(120), "host-a never asked the index for a file"
        with running_pool(_host(shared, tmp_path, "host-b"), workers=1,
                          log_path=tmp_path / "host-b.log"):
            wait_for(lambda: [w for w in _workers(redis_client, "host-b")
                              if "by host-a" in str(w.get("waiting_for"))], 120,
                     what="host-b waiting for host-a's fetch")
            os.killpg(first.pid, signal.SIGKILL)  # mid-fetch: its download still waits
            first.wait(30)
            index.release()
            ready: Any = wait_for(lambda: _all_ready(redis_client, 1), 180,
                                  what="host-b's worker ready")
    finally:
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGKILL)
            first.wait(30)
    outcome = ready[0]["install"]
    assert outcome["ok"] and outcome["files_from"].startswith(
        "the index, fetched for the fleet after waiting for host-a"), outcome
    assert sorted(outcome["installed"]) == ["fleet-app==1.0", "fleet-lib==2.0"], outcome


def test_a_bucket_that_does_not_exist_stops_the_start_with_the_reason(
        fleet: tuple[dict[str, str], Bucket], tmp_path: Path) -> None:
    shared, _ = fleet
    env = {**os.environ, **_host(shared, tmp_path, "host-a"),
           "BIFROST_WHEEL_CACHE": "s3://no-such-bucket-here/fleet"}
    done = subprocess.run([sys.executable, "-m", "src.cli", "worker", "--workers", "1"],
                          cwd=API_DIR, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr[-2000:]
    assert "bifrost worker: BIFROST_WHEEL_CACHE=s3://no-such-bucket-here/fleet" in done.stderr
    assert "NoSuchBucket" in done.stderr


def test_credentials_the_bucket_refuses_stop_the_start_with_the_reason(
        fleet: tuple[dict[str, str], Bucket], tmp_path: Path) -> None:
    shared, _ = fleet
    with s3_server_that_checks_credentials() as endpoint:
        env = {**os.environ, **_host(shared, tmp_path, "host-a"),
               "AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "AKIANOTAKEYITKNOWS"}
        done = subprocess.run([sys.executable, "-m", "src.cli", "worker", "--workers", "1"],
                              cwd=API_DIR, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr[-2000:]
    assert "bifrost worker: BIFROST_WHEEL_CACHE=" in done.stderr
    assert "InvalidAccessKeyId" in done.stderr, done.stderr[-2000:]


def test_a_tampered_object_is_refused_repaired_and_a_host_joins_with_the_index_stopped(
        fleet: tuple[dict[str, str], Bucket], index: PackageIndex, redis_client: redis.Redis,
        tmp_path: Path) -> None:
    shared, bucket = fleet
    with running_pool(_host(shared, tmp_path, "host-a"), workers=1):
        wait_for(lambda: _all_ready(redis_client, 1), 180, what="host-a ready")
    [key] = [k for k in bucket.keys("files/") if k.endswith("fleet_lib-2.0-py3-none-any.whl")]
    evil = tmp_path / "evil"
    build_wheel(evil, "fleet-lib", "6.6.6")  # code of its own, under the lock's file name
    bucket.write(key, next(evil.glob("*.whl")).read_bytes())

    log = tmp_path / "host-b.log"
    with running_pool(_host(shared, tmp_path, "host-b"), workers=1, log_path=log):
        ready: Any = wait_for(lambda: _all_ready(redis_client, 1), 180, what="host-b ready")
    assert "Refused fleet_lib-2.0-py3-none-any.whl from the fleet cache" in log.read_text()
    assert sorted(ready[0]["install"]["installed"]) == ["fleet-app==1.0", "fleet-lib==2.0"]
    assert index.downloads["fleet_lib-2.0-py3-none-any.whl"] == 2  # once more, for host-b
    assert index.downloads["fleet_app-1.0-py3-none-any.whl"] == 1

    index.stop()  # the cache holds the right bytes again: a host joins without the index
    with running_pool(_host(shared, tmp_path, "host-c"), workers=1):
        joined: Any = wait_for(lambda: _all_ready(redis_client, 1), 180, what="host-c ready")
    assert joined[0]["install"]["files_from"] == "the fleet cache", joined[0]["install"]
    assert sorted(joined[0]["install"]["installed"]) == ["fleet-app==1.0", "fleet-lib==2.0"]


def test_a_bucket_that_does_not_answer_costs_a_log_line_and_the_index(
        fleet: tuple[dict[str, str], Bucket], index: PackageIndex, redis_client: redis.Redis,
        tmp_path: Path) -> None:
    shared, _ = fleet
    log = tmp_path / "host-a.log"
    env = _host(shared, tmp_path, "host-a", AWS_ENDPOINT_URL="http://127.0.0.1:1")
    with running_pool(env, workers=1, log_path=log):
        ready: Any = wait_for(lambda: _all_ready(redis_client, 1), 180, what="host-a ready")
    outcome = ready[0]["install"]
    assert outcome["ok"] and "files_from" not in outcome, outcome  # the installer's own fetch
    assert sorted(outcome["installed"]) == ["fleet-app==1.0", "fleet-lib==2.0"], outcome
    text = log.read_text()
    assert "starting anyway: installs use the index until it answers" in text, text[-3000:]
    assert "The fleet cache did not answer" in text and "installing from the index" in text
