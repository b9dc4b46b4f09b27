"""The uid executions run as.

Where the platform runs as root, an execution's process drops to
`BIFROST_EXECUTION_UID` (65534, `nobody`, by default; 0 keeps root) before
user code runs: that uid's primary group (the password database's, else the
same number) and no supplementary group. Root is exempt from RLIMIT_NPROC,
owns the platform's files and, even without capabilities, reads every file
only root may read (a key in root's home, /etc/shadow); the execution uid
reads what any user may, and writes only in its scratch dir (which the
template gives it) and its /dev/shm. Switching away from root also makes the
process non-dumpable, so other executions (the same uid) cannot read its
/proc files.

The template gives the uid a way to the interpreter, the packages dir and
its scratch dir first (`mounts.expose_to`). Where that is refused,
executions keep running as root, and the template says so.
"""

from __future__ import annotations

import os
import pwd
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ExecutionUid:
    uid: int
    gid: int

    def give(self, *directories: Path) -> None:
        """Make the uid the owner of `directories` (its scratch dirs)."""
        for directory in directories:
            os.chown(directory, self.uid, self.gid)

    def give_tree(self, *directories: Path) -> None:
        """Make the uid the owner of everything in `directories` (a cache it
        fills), walking only a tree whose top is not the uid's already."""
        for directory in directories:
            if directory.stat().st_uid != self.uid:
                chown_tree(directory, self.uid, self.gid)

    def become(self) -> None:
        """In the execution's process: the uid and group, for good."""
        os.setgroups([])
        os.setresgid(self.gid, self.gid, self.gid)
        os.setresuid(self.uid, self.uid, self.uid)


def chown_tree(directory: Path, uid: int, gid: int) -> None:
    """`directory` and everything beneath it to `uid`/`gid` (links themselves)."""
    os.chown(directory, uid, gid, follow_symlinks=False)
    for root, dirs, files in os.walk(directory):
        for name in (*dirs, *files):
            os.chown(os.path.join(root, name), uid, gid, follow_symlinks=False)


def execution_uid(uid: int) -> ExecutionUid | None:
    """The uid executions drop to, or None when they keep the platform's
    (not root, or `uid` 0)."""
    if os.geteuid() != 0 or uid == 0:
        return None
    try:
        gid = pwd.getpwuid(uid).pw_gid
    except KeyError:
        gid = uid
    return ExecutionUid(uid, gid)


def paths_an_execution_needs(packages_dir: Path, scratch_root: Path,
                             search_path: Iterable[str] = ()) -> list[Path]:
    """The interpreter (its prefixes, so that a subprocess can start it
    again), every existing `search_path` entry, the packages dir and the
    scratch root."""
    wanted = [Path(sys.executable).parent, Path(sys.prefix), Path(sys.base_prefix),
              packages_dir, scratch_root, *(Path(entry) for entry in search_path if entry)]
    return [path for path in dict.fromkeys(wanted) if path.exists()]
