"""The installer's supervisor with real processes: a stop, a timeout or the
death of the caller kills the installer and everything it started."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from src.services.installer.runner import InstallStopped, run_installer
from tests.integration.installer.processes import alive, group_members
from tests.support.waiting import wait_for

API_DIR = Path(__file__).resolve().parents[3]
# A stand-in installer that starts a child of its own (as uv starts a build
# backend), writes "<its pid> <the child's pid>" to $1, then waits.
INSTALLER = 'sleep 300 & echo "$$ $!" > "$1.part" && mv "$1.part" "$1"; wait'


def _installer(pidfile: Path) -> list[str]:
    return ["sh", "-c", INSTALLER, "sh", str(pidfile)]


def _pids(pidfile: Path) -> tuple[int, int] | None:
    if not pidfile.exists():
        return None
    leader, child = pidfile.read_text().split()
    return int(leader), int(child)


def _gone(pids: tuple[int, int]) -> bool:
    leader, child = pids
    return not alive(leader) and not alive(child) and not group_members(leader)


def test_output_and_status_pass_through(tmp_path: Path) -> None:
    argv = ["sh", "-c", "echo out; echo err >&2; exit 3"]
    for should_stop in (None, lambda: False):
        done = run_installer(argv, 30, should_stop)
        assert (done.returncode, done.stdout, done.stderr) == (3, "out\n", "err\n")


def test_a_stop_kills_the_installer_and_its_children_quickly(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    pidfile = tmp_path / "pids"
    asked: list[float] = []

    def should_stop() -> bool:
        if _pids(pidfile) is None:
            return False
        asked.append(time.monotonic())
        return True

    with pytest.raises(InstallStopped, match="process group killed"):
        run_installer(_installer(pidfile), 300, should_stop)
    # Stopped at the first True, and the supervisor exited as soon as it was
    # told: the engine never had to give up waiting for it (its grace period
    # is only a backstop), nor wait for the installer's `sleep 300`.
    assert len(asked) == 1
    assert "did not exit" not in caplog.text, caplog.text
    pids = _pids(pidfile)
    assert pids is not None
    wait_for(lambda: _gone(pids), 30, what="the installer and its child to be gone")


def test_a_stop_asked_before_the_start_runs_nothing(tmp_path: Path) -> None:
    pidfile = tmp_path / "pids"
    with pytest.raises(InstallStopped, match="before the installer started"):
        run_installer(_installer(pidfile), 60, lambda: True)
    assert not pidfile.exists()


def test_a_failing_stop_check_lets_the_install_go_on(caplog: pytest.LogCaptureFixture) -> None:
    asked: list[int] = []

    def broken() -> bool:
        asked.append(1)
        raise RuntimeError("redis is down")

    # `sleep 0.7` outlasts the first 0.2 s poll whatever the machine's speed.
    done = run_installer(["sh", "-c", "sleep 0.7; echo done"], 300, broken)
    assert done.returncode == 0 and done.stdout == "done\n"
    # Asked several times (before the start, then every 0.2 s), logged once.
    assert len(asked) >= 2
    assert caplog.text.count("should_stop failed (the install goes on): redis is down") == 1


def test_a_timeout_kills_the_installer_and_its_children(tmp_path: Path) -> None:
    pidfile = tmp_path / "pids"
    started = time.monotonic()
    # The supervisor's own deadline comes min(1 s, a tenth) before the backstop's
    # (see runner.run_installer): 5 s leaves it half a second to start, on a
    # busy machine too.
    done = run_installer(_installer(pidfile), 5, None)
    assert time.monotonic() - started < 120  # not the installer's `sleep 300`
    assert done.returncode == 124
    assert "install timed out" in done.stderr
    pids = _pids(pidfile)
    assert pids is not None
    wait_for(lambda: _gone(pids), 30, what="the installer and its child to be gone")


def test_the_installer_dies_with_the_process_that_started_it(tmp_path: Path) -> None:
    pidfile = tmp_path / "pids"
    script = (
        "from src.services.installer.runner import run_installer\n"
        f"run_installer({_installer(pidfile)!r}, 60)\n"
    )
    caller = subprocess.Popen([sys.executable, "-c", script], cwd=API_DIR)
    try:
        pids = wait_for(lambda: _pids(pidfile), 30, what="the installer to start")
        caller.kill()  # SIGKILL: the caller gets no chance to clean up
        caller.wait(30)
        wait_for(lambda: _gone(pids), 30, what="the orphaned installer to be killed")
    finally:
        if caller.poll() is None:
            caller.kill()
            caller.wait(10)
