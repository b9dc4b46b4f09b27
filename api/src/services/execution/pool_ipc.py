"""The pool's multiprocessing directory (`/tmp/pymp-*`), where its forkserver
listens: closed before the forkserver binds there, and left behind by dead
pools only until the next pool starts.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import stat
import tempfile
import time
from pathlib import Path

logger = logging.getLogger(__name__)

# How long a directory must have been unchanged before it may be taken for dead.
QUIET_SECONDS = 60.0


def remove_dead_ipc_directories(quiet_seconds: float = QUIET_SECONDS) -> int:
    """Remove the multiprocessing directories (`/tmp/pymp-*`, this uid's) of
    pools that died without cleaning up. A directory goes only when it holds a
    forkserver socket (`listener-*`), none of its sockets is bound by a live
    process, and nothing in it changed for `quiet_seconds`; so another
    program's live directory stays, and so does one whose pool is starting
    its forkserver right now. Returns how many went."""
    now = time.time()
    candidates: dict[Path, list[str]] = {}
    for directory in Path(tempfile.gettempdir()).glob("pymp-*"):
        with contextlib.suppress(OSError):
            status = directory.lstat()
            if not stat.S_ISDIR(status.st_mode) or status.st_uid != os.geteuid():
                continue
            if now - status.st_mtime < quiet_seconds:
                continue
            sockets = [str(entry) for entry in directory.iterdir() if entry.is_socket()]
            if any(Path(path).name.startswith("listener-") for path in sockets):
                candidates[directory] = sockets
    if not candidates:
        return 0
    # Read after the directories were: a socket seen there was bound before
    # this read, so it is listed here unless its process is gone.
    try:
        with open("/proc/net/unix") as table:
            bound = {fields[7] for line in table.read().splitlines()[1:]
                     if len(fields := line.split()) >= 8}
    except OSError:  # no /proc: nothing can be told apart, nothing goes
        return 0
    removed = 0
    for directory, sockets in candidates.items():
        if any(path in bound for path in sockets):
            continue
        with contextlib.suppress(OSError):
            shutil.rmtree(directory)
            removed += 1
    if removed:
        logger.info("Removed %d multiprocessing director%s left by dead pools", removed,
                    "y" if removed == 1 else "ies")
    return removed


def lock_ipc_directory() -> None:
    """Close this process's multiprocessing directory (`/tmp/pymp-*`, where the
    forkserver's socket will be bound) before the forkserver exists.

    The forkserver runs whatever a connection to its socket sends, and any
    process can find the socket's path in /proc/net/unix. As root, the
    directory is closed to everyone (mode 0) from the start, so there is no
    moment when the socket is open: the pool still binds and connects there
    (it has CAP_DAC_OVERRIDE), executions, whose sandbox drops every
    capability, cannot, whichever pool they run in. Without root nothing here
    stops a same-uid process (README, "What executions cannot reach")."""
    if os.geteuid() != 0:
        return
    from multiprocessing import util

    os.chmod(util.get_temp_dir(), 0)
