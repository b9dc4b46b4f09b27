"""The pool's multiprocessing directory (`/tmp/pymp-*`), where its forkserver
listens: closed before the forkserver binds there, and left behind by dead
pools only until the next pool starts.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
from pathlib import Path

logger = logging.getLogger(__name__)


def remove_dead_ipc_directories() -> int:
    """Remove the multiprocessing directories (`/tmp/pymp-*`, this uid's) of
    pools that died without cleaning up: a directory goes only when it holds a
    forkserver socket (`listener-*`) and none of its sockets is bound by a live
    process (/proc/net/unix), so another program's live directory stays.
    Returns how many went."""
    try:
        with open("/proc/net/unix") as table:
            bound = {line.split()[7] for line in table.read().splitlines()[1:]
                     if len(line.split()) >= 8}
    except OSError:  # no /proc: nothing can be told apart, nothing goes
        return 0
    removed = 0
    for directory in Path(tempfile.gettempdir()).glob("pymp-*"):
        with contextlib.suppress(OSError):
            if directory.is_symlink() or directory.lstat().st_uid != os.geteuid():
                continue
            sockets = [entry for entry in directory.iterdir() if entry.is_socket()]
            if not any(entry.name.startswith("listener-") for entry in sockets):
                continue
            if any(str(entry) in bound for entry in sockets):
                continue
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
