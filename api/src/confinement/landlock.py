"""Linux's Landlock and capability interfaces, as the sandbox (`sandbox.py`)
uses them: syscall numbers, access rights, the structures the kernel reads,
and thin callers of the syscalls. See Documentation/userspace-api/landlock.rst
in the kernel."""

from __future__ import annotations

import ctypes
import errno
import logging
import os
from collections.abc import Callable

logger = logging.getLogger(__name__)

# Syscall numbers: the same on every architecture (the unified table).
_SYS_LANDLOCK_CREATE_RULESET = 444
_SYS_LANDLOCK_ADD_RULE = 445
_SYS_LANDLOCK_RESTRICT_SELF = 446
_LANDLOCK_CREATE_RULESET_VERSION = 1 << 0
_LANDLOCK_RULE_PATH_BENEATH = 1

_PR_SET_NO_NEW_PRIVS = 38
_LINUX_CAPABILITY_VERSION_3 = 0x20080522

# Filesystem access rights (include/uapi/linux/landlock.h), by the ABI that added them.
ACCESS_FS_EXECUTE = 1 << 0
ACCESS_FS_WRITE_FILE = 1 << 1
ACCESS_FS_READ_FILE = 1 << 2
ACCESS_FS_READ_DIR = 1 << 3
ACCESS_FS_REMOVE_DIR = 1 << 4
ACCESS_FS_REMOVE_FILE = 1 << 5
ACCESS_FS_MAKE_CHAR = 1 << 6
ACCESS_FS_MAKE_DIR = 1 << 7
ACCESS_FS_MAKE_REG = 1 << 8
ACCESS_FS_MAKE_SOCK = 1 << 9
ACCESS_FS_MAKE_FIFO = 1 << 10
ACCESS_FS_MAKE_BLOCK = 1 << 11
ACCESS_FS_MAKE_SYM = 1 << 12
ACCESS_FS_REFER = 1 << 13  # ABI 2
ACCESS_FS_TRUNCATE = 1 << 14  # ABI 3
ACCESS_FS_IOCTL_DEV = 1 << 15  # ABI 5
# Scopes (ABI 6).
SCOPE_ABSTRACT_UNIX_SOCKET = 1 << 0
SCOPE_SIGNAL = 1 << 1

_FS_ABI_1 = (1 << 13) - 1  # EXECUTE .. MAKE_SYM
# Rights a rule on a file (not a directory) may carry.
_FILE_RIGHTS = (ACCESS_FS_EXECUTE | ACCESS_FS_WRITE_FILE | ACCESS_FS_READ_FILE
                | ACCESS_FS_TRUNCATE | ACCESS_FS_IOCTL_DEV)

READ = ACCESS_FS_EXECUTE | ACCESS_FS_READ_FILE | ACCESS_FS_READ_DIR
# Everything a scratch dir needs; never device nodes.
WRITE = (READ | ACCESS_FS_WRITE_FILE | ACCESS_FS_REMOVE_DIR | ACCESS_FS_REMOVE_FILE
         | ACCESS_FS_MAKE_DIR | ACCESS_FS_MAKE_REG | ACCESS_FS_MAKE_SOCK | ACCESS_FS_MAKE_FIFO
         | ACCESS_FS_MAKE_SYM | ACCESS_FS_REFER | ACCESS_FS_TRUNCATE)
DEVICE = ACCESS_FS_READ_FILE | ACCESS_FS_WRITE_FILE | ACCESS_FS_TRUNCATE | ACCESS_FS_IOCTL_DEV

class ConfinementError(RuntimeError):
    """Landlock is there but refused the policy, or the capabilities could not be
    dropped: the execution must not run."""


class _RulesetAttr(ctypes.Structure):
    _fields_ = [("handled_access_fs", ctypes.c_uint64),  # ABI 1
                ("handled_access_net", ctypes.c_uint64),  # ABI 4
                ("scoped", ctypes.c_uint64)]  # ABI 6


