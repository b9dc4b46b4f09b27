"""The installer's supervisor: runs the installer in a process group of its own
and kills that whole group when the install must end early.

    python -I -S supervisor.py SECONDS [--confine SPEC] -- INSTALLER_ARGV...

The install engine starts it (see `runner.py`) in a new session, with stdin
the read end of a pipe the engine holds open:

- a byte on stdin (the engine was asked to stop), or the end of stdin (the
  process that started us is gone: killed, crashed), kills the installer's
  group: uv or pip, and every build backend they started;
- SECONDS after the start the same happens: the install timed out;
- otherwise it exits with the installer's own status.

With `--confine SPEC` (JSON, `reach.installer_reach`'s) it confines itself
before it starts the installer, which inherits it: package code a build runs
(an sdist's setup.py) cannot read the data dir (the admin token, the store,
Redis's files) and writes only in the installer's target, its caches and the
temp dir, with no capability (`src/confinement/sandbox.py`); with a `uid`,
as that uid, in a mount namespace that shows it only the way to what the run
reads and writes (`src/confinement/mounts.py`). Only then does it import
more than the cheapest modules.

The installer's stdout and stderr are the supervisor's (the engine captures
them). This file runs as a script, outside the `src` package, on every
installer run: the standard library's cheapest modules only (no threads, no
`signal`; it starts in ~10 ms), and one `select` on stdin and on a pidfd of
the installer, so it wakes only when something happened.
"""

from __future__ import annotations

import os
import select
import sys
import time

# Exit statuses of our own, besides the installer's.
STOPPED = 125
TIMED_OUT = 124
USAGE = 2
SIGKILL = 9  # POSIX fixes its number; `signal` would cost the start-up an enum import
# Without a pidfd (Linux before 5.3), how often the installer's exit is looked for.
POLL_SECONDS = 0.05


def _spawn(argv: list[str]) -> int:
    """Start the installer as the leader of a new process group; its stdin is
    /dev/null (the stop pipe is ours alone)."""
    return os.posix_spawnp(
        argv[0], argv, dict(os.environ),
        setpgroup=0,
        file_actions=[(os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0)],
    )


def _pidfd(pid: int) -> int | None:
    try:
        return os.pidfd_open(pid)
    except (AttributeError, OSError):
        return None


def _exit_code(status: int) -> int:
    """The installer's exit status as a shell reports it (128 + N for signal N)."""
    code = os.waitstatus_to_exitcode(status)
    return code if code >= 0 else 128 - code


def _supervise(pid: int, seconds: float) -> tuple[str, int]:
    """Wait for the installer's end, a stop, or the deadline: whichever is
    first. Returns what happened ("exited", "stop", "timeout") and, when it
    exited, its wait status. The installer is never reaped here otherwise, so
    its process group id cannot be reused before it is killed."""
    deadline = time.monotonic() + seconds
    pidfd = _pidfd(pid)
    watched = [0] if pidfd is None else [0, pidfd]
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return "timeout", 0
        wait = remaining if pidfd is not None else min(remaining, POLL_SECONDS)
        ready, _, _ = select.select(watched, [], [], wait)
        if 0 in ready:
            return "stop", 0  # a byte, or the end of the pipe: either way, stop
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return "exited", status


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, SIGKILL)
    except ProcessLookupError:
        return  # no member left: the unreaped leader always is one, so this is moot
    os.waitpid(pid, 0)


def _confine(spec: str) -> None:
    """Confine this process (and so the installer it starts) as `spec` says."""
    import json
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[3]))  # the api dir, for `src`
    from src.confinement.sandbox import Confinement

    given = json.loads(spec)
    writable = [Path(path) for path in (*given["writable"], *given["caches"])]
    scratch = Path(given["scratch"])
    uid = None
    if given.get("uid"):
        from src.confinement.mounts import expose_to
        from src.confinement.uid import ExecutionUid, paths_an_execution_needs

        uid = ExecutionUid(*given["uid"])
        needed = paths_an_execution_needs(Path(given["packages_dir"]), scratch, sys.path)
        reads = [Path(path) for path in given["reads"]]
        expose_to(uid.uid, uid.gid, [*needed, *writable, *reads],
                  listed=[path for path in reads if path.is_dir()])
        uid.give(scratch, *(Path(path) for path in given["writable"]))
        uid.give_tree(*(Path(path) for path in given["caches"]))
    confinement = Confinement(Path(given["data_dir"]), Path(given["packages_dir"]),
                              writable=writable)
    if uid is not None:
        uid.become()
    confinement.apply(scratch)
    confinement.close()


def main(argv: list[str]) -> int:
    if len(argv) >= 6 and argv[2] == "--confine":
        _confine(argv[3])
        argv = [argv[0], argv[1], *argv[4:]]
    if len(argv) < 4 or argv[2] != "--":
        sys.stderr.write("usage: supervisor.py SECONDS [--confine SPEC] -- INSTALLER_ARGV...\n")
        return USAGE
    seconds = float(argv[1])
    pid = _spawn(argv[3:])
    what, status = _supervise(pid, seconds)
    if what == "exited":
        return _exit_code(status)
    _kill_group(pid)
    if what == "timeout":
        sys.stderr.write(f"error: install timed out after {seconds:.0f} s\n")
        return TIMED_OUT
    sys.stderr.write("error: install stopped\n")
    return STOPPED


if __name__ == "__main__":
    sys.exit(main(sys.argv))
