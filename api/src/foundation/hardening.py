"""Keep the platform's secrets away from the code it runs: process flags and file modes.

The platform's processes (`bifrost up`, the API, the worker pool, worker
processes) hold the admin token and the store URL in memory and in the
environment they started with. `harden_process()` clears their "dumpable"
flag: the kernel then answers /proc/<pid>/environ, mem, maps, fd and the like,
and ptrace, only to a process holding CAP_SYS_PTRACE, never to a same-uid
process without it (an execution's process drops every capability, see
`src/confinement/sandbox.py`). The flag survives fork and is reset by
exec, so every platform process sets it itself, first thing.

The data dir holds the admin token, the SQLite store and the private Redis's
files: it is kept 0700 and those files 0600, so that other users of the
machine cannot read them (`private_directory`, `private_file`).
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import stat
import urllib.parse
from collections.abc import Mapping
from pathlib import Path

logger = logging.getLogger(__name__)

PR_GET_DUMPABLE = 3
PR_SET_DUMPABLE = 4

PRIVATE_DIR_MODE = 0o700
PRIVATE_FILE_MODE = 0o600

# Settings that are secrets: a process that does not need them must not get them
# in its environment (which /proc/<pid>/environ shows for the process's life).
SECRET_VARIABLES = (
    "BIFROST_ADMIN_TOKEN", "BIFROST_READ_TOKEN", "BIFROST_ALERT_WEBHOOK", "DATABASE_URL",
)
# What reaches the control plane, which no execution may hold: the secrets, and
# the Redis URL (it carries Redis's password; the worker talks to Redis for
# its executions, which never open a connection of their own).
CONTROL_PLANE_VARIABLES = (*SECRET_VARIABLES, "REDIS_URL")


_LIBC = ctypes.CDLL(None, use_errno=True)


def prctl(option: int, arg2: int = 0, arg3: int = 0, arg4: int = 0, arg5: int = 0) -> int:
    """prctl(2) through libc; raises OSError with the kernel's errno on failure."""
    result = int(_LIBC.prctl(ctypes.c_int(option), ctypes.c_ulong(arg2), ctypes.c_ulong(arg3),
                            ctypes.c_ulong(arg4), ctypes.c_ulong(arg5)))
    if result < 0:
        error = ctypes.get_errno()
        raise OSError(error, f"prctl({option}): {os.strerror(error)}")
    return result


def harden_process() -> bool:
    """Make this process's /proc entries and memory unreadable to processes
    without CAP_SYS_PTRACE (and core dumps off). True when the flag is set;
    False, with a warning, where the kernel refused (not Linux, or a policy)."""
    try:
        prctl(PR_SET_DUMPABLE, 0)
    except OSError as exc:
        logger.warning("could not clear this process's dumpable flag: %s", exc)
        return False
    return True


def is_dumpable() -> bool:
    return prctl(PR_GET_DUMPABLE) != 0


def drop_secrets_from_environment() -> None:
    """Take the secrets out of this process's environment (and so out of every
    process it starts), after the settings have read them: the process keeps
    what it needs in its settings."""
    from src.foundation.settings import get_settings

    get_settings()
    for name in SECRET_VARIABLES:
        os.environ.pop(name, None)


def without_secrets(environ: Mapping[str, str]) -> dict[str, str]:
    """`environ` without the platform's secrets, for a child that needs none."""
    return {name: value for name, value in environ.items() if name not in SECRET_VARIABLES}


def for_executions(environ: Mapping[str, str]) -> dict[str, str]:
    """`environ` without anything that reaches the control plane: the
    environment of the process executions are forked from."""
    return {name: value for name, value in environ.items()
            if name not in CONTROL_PLANE_VARIABLES}


def redis_without_password(url: str) -> bool:
    """True when `url` names a TCP Redis and gives no password for it."""
    parts = urllib.parse.urlsplit(url)
    return parts.scheme in ("redis", "rediss") and not parts.password


def private_directory(path: Path, *, what: str = "directory", create: bool = True) -> None:
    """`path` as a directory only its owner can enter: created 0700 (with its
    parents) when missing and `create`, else narrowed to 0700 when group or
    others had any access, saying so in the log."""
    if create:
        try:
            path.mkdir(mode=PRIVATE_DIR_MODE, parents=True)
            return
        except FileExistsError:
            pass
    _narrow(path, PRIVATE_DIR_MODE, what)


def private_file(path: Path, *, what: str = "file") -> None:
    """Narrow an existing file to 0600 when group or others had any access."""
    _narrow(path, PRIVATE_FILE_MODE, what)


def _narrow(path: Path, mode: int, what: str) -> None:
    try:
        current = stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:
        return
    if not current & 0o077:
        return
    narrowed = current & mode
    try:
        path.chmod(narrowed)
    except PermissionError as exc:  # not ours: say so, and carry on
        logger.warning("the %s %s is mode %o and could not be narrowed to %o: %s",
                       what, path, current, narrowed, exc)
        return
    logger.warning("narrowed the %s %s from mode %o to %o: it holds the platform's secrets",
                   what, path, current, narrowed)


def narrow_files(paths: list[Path]) -> None:
    """`private_file` for each path that exists, quietly: for files a library
    creates with the default mode (the SQLite store and its journals)."""
    for path in paths:
        with contextlib.suppress(FileNotFoundError, PermissionError):
            current = stat.S_IMODE(path.stat().st_mode)
            if current & 0o077:
                path.chmod(current & PRIVATE_FILE_MODE)