class _PathBeneathAttr(ctypes.Structure):
    _pack_ = 1  # __attribute__((packed)): 12 bytes
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                ("inheritable", ctypes.c_uint32)]


def _syscall_function(*argtypes: type) -> Callable[..., int]:
    """libc's syscall(2) with fixed argument types: one prototype per call shape,
    so a call converts plain ints without building ctypes objects."""
    function = ctypes.CDLL(None, use_errno=True)["syscall"]
    function.restype = ctypes.c_long
    function.argtypes = [ctypes.c_long, *argtypes]
    return function


# landlock_create_ruleset(attr, size, flags)
_sys_create_ruleset = _syscall_function(ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint32)
# landlock_add_rule(ruleset_fd, rule_type, rule_attr, flags)
_sys_add_rule = _syscall_function(ctypes.c_int, ctypes.c_int, ctypes.c_void_p, ctypes.c_uint32)
# landlock_restrict_self(ruleset_fd, flags)
_sys_restrict_self = _syscall_function(ctypes.c_int, ctypes.c_uint32)
_capset = ctypes.CDLL(None, use_errno=True)["capset"]
_capset.restype = ctypes.c_int
_capset.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
# capset(2) arguments for "no capabilities at all": built once, only read.
_CAP_HEADER = _CapHeader(version=_LINUX_CAPABILITY_VERSION_3, pid=0)
_NO_CAPABILITIES = (_CapData * 2)()


def errno_error(what: str) -> OSError:
    error = ctypes.get_errno()
    return OSError(error, f"{what}: {os.strerror(error)}")


def landlock_abi() -> int:
    """The Landlock ABI version of the running kernel; 0 when it has none, it
    is disabled, or a seccomp policy hides it."""
    version = _sys_create_ruleset(_SYS_LANDLOCK_CREATE_RULESET, None, 0,
                                  _LANDLOCK_CREATE_RULESET_VERSION)
    return max(int(version), 0)


def handled_fs_rights(abi: int) -> int:
    """Every filesystem right the ABI knows: all of them are handled, so none
    is left open by default."""
    if abi < 1:
        return 0
    rights = _FS_ABI_1
    if abi >= 2:
        rights |= ACCESS_FS_REFER
    if abi >= 3:
        rights |= ACCESS_FS_TRUNCATE
    if abi >= 5:
        rights |= ACCESS_FS_IOCTL_DEV
    return rights


def handled_scopes(abi: int) -> int:
    """What a domain is scoped to: its own signals and abstract UNIX sockets."""
    return SCOPE_ABSTRACT_UNIX_SOCKET | SCOPE_SIGNAL if abi >= 6 else 0


def _ruleset_attr_size(abi: int) -> int:
    """Only the fields the ABI knows (an older kernel refuses a longer struct)."""
    if abi >= 6:
        return 24
    if abi >= 4:
        return 16
    return 8


def add_rule(ruleset: int, rule_address: int) -> None:
    if _sys_add_rule(_SYS_LANDLOCK_ADD_RULE, ruleset, _LANDLOCK_RULE_PATH_BENEATH,
                     rule_address, 0) < 0:
        raise ConfinementError(str(errno_error("landlock_add_rule")))


def unavailable(call: str) -> bool:
    """False, with a warning, when Landlock is missing or forbidden; raise otherwise."""
    error = errno_error(call)
    if error.errno in (errno.ENOSYS, errno.EOPNOTSUPP, errno.EPERM):
        warn_once(f"Landlock refused ({error}): this execution runs without "
                   "filesystem confinement")
        return False
    raise ConfinementError(str(error))


def drop_capabilities() -> None:
    """Empty this process's effective, permitted and inheritable capability sets
    (the ambient set follows). With no_new_privs set, nothing it executes gets
    any back, so a root uid keeps only its file permissions."""
    if _capset(ctypes.addressof(_CAP_HEADER), ctypes.addressof(_NO_CAPABILITIES)) != 0:
        raise ConfinementError(str(errno_error("capset")))


_warned = False


def warn_once(message: str) -> None:
    global _warned
    if not _warned:
        _warned = True
        logger.warning(message)
