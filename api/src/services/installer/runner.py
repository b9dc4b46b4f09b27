"""Running the installer so that it can be stopped, and never outlives its caller.

Every installer run (uv or pip) goes through `run_installer`: the installer
runs under `supervisor.py` (started in a session of its own) as the leader of
a process group of its own, so that ending it early ends everything it
started (a build backend, a compiler) and nothing else:

- `should_stop`, when given, is polled every `STOP_POLL_SECONDS` on the
  caller's thread; when it returns True the supervisor is told (one byte on
  its stdin), kills the installer's process group, and `InstallStopped` is
  raised once the supervisor has exited;
- if the calling process dies, the supervisor's stdin ends and it kills the
  group just the same: no orphaned installer keeps writing into a build
  directory nobody owns;
- the supervisor enforces the timeout itself, a little before the one given
  to `subprocess.run` (the backstop), so that a timeout too kills the group.

The installer is launched with `subprocess.run` whether or not it can be
stopped: the same call the worker's own tests replace with a fake.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from src.confinement.uid import chown_tree
from src.foundation.timing import ms_since
from src.services.installer.commands import InstallerCall

logger = logging.getLogger(__name__)

StopCheck = Callable[[], bool]
# (whether the installer succeeded, what it printed, how long it took in ms)
RunResult = tuple[bool, str, float]

STOP_POLL_SECONDS = 0.2
# How long the supervisor gets to kill the installer's group and exit once told.
STOP_GRACE_SECONDS = 10.0
SUPERVISOR = Path(__file__).with_name("supervisor.py")


class InstallStopped(Exception):
    """The install was abandoned because nobody will use it (`should_stop` said
    so): the installer was killed and nothing half-built was left behind."""


class StopPoll:
    """Asks `should_stop` (None: never stop). A check that fails counts as
    "go on": stopping only saves work, and a broken check (Redis down) must
    not stop every install. Its failure is logged once per poll, not at
    every question."""

    def __init__(self, should_stop: StopCheck | None) -> None:
        self.should_stop = should_stop
        self._warned = False

    def __call__(self) -> bool:
        if self.should_stop is None:
            return False
        try:
            return bool(self.should_stop())
        except Exception as exc:
            if not self._warned:
                self._warned = True
                logger.warning("should_stop failed (the install goes on): %s", exc)
            return False


def supervised(argv: list[str], seconds: float,
               confine: Mapping[str, Any] | None = None) -> list[str]:
    """argv running `argv` under the supervisor, with `seconds` to finish,
    confined as `confine` says (`reach.installer_reach`). `-I -S`: the
    supervisor needs nothing but the standard library (and, to confine,
    `src.confinement`)."""
    confining = ["--confine", json.dumps(confine)] if confine is not None else []
    return [sys.executable, "-I", "-S", str(SUPERVISOR), f"{seconds:.3f}", *confining,
            "--", *argv]


def run_installer(
    argv: list[str],
    timeout: float,
    should_stop: StopCheck | None = None,
    env: Mapping[str, str] | None = None,
    confine: Mapping[str, Any] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run `argv` to completion, in environment `env` (None: this process's),
    confined as `confine` (`reach.installer_reach`) says, with a temp dir of
    its own; its stdout and stderr are captured as text.

    Raises InstallStopped when `should_stop` returned True (checked once
    before the start, then while it runs), subprocess.TimeoutExpired or
    OSError as `subprocess.run` does.
    """
    stop_requested = StopPoll(should_stop)
    if stop_requested():
        raise InstallStopped("stopped before the installer started")
    if confine is None:
        return _run_supervised(argv, timeout, should_stop, stop_requested, env, None)
    with tempfile.TemporaryDirectory(prefix="bifrost-installer-") as scratch:
        env = {**(os.environ if env is None else env), "TMPDIR": scratch}
        try:
            return _run_supervised(argv, timeout, should_stop, stop_requested, env,
                                   {**confine, "scratch": scratch})
        finally:
            if confine.get("uid"):  # what it installed is root's: executions cannot change it
                for target in confine["writable"]:
                    with contextlib.suppress(OSError):
                        chown_tree(Path(target), os.getuid(), os.getgid())


def _run_supervised(
    argv: list[str], timeout: float, should_stop: StopCheck | None, stop_requested: StopPoll,
    env: Mapping[str, str] | None, confine: Mapping[str, Any] | None,
) -> subprocess.CompletedProcess[str]:
    stop_read, stop_write = os.pipe()
    try:
        # The supervisor ends the install a little before the backstop does.
        command = supervised(argv, max(timeout - min(1.0, timeout / 10), 0.001), confine)

        def launch() -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                command, stdin=stop_read, capture_output=True, text=True,
                timeout=timeout, start_new_session=True, env=env,
            )

        if should_stop is None:
            return launch()
        return _run_stoppable(launch, stop_write, stop_requested)
    finally:
        os.close(stop_read)
        os.close(stop_write)


def _run_stoppable(
    launch: Callable[[], subprocess.CompletedProcess[str]],
    stop_write: int,
    stop_requested: StopPoll,
) -> subprocess.CompletedProcess[str]:
    """`launch()` on a helper thread while this one asks `stop_requested`."""
    done: list[subprocess.CompletedProcess[str]] = []
    failed: list[BaseException] = []

    def target() -> None:
        try:
            done.append(launch())
        except BaseException as exc:  # handed to the caller's thread below
            failed.append(exc)

    thread = threading.Thread(target=target, name="installer", daemon=True)
    thread.start()
    while True:
        thread.join(STOP_POLL_SECONDS)
        if not thread.is_alive():
            break
        if stop_requested():
            asked = time.monotonic()
            os.write(stop_write, b"s")
            thread.join(STOP_GRACE_SECONDS)
            if thread.is_alive():
                logger.warning("the installer's supervisor did not exit %.0f s after the stop",
                               STOP_GRACE_SECONDS)
            raise InstallStopped(
                f"the installer was stopped and its process group killed "
                f"({(time.monotonic() - asked) * 1000:.0f} ms after the stop was asked)"
            )
    if failed:
        raise failed[0]
    return done[0]


def run_before(
    call: InstallerCall, deadline: float, should_stop: StopCheck | None = None
) -> RunResult:
    """Run `call` with what is left before `deadline`; a timeout or an
    installer that cannot start is a failed run, not an exception."""
    started = time.monotonic()
    remaining = deadline - started
    if remaining <= 0:
        return False, "install timed out (BIFROST_INSTALL_TIMEOUT)", 0
    try:
        done = run_installer(call.argv, remaining, should_stop, env=call.env,
                             confine=call.confine)
    except subprocess.TimeoutExpired:
        return False, f"install timed out after {remaining:.0f} s", round(remaining * 1000, 3)
    except OSError as exc:
        return False, f"could not run the installer: {exc}", 0
    output = f"{done.stdout or ''}\n{done.stderr or ''}".strip()
    return done.returncode == 0, output, ms_since(started)
