"""Resolving requirements into a lock with the real uv, on local wheels."""

from __future__ import annotations

import hashlib
import http.server
import os
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from src.confinement.landlock import landlock_abi
from src.foundation.locks import DIRECT, Lock
from src.services.installer.resolver import (
    IndexUnreachable,
    Outdated,
    Unresolvable,
    outdated,
    resolve,
)
from tests.support.exchange import Exchange
from tests.support.wheels import build_wheel


@pytest.fixture
def wheelhouse(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    house = tmp_path / "wheelhouse"
    build_wheel(house, "good-a", "1.0", requires=["good-dep>=1"])
    build_wheel(house, "good-dep", "1.5")
    build_wheel(house, "good-b", "2.0")
    monkeypatch.setenv("PIP_FIND_LINKS", str(house))
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("UV_NO_CONFIG", "1")  # no developer's uv.toml index settings
    return house


@pytest.fixture
def no_index(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only what a test sets: no wheelhouse, no index, one try per request."""
    for name in ("PIP_FIND_LINKS", "PIP_NO_INDEX", "PIP_EXTRA_INDEX_URL", "UV_INDEX_URL",
                 "UV_DEFAULT_INDEX", "UV_INDEX", "UV_EXTRA_INDEX_URL", "UV_FIND_LINKS",
                 "UV_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("UV_NO_CONFIG", "1")
    monkeypatch.setenv("UV_HTTP_RETRIES", "0")


def _sha256(path: Path) -> str:
    return "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _unresolvable(content: str) -> Unresolvable:
    with pytest.raises(Unresolvable) as caught:
        resolve(content, "h")
    return caught.value


def test_a_set_resolves_to_exact_pins_with_hashes_and_what_brought_each(
    wheelhouse: Path,
) -> None:
    lock = resolve("# tools\ngood-a\ngood-b>=1  # a comment\n", "req-hash")
    assert lock.requirements_hash == "req-hash"
    assert lock.pins() == ["good-a==1.0", "good-b==2.0", "good-dep==1.5"]
    for package in lock.packages:
        wheel = wheelhouse / f"{package.name.replace('-', '_')}-{package.version}-py3-none-any.whl"
        assert package.hashes == (_sha256(wheel),)
    assert [p.via for p in lock.packages] == [(DIRECT,), (DIRECT,), ("good-a",)]
    # the platform's pins constrain, and are not in the lock
    assert lock.find("packaging") is None
    assert Lock.parse(lock.text()) == lock


def test_a_line_that_is_also_a_dependency_is_both(wheelhouse: Path) -> None:
    lock = resolve("good-a\nGood_Dep\n", "h")
    dep = lock.find("good-dep")
    assert dep is not None and dep.via == ("good-a", DIRECT)


def test_no_lines_is_an_empty_lock(wheelhouse: Path) -> None:
    assert resolve("# nothing yet\n\n", "h") == Lock.of("h", [])


def test_the_index_settings_given_are_used(tmp_path: Path, no_index: None) -> None:
    house = tmp_path / "elsewhere"
    build_wheel(house, "good-b", "3.0")
    environ = {**os.environ, "PIP_FIND_LINKS": str(house), "PIP_NO_INDEX": "1"}
    lock = resolve("good-b\n", "h", environ=environ)
    assert "PIP_FIND_LINKS" not in os.environ  # the settings given, not this process's
    assert lock.pins() == ["good-b==3.0"]


def test_preferences_keep_the_versions_locked_before(wheelhouse: Path) -> None:
    before = resolve("good-a\n", "h1")
    build_wheel(wheelhouse, "good-dep", "2.0")  # a newer version appears
    assert "good-dep==2.0" in resolve("good-a\ngood-b\n", "h2").pins()  # uv sees it
    after = resolve("good-a\ngood-b\n", "h2", preferences=before)
    assert after.pins() == ["good-a==1.0", "good-b==2.0", "good-dep==1.5"]


def test_upgrade_moves_every_package(wheelhouse: Path) -> None:
    before = resolve("good-a\ngood-b\n", "h1")
    build_wheel(wheelhouse, "good-dep", "2.0")
    build_wheel(wheelhouse, "good-b", "2.1")
    after = resolve("good-a\ngood-b\n", "h1", preferences=before, upgrade=True)
    assert after.pins() == ["good-a==1.0", "good-b==2.1", "good-dep==2.0"]


def test_upgrade_of_one_name_moves_only_that_one(wheelhouse: Path) -> None:
    before = resolve("good-a\ngood-b\n", "h1")
    build_wheel(wheelhouse, "good-dep", "2.0")
    build_wheel(wheelhouse, "good-b", "2.1")
    after = resolve("good-a\ngood-b\n", "h1", preferences=before, upgrade=["Good_Dep"])
    assert after.pins() == ["good-a==1.0", "good-b==2.0", "good-dep==2.0"]


def test_an_unknown_package_is_named(wheelhouse: Path) -> None:
    error = _unresolvable("good-a\nNo_Such_Package>=1\n")
    assert error.package == "No_Such_Package"  # as the line spells it
    assert "no-such-package was not found" in error.reason
    assert "unsatisfiable" in error.reason


def test_an_unknown_dependency_is_named(wheelhouse: Path) -> None:
    build_wheel(wheelhouse, "needs-missing", "1.0", requires=["missing-dep>=1"])
    error = _unresolvable("good-b\nneeds-missing\n")
    assert error.package == "missing-dep"
    assert "missing-dep was not found" in error.reason


def test_no_matching_version_names_the_line(wheelhouse: Path) -> None:
    error = _unresolvable("good-b\ngood-a>=5\n")
    assert error.package == "good-a"
    assert "good-a>=5" in error.reason


def test_conflicting_lines_quote_the_resolver(wheelhouse: Path) -> None:
    error = _unresolvable("good-b\ngood-a\ngood-dep<1\n")
    assert error.package in {"good-a", "good-dep"}
    assert "good-dep<1" in error.reason and "unsatisfiable" in error.reason
    assert error.reason.startswith("No solution found when resolving dependencies")
    assert "\n" not in error.reason and len(error.reason) <= 1000


def test_a_line_against_the_platforms_own_version_is_unresolvable(wheelhouse: Path) -> None:
    error = _unresolvable("good-b\npackaging==0.1\n")
    assert error.package == "packaging"
    assert "packaging==0.1" in error.reason


def test_input_the_resolver_cannot_read_is_unresolvable_in_its_words(wheelhouse: Path) -> None:
    error = _unresolvable("good-a===\n")
    assert "requirements.txt" in error.reason and "bifrost-resolve" not in error.reason


def test_a_closed_index_is_unreachable_and_named(no_index: None,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    url = f"http://127.0.0.1:{_closed_port()}/simple"
    monkeypatch.setenv("PIP_INDEX_URL", url)
    with pytest.raises(IndexUnreachable) as caught:
        resolve("good-a\n", "h")
    assert caught.value.index == url
    assert "Connection refused" in caught.value.reason


def test_a_closed_find_links_location_is_unreachable_and_named(
    no_index: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"http://127.0.0.1:{_closed_port()}/wheels/"
    monkeypatch.setenv("PIP_FIND_LINKS", url)
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    with pytest.raises(IndexUnreachable) as caught:
        resolve("good-a\n", "h")
    assert caught.value.index == url


def test_offline_is_unreachable(no_index: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PIP_INDEX_URL", "http://127.0.0.1:9/simple")
    monkeypatch.setenv("UV_OFFLINE", "1")
    with pytest.raises(IndexUnreachable) as caught:
        resolve("good-a\n", "h")
    assert caught.value.index == "http://127.0.0.1:9/simple"
    assert "network was disabled" in caught.value.reason


class _Index(http.server.BaseHTTPRequestHandler):
    """Answers every request with the status its path starts with (/503/...)."""

    def do_GET(self) -> None:
        self.send_response(int(self.path.split("/")[1]))
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def index_server() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Index)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("status", [503, 401, 403])
def test_an_index_failing_or_refusing_us_is_unreachable(
    status: int, index_server: str, no_index: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"{index_server}/{status}/simple"
    monkeypatch.setenv("PIP_INDEX_URL", url)
    with pytest.raises(IndexUnreachable) as caught:
        resolve("good-a\n", "h")
    assert caught.value.index == url
    assert str(status) in caught.value.reason


def test_a_404_index_means_an_unknown_package(index_server: str, no_index: None,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PIP_INDEX_URL", f"{index_server}/404/simple")
    assert _unresolvable("good-a\n").package == "good-a"


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that accepts connections and never answers."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        yield listener.getsockname()[1]


def test_an_index_that_never_answers_is_unreachable(
    silent_port: int, no_index: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"http://127.0.0.1:{silent_port}/simple"
    monkeypatch.setenv("PIP_INDEX_URL", url)
    monkeypatch.setenv("UV_HTTP_TIMEOUT", "1")
    with pytest.raises(IndexUnreachable, match="timed out") as caught:
        resolve("good-a\n", "h")
    assert caught.value.index == url
    # ... and when the resolution's own time runs out first
    monkeypatch.setenv("UV_HTTP_TIMEOUT", "60")
    with pytest.raises(IndexUnreachable, match="took longer than 1 s") as caught:
        resolve("good-a\n", "h", timeout=1.0)
    assert caught.value.index == url


def test_outdated_figures(wheelhouse: Path) -> None:
    lock = resolve("good-a\ngood-dep<2\n", "h")
    build_wheel(wheelhouse, "good-dep", "2.0")
    build_wheel(wheelhouse, "good-dep", "1.7")
    report = outdated("good-a  # the app\ngood-dep<2\nNo_Such_Package\ngood-b\n", lock)
    assert report == [
        Outdated(line="good-a", name="good-a", locked="1.0", newest_allowed="1.0", newest="1.0"),
        Outdated(line="good-dep<2", name="good-dep", locked="1.5", newest_allowed="1.7",
                 newest="2.0"),
        Outdated(line="No_Such_Package", name="No_Such_Package", locked=None,
                 newest_allowed=None, newest=None),
        Outdated(line="good-b", name="good-b", locked=None, newest_allowed="2.0", newest="2.0"),
    ]
    assert outdated("# none\n", lock) == []
    assert outdated("good-b\n", None)[0].locked is None


def test_outdated_with_the_index_unreachable(no_index: None,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    url = f"http://127.0.0.1:{_closed_port()}/simple"
    monkeypatch.setenv("PIP_INDEX_URL", url)
    with pytest.raises(IndexUnreachable) as caught:
        outdated("good-a\n", None)
    assert caught.value.index == url


SECRETS = {
    "REDIS_URL": "redis://:redis-password-1f2e@127.0.0.1:1/0",
    "DATABASE_URL": "postgresql://bifrost:store-password-9c8d@127.0.0.1:1/bifrost",
    "BIFROST_ADMIN_TOKEN": "admin-token-7a6b5c4d3e2f1a0b",
    "BIFROST_READ_TOKEN": "read-token-0a1b2c3d4e5f6a7b",
    "BIFROST_ALERT_WEBHOOK": "https://hooks.example/secret-path-5e4d",
}


EXECUTION_UID = 65534  # BIFROST_EXECUTION_UID's default


def test_package_build_code_is_confined_and_never_sees_the_control_planes_variables(
    wheelhouse: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    isolated_settings: Path, exchange: Exchange,
) -> None:
    """An sdist's build code runs when uv reads its metadata (resolving on
    write, in the API) and when it builds the wheel (installing, in a worker):
    neither time with Redis's URL, the store's, a token or the webhook, with
    a capability, or with a way into the data dir."""
    import json

    from src.services.installer import commands
    from src.services.installer.runner import run_installer
    from tests.support.wheels import build_sdist

    isolated_settings.mkdir(parents=True, exist_ok=True)
    token, store = isolated_settings / "admin-token", isolated_settings / "bifrost.db"
    token.write_text("the admin token")
    store.write_bytes(b"SQLite format 3\x00")
    reports = exchange / "builds.jsonl"
    name = f"envprobe{os.getpid()}"
    build_sdist(wheelhouse, name, "1.0.0", behaviour=f"probe:{reports} {token} {store}")
    for variable, value in SECRETS.items():
        monkeypatch.setenv(variable, value)
    lock = resolve(f"{name}==1.0.0\n", "h")  # metadata: the backend runs
    assert [package.name for package in lock.packages] == [name]
    call = commands.install_command("uv", tmp_path / "target", requirement=f"{name}==1.0.0")
    done = run_installer(call.argv, 120, env=call.env, confine=call.confine)  # the wheel: again
    assert done.returncode == 0, done.stderr
    seen = [json.loads(line) for line in reports.read_text().splitlines()]
    assert len(seen) >= 2, f"the build code ran {len(seen)} time(s), not at resolve and install"
    for report in seen:
        environment = report["environ"]
        assert not set(SECRETS) & set(environment), sorted(set(SECRETS) & set(environment))
        text = json.dumps(environment)
        assert not [v for v in SECRETS.values() if v in text]
        assert int(report["caps"], 16) == 0, report["caps"]
        assert report["uid"] == (EXECUTION_UID if os.geteuid() == 0 else os.getuid()), report
        if landlock_abi() > 0:
            assert report["tried"] == {str(token): "PermissionError",
                                       str(store): "PermissionError",
                                       "write": "PermissionError"}, report["tried"]
    assert not (isolated_settings / "planted-by-a-build").exists()
    # What the build installed is the platform's again: an execution (the
    # same uid as the build) cannot change it.
    owners = {path.stat().st_uid for path in (tmp_path / "target").rglob("*")}
    assert owners == {os.getuid()}, owners
