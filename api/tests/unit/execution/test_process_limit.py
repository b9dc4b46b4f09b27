"""Where a pids cgroup is found, and what an execution takes as its bound."""

from __future__ import annotations

import os
import resource
from pathlib import Path

import pytest

from src.services.execution import process_limit
from src.services.execution.process_limit import CGROUP_PREFIX, TaskBound, bound_tasks


def test_a_cgroup_path_maps_under_its_mount() -> None:
    # cgroup v1 seen from the host, and from a container whose mount's root is its own cgroup
    assert process_limit._directory(Path("/sys/fs/cgroup/pids"), "/", "/a/b") == \
        Path("/sys/fs/cgroup/pids/a/b")
    assert process_limit._directory(Path("/sys/fs/cgroup/pids"), "/docker/c1", "/docker/c1") == \
        Path("/sys/fs/cgroup/pids")
    assert process_limit._directory(Path("/sys/fs/cgroup"), "/docker/c1", "/docker/c1/w") == \
        Path("/sys/fs/cgroup/w")
    assert process_limit._unescape(r"/with\040space") == "/with space"


def test_no_bound_asked_is_no_bound() -> None:
    assert bound_tasks(0) == TaskBound()


def test_where_no_cgroup_is_writable_a_non_root_uid_gets_rlimit_nproc(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(process_limit, "pids_cgroup", lambda: None)
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    monkeypatch.setattr(process_limit, "tasks_of_uid", lambda uid: 40)
    assert bound_tasks(16) == TaskBound(nproc=56)


def test_as_root_with_no_cgroup_there_is_no_bound_and_it_is_said(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(process_limit, "pids_cgroup", lambda: None)
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    assert bound_tasks(16) == TaskBound()
    assert "no bound on their processes" in caplog.text


def test_the_cgroup_is_made_bounded_and_dead_templates_ones_go(tmp_path: Path) -> None:
    dead = tmp_path / f"{CGROUP_PREFIX}999999999"  # no such pid
    dead.mkdir()
    alive = tmp_path / f"{CGROUP_PREFIX}1"  # pid 1 is always there
    alive.mkdir()
    own = process_limit.make_cgroup(tmp_path, 17)
    assert own == tmp_path / f"{CGROUP_PREFIX}{os.getpid()}"
    assert (own / "pids.max").read_text() == "17\n"
    assert not dead.exists() and alive.exists()


def test_rlimit_nproc_is_taken_in_the_execution(monkeypatch: pytest.MonkeyPatch) -> None:
    taken: list[tuple[int, tuple[int, int]]] = []
    monkeypatch.setattr(resource, "setrlimit", lambda which, limits: taken.append((which, limits)))
    TaskBound(nproc=99).enter()
    assert taken == [(resource.RLIMIT_NPROC, (99, 99))]
