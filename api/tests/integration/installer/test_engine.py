"""The install engine with the real installer (uv and pip) on local wheels."""

from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from src.foundation.hashing import sha256_hex
from src.foundation.settings import get_settings
from src.services.installer import environments
from src.services.installer.engine import ensure_environment
from src.services.installer.environments import Environments
from tests.support.exchange import Exchange
from tests.support.waiting import wait_for
from tests.support.wheels import build_sdist, build_wheel

API_DIR = Path(__file__).resolve().parents[3]


@pytest.fixture
def wheelhouse(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    house = tmp_path / "wheelhouse"
    build_wheel(house, "good-a", "1.0", requires=["good-dep>=1"])
    build_wheel(house, "good-dep", "1.5")
    build_wheel(house, "good-b", "2.0")
    build_sdist(house, "needs-compiler", "1.0", behaviour="fail")
    monkeypatch.setenv("PIP_FIND_LINKS", str(house))
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    return house


def _envs() -> Environments:
    return Environments(get_settings().packages_dir)


def _importable(env: Path, module: str) -> bool:
    done = subprocess.run([sys.executable, "-c", f"import {module}"],
                          env={**os.environ, "PYTHONPATH": str(env)}, capture_output=True)
    return done.returncode == 0


@pytest.mark.parametrize("installer", ["uv", "pip"])
def test_builds_then_skips_with_the_fast_path(
    wheelhouse: Path, installer: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BIFROST_INSTALLER", installer)
    get_settings.cache_clear()
    content = "good-a==1.0\ngood-b\n"
    first, env = ensure_environment(content, sha256_hex(content), "w1")
    assert first["ok"] and not first["skipped"]
    assert first["installed"] == ["good-a==1.0", "good-b==2.0", "good-dep==1.5"]
    assert env is not None and env.name == f"{sha256_hex(content)}.1"
    assert _importable(env, "good_a") and _importable(env, "good_dep")
    second, again = ensure_environment(content, sha256_hex(content), "w2")
    assert second["skipped"] and second["ok"] and again == env
    assert second["installed"] == first["installed"]


def test_a_missing_file_is_noticed_and_rebuilt(wheelhouse: Path) -> None:
    content = "good-a==1.0\n"
    _, env = ensure_environment(content, sha256_hex(content), "w1")
    assert env is not None
    for item in env.glob("good_dep*"):  # someone deleted a dependency
        if item.is_dir():
            import shutil

            shutil.rmtree(item)
        else:
            item.unlink()
    outcome, rebuilt = ensure_environment(content, sha256_hex(content), "w2")
    assert not outcome["skipped"] and rebuilt is not None and rebuilt != env
    assert _importable(rebuilt, "good_dep")


def test_a_package_whose_build_fails_does_not_take_the_others(
    wheelhouse: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO")
    content = "good-a==1.0\nneeds-compiler==1.0\ngood-b==2.0\n"
    outcome, env = ensure_environment(content, sha256_hex(content), "w-bad")
    assert outcome["ok"] is False
    assert [f["package"] for f in outcome["failed"]] == ["needs-compiler==1.0"]
    assert "needs a C compiler" in outcome["failed"][0]["error"]
    assert env is not None
    assert _importable(env, "good_a") and _importable(env, "good_b")
    assert "[w-bad] + good-a==1.0" in caplog.text
    assert "[w-bad] x needs-compiler==1.0 failed" in caplog.text


def test_failed_lines_are_retried_alone_on_the_next_start(
    wheelhouse: Path, caplog: pytest.LogCaptureFixture
) -> None:
    content = "good-a==1.0\nlate-pkg==1.0\n"
    h = sha256_hex(content)
    first, _ = ensure_environment(content, h, "w1")
    assert [f["package"] for f in first["failed"]] == ["late-pkg==1.0"]
    build_wheel(wheelhouse, "late-pkg", "1.0")  # the index has it now
    caplog.clear()
    caplog.set_level("INFO")
    second, env = ensure_environment(content, h, "w2")
    assert second["ok"] and not second["skipped"]
    assert env is not None and env.name == f"{h}.2"
    assert "(1 lines)" in caplog.text  # only the failed line was installed again
    assert _importable(env, "good_a") and _importable(env, "late_pkg")


def _race(content: str, go: multiprocessing.synchronize.Event, results: multiprocessing.Queue) -> None:
    go.wait(30)
    outcome, _ = ensure_environment(content, sha256_hex(content), f"w{os.getpid()}")
    results.put(outcome)


def test_eight_workers_racing_on_one_hash_run_the_installer_once(wheelhouse: Path) -> None:
    content = "good-a==1.0\ngood-b==2.0\n"
    context = multiprocessing.get_context("fork")
    go, results = context.Event(), context.Queue()
    processes = [context.Process(target=_race, args=(content, go, results)) for _ in range(8)]
    for process in processes:
        process.start()
    go.set()
    outcomes = [results.get(timeout=120) for _ in processes]
    for process in processes:
        process.join(30)
    assert all(o["ok"] for o in outcomes)
    assert sum(1 for o in outcomes if not o["skipped"]) == 1  # one build, seven skips
    assert [p.name for p in (_envs().root).iterdir() if not p.name.startswith(".")] == [
        f"{sha256_hex(content)}.1"]


def test_a_build_killed_halfway_leaves_nothing_visible(
    wheelhouse: Path, tmp_path: Path, isolated_settings: Path, exchange: Exchange
) -> None:
    blocker = exchange / "block-build"
    blocker.touch()
    build_sdist(wheelhouse, "slow-build", "1.0", behaviour=f"wait:{blocker}")
    content = "good-a==1.0\nslow-build==1.0\n"
    h = sha256_hex(content)
    script = ("from src.services.installer.engine import ensure_environment\n"
              f"ensure_environment({content!r}, {h!r}, 'w-killed')\n")
    builder = subprocess.Popen([sys.executable, "-c", script], cwd=API_DIR,
                               start_new_session=True, env=os.environ.copy())
    root = _envs().root
    wait_for(lambda: any(p.name.startswith(".tmp-") for p in root.glob(".*")) and
             any(Path(os.environ["UV_CACHE_DIR"]).rglob("backend.py")), 60,
             what="the build to be under way")
    os.killpg(builder.pid, signal.SIGKILL)
    builder.wait(10)
    assert _envs().latest(h) is None  # no half environment is visible
    blocker.unlink()
    outcome, env = ensure_environment(content, h, "w-next")
    assert outcome["ok"], outcome
    assert env is not None and _importable(env, "slow_build")
    assert not [p for p in root.glob(".tmp-*")]  # the interrupted build was cleaned up


def test_old_environments_are_collected_unless_held(wheelhouse: Path) -> None:
    made = []
    for content in ("good-a==1.0\n", "good-b==2.0\n", "good-dep==1.5\n"):
        _, env = ensure_environment(content, sha256_hex(content), "w")
        made.append(env)
    # This process holds all three (it "uses" them), so nothing could go.
    assert all(env is not None and env.exists() for env in made)
    for fd in environments._held.values():  # as if the workers using them had exited
        os.close(fd)
    environments._held.clear()
    content = "good-a==1.0\ngood-b==2.0\n"
    ensure_environment(content, sha256_hex(content), "w")
    remaining = sorted(p.name for p in _envs().root.iterdir() if not p.name.startswith("."))
    # the new one, and the newest of an older hash for rollback; the rest went
    assert remaining == sorted([f"{sha256_hex(content)}.1", made[2].name])


def test_a_host_rebuilds_from_the_fleet_cache_with_no_index(
    sqlite_system: str, wheelhouse: Path, isolated_settings: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    import shutil

    from src.services.installer import fleet_cache

    content = "good-a==1.0\ngood-b==2.0\n"
    h = sha256_hex(content)
    first, _ = ensure_environment(content, h, "w-first")
    assert first["ok"] and not first["skipped"]
    assert fleet_cache.wait_for_uploads(60)  # the builder shares its wheels in the background
    shutil.rmtree(wheelhouse)  # the index is gone (PIP_NO_INDEX=1 stays set)
    shutil.rmtree(get_settings().packages_dir)  # a new host, or a wiped one
    environments._held.clear()
    caplog.set_level("INFO")
    again, env = ensure_environment(content, h, "w-again")
    assert again["ok"] and not again["skipped"], again
    assert again["installed"] == ["good-a==1.0", "good-b==2.0", "good-dep==1.5"]
    assert env is not None and _importable(env, "good_a") and _importable(env, "good_dep")
    assert "Fleet wheel cache: 0 of 3 wheels" in caplog.text


def test_a_dependency_that_would_replace_a_platform_package_fails_alone(
    wheelhouse: Path,
) -> None:
    # The platform runs on pydantic 2: a package needing pydantic<2 cannot land,
    # and nothing it would pull in replaces the platform's copy.
    build_wheel(wheelhouse, "wants-old-pydantic", "1.0", requires=["pydantic<2"])
    build_wheel(wheelhouse, "pydantic", "1.10.0")
    content = "good-b==2.0\nwants-old-pydantic==1.0\n"
    outcome, env = ensure_environment(content, sha256_hex(content), "w-clash")
    assert [f["package"] for f in outcome["failed"]] == ["wants-old-pydantic==1.0"]
    assert "pydantic" in outcome["failed"][0]["error"]
    assert env is not None and _importable(env, "good_b")
    assert not list(env.glob("pydantic*"))
