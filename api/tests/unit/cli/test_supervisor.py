"""`bifrost up`'s supervisor, with real (tiny) child processes."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import pytest

from src.cli.supervisor import Child, Supervisor
from tests.support.waiting import wait_for


def python(code: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", code], start_new_session=True)


def test_a_child_that_exits_is_restarted_and_the_others_keep_running(
    caplog: pytest.LogCaptureFixture,
) -> None:
    starts: list[int] = []

    def flaky() -> subprocess.Popen[bytes]:
        process = python("import sys; sys.exit(3)" if not starts else "import time; time.sleep(60)")
        starts.append(process.pid)
        return process

    steady = Child("the steady one", lambda: python("import time; time.sleep(60)"))
    supervisor = Supervisor([Child("the flaky one", flaky), steady], first_backoff=0.01)
    supervisor.start()
    try:
        steady_pid = steady.process.pid if steady.process else None
        with caplog.at_level(logging.INFO, logger="bifrost"):
            wait_for(lambda: supervisor.poll() and len(starts) == 2, 30,
                     what="the flaky child to be started again")
        assert "the flaky one exited with code 3; restarting it" in caplog.text
        assert steady.process is not None and steady.process.pid == steady_pid
        assert steady.process.poll() is None
    finally:
        supervisor.stop()
    assert all(process.poll() is not None for process in supervisor.processes())


def test_a_crash_loop_gives_up(caplog: pytest.LogCaptureFixture) -> None:
    supervisor = Supervisor([Child("the broken one", lambda: python("raise SystemExit(1)"))],
                            max_restarts=2, first_backoff=0.01)
    supervisor.start()
    try:
        with caplog.at_level(logging.INFO, logger="bifrost"):
            wait_for(lambda: not supervisor.poll(), 30, what="the supervisor to give up")
        assert "the broken one exited with code 1, 3 times within 60 s; stopping" in caplog.text
        assert not supervisor.poll()
    finally:
        supervisor.stop()


def test_what_an_exited_child_left_in_its_group_is_killed(tmp_path: Path) -> None:
    pid_file = tmp_path / "grandchild.pid"
    code = ("import subprocess, sys\n"
            "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)'])\n"
            f"open({str(pid_file)!r}, 'w').write(str(p.pid))\n")
    supervisor = Supervisor([Child("the parent", lambda: python(code))], first_backoff=60)
    supervisor.start()
    try:
        wait_for(lambda: pid_file.exists() and pid_file.read_text(), 30, what="the grandchild")
        grandchild = int(pid_file.read_text())
        wait_for(lambda: supervisor.poll() and supervisor.children[0].process is None, 30,
                 what="the parent's exit to be noticed")

        def gone() -> bool:
            try:
                return "State:\tZ" in Path(f"/proc/{grandchild}/status").read_text()
            except FileNotFoundError:
                return True

        wait_for(gone, 30, what="the grandchild to be killed")
    finally:
        supervisor.stop()
