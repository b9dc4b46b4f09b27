"""A mount namespace of a confined process's own: what code the platform does
not trust sees of the filesystem, apart from what the sandbox (`sandbox.py`)
allows.

The execution template, and an installer's supervisor (running as root, with
CAP_SYS_ADMIN), move into a mount namespace of their own, which what they
start inherits and nothing else shares: what is mounted there is theirs
alone, and the kernel drops it with the last process of the namespace.

- **A /dev/shm of their own** (`mount_private_shm`). The machine's /dev/shm
  is where the platform's processes keep their POSIX semaphores (a pool's
  multiprocessing queues lock with them) and where a file outlives the
  process that wrote it. The template mounts a fresh tmpfs there, bounded in
  size, and empties it after every execution as it empties the scratch dir
  (`ExecutionRunner`'s `also_emptied`).
  Where it cannot, executions get no /dev/shm at all: the sandbox then grants
  no write there (`sandbox_grants.py`), so the platform's semaphores, which
  need a read-write open, stay out of reach.
- **Only the paths it needs, for a uid of its own** (`expose_to`).
  Executions and installer runs use an unprivileged uid where the platform
  runs as root (`uid.py`); that uid must reach the interpreter, the packages,
  its scratch dir (and an installer its target, caches and find-links),
  which may lie beneath directories only root may search (the data dir,
  0700; a home dir holding the interpreter).
  Each such directory is covered, in this namespace only, by a tmpfs that
  holds just the entries on the way to those paths, bound back from the
  real ones: the uid can reach them, and nothing else that directory held
  (the admin token, the store, a home dir's keys) is there at all. Modes on
  disk never change.
"""

from __future__ import annotations

import ctypes
import logging
import os
import stat
from collections.abc import Iterable
from pathlib import Path

logger = logging.getLogger(__name__)

SHM = Path("/dev/shm")
_CLONE_NEWNS = 0x00020000
_MS_NOSUID, _MS_NODEV, _MS_BIND, _MS_REC, _MS_PRIVATE = 0x2, 0x4, 0x1000, 0x4000, 0x40000
_LIBC = ctypes.CDLL(None, use_errno=True)
_own_namespace = False


def own_mount_namespace() -> None:
    """Move this process into a mount namespace of its own (once), from
    which nothing propagates back. Raises OSError where it is refused."""
    global _own_namespace
    if _own_namespace:
        return
    _call(_LIBC.unshare(_CLONE_NEWNS), "unshare(CLONE_NEWNS)")
    _own_namespace = True
    _call(_LIBC.mount(b"none", b"/", None, _MS_REC | _MS_PRIVATE, None),
          "making the mounts private")


def mount_private_shm(size_mb: int) -> bool:
    """A fresh tmpfs of `size_mb` (0: the kernel's default, half the memory)
    on /dev/shm, in this process's own mount namespace. True once done;
    False, after logging why, where the kernel or the process's privileges
    refuse it."""
    try:
        own_mount_namespace()
        options = f"mode=1777{f',size={size_mb}m' if size_mb > 0 else ''}".encode()
        _call(_LIBC.mount(b"tmpfs", bytes(SHM), b"tmpfs", _MS_NOSUID | _MS_NODEV, options),
              f"mounting a tmpfs on {SHM}")
    except OSError as exc:
        logger.warning("executions get no /dev/shm (writes there are refused): a private "
                       "one needs CAP_SYS_ADMIN and unshare: %s", exc)
        return False
    return True


def expose_to(uid: int, gid: int, paths: Iterable[Path], listed: Iterable[Path] = ()) -> None:
    """Make each of `paths` reachable by `uid`/`gid` (with no supplementary
    group) in this process's own mount namespace: every directory on the
    way that the uid may not search is covered by a tmpfs holding only the
    next entry on the way, bound back. Each directory of `listed` (a
    find-links dir) that the uid may not list is covered too, holding all of
    its entries. Raises OSError where it cannot."""
    own_mount_namespace()
    listed = [Path(os.path.realpath(path)) for path in listed]
    closed: dict[Path, set[str]] = {}  # a directory the uid may not search -> entries to keep
    for path in [*paths, *listed]:
        target = Path(os.path.realpath(path))
        current = Path("/")
        for part in target.parts[1:]:
            if not _searchable(current, uid, gid):
                closed.setdefault(current, set()).add(part)
            current = current / part
    for directory in listed:
        if directory.is_dir() and not _listable(directory, uid, gid):
            closed.setdefault(directory, set()).update(os.listdir(directory))
    for directory in sorted(closed, key=lambda p: len(p.parts)):  # the outermost first
        _cover(directory, sorted(closed[directory]))


def _searchable(directory: Path, uid: int, gid: int) -> bool:
    return _allowed(directory, uid, gid, stat.S_IXUSR, stat.S_IXGRP, stat.S_IXOTH)


def _listable(directory: Path, uid: int, gid: int) -> bool:
    return _searchable(directory, uid, gid) and _allowed(
        directory, uid, gid, stat.S_IRUSR, stat.S_IRGRP, stat.S_IROTH)


def _allowed(path: Path, uid: int, gid: int, owner: int, group: int, other: int) -> bool:
    info = os.stat(path)
    if info.st_uid == uid:
        return bool(info.st_mode & owner)
    if info.st_gid == gid:
        return bool(info.st_mode & group)
    return bool(info.st_mode & other)


def _cover(directory: Path, keep: list[str]) -> None:
    """A tmpfs on `directory` with only the entries `keep`, bound back."""
    held = [(name, os.open(directory / name, os.O_PATH | os.O_CLOEXEC)) for name in keep]
    try:
        _call(_LIBC.mount(b"tmpfs", bytes(directory), b"tmpfs", _MS_NOSUID | _MS_NODEV,
                          b"mode=0755"), f"covering {directory}")
        for name, fd in held:
            point = directory / name
            if stat.S_ISDIR(os.fstat(fd).st_mode):
                point.mkdir()
            else:
                point.touch()
            _call(_LIBC.mount(f"/proc/self/fd/{fd}".encode(), bytes(point), None,
                              _MS_BIND | _MS_REC, None), f"binding {point} back")
    finally:
        for _, fd in held:
            os.close(fd)


def _call(result: int, what: str) -> None:
    if result != 0:
        error = ctypes.get_errno()
        raise OSError(error, f"{what}: {os.strerror(error)}")
