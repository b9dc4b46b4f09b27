"""Building a hash's environment from its lock, with the real installer (uv and
pip) on local wheels: the lock's exact pins, `--no-deps`, no resolution; and
without a readable lock, the build resolves by itself as before locks.

Most tests put a lock in place by replacing the engine's `read_lock` (what
the lock cache would answer); `test_a_lock_saved_by_the_write_path_is_built`
goes through the real lock cache (Redis and the store)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from packaging.utils import canonicalize_name

from src.foundation.hashing import sha256_hex
from src.foundation.locks import DIRECT, InvalidLock, Lock, LockedPackage
from src.foundation.settings import get_settings
from src.services.installer import context as context_module
from src.services.installer import engine, environments, fleet_cache, runner
from src.services.installer.context import BuildContext
from src.services.installer.engine import ensure_environment
from src.services.installer.environments import Environments, read_record
from src.services.installer.lock_files import LOCK_FILES_DIR
from tests.support.wheels import build_wheel

CONTENT = "good-a==1.0\n"
H = sha256_hex(CONTENT)


@pytest.fixture
def wheelhouse(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The index: good-a needs good-dep>=1, of which 1.5 is the newest."""
    house = tmp_path / "wheelhouse"
    build_wheel(house, "good-a", "1.0", requires=["good-dep>=1"])
    build_wheel(house, "good-dep", "1.0")
    build_wheel(house, "good-dep", "1.5")
    build_wheel(house, "good-b", "2.0")
    monkeypatch.setenv("PIP_FIND_LINKS", str(house))
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    return house


@pytest.fixture
def locks(monkeypatch: pytest.MonkeyPatch) -> dict[str, Lock | Exception]:
    """What the lock cache answers for each hash: a lock, an error it raises,
    or (a hash not in here) no lock at all."""
    table: dict[str, Lock | Exception] = {}

    def read_lock(requirements_hash: str, worker_id: str = "-") -> Lock | None:
        found = table.get(requirements_hash)
        if isinstance(found, Exception):
            raise found
        return found

    monkeypatch.setattr(context_module, "read_lock", read_lock)
    return table


@dataclass(frozen=True)
class Run:
    """One installer run: its argv, the requirements file it read, its environment."""

    argv: list[str]
    requirements: str
    env: dict[str, str]


