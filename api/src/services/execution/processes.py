"""Process plumbing the execution template and its runner share: Linux
process controls, killing and reaping process groups, finding the children
an execution left, and whole reads and writes on pipes."""

from __future__ import annotations

import contextlib
import ctypes
import gc
import os
import select
import shutil
import signal
from pathlib import Path

from src.foundation.hardening import prctl

PR_SET_PDEATHSIG = 1
_PR_SET_CHILD_SUBREAPER = 36
_PR_GET_CHILD_SUBREAPER = 37
READ_CHUNK = 1 << 20


def prctl_quietly(option: int, value: int) -> bool:
    """`prctl(option, value)`; False where the kernel refuses it."""
    try:
        prctl(option, value)
    except OSError:
        return False
    return True


def become_subreaper() -> bool:
    """Orphans of this process's descendants become its children (Linux), so
    the template can reap what an execution left running."""
    return prctl_quietly(_PR_SET_CHILD_SUBREAPER, 1)


def is_subreaper() -> bool:
    flag = ctypes.c_int(0)
    try:
        prctl(_PR_GET_CHILD_SUBREAPER, ctypes.addressof(flag))
    except OSError:
        return False
    return flag.value == 1


def die_with_parent() -> bool:
    """SIGKILL this process when its parent exits."""
    return prctl_quietly(PR_SET_PDEATHSIG, signal.SIGKILL)


def settle_memory() -> None:
    """Make this process small before its first fork: a fork copies the page
    tables of every resident page and each execution's first writes copy
    pages, so what start-up freed goes back to the system, and the objects
    that remain are moved out of the collector's reach (a collection in a
    child would touch, and so copy, every one of them)."""
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).malloc_trim(0)
    gc.freeze()


def kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def reap_with_usage(pid: int, within: float) -> tuple[int | None, int | None]:
    """Reap `pid` (a child of ours) once it has exited, waiting `within`
    seconds at most: its wait status and its peak resident memory in KiB
    (`ru_maxrss` of its exit); (None, None) when it was not ours or still runs."""
    try:
        pidfd = os.pidfd_open(pid)
    except OSError:  # reaped already
        return None, None
    try:
        poller = select.poll()
        poller.register(pidfd, select.POLLIN)
        poller.poll(within * 1000)  # readable once it has exited
        reaped, status, usage = os.wait4(pid, os.WNOHANG)
    except OSError:  # ChildProcessError: not ours
        return None, None
    finally:
        os.close(pidfd)
    return (status, usage.ru_maxrss) if reaped else (None, None)


def children() -> list[int]:
    """This process's children, from every thread's `children` list."""
    pids: list[int] = []
    task_dir = Path(f"/proc/{os.getpid()}/task")
    with contextlib.suppress(OSError):
        for task in task_dir.iterdir():
            with contextlib.suppress(OSError):
                pids += [int(p) for p in (task / "children").read_text().split()]
    return pids


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def drain(fd: int, most: int) -> bytes:
    """What `fd` holds now, up to a little over `most` bytes, without waiting."""
    os.set_blocking(fd, False)
    chunks: list[bytes] = []
    size = 0
    while size <= most:
        try:
            chunk = os.read(fd, READ_CHUNK)
        except BlockingIOError:
            break
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


def empty_directory(directory: Path) -> None:
    """Remove what an execution left in its scratch dir."""
    with os.scandir(directory) as entries:
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path, ignore_errors=True)
            else:
                with contextlib.suppress(OSError):
                    os.unlink(entry.path)

