"""The pool's multiprocessing directory: closed before its forkserver listens
there, and removed once its pool is dead (src/services/execution/pool_ipc.py)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

FORKSERVER_PROBE = r"""
import json, multiprocessing, os, socket, sys
from multiprocessing import forkserver, util
from src.services.execution.pool_ipc import lock_ipc_directory

lock_ipc_directory()
directory = util.get_temp_dir()
mode_before = os.stat(directory).st_mode & 0o777
process = multiprocessing.get_context("forkserver").Process(target=print)
process.start()
process.join()
address = forkserver._forkserver._forkserver_address
# A process without capabilities, as an execution's sandbox leaves it.
child = os.fork()
if child == 0:
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    header = (ctypes.c_uint32 * 2)(0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3
    data = (ctypes.c_uint32 * 6)()
    assert libc.capset(header, data) == 0, ctypes.get_errno()
    probe = socket.socket(socket.AF_UNIX)
    try:
        probe.connect(address)
        os._exit(3)
    except PermissionError:
        os._exit(0)
    except OSError:
        os._exit(4)
_, status = os.waitpid(child, 0)
print(json.dumps({"mode": mode_before, "inside": os.path.dirname(address) == directory,
                  "connect": os.waitstatus_to_exitcode(status)}))
"""


@pytest.mark.skipif(os.geteuid() != 0,
                    reason="the IPC directory is closed only when the pool runs as root")
def test_the_forkserver_socket_is_never_open_to_a_process_without_capabilities() -> None:
    """The pool closes its multiprocessing directory before the forkserver binds
    its socket there: there is no moment when an execution of this or another
    pool (which scans /proc/net/unix) can connect and have code run."""
    import json
    import subprocess
    import sys

    api_dir = Path(__file__).resolve().parents[3]
    result = subprocess.run([sys.executable, "-c", FORKSERVER_PROBE], cwd=api_dir,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report == {"mode": 0, "inside": True, "connect": 0}, report


def test_a_pool_removes_the_ipc_directories_of_dead_pools_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import socket
    import tempfile

    from src.services.execution.pool_ipc import remove_dead_ipc_directories

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))

    def directory(name: str, socket_name: str, keep_bound: bool) -> socket.socket | None:
        path = tmp_path / name
        path.mkdir()
        server = socket.socket(socket.AF_UNIX)
        server.bind(str(path / socket_name))
        server.listen()
        if keep_bound:
            return server
        server.close()  # the file stays; nothing listens on it any more
        return None

    directory("pymp-dead", "listener-aaaa", keep_bound=False)
    live = directory("pymp-live", "listener-bbbb", keep_bound=True)
    manager = directory("pymp-other", "manager-socket", keep_bound=False)  # not a forkserver's
    (tmp_path / "pymp-empty").mkdir()
    (tmp_path / "unrelated").mkdir()
    try:
        # Just made: a pool may be starting its forkserver there right now.
        assert remove_dead_ipc_directories() == 0
        assert remove_dead_ipc_directories(quiet_seconds=0) == 1
        assert sorted(p.name for p in tmp_path.iterdir()) == [
            "pymp-empty", "pymp-live", "pymp-other", "unrelated"]
    finally:
        for server in (live, manager):
            if server is not None:
                server.close()
