"""The fleet wheel cache's pieces on their own: the background uploader, the
repacker on a hand-made environment, the directory backend and the public
module's boundary (what it re-exports, what it imports)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import zipfile
from collections.abc import Iterator
from concurrent.futures import CancelledError
from pathlib import Path

import pytest
from wheel.wheelfile import WheelFile

from src.foundation.settings import get_settings
from src.services.installer import fleet_backends, fleet_cache, fleet_repack
from src.services.installer.fleet_uploads import DelayedDaemonExecutor

API_DIR = Path(__file__).resolve().parents[3]
HASH = "ab" * 32


@pytest.fixture
def executor() -> Iterator[DelayedDaemonExecutor]:
    uploads = DelayedDaemonExecutor("test-uploads")
    yield uploads
    uploads.shutdown(wait=True, cancel_futures=True)


# --- the background uploader ----------------------------------------------------------


def test_calls_run_in_order_on_one_daemon_thread(executor: DelayedDaemonExecutor) -> None:
    seen: list[tuple[int, str]] = []

    def record(number: int) -> int:
        seen.append((number, threading.current_thread().name))
        return number * 10

    futures = [executor.submit(record, n) for n in range(5)]
    assert executor.wait(10)
    assert [future.result() for future in futures] == [0, 10, 20, 30, 40]
    assert seen == [(n, "test-uploads") for n in range(5)]
    assert executor.thread.daemon and executor.thread.is_alive()


def test_a_call_starts_after_the_delay() -> None:
    uploads = DelayedDaemonExecutor("test-delayed", delay=0.3)
    gate = threading.Event()  # the call cannot end before the test opens it

    def started_at() -> float:
        now = time.monotonic()
        gate.wait(60)
        return now

    try:
        submitted = time.monotonic()
        future = uploads.submit(started_at)
        assert not future.done()  # submit neither ran the call nor waited for it
        gate.set()
        assert future.result(60) - submitted >= 0.3
    finally:
        gate.set()
        uploads.shutdown()


def test_wait_reports_a_call_still_running(executor: DelayedDaemonExecutor) -> None:
    release = threading.Event()
    executor.submit(release.wait, 60)  # running until the test releases it
    assert not executor.wait(0.1)
    release.set()
    assert executor.wait(60)


def test_an_exception_goes_to_the_future(executor: DelayedDaemonExecutor) -> None:
    def fail() -> None:
        raise OSError("disk full")

    future = executor.submit(fail)
    with pytest.raises(OSError, match="disk full"):
        future.result(10)
    assert executor.submit(lambda: "still working").result(10) == "still working"


def test_shutdown_drops_what_has_not_started() -> None:
    uploads = DelayedDaemonExecutor("test-shutdown", delay=300)
    ran: list[int] = []
    futures = [uploads.submit(ran.append, n) for n in range(3)]
    started = time.monotonic()
    uploads.shutdown(wait=True, cancel_futures=True)
    assert time.monotonic() - started < 60  # the delay of 300 s was cut short
    assert ran == []
    for future in futures:
        with pytest.raises(CancelledError):
            future.result(0)
    assert not uploads.thread.is_alive()
    with pytest.raises(RuntimeError, match="after shutdown"):
        uploads.submit(ran.append, 9)


def test_shutdown_without_cancelling_runs_what_was_queued() -> None:
    uploads = DelayedDaemonExecutor("test-drain", delay=30)
    ran: list[int] = []
    for n in range(3):
        uploads.submit(ran.append, n)
    uploads.shutdown(wait=True)
    assert ran == [0, 1, 2]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_gets_an_uploader_of_its_own(tmp_path: Path) -> None:
    """The child has no copy of its parent's worker thread: what it submits
    must still run (the parent's call is mid-way at the fork)."""
    release = threading.Event()
    fleet_cache._uploads.submit(release.wait, 120)
    marker = tmp_path / "child-ran"
    pid = os.fork()
    if pid == 0:  # the child: report by exit status only
        code = 1
        try:
            fleet_cache._uploads.submit(marker.touch)
            code = 0 if fleet_cache.wait_for_uploads(60) and marker.exists() else 2
        finally:
            os._exit(code)
    try:
        _, status = os.waitpid(pid, 0)
    finally:
        release.set()
    assert os.waitstatus_to_exitcode(status) == 0
    assert fleet_cache.wait_for_uploads(60)


def test_publish_in_background_never_raises_once_stopped(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO")
    stopped = DelayedDaemonExecutor("test-stopped")
    stopped.shutdown()
    monkeypatch.setattr(fleet_cache, "_uploads", stopped)
    thread = fleet_cache.publish_in_background(HASH, tmp_path)
    assert thread is stopped.thread and thread.daemon
    assert "not publishing the wheels of" in caplog.text
    assert fleet_cache.wait_for_uploads(1)


# --- repacking a hand-made environment ------------------------------------------------


def _installed(env: Path, files: dict[str, bytes]) -> Path:
    """`demo 1.0` as an installer leaves it: its files, the installer's own
    dist-info files, a script and bytecode, and a RECORD naming them all."""
    info = env / "demo-1.0.dist-info"
    made = {
        **files,
        "demo-1.0.dist-info/METADATA": b"Metadata-Version: 2.1\nName: demo\nVersion: 1.0\n",
        "demo-1.0.dist-info/WHEEL": b"Wheel-Version: 1.0\nTag: py3-none-any\n",
        "demo-1.0.dist-info/INSTALLER": b"uv\n",
        "bin/demo": b"#!/usr/bin/python\n",
        "demo/__pycache__/__init__.cpython-311.pyc": b"\0",
    }
    for relative, data in made.items():
        (env / relative).parent.mkdir(parents=True, exist_ok=True)
        (env / relative).write_bytes(data)
    # A line twice, and one outside the environment (pip's ../../bin scripts).
    lines = [*made, next(iter(files)), "../../bin/outside", "demo-1.0.dist-info/RECORD"]
    (info / "RECORD").write_text("".join(f"{line},,\n" for line in lines))
    return info


def test_a_repacked_wheel_holds_the_distribution_and_a_fresh_record(tmp_path: Path) -> None:
    env = tmp_path / "env"
    _installed(env, {"demo/__init__.py": b"VALUE = 1\n", "demo/data/x.txt": b"x\n"})
    assert fleet_cache.produce_wheels(env, tmp_path / "out") == ["demo-1.0-py3-none-any.whl"]
    with WheelFile(tmp_path / "out" / "demo-1.0-py3-none-any.whl") as wheel:
        names = wheel.namelist()
        for name in names:
            wheel.read(name)  # checked against the RECORD the packer wrote
    assert names == [
        "demo/__init__.py", "demo/data/x.txt",
        "demo-1.0.dist-info/METADATA", "demo-1.0.dist-info/WHEEL", "demo-1.0.dist-info/RECORD",
    ]  # once each, the dist-info last; nothing the installer made
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["demo-1.0-py3-none-any.whl"]


def test_file_modes_survive_the_repack(tmp_path: Path) -> None:
    env = tmp_path / "env"
    _installed(env, {"demo/tool.sh": b"#!/bin/sh\n"})
    (env / "demo" / "tool.sh").chmod(0o755)
    fleet_repack.produce_wheels(env, tmp_path / "out")
    with zipfile.ZipFile(tmp_path / "out" / "demo-1.0-py3-none-any.whl") as wheel:
        assert (wheel.getinfo("demo/tool.sh").external_attr >> 16) & 0o777 == 0o755


# --- the directory backend ----------------------------------------------------------------


def test_the_directory_backend_round_trip(tmp_path: Path) -> None:
    cache = fleet_backends.DirectoryWheelCache(tmp_path / "shared" / "not-yet")
    assert cache.get("demo-1.0-py3-none-any.whl") is None
    assert cache.get_manifest(HASH) is None
    cache.put("demo-1.0-py3-none-any.whl", b"first")
    cache.put("demo-1.0-py3-none-any.whl", b"second")  # written once: the name names it
    cache.put_manifest(HASH, ["demo-1.0-py3-none-any.whl"])
    assert cache.has("demo-1.0-py3-none-any.whl")
    assert cache.get("demo-1.0-py3-none-any.whl") == b"first"
    assert cache.get_manifest(HASH) == ["demo-1.0-py3-none-any.whl"]
    assert json.loads((cache.root / f"{HASH}.json").read_text()) == ["demo-1.0-py3-none-any.whl"]
    assert sorted(p.name for p in cache.root.iterdir()) == [
        f"{HASH}.json", "demo-1.0-py3-none-any.whl"]  # no partial files left


@pytest.mark.parametrize("name", ["../x-1.0-py3-none-any.whl", "x.tar.gz", ".x.whl", "a/b.whl"])
def test_names_that_could_be_paths_are_refused(name: str) -> None:
    with pytest.raises(ValueError, match="not a wheel filename"):
        fleet_backends.checked_name(name)


@pytest.mark.parametrize("requirements_hash", ["", "../etc", "a" * 65, "a b"])
def test_hashes_that_could_be_paths_are_refused(requirements_hash: str) -> None:
    with pytest.raises(ValueError, match="not a requirements hash"):
        fleet_backends.checked_hash(requirements_hash)


# --- the public module ------------------------------------------------------------------


def test_the_public_module_names_the_pieces() -> None:
    assert fleet_cache.StoreWheelCache is fleet_backends.StoreWheelCache
    assert fleet_cache.DirectoryWheelCache is fleet_backends.DirectoryWheelCache
    assert fleet_cache.produce_wheels is fleet_repack.produce_wheels
    assert fleet_cache.wheel_filename is fleet_repack.wheel_filename
    assert all(hasattr(fleet_cache, name) for name in fleet_cache.__all__)


def test_the_backend_is_the_one_the_settings_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert isinstance(fleet_cache.wheel_cache(get_settings()), fleet_backends.StoreWheelCache)
    monkeypatch.setenv("BIFROST_WHEEL_CACHE", f" dir:{tmp_path}/shared ")
    get_settings.cache_clear()
    cache = fleet_cache.wheel_cache(get_settings())
    assert isinstance(cache, fleet_backends.DirectoryWheelCache)
    assert cache.root == tmp_path / "shared"


def test_no_sqlalchemy_and_no_thread_on_import() -> None:
    script = (
        "import sys, threading\n"
        "from src.services.installer import fleet_cache\n"
        "assert 'sqlalchemy' not in sys.modules, 'sqlalchemy was imported'\n"
        "assert threading.active_count() == 1, threading.enumerate()\n"
    )
    done = subprocess.run([sys.executable, "-c", script], cwd=API_DIR, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
