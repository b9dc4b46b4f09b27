"""The executions' pids cgroup for real (root, a writable pids hierarchy):
what a template leaves in it is killed before it goes."""

from __future__ import annotations

import os
import subprocess

import pytest

from src.services.execution.process_limit import (
    CGROUP_PREFIX,
    make_cgroup,
    pids_cgroup,
    remove_cgroups_of_dead_templates,
)
from tests.support.waiting import wait_for

PARENT = pids_cgroup()
pytestmark = pytest.mark.skipif(PARENT is None or os.geteuid() != 0,
                                reason="no writable pids cgroup here (root and cgroup v1 "
                                       "pids, or a delegated v2 subtree, are needed)")


def test_a_dead_templates_cgroup_goes_with_what_its_executions_left_running() -> None:
    assert PARENT is not None
    # A "template" that is gone, and a process one of its executions left
    # running (escaped to init: no template will reap it).
    leftover = subprocess.Popen(["sleep", "300"])
    ghost_pid = 2 ** 22 + 1  # above pid_max's default: no such process
    cgroup = PARENT / f"{CGROUP_PREFIX}{ghost_pid}"
    cgroup.mkdir()
    try:
        (cgroup / "cgroup.procs").write_text(f"{leftover.pid}\n")
        remove_cgroups_of_dead_templates(PARENT)
        assert leftover.wait(10) == -9
        wait_for(lambda: not cgroup.exists(), 10, what="the dead template's cgroup to go")
    finally:
        if leftover.poll() is None:
            leftover.kill()
        if cgroup.exists():
            cgroup.rmdir()


def test_a_live_templates_cgroup_is_left_alone() -> None:
    assert PARENT is not None
    own = make_cgroup(PARENT, 10)  # named after this (live) process
    try:
        remove_cgroups_of_dead_templates(PARENT)
        assert own.exists() and (own / "pids.max").read_text().strip() == "10"
    finally:
        own.rmdir()
