"""What an execution may reach, as Landlock grants: everything but the data
dir (and other hidden dirs), the packages dir read-only, the safe devices and,
when it is the executions' own (`src/confinement/mounts.py`), /dev/shm (see `sandbox.py`
for what this guarantees)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from src.confinement.landlock import ACCESS_FS_READ_DIR, DEVICE, READ, WRITE

DEV = Path("/dev")
# The devices an execution may open. /dev/shm is writable like a scratch dir
# only when it is the executions' own: the machine's holds the platform's
# semaphores.
SAFE_DEVICES = ("null", "zero", "full", "random", "urandom", "tty", "ptmx")


@dataclass(frozen=True)
class Grant:
    """Rights over a path and everything beneath it."""

    path: Path
    access: int


def plan_grants(data_dir: Path, packages_dir: Path, hidden: Sequence[Path] = (), *,
                shm: bool = False) -> list[Grant]:
    """The static part of the policy: read and execute everywhere but beneath
    the data dir (and the `hidden` dirs), the packages dir read-only, the
    safe devices, and writing in /dev/shm when `shm`."""
    hiding = hidden_paths(data_dir, hidden)
    packages_dir = Path(os.path.realpath(packages_dir))
    grants: list[Grant] = []
    _grant_around(Path("/"), hiding, grants, shm)
    if not any(is_within(path, packages_dir) for path in hiding):
        grants.append(Grant(packages_dir, READ))
    return grants


def hidden_paths(data_dir: Path, hidden: Sequence[Path]) -> set[Path]:
    paths = {Path(os.path.realpath(path)) for path in (data_dir, *hidden)}
    if Path("/") in paths:
        raise ValueError("the data dir cannot be / (nothing would be left to read)")
    return paths


def _grant_around(level: Path, hidden: set[Path], grants: list[Grant], shm: bool) -> None:
    """Grant every entry of the directory `level` but the hidden ones, going
    down into each entry that leads to a hidden path instead of granting it."""
    leading = {path.relative_to(level).parts[0] for path in hidden if level in path.parents}
    try:
        names = sorted(os.listdir(level))
    except OSError:
        return  # not made yet (nothing beneath it to hide), or not ours to list
    for name in names:
        path = level / name
        if name in leading:
            if path not in hidden:
                _grant_around(path, hidden, grants, shm)
        else:
            grants += device_grants(shm) if path == DEV else [Grant(path, READ)]


def device_grants(shm: bool) -> list[Grant]:
    return [
        Grant(DEV, ACCESS_FS_READ_DIR),
        *(Grant(DEV / name, DEVICE) for name in SAFE_DEVICES),
        Grant(DEV / "pts", DEVICE | ACCESS_FS_READ_DIR),
        *([Grant(DEV / "shm", WRITE)] if shm else []),
    ]


def is_within(path: Path, parent: Path) -> bool:
    """Whether `parent` is `path` or one of its ancestors."""
    return path == parent or parent in path.parents


def is_beneath(fd: int, ancestor: tuple[int, int], most: int = 64) -> bool:
    """Whether the directory `fd` lies beneath the directory (device, inode)
    `ancestor`, going up through ".." (no path strings: a few syscalls)."""
    flags = os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC
    current = os.open("..", flags, dir_fd=fd)
    previous: tuple[int, int] | None = None
    try:
        for _ in range(most):
            info = os.fstat(current)
            identity = (info.st_dev, info.st_ino)
            if identity == ancestor:
                return True
            if identity == previous:
                return False  # "/" is its own parent
            previous = identity
            parent = os.open("..", flags, dir_fd=current)
            os.close(current)
            current = parent
        return False
    finally:
        os.close(current)


def forbidden_objects(hidden: set[Path], allowed: list[Path]) -> set[tuple[int, int]]:
    """(device, inode) of the hidden dirs, their ancestors and their entries
    (but those holding an `allowed` path: the packages dir, the scratch root):
    a rule on any of them would open what is hidden."""
    paths: set[Path] = set()
    for path in hidden:
        paths.update((path, *path.parents))
        with contextlib.suppress(OSError):  # not made yet, or not a directory
            paths.update(entry for entry in path.iterdir()
                         if not any(is_within(kept, entry) for kept in allowed))
    forbidden: set[tuple[int, int]] = set()
    for path in paths:
        try:
            info = os.stat(path, follow_symlinks=False)
        except OSError:
            continue
        forbidden.add((info.st_dev, info.st_ino))
    return forbidden
