"""Confinement of an execution's process, before user code runs in it.

What it guarantees, once `Confinement.apply()` returned True in a process
(and for every process that one starts, which inherit it and cannot undo it):
- nothing beneath the data dir (nor beneath the other `hidden` dirs a worker
  names) can be read, listed, written or executed: the admin token, the
  SQLite store and its journals, the private Redis's files; except the
  packages dir, which is readable and importable but not writable; everywhere
  else is readable and executable, as the platform's uid allows;
- files can be created, written, truncated and removed only beneath the
  execution's scratch dir and in /dev/shm; of the other devices only null,
  zero, full, random, urandom, tty, ptmx and the pseudo-terminals can be
  opened (so not the machine's disks);
- the /proc files of processes outside the execution (environ, mem, maps, fd,
  cwd, root...; not cmdline or status) cannot be opened and those processes
  cannot be traced, whatever the uid (Landlock lets a confined process ptrace
  only processes confined at least as tightly);
- with Landlock ABI 6 or later: no signal to a process outside the execution
  (the worker, the pool, the API, `bifrost up`) and no connection to an
  abstract UNIX socket they listen on;
- every capability is dropped and no_new_privs is set, so a root uid is just
  a uid: no raw I/O, module loading, mounts, DAC override, ptrace override or
  setuid programs, and a dumpable-off process (see `src/foundation/hardening.py`)
  cannot be inspected even where Landlock is missing.

What it does not do:
- the network stays open: user code can reach Redis, and read and write every
  key there (it needs Redis to load workspace modules), the API (without the
  token) and anything else;
- files outside the data dir stay readable as the uid allows: secrets kept
  elsewhere (an env file for systemd, ~/.docker, ~/.ssh) need to be in a
  `hidden` dir, or unreadable by the platform's uid; so do other executions'
  scratch dirs, unless the scratch roots are in a hidden dir (the data dir);
- connect() to a UNIX socket bound to a path is not confined by Landlock up to
  ABI 7, so a service listening on one (a multiprocessing forkserver, which
  runs what it is sent, or docker.sock) is reachable with the uid's file
  permissions: such a socket needs a directory the capability-less uid cannot
  search (mode 0 when the platform runs as root, which keeps its DAC override);
- its own memory, descriptors it inherited (close them) and its own
  environment block are user code's: what must stay secret must not be there;
- a bind mount of (part of) the data dir elsewhere, or a hard link to one of
  its files, is readable through that other path;
- where the kernel lacks Landlock (or a seccomp policy forbids it) `apply()`
  returns False, after one warning per process: the capabilities are dropped
  all the same, and the execution runs with the uid's file permissions only.

Landlock is allow-list only and its rules reach everything beneath a path, so
"everything but the data dir" is granted as every sibling at each level of the
path from / down to the data dir (and to each hidden dir). The siblings are
listed when a worker builds its `Confinement` (once: it keeps O_PATH
descriptors of them open), so an entry made later beside the data dir or one
of its parents is not readable; nor can those parents be listed. Only the
rights the running kernel's ABI knows are handled. See
Documentation/userspace-api/landlock.rst in the kernel.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import logging
import os
import stat
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from src.foundation.hardening import prctl

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

DEV = Path("/dev")
# The devices an execution may open; /dev/shm is writable like a scratch dir.
SAFE_DEVICES = ("null", "zero", "full", "random", "urandom", "tty", "ptmx")


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


def _errno_error(what: str) -> OSError:
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


@dataclass(frozen=True)
class Grant:
    """Rights over a path and everything beneath it."""

    path: Path
    access: int


def plan_grants(data_dir: Path, packages_dir: Path, hidden: Sequence[Path] = ()) -> list[Grant]:
    """The static part of the policy: read and execute everywhere but beneath
    the data dir (and the `hidden` dirs), the packages dir read-only, the
    safe devices, /dev/shm."""
    hidden_paths = _hidden_paths(data_dir, hidden)
    packages_dir = Path(os.path.realpath(packages_dir))
    grants: list[Grant] = []
    _grant_around(Path("/"), hidden_paths, grants)
    if not any(_is_within(path, packages_dir) for path in hidden_paths):
        grants.append(Grant(packages_dir, READ))
    return grants


def _hidden_paths(data_dir: Path, hidden: Sequence[Path]) -> set[Path]:
    paths = {Path(os.path.realpath(path)) for path in (data_dir, *hidden)}
    if Path("/") in paths:
        raise ValueError("the data dir cannot be / (nothing would be left to read)")
    return paths


def _grant_around(level: Path, hidden: set[Path], grants: list[Grant]) -> None:
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
                _grant_around(path, hidden, grants)
        else:
            grants += _device_grants() if path == DEV else [Grant(path, READ)]


def _device_grants() -> list[Grant]:
    return [
        Grant(DEV, ACCESS_FS_READ_DIR),
        *(Grant(DEV / name, DEVICE) for name in SAFE_DEVICES),
        Grant(DEV / "pts", DEVICE | ACCESS_FS_READ_DIR),
        Grant(DEV / "shm", WRITE),
    ]


def _is_within(path: Path, parent: Path) -> bool:
    """Whether `parent` is `path` or one of its ancestors."""
    return path == parent or parent in path.parents


class Confinement:
    """A worker's policy for its executions, built once; `apply` per execution.

    Construction lists the siblings of the hidden dirs' ancestors and opens
    the granted paths, so that `apply()` in a forked child only issues the
    Landlock syscalls: call it there, before any thread starts and before user
    code runs, and keep `descriptors()` open until then.

    With `scratch_root` (the directory every scratch dir of this worker is made
    in) the policy is two layers. The first, built here once into a ruleset
    (the O_PATH descriptors are closed again), handles every right: reading as
    above, writing beneath the scratch root, /dev/shm and the devices. The
    second, built in the child, handles only the rights that change files and
    narrows writing to the execution's own scratch dir. The worker then holds
    about a dozen descriptors whatever the number of siblings, and `apply` adds
    a dozen rules. Without `scratch_root`, `apply` builds the one layer from
    an O_PATH descriptor held for every granted path.
    """

    def __init__(self, data_dir: Path, packages_dir: Path, hidden: Sequence[Path] = (),
                 scratch_root: Path | None = None) -> None:
        self.data_dir = Path(os.path.realpath(data_dir))
        self.packages_dir = Path(os.path.realpath(packages_dir))
        self.hidden = sorted(_hidden_paths(self.data_dir, hidden))
        self.scratch_root = Path(os.path.realpath(scratch_root)) if scratch_root else None
        self.abi = landlock_abi()
        self.granted: list[Grant] = []
        allowed = [self.packages_dir, *([self.scratch_root] if self.scratch_root else [])]
        self._forbidden = _forbidden_objects(set(self.hidden), allowed)
        everything = handled_fs_rights(self.abi)
        self._static_attr = _RulesetAttr(handled_access_fs=everything, handled_access_net=0,
                                         scoped=handled_scopes(self.abi))
        self._static_ruleset: int | None = None
        self._scratch_root_id = (0, 0)  # (device, inode), set with the static layer
        # The layer `apply` builds: every right, or (two layers) the writing ones.
        self._attr = self._static_attr
        held: list[_PathBeneathAttr] = []
        if not self.available:
            _warn_once("Landlock is not available in this kernel (or a seccomp policy hides "
                       "it): executions run without filesystem confinement")
        elif self.scratch_root is None:
            held = self._open_rules(plan_grants(self.data_dir, self.packages_dir, self.hidden))
        else:
            self._static_ruleset = self._build_static_layer()
            writing = everything & ~READ
            self._attr = _RulesetAttr(handled_access_fs=writing, handled_access_net=0, scoped=0)
            held = self._open_rules(_device_grants(), granted=False)
        # One contiguous table the kernel reads the rules from: a forked child
        # walks it without touching (and so copying) many small Python objects.
        self._table = (_PathBeneathAttr * len(held))(*held)

    def _build_static_layer(self) -> int:
        assert self.scratch_root is not None
        root = os.stat(self.scratch_root)
        self._scratch_root_id = (root.st_dev, root.st_ino)
        if self._scratch_root_id in self._forbidden:
            raise ValueError(f"the scratch root {self.scratch_root} is (or holds) the data dir")
        ruleset = int(_sys_create_ruleset(_SYS_LANDLOCK_CREATE_RULESET,
                                          ctypes.addressof(self._static_attr),
                                          _ruleset_attr_size(self.abi), 0))
        if ruleset < 0:
            raise _errno_error("landlock_create_ruleset")
        try:
            grants = plan_grants(self.data_dir, self.packages_dir, self.hidden)
            for grant in [*grants, Grant(self.scratch_root, WRITE)]:
                rule = self._open_rule(grant, self._static_attr.handled_access_fs)
                if rule is None:
                    continue
                try:
                    _add_rule(ruleset, ctypes.addressof(rule))
                finally:
                    os.close(rule.parent_fd)
                self.granted.append(Grant(grant.path, rule.allowed_access))
        except BaseException:
            os.close(ruleset)
            raise
        return ruleset

    def _open_rules(self, grants: list[Grant], granted: bool = True) -> list[_PathBeneathAttr]:
        rules: list[_PathBeneathAttr] = []
        for grant in grants:
            rule = self._open_rule(grant, self._attr.handled_access_fs)
            if rule is not None:
                rules.append(rule)
                if granted:
                    self.granted.append(Grant(grant.path, rule.allowed_access))
        return rules

    def _open_rule(self, grant: Grant, handled: int) -> _PathBeneathAttr | None:
        """The rule for `grant`, holding an O_PATH descriptor of its path; None
        when the path is gone, leads into a hidden dir, or keeps no right."""
        try:
            fd = os.open(grant.path, os.O_PATH | os.O_CLOEXEC)
        except OSError:
            return None  # gone since it was listed, a dangling link, or not ours to open
        info = os.fstat(fd)
        access = grant.access & handled
        if not stat.S_ISDIR(info.st_mode):
            access &= _FILE_RIGHTS
        if (info.st_dev, info.st_ino) in self._forbidden:
            # A link (or bind mount) leading into the data dir or above it:
            # a rule on it would open the data dir.
            logger.info("not granting %s to executions: it leads to the data dir "
                        "(or another hidden dir)", grant.path)
            access = 0
        if not access:
            os.close(fd)
            return None
        return _PathBeneathAttr(allowed_access=access, parent_fd=fd)

    @property
    def available(self) -> bool:
        """Whether the kernel has Landlock (`apply` then confines)."""
        return self.abi > 0

    def descriptors(self) -> list[int]:
        """The descriptors `apply` reads (keep them open until then)."""
        held = [rule.parent_fd for rule in self._table]
        return held if self._static_ruleset is None else [self._static_ruleset, *held]

    def apply(self, scratch_dir: Path) -> bool:
        """Confine this process (and whatever it starts) for good: see the
        module docstring. True when Landlock was applied; False where the
        kernel lacks it. Raises ConfinementError when Landlock refused the
        policy, when `scratch_dir` is not beneath the scratch root, or when the
        capabilities could not be dropped."""
        try:
            prctl(_PR_SET_NO_NEW_PRIVS, 1)
            applied = self.available and self._restrict(scratch_dir)
        finally:
            drop_capabilities()
        return applied

    def _restrict(self, scratch_dir: Path) -> bool:
        scratch = os.open(scratch_dir, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            return self._restrict_with(scratch, scratch_dir)
        finally:
            os.close(scratch)

    def _restrict_with(self, scratch: int, scratch_dir: Path) -> bool:
        info = os.fstat(scratch)
        if (info.st_dev, info.st_ino) in self._forbidden:
            raise ConfinementError(f"the scratch dir {scratch_dir} is (or holds) the data dir")
        if self._static_ruleset is not None:
            if not _is_beneath(scratch, self._scratch_root_id):
                raise ConfinementError(
                    f"the scratch dir {scratch_dir} is not in the scratch root {self.scratch_root}")
            if _sys_restrict_self(_SYS_LANDLOCK_RESTRICT_SELF, self._static_ruleset, 0) < 0:
                return _unavailable("landlock_restrict_self")
        ruleset = int(_sys_create_ruleset(_SYS_LANDLOCK_CREATE_RULESET,
                                          ctypes.addressof(self._attr),
                                          _ruleset_attr_size(self.abi), 0))
        if ruleset < 0:
            return _unavailable("landlock_create_ruleset")
        try:
            base, size = ctypes.addressof(self._table), ctypes.sizeof(_PathBeneathAttr)
            for index in range(len(self._table)):
                _add_rule(ruleset, base + index * size)
            rule = _PathBeneathAttr(allowed_access=WRITE & self._attr.handled_access_fs,
                                    parent_fd=scratch)
            _add_rule(ruleset, ctypes.addressof(rule))
            if _sys_restrict_self(_SYS_LANDLOCK_RESTRICT_SELF, ruleset, 0) < 0:
                return _unavailable("landlock_restrict_self")
        finally:
            os.close(ruleset)
        return True

    def close(self) -> None:
        """Close the descriptors (the worker is done with executions)."""
        for fd in self.descriptors():
            with contextlib.suppress(OSError):
                os.close(fd)
        self._table = (_PathBeneathAttr * 0)()
        self._static_ruleset = None
        self.granted = []


def build_confinement(data_dir: Path, packages_dir: Path, hidden: Sequence[Path] = (),
                      scratch_root: Path | None = None) -> Confinement | None:
    """A worker's `Confinement`; None, after logging why, when it cannot be
    built (the data dir is /, the scratch root holds it, Landlock refused)."""
    try:
        return Confinement(data_dir, packages_dir, hidden, scratch_root)
    except (OSError, ValueError, ConfinementError) as exc:
        logger.error("executions cannot be confined: %s", exc)
        return None


def _is_beneath(fd: int, ancestor: tuple[int, int], most: int = 64) -> bool:
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


def _add_rule(ruleset: int, rule_address: int) -> None:
    if _sys_add_rule(_SYS_LANDLOCK_ADD_RULE, ruleset, _LANDLOCK_RULE_PATH_BENEATH,
                     rule_address, 0) < 0:
        raise ConfinementError(str(_errno_error("landlock_add_rule")))


def _unavailable(call: str) -> bool:
    """False, with a warning, when Landlock is missing or forbidden; raise otherwise."""
    error = _errno_error(call)
    if error.errno in (errno.ENOSYS, errno.EOPNOTSUPP, errno.EPERM):
        _warn_once(f"Landlock refused ({error}): this execution runs without "
                   "filesystem confinement")
        return False
    raise ConfinementError(str(error))


def _forbidden_objects(hidden: set[Path], allowed: list[Path]) -> set[tuple[int, int]]:
    """(device, inode) of the hidden dirs, their ancestors and their entries
    (but those holding an `allowed` path: the packages dir, the scratch root):
    a rule on any of them would open what is hidden."""
    paths: set[Path] = set()
    for path in hidden:
        paths.update((path, *path.parents))
        with contextlib.suppress(OSError):  # not made yet, or not a directory
            paths.update(entry for entry in path.iterdir()
                         if not any(_is_within(kept, entry) for kept in allowed))
    forbidden: set[tuple[int, int]] = set()
    for path in paths:
        try:
            info = os.stat(path, follow_symlinks=False)
        except OSError:
            continue
        forbidden.add((info.st_dev, info.st_ino))
    return forbidden


def drop_capabilities() -> None:
    """Empty this process's effective, permitted and inheritable capability sets
    (the ambient set follows). With no_new_privs set, nothing it executes gets
    any back, so a root uid keeps only its file permissions."""
    if _capset(ctypes.addressof(_CAP_HEADER), ctypes.addressof(_NO_CAPABILITIES)) != 0:
        raise ConfinementError(str(_errno_error("capset")))


_warned = False


def _warn_once(message: str) -> None:
    global _warned
    if not _warned:
        _warned = True
        logger.warning(message)
