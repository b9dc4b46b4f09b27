"""A confined execution's process, for real: forked children probe what they can reach.

Each probe runs in a child forked from the test process (as an execution's
process is forked from its worker), after `Confinement.apply()`, and reports
back through a pipe. The test process plays the worker: its /proc files and
its signals must be out of the child's reach.
"""

from __future__ import annotations

import contextlib
import errno
import importlib
import json
import os
import select
import signal
import stat
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from src.confinement.landlock import drop_capabilities, landlock_abi
from src.confinement.sandbox import Confinement
from src.foundation.hardening import prctl

ABI = landlock_abi()
needs_landlock = pytest.mark.skipif(ABI == 0, reason="this kernel has no Landlock")

PROBE_MODULE = "bifrost_sandbox_probe"
# Standard-library modules a test process is unlikely to have imported already.
UNIMPORTED_CANDIDATES = ("xml.dom.minidom", "decimal", "fractions", "wave", "colorsys",
                         "mailbox", "tomllib", "sunau", "netrc", "imghdr")


@dataclass
class Layout:
    data: Path
    packages: Path
    scratch: Path
    outside: Path
    confinement: Confinement


@pytest.fixture(params=["two layers", "one layer", "scratch in the data dir"])
def layout(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Layout]:
    """A data dir as `bifrost up` leaves it, a packages dir inside it with one
    module, an execution's scratch dir, and a directory beside them; the
    confinement built with the scratch root (two layers) or without (one);
    or the scratch root inside the (hidden) data dir."""
    if ABI == 0:
        pytest.skip("this kernel has no Landlock")
    data = tmp_path / "data"
    packages = data / "site-packages"
    packages.mkdir(parents=True)
    (data / "admin-token").write_text("the-admin-token\n")
    (data / "bifrost.db").write_bytes(b"SQLite format 3\x00")
    (data / "redis").mkdir()
    (data / "redis" / "appendonly.aof").write_text("*1\r\n")
    (packages / f"{PROBE_MODULE}.py").write_text("VALUE = 'from the packages dir'\n")
    scratch_parent = data if request.param == "scratch in the data dir" else tmp_path
    scratch = scratch_parent / "scratch" / "execution-1"
    scratch.mkdir(parents=True)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "readable.txt").write_text("anyone may read this")
    scratch_root = scratch.parent if request.param != "one layer" else None
    confinement = Confinement(data, packages, scratch_root=scratch_root)
    try:
        yield Layout(data, packages, scratch, outside, confinement)
    finally:
        confinement.close()


