"""The installer's supervisor: runs the installer in a process group of its own
and kills that whole group when the install must end early.

    python -I -S supervisor.py SECONDS -- INSTALLER_ARGV...

The install engine starts it (see `runner.py`) in a new session, with stdin
the read end of a pipe the engine holds open:

- a byte on stdin (the engine was asked to stop), or the end of stdin (the
  process that started us is gone: killed, crashed), kills the installer's
  group: uv or pip, and every build backend they started;
- SECONDS after the start the same happens: the install timed out;
- otherwise it exits with the installer's own status.

The installer's stdout and stderr are the supervisor's (the engine captures
them). This file runs as a script, outside the `src` package: the standard
library only, and nothing that slows the interpreter's start.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading

# Exit statuses of our own, besides the installer's.
STOPPED = 125
TIMED_OUT = 124
USAGE = 2


class _Installer:
    """The installer's process group, killed at most once, never after it was reaped."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.ended_by: str | None = None
        self._lock = threading.Lock()
        self._reaped = False

    def kill(self, why: str) -> None:
        with self._lock:
            if self._reaped or self.ended_by is not None:
                return
            self.ended_by = why
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pid, signal.SIGKILL)

    def wait(self) -> int:
        """The installer's exit status (128 + N when signal N ended it)."""
        _, status = os.waitpid(self.pid, 0)
        with self._lock:
            self._reaped = True
        code = os.waitstatus_to_exitcode(status)
        return code if code >= 0 else 128 - code


def _spawn(argv: list[str]) -> _Installer:
    """Start the installer as the leader of a new process group; its stdin is
    /dev/null (the stop pipe is ours alone)."""
    pid = os.posix_spawnp(
        argv[0], argv, dict(os.environ),
        setpgroup=0,
        file_actions=[(os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0)],
    )
    return _Installer(pid)


def _watch_stdin(installer: _Installer) -> None:
    """Block until the engine writes to the stop pipe or goes away."""
    with contextlib.suppress(OSError):  # a closed stdin ends the same way
        os.read(0, 1)
    installer.kill("stop")


def main(argv: list[str]) -> int:
    if len(argv) < 4 or argv[2] != "--":
        sys.stderr.write("usage: supervisor.py SECONDS -- INSTALLER_ARGV...\n")
        return USAGE
    seconds = float(argv[1])
    installer = _spawn(argv[3:])
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, lambda *_: installer.kill("signal"))
    threading.Thread(target=_watch_stdin, args=(installer,), daemon=True).start()
    timer = threading.Timer(seconds, installer.kill, args=("timeout",))
    timer.daemon = True
    timer.start()
    status = installer.wait()
    timer.cancel()
    if installer.ended_by == "timeout":
        sys.stderr.write(f"error: install timed out after {seconds:.0f} s\n")
        return TIMED_OUT
    if installer.ended_by is not None:
        sys.stderr.write(f"error: install stopped ({installer.ended_by})\n")
        return STOPPED
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv))
