"""`should_stop`: an install nobody will use stops, with real uv mid-download
from a slow package index served by the test itself."""

from __future__ import annotations

import hashlib
import html
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from packaging.utils import canonicalize_name, parse_wheel_filename

from src.foundation.hashing import sha256_hex
from src.foundation.settings import get_settings
from src.services.installer.engine import InstallStopped, ensure_environment
from src.services.installer.environments import Environments
from src.services.installer.runner import STOP_POLL_SECONDS
from tests.integration.installer.processes import (
    alive,
    group_members,
    group_of,
    processes_mentioning,
)
from tests.support.waiting import wait_for
from tests.support.wheels import build_wheel

CONTENT = "good-a==1.0\n"
HASH = sha256_hex(CONTENT)
# Longer than any test waits: a slow download is held until the test releases it.
HOLD_SECONDS = 120


class SlowIndex:
    """A PEP 503 simple index of the wheels in a directory, on 127.0.0.1.
    While `slow` is set, each wheel download is held until `release` is set."""

    def __init__(self, wheelhouse: Path) -> None:
        self.wheelhouse = wheelhouse
        self.slow = threading.Event()
        self.release = threading.Event()
        self.held: list[str] = []  # wheel downloads that were held
        self.served: list[str] = []  # held downloads that went on after the hold
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/simple/"

    def start(self) -> SlowIndex:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(10)

    def page(self, project: str) -> bytes | None:
        wheels = sorted(
            wheel for wheel in self.wheelhouse.glob("*.whl")
            if parse_wheel_filename(wheel.name)[0] == canonicalize_name(project)
        )
        if not wheels:
            return None
        links = "".join(
            f'<a href="/files/{html.escape(w.name)}#sha256='
            f'{hashlib.sha256(w.read_bytes()).hexdigest()}">{html.escape(w.name)}</a>\n'
            for w in wheels
        )
        return f"<!DOCTYPE html><html><body>\n{links}</body></html>\n".encode()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        index = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # the stdlib's method name
                self._answer(with_body=True)

            def do_HEAD(self) -> None:  # uv asks before a download
                self._answer(with_body=False)

            def _answer(self, with_body: bool) -> None:
                parts = [part for part in self.path.split("?")[0].split("/") if part]
                if len(parts) == 2 and parts[0] == "simple":
                    self._send(index.page(parts[1]), "text/html", with_body)
                elif len(parts) == 2 and parts[0] == "files":
                    wheel = index.wheelhouse / os.path.basename(parts[1])
                    if with_body and index.slow.is_set():
                        index.held.append(wheel.name)
                        index.release.wait(HOLD_SECONDS)
                        index.served.append(wheel.name)
                    self._send(wheel.read_bytes() if wheel.is_file() else None,
                               "application/octet-stream", with_body)
                else:
                    self._send(None, "text/plain", with_body)

            def _send(self, body: bytes | None, content_type: str, with_body: bool) -> None:
                if body is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if with_body:
                    self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass  # quiet: pytest shows the test's own output

        return Handler