def in_confined_child(layout: Layout, probe: Callable[[], Any], timeout: float = 30,
                      prepare: Callable[[], Confinement] | None = None) -> dict:
    """Fork; in the child apply the confinement, run `probe` and report
    {"applied", "apply_us", "value"} or {"error", "errno"} as JSON. `apply_us`
    is the CPU time `apply` took (user and system): what it costs, which a
    busy machine does not inflate, unlike the time on the wall. `prepare`,
    run in the child first, builds the confinement there instead (as the
    execution template does after making its private /dev/shm)."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns
        report: dict[str, Any]
        try:
            os.close(read_fd)
            confinement = prepare() if prepare is not None else layout.confinement
            started = time.thread_time()
            applied = confinement.apply(layout.scratch)
            report = {"applied": applied, "apply_us": (time.thread_time() - started) * 1e6}
            try:
                report["value"] = probe()
            except BaseException as exc:
                report.update(error=type(exc).__name__, errno=getattr(exc, "errno", None),
                              message=str(exc))
            data = json.dumps(report, default=repr).encode()
        except BaseException as exc:
            data = json.dumps({"crashed": f"{type(exc).__name__}: {exc}"}).encode()
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(write_fd, view):]
        finally:
            os._exit(0)
    os.close(write_fd)
    chunks: list[bytes] = []
    deadline = time.monotonic() + timeout
    poller = select.poll()  # not select(): descriptors may be numbered past 1023
    poller.register(read_fd, select.POLLIN)
    try:
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                raise AssertionError("the confined child did not answer in time")
            if poller.poll(remaining * 1000):
                chunk = os.read(read_fd, 65536)
                if not chunk:
                    break
                chunks.append(chunk)
    finally:
        os.close(read_fd)
        os.waitpid(pid, 0)
    report = json.loads(b"".join(chunks))
    assert "crashed" not in report, report["crashed"]
    assert report["applied"] is True
    return report


def opened(path: str | Path, mode: str = "rb", data: bytes | str | None = None,
           size: int = 16) -> Any:
    """Open `path`; write `data`, or read `size` bytes; what was written or read."""
    with open(path, mode) as handle:
        return handle.write(data) if data is not None else handle.read(size)


def denied(report: dict) -> bool:
    return report.get("error") == "PermissionError"


def allowed(report: dict) -> Any:
    assert "error" not in report, report
    return report["value"]


def test_nothing_in_the_data_dir_can_be_read_listed_or_written(layout: Layout) -> None:
    data = layout.data
    assert denied(in_confined_child(layout, lambda: (data / "admin-token").read_text()))
    assert denied(in_confined_child(layout, lambda: (data / "bifrost.db").read_bytes()))
    assert denied(in_confined_child(layout, lambda: os.listdir(data)))
    assert denied(in_confined_child(layout, lambda: os.listdir(data / "redis")))
    assert denied(in_confined_child(layout, lambda: (data / "redis" / "appendonly.aof")
                                    .read_text()))
    assert denied(in_confined_child(layout, lambda: (data / "new-file").write_text("x")))
    assert not (data / "new-file").exists()


def test_the_packages_dir_can_be_imported_from_but_not_written(layout: Layout) -> None:
    def import_probe() -> str:
        sys.path.append(str(layout.packages))
        return str(importlib.import_module(PROBE_MODULE).VALUE)

    assert allowed(in_confined_child(layout, import_probe)) == "from the packages dir"
    assert allowed(in_confined_child(
        layout, lambda: (layout.packages / f"{PROBE_MODULE}.py").read_text())).startswith("VALUE")
    assert denied(in_confined_child(layout, lambda: (layout.packages / "evil.py").write_text("")))
    assert denied(in_confined_child(
        layout, lambda: (layout.packages / f"{PROBE_MODULE}.py").write_text("")))
    assert denied(in_confined_child(layout, lambda: os.remove(layout.packages /
                                                             f"{PROBE_MODULE}.py")))


def test_the_standard_library_and_programs_still_work(layout: Layout) -> None:
    module = next((name for name in UNIMPORTED_CANDIDATES if name not in sys.modules), None)
    if module is None:
        pytest.skip("every candidate module is imported already")

    def import_it() -> str:
        return importlib.import_module(module).__name__

    assert allowed(in_confined_child(layout, import_it)) == module

    def run_python() -> str:
        done = subprocess.run([sys.executable, "-c", "import json, decimal; print('ran')"],
                              capture_output=True, text=True, timeout=30)
        return done.stdout.strip() + done.stderr

    assert allowed(in_confined_child(layout, run_python)) == "ran"
    assert allowed(in_confined_child(
        layout, lambda: (layout.outside / "readable.txt").read_text())) == "anyone may read this"


def test_files_can_be_made_only_in_the_scratch_dir(layout: Layout) -> None:
    scratch = layout.scratch

    def work_in_scratch() -> list[str]:
        (scratch / "sub").mkdir()
        (scratch / "sub" / "a.txt").write_text("a")
        os.rename(scratch / "sub" / "a.txt", scratch / "b.txt")
        with open(scratch / "b.txt", "w") as handle:  # O_TRUNC
            handle.write("b")
        fd, name = tempfile.mkstemp(dir=scratch)
        os.close(fd)
        os.remove(name)
        (scratch / "sub").rmdir()
        return sorted(os.listdir(scratch))

    assert allowed(in_confined_child(layout, work_in_scratch)) == ["b.txt"]
    assert denied(in_confined_child(layout, lambda: (layout.outside / "new.txt").write_text("x")))
    assert denied(in_confined_child(layout, lambda: (layout.outside / "readable.txt")
                                    .write_text("changed")))
    assert denied(in_confined_child(layout, lambda: os.mkdir(layout.outside / "dir")))
    assert denied(in_confined_child(layout, lambda: opened("/tmp/bifrost-sandbox-probe", "w",
                                                           "x")))
    assert (layout.outside / "readable.txt").read_text() == "anyone may read this"
    assert allowed(in_confined_child(layout, lambda: opened(os.devnull, "w", "gone"))) == 4
    assert allowed(in_confined_child(layout, lambda: len(opened("/dev/urandom", size=8)))) == 8

    # The machine's /dev/shm is the platform's (its semaphores live there).
    assert denied(in_confined_child(layout, lambda: (
        Path("/dev/shm") / f"bifrost-sandbox-{os.getpid()}").write_text("shared")))


def test_the_platforms_semaphores_cannot_be_opened(layout: Layout) -> None:
    """A pool's multiprocessing queues lock with POSIX semaphores in /dev/shm:
    an execution that could open one could take the lock and stop the pool."""
    import multiprocessing

    lock = multiprocessing.get_context("forkserver").Lock()
    name = lock._semlock.name  # type: ignore[attr-defined]  # e.g. /mp-x1y2z3
    path = Path("/dev/shm") / f"sem.{name.lstrip('/')}"
    assert path.exists(), f"no semaphore file at {path}"
    assert denied(in_confined_child(layout, lambda: os.open(path, os.O_RDWR)))


@pytest.mark.skipif(os.geteuid() != 0, reason="a private /dev/shm needs root (CAP_SYS_ADMIN)")
def test_a_private_dev_shm_is_the_executions_own_and_bounded(layout: Layout) -> None:
    """What the execution template gives its executions (`src/confinement/mounts.py`):
    an empty tmpfs of its own size, where the platform's files are not."""
    from src.confinement.mounts import mount_private_shm

    platforms = Path("/dev/shm") / f"bifrost-platform-{os.getpid()}"
    platforms.write_text("the platform's")
    scratch_root = layout.confinement.scratch_root

    def prepare() -> Confinement:
        assert mount_private_shm(1)  # 1 MB
        return Confinement(layout.data, layout.packages, scratch_root=scratch_root, shm=True)

    def use_dev_shm() -> dict[str, Any]:
        seen = os.listdir("/dev/shm")
        Path("/dev/shm/mine").write_text("x")
        try:
            Path("/dev/shm/big").write_bytes(b"x" * 2 * 1024 * 1024)
            big: int | str = "written"
        except OSError as exc:
            big = exc.errno or 0
        return {"seen": seen, "mine": Path("/dev/shm/mine").read_text(), "big": big}

    try:
        report = in_confined_child(layout, use_dev_shm, prepare=prepare)
        assert report["value"] == {"seen": [], "mine": "x", "big": errno.ENOSPC}, report
        assert not Path("/dev/shm/mine").exists() and not Path("/dev/shm/big").exists()
        assert platforms.read_text() == "the platform's"
    finally:
        platforms.unlink()


