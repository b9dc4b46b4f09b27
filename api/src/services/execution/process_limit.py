"""A bound on the tasks (processes and threads) of each execution.

Root is exempt from `RLIMIT_NPROC`, so where the platform runs as root the
bound is a pids cgroup: the execution template makes one, named after its
pid, beneath its own pids cgroup, sets `pids.max` to `max_pids` plus one
(itself) and moves itself in once, so that every execution it forks (and
all they start) counts against it; a fork beyond that fails with EAGAIN in
the execution, and nothing outside the cgroup notices. Executions run one
at a time and the last one's processes are killed before the next is
forked, so the bound is each execution's own (the next one's fork waits
while what the last one left is reaped). Moving the template once, not each
execution, keeps the kernel's cgroup migration (milliseconds, at times tens)
off the path of every execution.

The pids hierarchy is cgroup v1's `pids` controller, or cgroup v2 where the
template's cgroup hands `pids` on to its children (`cgroup.subtree_control`).
Where neither is writable, a platform that does not run as root bounds each
execution with `RLIMIT_NPROC` (which counts every task of the uid, so the
limit is the uid's tasks when the template starts plus `max_pids`), and one
that runs as root logs once that executions have no bound.

The template leaves its cgroup and removes it when it ends; a template that
was killed leaves it to the next one to start (a cgroup goes only once empty).
"""

from __future__ import annotations

import contextlib
import logging
import os
import resource
import signal
import time
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

CGROUP_PREFIX = "bifrost-executions-"


@dataclass(frozen=True)
class TaskBound:
    """The template's pids `cgroup` (it is in it already), or the `nproc` an
    execution's process sets as its RLIMIT_NPROC (neither: unbounded)."""

    cgroup: Path | None = None
    nproc: int = 0

    def enter(self) -> None:
        """In the execution's process, before user code runs."""
        if self.nproc > 0:
            resource.setrlimit(resource.RLIMIT_NPROC, (self.nproc, self.nproc))

    def remove(self) -> None:
        """In the template, as it ends: back to the parent cgroup, then every
        process an execution left in the template's (one that escaped to
        init included) is killed, and the cgroup goes."""
        if self.cgroup is not None:
            with contextlib.suppress(OSError):
                (self.cgroup.parent / "cgroup.procs").write_text(f"{os.getpid()}\n")
            remove_cgroup(self.cgroup)


def bound_tasks(max_pids: int) -> TaskBound:
    """The bound on each execution of this template (`max_pids` 0: none)."""
    if max_pids <= 0:
        return TaskBound()
    parent = pids_cgroup()
    if parent is not None:
        try:
            own = make_cgroup(parent, max_pids + 1)  # and the template itself
            (own / "cgroup.procs").write_text(f"{os.getpid()}\n")
            return TaskBound(cgroup=own)
        except OSError as exc:
            logger.warning("executions' tasks cannot be bounded with a pids cgroup "
                           "beneath %s: %s", parent, exc)
    if os.geteuid() != 0:
        return TaskBound(nproc=tasks_of_uid(os.getuid()) + max_pids)
    logger.warning("executions run with no bound on their processes "
                   "(BIFROST_EXECUTION_MAX_PIDS): root is exempt from RLIMIT_NPROC and "
                   "no pids cgroup is writable")
    return TaskBound()


def make_cgroup(parent: Path, pids_max: int) -> Path:
    """This template's executions' pids cgroup beneath `parent`, bounded."""
    remove_cgroups_of_dead_templates(parent)
    own = parent / f"{CGROUP_PREFIX}{os.getpid()}"
    own.mkdir(exist_ok=True)
    (own / "pids.max").write_text(f"{pids_max}\n")
    return own


def remove_cgroups_of_dead_templates(parent: Path) -> None:
    """The cgroups of templates that were killed, with whatever their
    executions left running in them."""
    with contextlib.suppress(OSError):
        for entry in parent.iterdir():
            pid = entry.name.removeprefix(CGROUP_PREFIX)
            if entry.name.startswith(CGROUP_PREFIX) and pid.isdigit() \
                    and not Path(f"/proc/{pid}").exists():
                remove_cgroup(entry)


def remove_cgroup(cgroup: Path, wait: float = 1.0) -> None:
    """Kill every process in `cgroup`, then remove it once they are gone
    (left for the next template when they take longer than `wait`)."""
    deadline = time.monotonic() + wait
    while cgroup.exists():
        try:
            members = [int(pid) for pid in (cgroup / "cgroup.procs").read_text().split()]
        except OSError:
            members = []
        for pid in members:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        try:
            cgroup.rmdir()
            return
        except OSError:
            if time.monotonic() > deadline:
                return
            time.sleep(0.01)


def pids_cgroup() -> Path | None:
    """The directory of this process's cgroup in a pids hierarchy it may
    make children in, or None."""
    own = _own_cgroups()
    for mount_root, mount_point, fstype, options in _cgroup_mounts():
        if fstype == "cgroup" and "pids" in options and "pids" in own:
            directory = _directory(mount_point, mount_root, own["pids"])
        elif fstype == "cgroup2" and "" in own:
            directory = _directory(mount_point, mount_root, own[""])
            try:
                delegated = (directory / "cgroup.subtree_control").read_text().split()
            except OSError:
                continue
            if "pids" not in delegated:
                continue
        else:
            continue
        if os.access(directory, os.W_OK):
            return directory
    return None


def _own_cgroups() -> dict[str, str]:
    """Controller (`""` for cgroup v2) -> this process's cgroup path."""
    found: dict[str, str] = {}
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            _, controllers, path = line.split(":", 2)
            for controller in controllers.split(",") if controllers else [""]:
                found[controller] = path
    return found


def _cgroup_mounts() -> list[tuple[str, Path, str, set[str]]]:
    """(root, mount point, fs type, super options) of each cgroup mount."""
    mounts: list[tuple[str, Path, str, set[str]]] = []
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/mountinfo").read_text().splitlines():
            before, _, after = line.partition(" - ")
            fields, tail = before.split(), after.split()
            if len(fields) >= 5 and len(tail) >= 3 and tail[0] in ("cgroup", "cgroup2"):
                mounts.append((_unescape(fields[3]), Path(_unescape(fields[4])), tail[0],
                               set(tail[2].split(","))))
    return mounts


def _directory(mount_point: Path, mount_root: str, path: str) -> Path:
    """Where the cgroup `path` appears under a mount of the hierarchy's `mount_root`."""
    if mount_root != "/" and (path == mount_root or path.startswith(mount_root + "/")):
        path = path[len(mount_root):]
    return mount_point / path.lstrip("/")


def _unescape(field: str) -> str:
    """mountinfo escapes space, tab, newline and backslash as octal."""
    return (field.replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n")
            .replace("\\134", "\\"))


def tasks_of_uid(uid: int) -> int:
    """How many tasks (threads included) the real uid `uid` runs now."""
    count = 0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, KeyError, ValueError):  # gone, or unreadable
            fields = dict(line.split(":", 1) for line in
                          Path(entry.path, "status").read_text().splitlines() if ":" in line)
            if int(fields["Uid"].split()[0]) == uid:
                count += int(fields["Threads"])
    return count
