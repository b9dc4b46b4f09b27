"""The installer's command line and environment, for uv and for pip: built
from an explicit `environ`, never this process's own."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from src.services.installer.commands import (
    choose_installer,
    install_command,
    installed_lines,
    uv_environment,
)

TARGET = Path("/envs/.tmp-build")
CONSTRAINTS = Path("/envs/.platform-constraints.txt")


def _uv(environ: dict[str, str], **kwargs: object) -> tuple[list[str], dict[str, str]]:
    call = install_command("uv", TARGET, requirements_file="/tmp/requirements-x.txt",
                           environ=environ, **kwargs)  # type: ignore[arg-type]
    return call.argv, call.env


# -- uv ---------------------------------------------------------------------------------------


def test_uv_installs_the_requirements_file_into_the_target_with_this_python() -> None:
    argv, _ = _uv({}, constraints_file=CONSTRAINTS)
    assert argv == [
        sys.executable, "-m", "uv", "pip", "install", "-r", "/tmp/requirements-x.txt",
        "--target", str(TARGET), "--python", sys.executable, "--no-progress",
        "--constraint", str(CONSTRAINTS),
    ]


def test_uv_installs_one_requirement() -> None:
    call = install_command("uv", TARGET, requirement="alpha==1.0", environ={})
    assert call.argv[5] == "alpha==1.0" and "-r" not in call.argv


def test_uv_gets_no_index_flags_on_its_command_line(tmp_path: Path) -> None:
    environ = {"PIP_INDEX_URL": "https://mirror/simple", "PIP_FIND_LINKS": str(tmp_path),
               "PIP_EXTRA_INDEX_URL": "https://extra/simple"}
    argv, _ = _uv(environ, find_links=[tmp_path])
    assert not [arg for arg in argv if "index" in arg or "find-links" in arg]


def test_the_operators_pip_settings_become_uvs_variables(tmp_path: Path) -> None:
    house, other = tmp_path / "house", tmp_path / "other"
    house.mkdir()
    other.mkdir()
    environ = {
        "PIP_INDEX_URL": "https://mirror/simple",
        "PIP_EXTRA_INDEX_URL": "https://one/simple\n  https://two/simple",
        "PIP_FIND_LINKS": f"{house} https://wheels/ {other}",
        "HOME": "/home/op",
    }
    _, env = _uv(environ)
    assert env["UV_INDEX_URL"] == "https://mirror/simple"
    assert env["UV_EXTRA_INDEX_URL"] == "https://one/simple https://two/simple"
    assert env["UV_FIND_LINKS"] == f"{house},https://wheels/,{other}"
    assert env["HOME"] == "/home/op" and env["PIP_INDEX_URL"] == "https://mirror/simple"


def test_a_find_links_directory_that_is_not_there_is_left_out(tmp_path: Path) -> None:
    # pip skips it; uv would fail the whole install on it.
    _, env = _uv({"PIP_FIND_LINKS": f"{tmp_path / 'gone'} {tmp_path}"})
    assert env["UV_FIND_LINKS"] == str(tmp_path)
    _, env = _uv({"PIP_FIND_LINKS": str(tmp_path / "gone")})
    assert "UV_FIND_LINKS" not in env


@pytest.mark.parametrize("value", ["1", "true", "YES", " on "])
def test_pip_no_index_is_uvs_no_index_flag(value: str) -> None:
    argv, env = _uv({"PIP_NO_INDEX": value})
    assert argv[-1] == "--no-index"
    assert "UV_NO_INDEX" not in env  # uv reads no variable for it


@pytest.mark.parametrize("value", ["", "0", "false", "no", "off"])
def test_a_false_pip_no_index_adds_nothing(value: str) -> None:
    argv, _ = _uv({"PIP_NO_INDEX": value})
    assert "--no-index" not in argv


def test_an_operators_own_uv_settings_are_never_overridden(tmp_path: Path) -> None:
    environ = {
        "PIP_INDEX_URL": "https://pip-mirror/simple", "UV_INDEX_URL": "https://uv-mirror/simple",
        "PIP_EXTRA_INDEX_URL": "https://pip-extra/simple",
        "UV_EXTRA_INDEX_URL": "https://uv-extra/simple",
        "PIP_FIND_LINKS": str(tmp_path), "UV_FIND_LINKS": "https://uv-wheels/",
    }
    _, env = _uv(environ)
    assert env["UV_INDEX_URL"] == "https://uv-mirror/simple"
    assert env["UV_EXTRA_INDEX_URL"] == "https://uv-extra/simple"
    assert env["UV_FIND_LINKS"] == "https://uv-wheels/"


def test_uv_default_index_counts_as_the_operators_index_url() -> None:
    environ = {"PIP_INDEX_URL": "https://pip-mirror/simple",
               "UV_DEFAULT_INDEX": "https://uv-default/simple"}
    _, env = _uv(environ)
    assert "UV_INDEX_URL" not in env
    assert env["UV_DEFAULT_INDEX"] == "https://uv-default/simple"


def test_local_wheel_dirs_come_first_in_uv_find_links(tmp_path: Path) -> None:
    # A --find-links flag would make uv ignore UV_FIND_LINKS: they go in the variable.
    local = tmp_path / "fleet-wheels"
    _, env = _uv({"PIP_FIND_LINKS": str(tmp_path)}, find_links=[local])
    assert env["UV_FIND_LINKS"] == f"{local},{tmp_path}"
    _, env = _uv({"UV_FIND_LINKS": "https://a/,https://b/"}, find_links=[local])
    assert env["UV_FIND_LINKS"] == f"{local},https://a/,https://b/"
    _, env = _uv({}, find_links=[local])
    assert env["UV_FIND_LINKS"] == str(local)


def test_no_pip_settings_leave_the_environment_as_it_is() -> None:
    environ = {"PATH": "/usr/bin", "UV_CACHE_DIR": "/cache"}
    assert uv_environment(environ) == environ
    assert uv_environment(environ) is not environ  # a copy: the caller's stays untouched


def test_the_environment_defaults_to_this_process(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PIP_INDEX_URL", "https://from-os-environ/simple")
    monkeypatch.delenv("UV_INDEX_URL", raising=False)
    monkeypatch.delenv("UV_DEFAULT_INDEX", raising=False)
    call = install_command("uv", TARGET, requirement="alpha")
    assert call.env["UV_INDEX_URL"] == "https://from-os-environ/simple"


# -- pip --------------------------------------------------------------------------------------


def test_pip_installs_into_the_target_and_reads_its_own_settings(tmp_path: Path) -> None:
    environ = {"PIP_INDEX_URL": "https://mirror/simple", "PIP_NO_INDEX": "1",
               "PIP_FIND_LINKS": str(tmp_path)}
    call = install_command("pip", TARGET, requirements_file="/tmp/r.txt",
                           constraints_file=CONSTRAINTS, environ=environ)
    assert call.argv == [
        sys.executable, "-m", "pip", "install", "-r", "/tmp/r.txt", "--target", str(TARGET),
        "--no-input", "--disable-pip-version-check", "--constraint", str(CONSTRAINTS),
    ]
    assert call.env == environ  # pip reads PIP_* itself: nothing translated or added


def test_pip_gets_local_wheel_dirs_as_flags(tmp_path: Path) -> None:
    call = install_command("pip", TARGET, requirement="alpha", find_links=[tmp_path],
                           environ={"PIP_FIND_LINKS": "/operator/wheels"})
    assert call.argv[-2:] == ["--find-links", str(tmp_path)]
    assert call.env == {"PIP_FIND_LINKS": "/operator/wheels"}
    assert not [name for name in call.env if name.startswith("UV_")]


# -- choosing, and reading what landed --------------------------------------------------------


def test_choose_installer() -> None:
    assert choose_installer("pip") == "pip"
    assert choose_installer("uv") == "uv"
    assert choose_installer("auto") == "uv"  # uv is a dependency of the runtime


def test_installed_lines_of_uv_and_pip() -> None:
    uv_output = "Resolved 2 packages\n + alpha==1.0\n + beta-pkg==2.0\n"
    assert installed_lines("uv", uv_output) == ["alpha==1.0", "beta-pkg==2.0"]
    pip_output = "Collecting alpha\nSuccessfully installed alpha-1.0 beta_pkg-2.0\n"
    assert installed_lines("pip", pip_output) == ["alpha==1.0", "beta_pkg==2.0"]
    assert installed_lines("pip", "ERROR: nothing\n") == []


# -- a lock's pins: no dependencies, and (from the fleet's wheels) nothing but local wheels ----


@pytest.mark.parametrize("installer", ["uv", "pip"])
def test_no_deps_installs_only_what_is_named(installer: str) -> None:
    call = install_command(installer, TARGET, requirements_file="/tmp/lock-x.txt",  # type: ignore[arg-type]
                           environ={}, no_deps=True)
    assert call.argv[call.argv.index("-r"):call.argv.index("-r") + 3] == [
        "-r", "/tmp/lock-x.txt", "--no-deps"]
    plain = install_command(installer, TARGET, requirements_file="/tmp/r.txt",  # type: ignore[arg-type]
                            environ={})
    assert "--no-deps" not in plain.argv


def test_uv_local_only_sees_the_local_wheels_and_nothing_else(tmp_path: Path) -> None:
    local = tmp_path / "fleet-wheels"
    environ = {"PIP_INDEX_URL": "https://mirror/simple", "PIP_FIND_LINKS": str(tmp_path),
               "UV_FIND_LINKS": "https://uv-wheels/", "HOME": "/home/op"}
    argv, env = _uv(environ, find_links=[local], local_only=True, no_deps=True)
    assert argv[-1] == "--no-index" and argv.count("--no-index") == 1
    assert env["UV_FIND_LINKS"] == str(local)  # none of the operator's find-links
    assert env["HOME"] == "/home/op"
    argv, _ = _uv({"PIP_NO_INDEX": "1"}, find_links=[local], local_only=True)
    assert argv.count("--no-index") == 1


def test_pip_local_only_sees_the_local_wheels_and_nothing_else(tmp_path: Path) -> None:
    environ = {"PIP_FIND_LINKS": "/operator/wheels", "PIP_INDEX_URL": "https://mirror/simple"}
    call = install_command("pip", TARGET, requirements_file="/tmp/lock-x.txt",
                           find_links=[tmp_path], environ=environ, no_deps=True, local_only=True)
    assert call.argv[-3:] == ["--find-links", str(tmp_path), "--no-index"]
    assert "PIP_FIND_LINKS" not in call.env
    assert environ["PIP_FIND_LINKS"] == "/operator/wheels"  # the caller's mapping is untouched