def test_the_disks_cannot_be_opened(layout: Layout) -> None:
    disks = [entry.path for entry in os.scandir("/dev")
             if stat.S_ISBLK(entry.stat(follow_symlinks=False).st_mode)]
    if not disks:
        pytest.skip("no block device in /dev here")
    assert denied(in_confined_child(layout, lambda: opened(disks[0], size=512)))


def test_the_workers_proc_files_are_out_of_reach(layout: Layout) -> None:
    worker = os.getpid()  # the test process stands for the worker
    with open(layout.data / "admin-token") as held:
        assert denied(in_confined_child(layout, lambda: Path(f"/proc/{worker}/environ")
                                        .read_bytes()))
        assert denied(in_confined_child(layout, lambda: opened(f"/proc/{worker}/mem")))
        assert denied(in_confined_child(layout, lambda: opened(f"/proc/{worker}/fd/"
                                                               f"{held.fileno()}", "r")))
        assert denied(in_confined_child(layout, lambda: os.listdir(f"/proc/{worker}/cwd")))
    # Its own are its own.
    assert allowed(in_confined_child(
        layout, lambda: Path("/proc/self/status").read_text().startswith("Name:")))


def test_another_executions_process_is_out_of_reach(layout: Layout) -> None:
    """Two executions of one worker: each is confined on its own, neither can
    inspect or signal the other."""
    go_read, go_write = os.pipe()
    first = os.fork()
    if first == 0:
        try:
            os.close(go_write)
            layout.confinement.apply(layout.scratch)
            os.read(go_read, 1)  # until the test is done with it
        finally:
            os._exit(0)
    os.close(go_read)
    try:
        assert denied(in_confined_child(layout, lambda: Path(f"/proc/{first}/environ")
                                        .read_bytes()))
        if ABI >= 6:
            assert denied(in_confined_child(layout, lambda: os.kill(first, signal.SIGKILL)))
    finally:
        os.close(go_write)
        os.waitpid(first, 0)


