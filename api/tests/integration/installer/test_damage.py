"""Environments with metadata that is not UTF-8 or cannot be read, and
environments whose files were deleted: real installs (uv, and pip where it
differs) on local wheels, real files."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from src.foundation.hashing import sha256_hex
from src.foundation.settings import get_settings
from src.services.installer import fleet_cache
from src.services.installer.context import BuildContext
from src.services.installer.engine import ensure_environment
from src.services.installer.failures import unreadable_failures
from src.services.installer.metadata import list_distributions
from tests.support.wheels import (
    build_package_wheel,
    build_wheel,
    build_wheel_files,
    latin1_metadata,
)


@pytest.fixture
def wheelhouse(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    house = tmp_path / "wheelhouse"
    build_wheel(house, "good-a", "1.0", requires=["good-dep>=1"])
    build_wheel(house, "good-dep", "1.5")
    build_wheel(house, "good-b", "2.0")
    build_package_wheel(house, "humanize", "4.9.0")
    build_wheel_files(house, "latin-pkg", "1.0", {"latin_pkg.py": b"VERSION = '1.0'\n"},
                      metadata=latin1_metadata("latin-pkg", "1.0", requires=["good-dep>=1"]))
    monkeypatch.setenv("PIP_FIND_LINKS", str(house))
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    return house


def _importable(env: Path, *modules: str) -> bool:
    code = "; ".join(f"import {module}" for module in modules)
    done = subprocess.run([sys.executable, "-c", code],
                          env={**os.environ, "PYTHONPATH": str(env)}, capture_output=True)
    return done.returncode == 0


def _replace(path: Path, data: bytes) -> None:
    """Replace a file with new bytes. Never write in place: uv links installed
    files to its cache, and a write through the link would change the cache."""
    path.unlink()
    path.write_bytes(data)


UTF16_METADATA = "Metadata-Version: 2.1\nName: good-b\nVersion: 2.0\n".encode("utf-16")


# -- metadata that is not UTF-8 -------------------------------------------------------------


def test_latin1_metadata_installs_and_the_fast_path_reads_it(wheelhouse: Path) -> None:
    content = "good-b==2.0\nlatin-pkg==1.0\n"
    h = sha256_hex(content)
    first, env = ensure_environment(content, h, "w1")
    assert first["ok"] and not first["skipped"], first
    assert first["failed"] == []
    assert first["installed"] == ["good-b==2.0", "good-dep==1.5", "latin-pkg==1.0"]
    assert env is not None and _importable(env, "latin_pkg", "good_b")
    assert b"Caf\xe9" in (env / "latin_pkg-1.0.dist-info" / "METADATA").read_bytes()
    second, again = ensure_environment(content, h, "w2")
    assert second["ok"] and second["skipped"] and again == env
    # Its wheel goes to the fleet cache too, metadata bytes unchanged.
    wheels = fleet_cache.produce_wheels(env, get_settings().packages_dir / ".wheels")
    assert "latin_pkg-1.0-py3-none-any.whl" in wheels


def test_pip_refuses_latin1_metadata_and_the_failure_names_that_package(
    wheelhouse: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BIFROST_INSTALLER", "pip")
    get_settings.cache_clear()
    content = "good-b==2.0\nlatin-pkg==1.0\ngood-a==1.0\n"
    outcome, env = ensure_environment(content, sha256_hex(content), "w-pip")
    assert [f["package"] for f in outcome["failed"]] == ["latin-pkg==1.0"]
    assert "decod" in outcome["failed"][0]["error"]
    assert outcome["installed"] == ["good-a==1.0", "good-b==2.0", "good-dep==1.5"]
    assert env is not None and _importable(env, "good_a", "good_b")


def test_metadata_that_cannot_be_read_is_named_and_the_others_land(
    wheelhouse: Path, tmp_path: Path
) -> None:
    # A real environment, copied (real files, not links to uv's cache), then
    # damaged as a disk or another tool could: the engine's scan of a build
    # must name each unreadable distribution under the line that brought it.
    content = "good-a==1.0\ngood-b==2.0\nhumanize==4.9.0\n"
    _, env = ensure_environment(content, sha256_hex(content), "w1")
    assert env is not None
    copy = tmp_path / "copy"
    shutil.copytree(env, copy)
    (copy / "good_dep-1.5.dist-info" / "METADATA").unlink()
    (copy / "good_dep-1.5.dist-info" / "METADATA").mkdir()  # there, cannot be read
    _replace(copy / "good_b-2.0.dist-info" / "METADATA", UTF16_METADATA)

    listing = list_distributions([copy])
    installed, unreadable = listing.pins(), listing.unreadable
    assert installed == ["good-a==1.0", "humanize==4.9.0"]
    assert sorted(u.name for u in unreadable) == ["good-b", "good-dep"]
    ctx = BuildContext.create(content, sha256_hex(content), "w1", get_settings())
    failed = unreadable_failures(ctx, copy, unreadable, [])
    by_package = {f["package"]: f["error"] for f in failed}
    assert sorted(by_package) == ["good-a==1.0", "good-b==2.0"]  # the lines that brought them
    assert by_package["good-a==1.0"].startswith(
        "the metadata of good-dep 1.5 (good_dep-1.5.dist-info) is unreadable: IsADirectoryError")
    assert "good-b 2.0 (good_b-2.0.dist-info) is unreadable" in by_package["good-b==2.0"]


def test_unreadable_metadata_in_an_environment_is_rebuilt_not_raised(
    wheelhouse: Path, caplog: pytest.LogCaptureFixture
) -> None:
    content = "good-a==1.0\ngood-b==2.0\n"
    h = sha256_hex(content)
    _, env = ensure_environment(content, h, "w1")
    assert env is not None
    _replace(env / "good_b-2.0.dist-info" / "METADATA", b"\xff\xfe\x00\x00garbage")
    (env / "good_dep-1.5.dist-info" / "METADATA").unlink()
    (env / "good_dep-1.5.dist-info" / "METADATA").mkdir()
    caplog.set_level("INFO")
    outcome, rebuilt = ensure_environment(content, h, "w2")
    assert outcome["ok"] and not outcome["skipped"], outcome
    assert outcome["installed"] == ["good-a==1.0", "good-b==2.0", "good-dep==1.5"]
    assert rebuilt is not None and rebuilt != env and _importable(rebuilt, "good_a", "good_b")
    assert "dependency good-dep (of good-a) has unreadable metadata" in caplog.text


def test_a_retry_does_not_copy_unreadable_metadata(
    wheelhouse: Path, caplog: pytest.LogCaptureFixture
) -> None:
    content = "good-a==1.0\ngood-b==2.0\nlate-pkg==1.0\n"
    h = sha256_hex(content)
    first, env = ensure_environment(content, h, "w1")
    assert [f["package"] for f in first["failed"]] == ["late-pkg==1.0"]
    assert env is not None
    _replace(env / "good_b-2.0.dist-info" / "METADATA", UTF16_METADATA)
    build_wheel(wheelhouse, "late-pkg", "1.0")
    caplog.set_level("INFO")
    second, rebuilt = ensure_environment(content, h, "w2")
    assert second["ok"] and second["failed"] == [], second
    assert "good-b==2.0" in second["installed"] and "late-pkg==1.0" in second["installed"]
    assert "Not reusing" in caplog.text and "good-b 2.0 (good_b-2.0.dist-info)" in caplog.text
    assert "(3 lines)" in caplog.text  # everything afresh, not only the failed line
    assert rebuilt is not None and _importable(rebuilt, "good_b", "late_pkg")


# -- files deleted under a dist-info that stayed ---------------------------------------------


def test_a_deleted_package_is_noticed_named_and_rebuilt(
    wheelhouse: Path, caplog: pytest.LogCaptureFixture
) -> None:
    content = "humanize==4.9.0\ngood-b==2.0\n"
    h = sha256_hex(content)
    _, env = ensure_environment(content, h, "w1")
    assert env is not None and _importable(env, "humanize")
    shutil.rmtree(env / "humanize")  # rm -r env/humanize/: its dist-info stays
    assert (env / "humanize-4.9.0.dist-info").is_dir()
    caplog.set_level("INFO")
    outcome, rebuilt = ensure_environment(content, h, "w2")
    assert not outcome["skipped"] and outcome["ok"], outcome
    assert f"[w2] Environment {env.name} is damaged: humanize is missing humanize/__init__.py" \
        in caplog.text
    assert rebuilt is not None and rebuilt != env
    assert _importable(rebuilt, "humanize", "good_b")
    done = subprocess.run(
        [sys.executable, "-c", "import humanize; print(humanize.answer())"],
        env={**os.environ, "PYTHONPATH": str(rebuilt)}, capture_output=True, text=True)
    assert done.stdout.strip() == "42"
    third, same = ensure_environment(content, h, "w3")
    assert third["skipped"] and same == rebuilt


def test_a_deleted_dependency_module_is_noticed(
    wheelhouse: Path, caplog: pytest.LogCaptureFixture
) -> None:
    content = "good-a==1.0\n"
    h = sha256_hex(content)
    _, env = ensure_environment(content, h, "w1")
    assert env is not None
    (env / "good_dep.py").unlink()
    caplog.set_level("INFO")
    outcome, rebuilt = ensure_environment(content, h, "w2")
    assert not outcome["skipped"] and rebuilt is not None
    assert "good-dep is missing good_dep.py" in caplog.text
    assert _importable(rebuilt, "good_a", "good_dep")


def test_a_retry_does_not_copy_a_damaged_distribution(
    wheelhouse: Path, caplog: pytest.LogCaptureFixture
) -> None:
    content = "humanize==4.9.0\nlate-pkg==1.0\n"
    h = sha256_hex(content)
    first, env = ensure_environment(content, h, "w1")
    assert [f["package"] for f in first["failed"]] == ["late-pkg==1.0"]
    assert env is not None
    shutil.rmtree(env / "humanize")
    build_wheel(wheelhouse, "late-pkg", "1.0")
    caplog.set_level("INFO")
    second, rebuilt = ensure_environment(content, h, "w2")
    assert second["ok"], second
    assert "Not reusing" in caplog.text and "humanize is missing humanize/__init__.py" \
        in caplog.text
    assert rebuilt is not None and _importable(rebuilt, "humanize", "late_pkg")