@pytest.fixture
def slow_index(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[SlowIndex]:
    house = tmp_path / "index-wheels"
    build_wheel(house, "good-a", "1.0", requires=["good-dep>=1"])
    build_wheel(house, "good-dep", "1.5")
    index = SlowIndex(house).start()
    monkeypatch.setenv("PIP_INDEX_URL", index.url)
    for name in ("PIP_FIND_LINKS", "PIP_NO_INDEX", "PIP_EXTRA_INDEX_URL",
                 "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy",
                 "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    get_settings.cache_clear()
    try:
        yield index
    finally:
        index.stop()


@pytest.fixture
def local_wheels(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    house = tmp_path / "wheelhouse"
    build_wheel(house, "good-a", "1.0", requires=["good-dep>=1"])
    build_wheel(house, "good-dep", "1.5")
    monkeypatch.setenv("PIP_FIND_LINKS", str(house))
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    return house


def _envs() -> Environments:
    return Environments(get_settings().packages_dir)


def _importable(env: Path, module: str) -> bool:
    done = subprocess.run([sys.executable, "-c", f"import {module}"],
                          env={**os.environ, "PYTHONPATH": str(env)}, capture_output=True)
    return done.returncode == 0


def _nothing_left_of_the_build() -> None:
    envs = _envs()
    assert envs.latest(HASH) is None
    assert not list(envs.root.glob(".tmp-*"))
    lock = envs.lock(HASH, timeout=0)
    with lock.acquire():  # released: nobody holds the hash's lock any more
        pass


def test_an_install_nobody_will_use_stops_mid_download(
    slow_index: SlowIndex, caplog: pytest.LogCaptureFixture
) -> None:
    slow_index.slow.set()
    stop = threading.Event()
    with ThreadPoolExecutor(1) as pool:
        future = pool.submit(ensure_environment, CONTENT, HASH, "w-stopped",
                             should_stop=stop.is_set)
        wait_for(lambda: slow_index.held, 60, what="uv to be downloading a wheel")
        # The supervisor and uv: each names the build directory on its command line.
        installer = wait_for(lambda: processes_mentioning(f".tmp-{HASH}"), 60,
                             what="the installer's processes")
        groups = {group for pid in installer if (group := group_of(pid)) is not None}
        stop.set()
        # The download is held for HOLD_SECONDS: an install that ends well before
        # that, with InstallStopped, was stopped mid-download.
        with pytest.raises(InstallStopped, match=f"install of {HASH[:12]} .*stopped"):
            future.result(timeout=HOLD_SECONDS / 2)
    assert not slow_index.served, "a held download was served: the install was not stopped"
    # The supervisor killed the installer's group and exited when told to: the
    # engine did not have to give up waiting for it (its grace is a backstop).
    assert "did not exit" not in caplog.text, caplog.text
    assert not [pid for pid in installer if alive(pid)]
    assert not [pid for group in groups for pid in group_members(group)]
    assert not processes_mentioning(f".tmp-{HASH}")
    _nothing_left_of_the_build()

    # The next start, with nobody asking it to stop, builds the environment.
    slow_index.slow.clear()
    slow_index.release.set()
    outcome, env = ensure_environment(CONTENT, HASH, "w-next")
    assert outcome["ok"] and not outcome["skipped"], outcome
    assert outcome["installed"] == ["good-a==1.0", "good-dep==1.5"]
    assert env is not None and _importable(env, "good_a")


def test_waiting_for_another_process_to_build_stops(local_wheels: Path) -> None:
    lock_path = _envs().lock(HASH, timeout=0).lock_file
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, filelock\n"
         "lock = filelock.FileLock(sys.argv[1]); lock.acquire()\n"
         "print('held', flush=True); sys.stdin.read()\n", lock_path],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        asked: list[float] = []

        def should_stop() -> bool:  # True on the third question
            asked.append(time.monotonic())
            return len(asked) >= 3

        # Without the stop this would wait for the lock's own timeout (twice
        # BIFROST_INSTALL_TIMEOUT), then fail without InstallStopped.
        with pytest.raises(InstallStopped, match="waiting for another process"):
            ensure_environment(CONTENT, HASH, "w-waiting", should_stop=should_stop)
        assert len(asked) == 3  # it stopped at the first True
        # Asked every STOP_POLL_SECONDS while it waits: never sooner (the code
        # waits that long for the lock between questions), and not only once
        # the lock's timeout of minutes has run out (the upper bound only
        # allows for a busy machine).
        between = asked[1] - asked[0]
        assert STOP_POLL_SECONDS * 0.9 <= between < 30, between
        assert _envs().latest(HASH) is None and not list(_envs().root.glob(".tmp-*"))
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait(10)
    _nothing_left_of_the_build()
    outcome, env = ensure_environment(CONTENT, HASH, "w-after")
    assert outcome["ok"] and not outcome["skipped"], outcome
    assert env is not None and _importable(env, "good_a")


def test_should_stop_that_stays_false_changes_nothing(local_wheels: Path) -> None:
    asked: list[float] = []

    def never() -> bool:
        asked.append(time.monotonic())
        return False

    outcome, env = ensure_environment(CONTENT, HASH, "w-calm", should_stop=never)
    assert outcome["ok"] and not outcome["skipped"]
    assert asked  # it was asked (at least before the installer started)
    again, same = ensure_environment(CONTENT, HASH, "w-calm2", should_stop=never)
    assert again["skipped"] and same == env