@pytest.mark.skipif(ABI < 6, reason="signal scoping needs Landlock ABI 6")
def test_signals_reach_only_the_executions_own_processes(layout: Layout) -> None:
    worker = os.getpid()
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        assert denied(in_confined_child(layout, lambda: os.kill(worker, 0)))
        assert denied(in_confined_child(layout, lambda: os.kill(bystander.pid, signal.SIGTERM)))
        assert bystander.poll() is None

        def signal_own_child() -> int:
            own = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
            own.send_signal(signal.SIGTERM)
            return own.wait(30)

        assert allowed(in_confined_child(layout, signal_own_child)) == -signal.SIGTERM
    finally:
        bystander.kill()
        bystander.wait()


def test_capabilities_are_gone_for_good(layout: Layout) -> None:
    def effective() -> list[str]:
        mine = _capabilities(Path("/proc/self/status").read_text())
        done = subprocess.run(["cat", "/proc/self/status"], capture_output=True, text=True,
                              timeout=30)
        return [mine, _capabilities(done.stdout)]

    assert allowed(in_confined_child(layout, effective)) == ["0" * 16, "0" * 16]


def _capabilities(status: str) -> str:
    return next(line.split()[1] for line in status.splitlines() if line.startswith("CapEff:"))


def _apply_in_child(confinement: Confinement, scratch: Path) -> str:
    """What `apply(scratch)` did in a forked child: "applied", or the exception's name."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(read_fd)
            try:
                confinement.apply(scratch)
                os.write(write_fd, b"applied")
            except Exception as exc:
                os.write(write_fd, type(exc).__name__.encode())
        finally:
            os._exit(0)
    os.close(write_fd)
    try:
        return os.read(read_fd, 100).decode()
    finally:
        os.close(read_fd)
        os.waitpid(pid, 0)


def test_a_scratch_dir_that_holds_the_data_dir_is_refused(layout: Layout) -> None:
    assert _apply_in_child(layout.confinement, layout.data.parent) == "ConfinementError"


@needs_landlock
def test_a_scratch_dir_outside_the_scratch_root_is_refused(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (tmp_path / "root").mkdir()
    (tmp_path / "elsewhere").mkdir()
    confinement = Confinement(data, data / "site-packages", scratch_root=tmp_path / "root")
    try:
        assert _apply_in_child(confinement, tmp_path / "elsewhere") == "ConfinementError"
    finally:
        confinement.close()


def test_a_hardened_process_is_out_of_reach_without_landlock() -> None:
    """`harden_process()` alone (dumpable off) keeps a capability-less process
    of the same uid out of /proc/<pid>/environ: the second line of defence
    where Landlock is missing."""
    script = ("import sys, time; from src.foundation.hardening import harden_process\n"
              "if sys.argv[1] == 'hardened': harden_process()\n"
              "print('ready', flush=True); time.sleep(120)\n")

    def capability_less() -> None:  # as the targets of an execution would be: no privileges
        prctl(38, 1)  # PR_SET_NO_NEW_PRIVS: the exec gives no capabilities back
        drop_capabilities()

    env = {**os.environ, "BIFROST_SANDBOX_SECRET": "s3cret"}
    api_dir = Path(__file__).resolve().parents[3]
    targets = {
        kind: subprocess.Popen([sys.executable, "-c", script, kind], cwd=api_dir, env=env,
                               stdout=subprocess.PIPE, preexec_fn=capability_less)
        for kind in ("hardened", "plain")
    }
    try:
        for target in targets.values():
            assert target.stdout is not None and target.stdout.readline() == b"ready\n"
        read_fd, write_fd = os.pipe()
        pid = os.fork()
        if pid == 0:
            try:
                os.close(read_fd)
                capability_less()
                answers = {}
                for kind, target in targets.items():
                    try:
                        environ = Path(f"/proc/{target.pid}/environ").read_bytes()
                        answers[kind] = "s3cret" if b"s3cret" in environ else "read"
                    except PermissionError:
                        answers[kind] = "denied"
                os.write(write_fd, json.dumps(answers).encode())
            finally:
                os._exit(0)
        os.close(write_fd)
        try:
            answers = json.loads(os.read(read_fd, 1000))
        finally:
            os.close(read_fd)
            os.waitpid(pid, 0)
        assert answers == {"hardened": "denied", "plain": "s3cret"}
    finally:
        for target in targets.values():
            target.kill()
            target.wait()


def test_apply_costs_little(layout: Layout) -> None:
    costs = [in_confined_child(layout, lambda: None)["apply_us"] for _ in range(25)]
    median = statistics.median(costs)
    print(f"\napply(): median {median:.0f} us, min {min(costs):.0f} us, max {max(costs):.0f} us "
          "of CPU "
          f"for {len(layout.confinement.granted)} rules (Landlock ABI {ABI})")
    assert median < 20_000