@pytest.fixture
def runs(monkeypatch: pytest.MonkeyPatch) -> list[Run]:
    """Every installer run of the test, as it started."""
    seen: list[Run] = []
    real = runner.run_installer

    def spy(argv: list[str], *args: object, **kwargs: object) -> subprocess.CompletedProcess[str]:
        text = Path(argv[argv.index("-r") + 1]).read_text() if "-r" in argv else ""
        env = kwargs.get("env")
        seen.append(Run(list(argv), text, dict(env) if isinstance(env, dict) else {}))
        return real(argv, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(runner, "run_installer", spy)
    return seen


@pytest.fixture(autouse=True)
def _no_upload_left_running() -> Iterator[None]:
    yield
    assert fleet_cache.wait_for_uploads(60)


def _wheel(house: Path, name: str, version: str) -> Path:
    return house / f"{canonicalize_name(name).replace('-', '_')}-{version}-py3-none-any.whl"


def _lock(house: Path, pins: dict[str, str], content: str = CONTENT,
          hashed: set[str] | None = None) -> Lock:
    """The lock of `content` pinning `pins`, with the sha256 of each wheel in
    `house` (of those named in `hashed`, when given), as the write path makes it."""
    packages = []
    for name, version in pins.items():
        digest = hashlib.sha256(_wheel(house, name, version).read_bytes()).hexdigest()
        with_hash = hashed is None or name in hashed
        packages.append(LockedPackage(name, version, (f"sha256:{digest}",) if with_hash else (),
                                      (DIRECT,)))
    return Lock.of(sha256_hex(content), packages)


def _version(env: Path, module: str) -> str:
    done = subprocess.run([sys.executable, "-c", f"import {module}; print({module}.VERSION)"],
                          env={**os.environ, "PYTHONPATH": str(env)}, capture_output=True,
                          text=True, check=True)
    return done.stdout.strip()


def _use_host(monkeypatch: pytest.MonkeyPatch, root: Path) -> None:
    """Act as another host: a packages dir and an installer cache of its own."""
    monkeypatch.setenv("BIFROST_PACKAGES_DIR", str(root / "packages"))
    monkeypatch.setenv("UV_CACHE_DIR", str(root / "uv-cache"))
    get_settings.cache_clear()


# --- the lock's pins, and nothing else -------------------------------------------------


@pytest.mark.parametrize("installer", ["uv", "pip"])
def test_a_lock_is_installed_pin_for_pin(
    wheelhouse: Path, locks: dict[str, Lock | Exception], runs: list[Run], installer: str,
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv("BIFROST_INSTALLER", installer)
    get_settings.cache_clear()
    # The index's newest good-dep is 1.5; the lock says 1.0, so 1.0 it is.
    lock = locks[H] = _lock(wheelhouse, {"good-a": "1.0", "good-dep": "1.0"})
    caplog.set_level("INFO")
    outcome, env = ensure_environment(CONTENT, H, "w1")
    assert outcome["ok"] and not outcome["skipped"], outcome
    assert outcome["installed"] == ["good-a==1.0", "good-dep==1.0"]
    assert env is not None and _version(env, "good_dep") == "1.0"
    assert "[w1] Installing 2 locked packages (no resolution)" in caplog.text
    assert "resolving here" not in caplog.text
    record = read_record(env)
    assert record is not None and record.lock_digest == lock.digest()
    # One run, --no-deps, the lock's pins with their hashes: there is no store
    # here, so no fleet cache to gather the lock's files in, and the
    # installer takes them from the index itself.
    [install] = runs
    assert {"install", "--no-deps"} <= set(install.argv)
    assert install.requirements.splitlines() == [
        f"{p.pin()} --hash={p.hashes[0]}" for p in lock.packages]
    assert "files_from" not in outcome
    assert "The fleet cache did not answer: there is no store" in caplog.text


def test_nothing_the_lock_leaves_out_is_resolved(
    wheelhouse: Path, locks: dict[str, Lock | Exception], runs: list[Run],
) -> None:
    # A lock that (wrongly) leaves out a dependency gets no dependency: the
    # installer resolves nothing, it installs the pins.
    locks[H] = _lock(wheelhouse, {"good-a": "1.0"})
    outcome, env = ensure_environment(CONTENT, H, "w1")
    assert outcome["installed"] == ["good-a==1.0"]
    assert env is not None and not list(env.glob("good_dep*"))
    assert all("--no-deps" in run.argv for run in runs)


def test_pip_installs_hashed_and_unhashed_pins_in_two_batches(
    wheelhouse: Path, locks: dict[str, Lock | Exception], runs: list[Run],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # One hash turns pip's hash checking on for the whole file: the packages
    # without one go in a run of their own.
    monkeypatch.setenv("BIFROST_INSTALLER", "pip")
    get_settings.cache_clear()
    locks[H] = _lock(wheelhouse, {"good-a": "1.0", "good-dep": "1.0"}, hashed={"good-a"})
    outcome, _ = ensure_environment(CONTENT, H, "w1")
    assert outcome["ok"] and outcome["installed"] == ["good-a==1.0", "good-dep==1.0"], outcome
    installs = [run for run in runs if "install" in run.argv]
    assert [run.requirements.split()[0] for run in installs] == ["good-a==1.0", "good-dep==1.0"]
    assert "--hash" in installs[0].requirements and "--hash" not in installs[1].requirements
    assert all("--no-deps" in run.argv for run in runs)


def test_the_lock_s_hashes_are_checked(
    wheelhouse: Path, locks: dict[str, Lock | Exception], caplog: pytest.LogCaptureFixture,
) -> None:
    lock = _lock(wheelhouse, {"good-a": "1.0", "good-dep": "1.0"})
    tampered = LockedPackage("good-dep", "1.0", ("sha256:" + "0" * 64,), ("good-a",))
    locks[H] = Lock.of(H, [lock.packages[0], tampered])
    caplog.set_level("INFO")
    outcome, env = ensure_environment(CONTENT, H, "w1")
    assert [f["package"] for f in outcome["failed"]] == ["good-dep==1.0"]
    assert "hash" in outcome["failed"][0]["error"].lower()
    assert env is not None and outcome["installed"] == ["good-a==1.0"]
    assert "[w1] + good-a==1.0" in caplog.text  # the good pin landed alone


def test_a_pin_that_would_replace_a_platform_package_fails_alone(
    wheelhouse: Path, locks: dict[str, Lock | Exception],
) -> None:
    # The platform runs on pydantic 2: its constraints hold with --no-deps too.
    build_wheel(wheelhouse, "pydantic", "1.10.0")
    content = "good-b==2.0\npydantic<2\n"
    h = sha256_hex(content)
    locks[h] = _lock(wheelhouse, {"good-b": "2.0", "pydantic": "1.10.0"}, content)
    outcome, env = ensure_environment(content, h, "w1")
    assert [f["package"] for f in outcome["failed"]] == ["pydantic==1.10.0"]
    assert env is not None and outcome["installed"] == ["good-b==2.0"]
    assert not list(env.glob("pydantic*"))


# --- no lock, or one that cannot be read: resolved here, as before ------------------------


def test_without_a_lock_the_build_resolves_and_says_so(
    wheelhouse: Path, locks: dict[str, Lock | Exception], runs: list[Run],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level("INFO")
    outcome, env = ensure_environment(CONTENT, H, "w1")
    assert outcome["ok"] and outcome["installed"] == ["good-a==1.0", "good-dep==1.5"]
    assert f"[w1] No lock for requirements {H[:12]}: resolving here" in caplog.text
    assert "locked packages" not in caplog.text
    assert runs and all("--no-deps" not in run.argv for run in runs)
    assert runs[0].requirements == CONTENT  # the requirements file itself, as before
    record = read_record(env) if env else None
    assert record is not None and record.lock_digest is None


def test_a_lock_that_cannot_be_read_is_resolved_here(
    wheelhouse: Path, locks: dict[str, Lock | Exception], runs: list[Run],
    caplog: pytest.LogCaptureFixture,
) -> None:
    locks[H] = InvalidLock("line 2: 'good-dep>=1' is not an exact pin (name==version)")
    caplog.set_level("INFO")
    outcome, env = ensure_environment(CONTENT, H, "w1")
    assert outcome["ok"] and outcome["installed"] == ["good-a==1.0", "good-dep==1.5"]
    assert (f"[w1] The lock for requirements {H[:12]} cannot be read (line 2: 'good-dep>=1' "
            "is not an exact pin (name==version)): resolving here") in caplog.text
    assert all("--no-deps" not in run.argv for run in runs)


def test_a_lock_saved_by_the_write_path_is_built(
    sqlite_system: str, wheelhouse: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    from src.core import lock_cache

    lock = lock_cache.save_lock_sync(_lock(wheelhouse, {"good-a": "1.0", "good-dep": "1.0"}))
    caplog.set_level("INFO")
    outcome, env = ensure_environment(CONTENT, H, "w1")
    assert outcome["installed"] == ["good-a==1.0", "good-dep==1.0"], outcome
    assert "[w1] Installing 2 locked packages (no resolution)" in caplog.text
    record = read_record(env) if env else None
    assert record is not None and record.lock_digest == lock.digest()


def test_an_unreadable_lock_in_the_store_is_resolved_here(
    sqlite_system: str, wheelhouse: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    from src.store.database import session_scope
    from src.store.locks import put_lock

    with session_scope() as session:
        put_lock(session, H, "good-a==1.0\n")  # not a lock: no header line
    caplog.set_level("INFO")
    outcome, _ = ensure_environment(CONTENT, H, "w1")
    assert outcome["ok"] and outcome["installed"] == ["good-a==1.0", "good-dep==1.5"]
    assert f"[w1] The lock for requirements {H[:12]} cannot be read (" in caplog.text
    assert "): resolving here" in caplog.text


# --- reuse ----------------------------------------------------------------------------------


def test_an_environment_is_reused_only_when_built_from_the_current_lock(
    wheelhouse: Path, locks: dict[str, Lock | Exception], caplog: pytest.LogCaptureFixture,
) -> None:
    resolved, first = ensure_environment(CONTENT, H, "w1")  # before locks: resolved here
    assert not resolved["skipped"] and first is not None and first.name == f"{H}.1"

    lock = locks[H] = _lock(wheelhouse, {"good-a": "1.0", "good-dep": "1.0"})
    caplog.set_level("INFO")
    locked, second = ensure_environment(CONTENT, H, "w2")
    assert not locked["skipped"] and second is not None and second.name == f"{H}.2"
    assert f"[w2] Environment {H}.1 was not built from the lock of {H[:12]}" in caplog.text
    assert locked["installed"] == ["good-a==1.0", "good-dep==1.0"]

    again, same = ensure_environment(CONTENT, H, "w3")
    assert again["skipped"] and same == second

    # Another lock for the hash (a lock never changes; say, one resolved with
    # other hashes): what was built from the first one is not reused.
    other = Lock.of(H, [*lock.packages, LockedPackage("good-b", "2.0")])
    locks[H] = other
    rebuilt, third = ensure_environment(CONTENT, H, "w4")
    assert not rebuilt["skipped"] and third is not None and third.name == f"{H}.3"
    record = read_record(third)
    assert record is not None and record.lock_digest == other.digest()

    # With no lock to compare with, a sound environment is reused, as before locks.
    del locks[H]
    unlocked, reused = ensure_environment(CONTENT, H, "w5")
    assert unlocked["skipped"] and reused == third


def test_a_failed_pin_is_retried_alone_and_explains_what_it_leaves_missing(
    wheelhouse: Path, tmp_path: Path, locks: dict[str, Lock | Exception],
    caplog: pytest.LogCaptureFixture,
) -> None:
    later = tmp_path / "later"
    build_wheel(later, "good-dep", "2.0")  # the lock's version, not on the index yet
    packages = [*_lock(wheelhouse, {"good-a": "1.0"}).packages,
                *_lock(later, {"good-dep": "2.0"}).packages]
    lock = locks[H] = Lock.of(H, packages)
    first, env = ensure_environment(CONTENT, H, "w1")
    assert [f["package"] for f in first["failed"]] == ["good-dep==2.0"]
    assert first["installed"] == ["good-a==1.0"] and env is not None

    # Within the round that built it, the environment is used as it is: good-a
    # lacks good-dep because that pin failed, which the record says.
    ctx = BuildContext.create(CONTENT, H, "w2", get_settings())
    ctx.load_lock()
    ctx.began_at = 0.0
    latest = Environments(get_settings().packages_dir).latest(H)
    assert latest is not None and engine._usable(ctx, latest) == latest

    shutil.copy(_wheel(later, "good-dep", "2.0"), wheelhouse)  # the index has it now
    caplog.set_level("INFO")
    second, retried = ensure_environment(CONTENT, H, "w3")
    assert second["ok"] and second["installed"] == ["good-a==1.0", "good-dep==2.0"], second
    assert retried is not None and retried.name == f"{H}.2"
    assert f"from its lock {lock.digest()[:12]} with uv (1 packages)" in caplog.text


# --- hosts, and the fleet wheel cache ---------------------------------------------------------


def test_two_hosts_build_one_lock_alike_after_the_index_moved_on(
    wheelhouse: Path, tmp_path: Path, locks: dict[str, Lock | Exception],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    content = "good-a>=1\n"
    h = sha256_hex(content)
    locks[h] = _lock(wheelhouse, {"good-a": "1.0", "good-dep": "1.5"}, content)
    _use_host(monkeypatch, tmp_path / "host-a")
    first, env_a = ensure_environment(content, h, "w-a")
    # The index gains newer releases of both.
    build_wheel(wheelhouse, "good-a", "1.1", requires=["good-dep>=2"])
    build_wheel(wheelhouse, "good-dep", "2.0")
    _use_host(monkeypatch, tmp_path / "host-b")
    second, env_b = ensure_environment(content, h, "w-b")
    assert not second["skipped"] and env_a is not None and env_b is not None
    assert env_a.parent != env_b.parent
    assert second["installed"] == first["installed"] == ["good-a==1.0", "good-dep==1.5"]
    assert _version(env_b, "good_a") == "1.0" and _version(env_b, "good_dep") == "1.5"

    # A host resolving by itself (no lock) would have taken the new releases.
    del locks[h]
    _use_host(monkeypatch, tmp_path / "host-c")
    resolved, _ = ensure_environment(content, h, "w-c")
    assert resolved["installed"] == ["good-a==1.1", "good-dep==2.0"]


def test_a_locked_build_is_kept_for_the_fleet_and_rebuilt_from_the_lock_s_files(
    wheelhouse: Path, tmp_path: Path, locks: dict[str, Lock | Exception], runs: list[Run],
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
) -> None:
    shared = tmp_path / "shared-wheels"
    monkeypatch.setenv("BIFROST_WHEEL_CACHE", f"dir:{shared}")
    lock = locks[H] = _lock(wheelhouse, {"good-a": "1.0", "good-dep": "1.0"})
    _use_host(monkeypatch, tmp_path / "host-a")
    first, _ = ensure_environment(CONTENT, H, "w-a")
    assert first["ok"] and fleet_cache.wait_for_uploads(60)
    wheels = ["good_a-1.0-py3-none-any.whl", "good_dep-1.0-py3-none-any.whl"]
    assert json.loads((shared / f"{lock.digest()}.json").read_text()) == wheels
    assert not (shared / f"{H}.json").exists()

    # The index is gone; another host builds the hash from the lock's own
    # files, which the first host fetched for the fleet: never from the
    # repacked wheels, whose bytes are not the ones the lock names.
    shutil.rmtree(wheelhouse)
    _use_host(monkeypatch, tmp_path / "host-b")
    runs.clear()
    caplog.set_level("INFO")
    second, env = ensure_environment(CONTENT, H, "w-b")
    assert second["ok"] and second["installed"] == ["good-a==1.0", "good-dep==1.0"], second
    assert second["files_from"] == "the fleet cache", second
    assert env is not None and _version(env, "good_dep") == "1.0"
    assert "installing them from the fleet wheel cache" not in caplog.text
    [from_files] = runs  # no download: the cache had every file
    files = get_settings().packages_dir / LOCK_FILES_DIR
    assert {"--no-deps", "--no-index"} <= set(from_files.argv)
    assert from_files.env["UV_FIND_LINKS"] == str(files)  # the lock's files, nothing else
    assert from_files.requirements.splitlines() == [
        f"{p.pin()} --hash={p.hashes[0]}" for p in lock.packages]
    for package, name in zip(lock.packages, wheels, strict=True):  # the index's own bytes
        digest = hashlib.sha256((files / name).read_bytes()).hexdigest()
        assert f"sha256:{digest}" == package.hashes[0]


def test_a_build_without_a_lock_keeps_its_wheels_under_the_hash(
    wheelhouse: Path, tmp_path: Path, locks: dict[str, Lock | Exception],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    shared = tmp_path / "shared-wheels"
    monkeypatch.setenv("BIFROST_WHEEL_CACHE", f"dir:{shared}")
    get_settings.cache_clear()
    outcome, _ = ensure_environment(CONTENT, H, "w1")
    assert outcome["ok"] and fleet_cache.wait_for_uploads(60)
    assert json.loads((shared / f"{H}.json").read_text()) == [
        "good_a-1.0-py3-none-any.whl", "good_dep-1.5-py3-none-any.whl"]


@pytest.fixture(autouse=True)
def _forget_held_environments() -> Iterator[None]:
    yield
    for fd in environments._held.values():
        os.close(fd)
    environments._held.clear()
