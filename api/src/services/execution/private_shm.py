"""The executions' own /dev/shm.

/dev/shm is where the platform's processes keep their POSIX semaphores and
shared memory (a pool's multiprocessing queues lock with semaphores there),
and where a file outlives the process that wrote it. An execution must reach
neither the platform's objects nor what the previous execution left.

`make_private_shm` gives the calling process (the execution template) a mount
namespace of its own, with its own tmpfs on /dev/shm: what its executions
create there lives in memory of that tmpfs, bounded by its size, and no other
process of the machine sees it, nor they it. The template empties it after
every execution (`empty_shm`), as it empties the scratch dir, and the kernel
frees it with the namespace when the template ends.

It needs CAP_SYS_ADMIN (the platform runs as root and no seccomp policy
forbids `unshare`). Where it cannot be made, executions get no /dev/shm at
all: the sandbox then grants no write there (see `sandbox_grants.py`), so the
platform's semaphores, which need a read-write open, stay out of reach.
"""

from __future__ import annotations

import ctypes
import logging
import os
from pathlib import Path

from src.services.execution.processes import empty_directory

logger = logging.getLogger(__name__)

SHM = Path("/dev/shm")
_CLONE_NEWNS = 0x00020000
_MS_NOSUID, _MS_NODEV, _MS_REC, _MS_PRIVATE = 0x2, 0x4, 0x4000, 0x40000
_LIBC = ctypes.CDLL(None, use_errno=True)


def make_private_shm(size_mb: int) -> bool:
    """Move this process into a mount namespace of its own and mount a fresh
    tmpfs of `size_mb` (0: the kernel's default, half the memory) on
    /dev/shm. True once done; False, after logging why, where the kernel or
    the process's privileges refuse it (nothing changed then, or only the
    namespace, which nobody else shares)."""
    try:
        _call(_LIBC.unshare(_CLONE_NEWNS), "unshare(CLONE_NEWNS)")
        # Nothing mounted here propagates back to the machine's namespace.
        _call(_LIBC.mount(b"none", b"/", None, _MS_REC | _MS_PRIVATE, None),
              "making the mounts private")
        options = f"mode=1777{f',size={size_mb}m' if size_mb > 0 else ''}".encode()
        _call(_LIBC.mount(b"tmpfs", bytes(SHM), b"tmpfs", _MS_NOSUID | _MS_NODEV, options),
              f"mounting a tmpfs on {SHM}")
    except OSError as exc:
        logger.warning("executions get no /dev/shm (writes there are refused): a private "
                       "one needs CAP_SYS_ADMIN and unshare: %s", exc)
        return False
    return True


def empty_shm() -> None:
    """Remove what the last execution left in the private /dev/shm."""
    empty_directory(SHM)


def _call(result: int, what: str) -> None:
    if result != 0:
        error = ctypes.get_errno()
        raise OSError(error, f"{what}: {os.strerror(error)}")
