"""Confinement of an execution's process, before user code runs in it.

What it guarantees, once `Confinement.apply()` returned True in a process
(and for every process that one starts, which inherit it and cannot undo it):
- nothing beneath the data dir (nor beneath the other `hidden` dirs a worker
  names) can be read, listed, written or executed: the admin token, the
  SQLite store and its journals, the private Redis's files; except the
  packages dir, which is readable and importable but not writable; everywhere
  else is readable and executable, as the platform's uid allows;
- files can be created, written, truncated and removed only beneath the
  execution's scratch dir, and in /dev/shm when the worker's `Confinement`
  says it is the executions' own (`src/confinement/mounts.py`); of the other devices only null,
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
- the network stays open: user code can reach Redis (it holds no password
  for it: its workspace modules are read for it), the API (without the token)
  and anything else;
- files outside the data dir stay readable as the uid allows (the execution
  uid's where the platform runs as root, see `uid.py`): secrets kept
  elsewhere (an env file for systemd, ~/.docker, ~/.ssh) need to be in a
  `hidden` dir, or unreadable by that uid; so do other executions' scratch
  dirs, unless the scratch roots are in a hidden dir (the data dir);
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
import logging
import os
import stat
from collections.abc import Sequence
from pathlib import Path

from src.confinement.landlock import (
    _FILE_RIGHTS,
    _PR_SET_NO_NEW_PRIVS,
    _SYS_LANDLOCK_CREATE_RULESET,
    _SYS_LANDLOCK_RESTRICT_SELF,
    ACCESS_FS_READ_DIR,
    READ,
    WRITE,
    ConfinementError,
    _PathBeneathAttr,
    _ruleset_attr_size,
    _RulesetAttr,
    _sys_create_ruleset,
    _sys_restrict_self,
    add_rule,
    drop_capabilities,
    errno_error,
    handled_fs_rights,
    handled_scopes,
    landlock_abi,
    unavailable,
    warn_once,
)
from src.confinement.sandbox_grants import (
    SAFE_DEVICES,
    Grant,
    device_grants,
    forbidden_objects,
    hidden_paths,
    is_beneath,
    plan_grants,
)
from src.foundation.hardening import prctl

logger = logging.getLogger(__name__)

__all__ = ["ACCESS_FS_READ_DIR", "SAFE_DEVICES", "Confinement", "ConfinementError",
           "build_confinement", "plan_grants"]


class Confinement:
    """A worker's policy for its executions, built once; `apply` per execution.

    Construction lists the siblings of the hidden dirs' ancestors and opens
    the granted paths, so that `apply()` in a forked child only issues the
    Landlock syscalls: call it there, before any thread starts and before user
    code runs, and keep `descriptors()` open until then.

    With `scratch_root` (the directory every scratch dir of this worker is made
    in) the policy is two layers. The first, built here once into a ruleset
    (the O_PATH descriptors are closed again), handles every right: reading as
    above, writing beneath the scratch root, the devices and (when it is the
    executions' own) /dev/shm. The second, built in the child, handles only
    the rights that change files and narrows writing to the execution's own
    scratch dir. The worker then holds about a dozen descriptors whatever the
    number of siblings, and `apply` adds a dozen rules. Without `scratch_root`,
    `apply` builds the one layer from an O_PATH descriptor held for every
    granted path.
    """

    def __init__(self, data_dir: Path, packages_dir: Path, hidden: Sequence[Path] = (),
                 scratch_root: Path | None = None, *, shm: bool = False,
                 writable: Sequence[Path] = ()) -> None:
        """`shm`: /dev/shm is the executions' own, so they may write there.
        `writable` (one layer only, without `scratch_root`): directories
        writable besides the scratch dir `apply` is given (an installer's
        target and caches)."""
        if writable and scratch_root is not None:
            raise ValueError("writable directories are for a confinement of one layer")
        self.shm = shm
        self.data_dir = Path(os.path.realpath(data_dir))
        self.packages_dir = Path(os.path.realpath(packages_dir))
        self.hidden = sorted(hidden_paths(self.data_dir, hidden))
        self.scratch_root = Path(os.path.realpath(scratch_root)) if scratch_root else None
        self.abi = landlock_abi()
        self.granted: list[Grant] = []
        allowed = [self.packages_dir, *([self.scratch_root] if self.scratch_root else [])]
        self._forbidden = forbidden_objects(set(self.hidden), allowed)
        everything = handled_fs_rights(self.abi)
        self._static_attr = _RulesetAttr(handled_access_fs=everything, handled_access_net=0,
                                         scoped=handled_scopes(self.abi))
        self._static_ruleset: int | None = None
        self._scratch_root_id = (0, 0)  # (device, inode), set with the static layer
        # The layer `apply` builds: every right, or (two layers) the writing ones.
        self._attr = self._static_attr
        held: list[_PathBeneathAttr] = []
        if not self.available:
            warn_once("Landlock is not available in this kernel (or a seccomp policy hides "
                       "it): executions run without filesystem confinement")
        elif self.scratch_root is None:
            held = self._open_rules([
                *plan_grants(self.data_dir, self.packages_dir, self.hidden, shm=shm),
                *(Grant(Path(os.path.realpath(path)), WRITE) for path in writable)])
        else:
            self._static_ruleset = self._build_static_layer()
            writing = everything & ~READ
            self._attr = _RulesetAttr(handled_access_fs=writing, handled_access_net=0, scoped=0)
            held = self._open_rules(device_grants(shm), granted=False)
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
            raise errno_error("landlock_create_ruleset")
        try:
            grants = plan_grants(self.data_dir, self.packages_dir, self.hidden, shm=self.shm)
            for grant in [*grants, Grant(self.scratch_root, WRITE)]:
                rule = self._open_rule(grant, self._static_attr.handled_access_fs)
                if rule is None:
                    continue
                try:
                    add_rule(ruleset, ctypes.addressof(rule))
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
            if not is_beneath(scratch, self._scratch_root_id):
                raise ConfinementError(
                    f"the scratch dir {scratch_dir} is not in the scratch root {self.scratch_root}")
            if _sys_restrict_self(_SYS_LANDLOCK_RESTRICT_SELF, self._static_ruleset, 0) < 0:
                return unavailable("landlock_restrict_self")
        ruleset = int(_sys_create_ruleset(_SYS_LANDLOCK_CREATE_RULESET,
                                          ctypes.addressof(self._attr),
                                          _ruleset_attr_size(self.abi), 0))
        if ruleset < 0:
            return unavailable("landlock_create_ruleset")
        try:
            base, size = ctypes.addressof(self._table), ctypes.sizeof(_PathBeneathAttr)
            for index in range(len(self._table)):
                add_rule(ruleset, base + index * size)
            rule = _PathBeneathAttr(allowed_access=WRITE & self._attr.handled_access_fs,
                                    parent_fd=scratch)
            add_rule(ruleset, ctypes.addressof(rule))
            if _sys_restrict_self(_SYS_LANDLOCK_RESTRICT_SELF, ruleset, 0) < 0:
                return unavailable("landlock_restrict_self")
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
                      scratch_root: Path | None = None, *,
                      shm: bool = False) -> Confinement | None:
    """A worker's `Confinement`; None, after logging why, when it cannot be
    built (the data dir is /, the scratch root holds it, Landlock refused)."""
    try:
        return Confinement(data_dir, packages_dir, hidden, scratch_root, shm=shm)
    except (OSError, ValueError, ConfinementError) as exc:
        logger.error("executions cannot be confined: %s", exc)
        return None
