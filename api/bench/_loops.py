"""Worker-loop comparison for bench/load.py: the long-lived loop body against
fork per execution, in real worker-like processes, side by side in one run.

`compare()` starts WORKERS processes at once with multiprocessing "spawn".
Each one starts up as a worker process does (`worker_main`, then
`run_worker_process` up to its loop): it reads workspace modules from Redis
only, scrubs its environment, puts the packages dir on sys.path, installs the
requirements from the cache, installs the virtual import hook, forgets the
store, and starts its execution template (`simple_worker._template`, with
the worker's Limits; the template builds the Landlock confinement). Then
each process runs the same items, `workflows.echo.main(x=i)` loaded through
the hook from the stack's Redis, through two loop bodies:

- LONG_LIVED, the baseline: the previous worker loop body, re-run here as it
  was (`result = execute_item(item, worker_id, install)`,
  `json.dumps(result["result"])`, `result_queue.put(result)`), item
  `{"id", "module", "function", "parameters": dict}`;
- FORK, the current loop body: read the workspace files ahead, then
  `result_queue.put(template.run(order, ...))`, order `{"id", "module",
  "function", "parameters_json": "<json text>"}` (the template forks a
  confined child per execution; its outcome's JSON bytes come back).

`result_queue` is a multiprocessing queue this benchmark drains, as the pool
drains the real one; the items are built before the clock starts (the
queue's `get` is not part of either body). Every process runs WARMUP items of
each body untimed, then the timed blocks: BLOCK items each (after one untimed
item of the same body: a long-lived worker never forks, so the first writes
after a fork, to pages the fork left write-protected, are not charged to
it), in the order
A B B A A B B A ... (A = LONG_LIVED, B = FORK), every process in the same
block at the same time (a barrier before each block), so machine noise and
drift fall on both bodies alike. A body's executions/s = the items every
process ran in its blocks / the sum of those blocks' wall time (first process
started -> last process done); its per-item latency is one loop body's time.
Each outcome is checked (Success, result == x) after its block's clock stops.

With `bench.load --profile`, then, untimed, PROFILE_ITEMS more items of each
body with wrappers on the steps (in these benchmark processes only; src/ is
not changed), FORK through the template's runner built in this process (it
forks from this larger process, so its fork steps are upper bounds): the
fork itself (parent side, and until the child runs), each of the child's
setup steps, the workflow call and its parts, the encoding and the write,
then the child's exit until the worker has reaped it; the timings of the
forked child are written to an anonymous shared mapping the worker reads
after each run. Last, the floor under any fork per execution: the same worker
forked PROFILE_ITEMS times with a child that exits at once, each reaped.

Only the standard library at module level: every spawned child imports this
module (and bench.load as `__mp_main__`) before its target runs.
"""

from __future__ import annotations

import functools
import mmap
import multiprocessing
import os
import queue
import resource
import statistics
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench._procs import apply_env

LONG_LIVED = "long-lived loop"
FORK = "fork per execution"
MODES = (LONG_LIVED, FORK)
WORKERS = 2
WARMUP = 20
ITEMS = 300  # timed items of each body, per process
BLOCK = 25  # items per timed block
PROFILE_ITEMS = 100  # per body and process, after the timed blocks
ECHO_MODULE = "workflows.echo"
WAIT_SECONDS = 300.0


def plan(items: int = ITEMS, block: int = BLOCK) -> list[tuple[str, int]]:
    """(mode, count) of each timed block: A B B A A B B A ..."""
    left = dict.fromkeys(MODES, items)
    order: list[tuple[str, int]] = []
    index = 0
    while any(left.values()):
        mode = (MODES[0], MODES[1], MODES[1], MODES[0])[index % 4]
        index += 1
        count = min(block, left[mode])
        if count:
            left[mode] -= count
            order.append((mode, count))
    return order


# --- the child's side --------------------------------------------------------------


def loop_worker(env: dict[str, str], log_path: str, worker_id: str, warmup: int,
                blocks: list[tuple[str, int]], profile_items: int, barrier: Any, sink: Any,
                results: Any) -> None:
    """One worker-like process: start up as a worker, then run the blocks."""
    apply_env(env)
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 2)
    os.close(fd)
    try:
        results.put(_loop_worker(worker_id, warmup, blocks, profile_items, barrier, sink))
    except BaseException:
        barrier.abort()
        results.put({"worker_id": worker_id, "error": traceback.format_exc()[-3000:]})


def _start_up(worker_id: str) -> tuple[Any, Any]:
    """What `worker_main` and `run_worker_process` do before their loop."""
    from src.services.execution import simple_worker as worker
    from src.services.execution.virtual_import import (
        install_virtual_import_hook,
        read_workspace_from_cache_only,
    )

    read_workspace_from_cache_only()
    worker._configure_logging(worker_id)
    worker._scrub_environment()
    worker._add_packages_dir_to_path()
    install = worker._install_requirements_from_cache_sync(worker_id)
    install_virtual_import_hook()
    worker._forget_store()
    template, _limits = worker._template(worker_id, install)
    template.start()
    return install, template


def _in_process_runner(template: Any) -> Any:
    """The runner the template runs, built in this process for the profile
    (which wraps its steps): it forks from this larger process, so its fork
    steps are upper bounds of the template's."""
    from src.confinement.sandbox import build_confinement
    from src.services.execution.execution_process import ExecutionRunner
    from src.services.execution.limits import Limits

    setup = template.setup
    data_dir, packages_dir = Path(setup["data_dir"]), Path(setup["packages_dir"])
    return ExecutionRunner(
        setup["worker_id"], setup["install"], Limits(**setup["limits"]),
        Path(setup["scratch_root"]) / "profile",
        lambda root: build_confinement(data_dir, packages_dir, scratch_root=root))


class Bodies:
    """The two loop bodies, and the items they take."""

    def __init__(self, worker_id: str, install: Any, template: Any, sink: Any) -> None:
        import json

        from src.services.execution import executor
        from src.services.execution.virtual_import import prefetch_workspace

        self.worker_id, self.install, self.template, self.sink = worker_id, install, template, sink
        self.runner: Any = None  # in-process, for the profile only
        self.prefetch = prefetch_workspace
        self.counter = 0
        # Looked up at call time (the profile wraps `executor.execute_item`).
        self.executor, self.dumps = executor, json.dumps

    def items(self, mode: str, count: int) -> list[tuple[int, Any]]:
        import json

        made = []
        for _ in range(count):
            self.counter += 1
            index = self.counter
            item: dict[str, Any] = {"id": f"{self.worker_id}-{index}", "module": ECHO_MODULE,
                                    "function": "main"}
            if mode == LONG_LIVED:
                item["parameters"] = {"x": index}
            else:
                item["parameters_json"] = json.dumps({"x": index})
            made.append((index, item))
        return made

    def run(self, mode: str, item: dict[str, Any]) -> Any:
        if mode == LONG_LIVED:
            return self.long_lived(item)
        return self.fork(item)

    def long_lived(self, item: Any) -> Any:
        """The previous worker loop body, as it was."""
        result = self.executor.execute_item(item, self.worker_id, self.install)
        self.dumps(result["result"])
        self.sink.put(result)
        return result

    def fork(self, order: Any) -> Any:
        """The current worker loop body (`_work_loop`): read the workspace
        ahead, the template forks a process for the order, put the answer."""
        workspace = self.prefetch(order["module"])
        result = self.template.run(order, workspace, 60.0, lambda: False)
        self.sink.put(result)
        return result

    def fork_in_process(self, order: Any) -> Any:
        """The same, with the template's runner in this process (profile only)."""
        result = self.runner.run(order)
        self.sink.put(result)
        self.runner.clean_up()
        return result


def check(mode: str, index: int, result: Any) -> str | None:
    """None when the execution succeeded with the right result; else what went wrong."""
    if mode == LONG_LIVED:
        status, value, error = result["status"], result["result"], result["error"]
    else:
        from src.services.execution.results import decode_outcome

        outcome = decode_outcome(result["payload"])
        status, value, error = outcome["status"], outcome["result"], outcome["error"]
    if status != "Success":
        return f"{mode}: {status}: {str(error)[:300]}"
    if value != index:
        return f"{mode}: wrong result {value!r} for x={index}"
    return None


def _loop_worker(worker_id: str, warmup: int, blocks: list[tuple[str, int]],
                 profile_items: int, barrier: Any, sink: Any) -> dict[str, Any]:
    install, template = _start_up(worker_id)
    bodies = Bodies(worker_id, install, template, sink)
    failures: list[str] = []
    try:
        for mode in MODES:
            for index, item in bodies.items(mode, warmup):
                problem = check(mode, index, bodies.run(mode, item))
                if problem:
                    failures.append(f"warm-up {problem}")
        facts = _facts(template)
        timed = []
        for mode, count in blocks:
            # One untimed item first: the long-lived loop never forks, so the
            # pages a fork left write-protected must not be charged to it.
            for index, item in bodies.items(mode, 1):
                problem = check(mode, index, bodies.run(mode, item))
                if problem:
                    failures.append(f"settle {problem}")
            items = bodies.items(mode, count)
            times = []
            outputs = []
            barrier.wait(timeout=WAIT_SECONDS)
            started = time.perf_counter()
            for _, item in items:
                before = time.perf_counter()
                outputs.append(bodies.run(mode, item))
                times.append((time.perf_counter() - before) * 1000)
            ended = time.perf_counter()
            timed.append((mode, started, ended, times))
            for (index, _), output in zip(items, outputs, strict=True):
                problem = check(mode, index, output)
                if problem:
                    failures.append(problem)
        if profile_items:
            bodies.runner = _in_process_runner(template)
            profile = _profile(bodies, profile_items, barrier, failures)
        else:
            profile = {}
    finally:
        template.close()
        if bodies.runner is not None:
            bodies.runner.close()
    return {"worker_id": worker_id, "error": None, "blocks": timed, "failures": failures,
            "profile": profile, **facts}


def _facts(template: Any) -> dict[str, Any]:
    """What the cost of a fork depends on: the forking process's size (the
    template's), next to this worker process's."""
    import sys

    def sizes(pid: int) -> dict[str, float]:
        found = {}
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            name, _, value = line.partition(":")
            if name in ("VmRSS", "VmSize"):
                found[name] = int(value.split()[0]) / 1024
        return found

    worker, forker = sizes(os.getpid()), sizes(template.process.pid)
    return {
        "pid": os.getpid(),
        "rss_mb": worker.get("VmRSS", 0.0),
        "vm_mb": worker.get("VmSize", 0.0),
        "template_rss_mb": forker.get("VmRSS", 0.0),
        "fds": len(os.listdir("/proc/self/fd")),
        "modules": len(sys.modules),
        "confinement": "built in the template (see sandbox.py)",
        "memory_mb": template.setup["limits"]["memory_mb"],
    }


# --- where the time goes (untimed phase, instrumented) --------------------------------

# Steps timed by wrappers or from timestamps, in the order they happen.
STEPS = [
    ("run", "runner.run, whole (worker)"),
    ("mkdtemp", "  worker: scratch dir + pipe"),
    ("fork_parent", "  worker: os.fork() returns"),
    ("fork_child", "  fork -> child runs"),
    ("setsid", "  child: os.setsid"),
    ("pdeathsig", "  child: prctl(PDEATHSIG)"),
    ("signals", "  child: signals, chdir, TMPDIR"),
    ("confine", "  child: confinement.apply"),
    ("fds", "  child: replace inherited fds"),
    ("rlimit", "  child: RLIMIT_AS (_limit_memory)"),
    ("work_item", "  child: parse the order"),
    ("execute", "  child: execute_item"),
    ("reset", "    reset_workspace_modules"),
    ("connect", "    Redis connect (new connection)"),
    ("index", "    index (Redis, incl. connect)"),
    ("read", "    read module source (Redis)"),
    ("encode", "  child: encode_outcome"),
    ("write", "  child: write to the pipe"),
    ("child_rest", "  child: not in the steps above"),
    ("exit", "  child written -> reaped (exit, wake)"),
    ("end_group", "  worker: clean_up (kill, orphans, reap)"),
    ("cleanup", "  worker: rmtree scratch, the rest"),
    ("minflt", "  child: minor page faults"),
    ("parent_minflt", "  worker: minor page faults per run"),
    ("ll_execute", "execute_item"),
    ("ll_dumps", "json.dumps(result)"),
    ("ll_put", "result_queue.put"),
]
_CHILD_STEPS = ("setsid", "pdeathsig", "signals", "confine", "fds", "rlimit", "work_item",
                "execute", "encode", "write")
_COUNTS = ("minflt", "parent_minflt")
_SLOT = {name: index for index, (name, _) in enumerate(STEPS)}
# Raw timestamps (not shown) the other steps are computed from.
_STAMPS = ["t_fork", "t_child", "t_parent", "t_pdeath_end", "t_confine_start", "t_written",
           "t_await_end"]
_STAMP = {name: len(STEPS) + index for index, name in enumerate(_STAMPS)}


class Shared:
    """Seconds per step of the current run, in a MAP_SHARED anonymous mapping
    that a forked child writes and the worker reads."""

    def __init__(self) -> None:
        self.map = mmap.mmap(-1, 8 * (len(STEPS) + len(_STAMPS)))
        self.values = memoryview(self.map).cast("d")

    def add(self, name: str, seconds: float) -> None:
        self.values[_SLOT[name]] += seconds

    def stamp(self, name: str) -> None:
        self.values[_STAMP[name]] = time.perf_counter()

    def get(self, name: str) -> float:
        return self.values[_STAMP[name]] if name in _STAMP else self.values[_SLOT[name]]

    def reset(self) -> None:
        for index in range(len(self.values)):
            self.values[index] = 0.0


def _wrap(owner: Any, attribute: str, action: Callable[..., Any] | None = None,
          step: str | None = None, shared: Shared | None = None) -> None:
    original = getattr(owner, attribute)

    @functools.wraps(original)
    def timed(*args: Any, **kwargs: Any) -> Any:
        before = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            if shared is not None and step is not None:
                shared.add(step, time.perf_counter() - before)
            if action is not None:
                action()

    setattr(owner, attribute, timed)


def _instrument(bodies: Bodies, shared: Shared) -> None:
    """Wrappers on the steps, in this process only (and the children it forks)."""
    import redis.connection

    from src.core import module_cache
    from src.services.execution import execution_child, executor

    runner = bodies.runner
    os.register_at_fork(before=lambda: shared.stamp("t_fork"),
                        after_in_child=lambda: shared.stamp("t_child"),
                        after_in_parent=lambda: shared.stamp("t_parent"))
    _wrap(execution_child.os, "pipe", step="mkdtemp", shared=shared)
    _wrap(execution_child.os, "setsid", step="setsid", shared=shared)
    _wrap(execution_child, "die_with_parent", step="pdeathsig", shared=shared,
          action=lambda: shared.stamp("t_pdeath_end"))
    if runner.confinement is not None:
        confinement = runner.confinement
        apply = confinement.apply

        def timed_apply(scratch: Path) -> bool:
            shared.stamp("t_confine_start")
            before = time.perf_counter()
            try:
                return bool(apply(scratch))
            finally:
                shared.add("confine", time.perf_counter() - before)

        confinement.apply = timed_apply
    _wrap(execution_child, "replace_inherited_descriptors", step="fds", shared=shared)
    _wrap(execution_child, "limit_memory", step="rlimit", shared=shared)
    _wrap(execution_child, "work_item", step="work_item", shared=shared)
    _wrap(execution_child, "execute_item", step="execute", shared=shared)
    _wrap(executor, "execute_item", step="ll_execute", shared=shared)
    _wrap(executor, "reset_workspace_modules", step="reset", shared=shared)
    _wrap(redis.connection.AbstractConnection, "connect", step="connect", shared=shared)
    _wrap(module_cache, "index_sync", step="index", shared=shared)
    _wrap(module_cache, "read_file_sync", step="read", shared=shared)
    _wrap(execution_child, "encode_outcome", step="encode", shared=shared)

    def written() -> None:
        shared.stamp("t_written")
        shared.values[_SLOT["minflt"]] = resource.getrusage(resource.RUSAGE_SELF).ru_minflt

    _wrap(execution_child, "write_all", step="write", shared=shared, action=written)
    # The worker's side: instance attributes shadow the methods.
    _wrap(runner, "_await", action=lambda: shared.stamp("t_await_end"))
    _wrap(runner, "clean_up", step="end_group", shared=shared)


def _fork_steps(shared: Shared, run_seconds: float, parent_minflt: int) -> dict[str, float]:
    """This run's steps in ms (counts for the page faults), from the wrappers'
    sums and the timestamps."""
    ms = {name: shared.get(name) * 1000 for name, _ in STEPS if not name.startswith("ll_")}
    ms["run"] = run_seconds * 1000
    ms["fork_parent"] = (shared.get("t_parent") - shared.get("t_fork")) * 1000
    ms["fork_child"] = (shared.get("t_child") - shared.get("t_fork")) * 1000
    if shared.get("t_confine_start"):
        ms["signals"] = (shared.get("t_confine_start") - shared.get("t_pdeath_end")) * 1000
    child_life = (shared.get("t_written") - shared.get("t_child")) * 1000
    ms["child_rest"] = child_life - sum(ms[name] for name in _CHILD_STEPS)
    ms["exit"] = (shared.get("t_await_end") - shared.get("t_written")) * 1000
    await_ms = (shared.get("t_await_end") - shared.get("t_parent")) * 1000
    ms["cleanup"] = ms["run"] - ms["mkdtemp"] - ms["fork_parent"] - await_ms - ms["end_group"]
    ms["minflt"] = shared.get("minflt")
    ms["parent_minflt"] = float(parent_minflt)
    return ms


def _profile(bodies: Bodies, items: int, barrier: Any,
             failures: list[str]) -> dict[str, dict[str, list[float]]]:
    """Per step, each run's ms (FORK) or each statement's (LONG_LIVED)."""
    import json

    from src.services.execution import executor

    shared = Shared()
    _instrument(bodies, shared)
    profile: dict[str, dict[str, list[float]]] = {mode: {} for mode in MODES}
    barrier.wait(timeout=WAIT_SECONDS)
    for index, item in bodies.items(FORK, items):
        shared.reset()
        faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        before = time.perf_counter()
        result = bodies.fork_in_process(item)
        seconds = time.perf_counter() - before
        faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults
        for name, value in _fork_steps(shared, seconds, faults).items():
            profile[FORK].setdefault(name, []).append(value)
        problem = check(FORK, index, result)
        if problem:
            failures.append(f"profile {problem}")
    barrier.wait(timeout=WAIT_SECONDS)
    for index, item in bodies.items(LONG_LIVED, items):
        shared.reset()
        started = time.perf_counter()
        result = executor.execute_item(item, bodies.worker_id, bodies.install)
        dumped = time.perf_counter()
        json.dumps(result["result"])
        put = time.perf_counter()
        bodies.sink.put(result)
        ended = time.perf_counter()
        steps = {"run": ended - started, "ll_execute": dumped - started,
                 "ll_dumps": put - dumped, "ll_put": ended - put,
                 "reset": shared.get("reset"), "connect": shared.get("connect"),
                 "index": shared.get("index"), "read": shared.get("read")}
        for name, seconds in steps.items():
            profile[LONG_LIVED].setdefault(name, []).append(seconds * 1000)
        problem = check(LONG_LIVED, index, result)
        if problem:
            failures.append(f"profile {problem}")
    barrier.wait(timeout=WAIT_SECONDS)
    profile["floor"] = _bare_forks(items)
    return profile


def _bare_forks(count: int) -> dict[str, list[float]]:
    """The floor under any fork per execution: fork this worker, the child
    exits at once (`os._exit(0)`), reap it (ms; the child's page faults)."""
    floor: dict[str, list[float]] = {"fork": [], "total": [], "minflt": []}
    for _ in range(count):
        started = time.perf_counter()
        pid = os.fork()
        if pid == 0:
            os._exit(0)
        forked = time.perf_counter()
        _, _, usage = os.wait4(pid, 0)
        ended = time.perf_counter()
        floor["fork"].append((forked - started) * 1000)
        floor["total"].append((ended - started) * 1000)
        floor["minflt"].append(float(usage.ru_minflt))
    return floor


# --- the benchmark's side ----------------------------------------------------------------


@dataclass
class Block:
    mode: str
    wall: float  # s, first process started -> last process done
    items: int  # over every process
    times: list[float]  # ms, each item's loop body, every process


@dataclass
class Comparison:
    workers: int
    warmup: int
    items: int
    block: int
    blocks: list[Block] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    reports: list[dict[str, Any]] = field(default_factory=list)
    drained: int = 0
    expected_results: int = 0

    def of(self, mode: str) -> list[Block]:
        return [b for b in self.blocks if b.mode == mode]

    def rate(self, mode: str) -> float:
        blocks = self.of(mode)
        seconds = sum(b.wall for b in blocks)
        return sum(b.items for b in blocks) / seconds if seconds else float("nan")

    def times(self, mode: str) -> list[float]:
        return [t for b in self.of(mode) for t in b.times]

    def block_rates(self, mode: str) -> list[float]:
        return [b.items / b.wall for b in self.of(mode) if b.wall]

    @property
    def ratio(self) -> float:
        return self.rate(FORK) / self.rate(LONG_LIVED)

    @property
    def ok(self) -> bool:
        return not self.errors and not self.failures and len(self.blocks) > 0

    def profile(self, mode: str) -> dict[str, list[float]]:
        merged: dict[str, list[float]] = {}
        for report in self.reports:
            for name, values in report.get("profile", {}).get(mode, {}).items():
                merged.setdefault(name, []).extend(values)
        return merged


def compare(env: dict[str, str], logs_dir: Path, workers: int = WORKERS, warmup: int = WARMUP,
            items: int = ITEMS, block: int = BLOCK,
            profile_items: int = PROFILE_ITEMS) -> Comparison:
    """Start `workers` worker-like processes at once and run both loop bodies in them."""
    ctx = multiprocessing.get_context("spawn")
    blocks = plan(items, block)
    barrier = ctx.Barrier(workers)
    results: Any = ctx.Queue()
    sink: Any = ctx.Queue()
    comparison = Comparison(workers, warmup, items, block)
    comparison.expected_results = workers * (2 * warmup + 2 * items + len(blocks)
                                             + 2 * profile_items)
    drained = [0]

    def drain() -> None:
        while sink.get() is not None:
            drained[0] += 1

    drainer = threading.Thread(target=drain, daemon=True)
    drainer.start()
    log = logs_dir / "loop-workers.log"
    processes = [
        ctx.Process(target=loop_worker,
                    args=(env, str(log), f"loop-w{i}", warmup, blocks, profile_items, barrier,
                          sink, results),
                    daemon=True)
        for i in range(workers)
    ]
    for process in processes:
        process.start()
    try:
        deadline = time.monotonic() + WAIT_SECONDS
        while len(comparison.reports) + len(comparison.errors) < workers:
            try:
                report = results.get(timeout=1.0)
            except queue.Empty:
                if time.monotonic() > deadline or not any(p.is_alive() for p in processes):
                    comparison.errors.append(f"worker-like processes gave no report; see {log}")
                    break
                continue
            if report.get("error"):
                comparison.errors.append(f"{report['worker_id']}: {report['error']}")
            else:
                comparison.reports.append(report)
    except BaseException:  # Ctrl-C: do not wait for them
        for process in processes:
            process.kill()
        raise
    finally:
        for process in processes:
            process.join(timeout=30)
            if process.is_alive():
                process.kill()
        sink.put(None)
        drainer.join(timeout=10)
    comparison.drained = drained[0]
    if comparison.errors:
        return comparison
    for index, (mode, _) in enumerate(blocks):
        parts = [report["blocks"][index] for report in comparison.reports]
        started = min(part[1] for part in parts)
        ended = max(part[2] for part in parts)
        times = [t for part in parts for t in part[3]]
        comparison.blocks.append(Block(mode, ended - started, len(times), times))
    comparison.failures = [f for report in comparison.reports for f in report["failures"]]
    return comparison


# --- report ---------------------------------------------------------------------------


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * fraction // 1))
    return ordered[int(rank) - 1]


def summary_lines(comparison: Comparison) -> list[str]:
    """The loop comparison's lines of the summary block."""
    if comparison.errors:
        return [f"worker loop comparison: FAILED to run ({comparison.errors[0][:200]})"]
    lines = []
    for mode in MODES:
        times = comparison.times(mode)
        lines.append(f"worker loop, {mode:18} ({comparison.workers} processes x "
                     f"{comparison.items}): {comparison.rate(mode):7.1f} executions/s; "
                     f"per item p50 {_percentile(times, 0.5):6.2f}  "
                     f"p99 {_percentile(times, 0.99):6.2f} ms")
    lines.append(f"fork / long-lived throughput = {comparison.ratio * 100:.1f}% (the loop "
                 "alone: what a process per execution costs; the target is on the whole "
                 f"path, above); non-Success in the loops: {len(comparison.failures)}")
    return lines


def print_comparison(comparison: Comparison, profile: bool, reference: str = "") -> None:
    print(f"\n2. Worker loop, side by side: {comparison.workers} worker-like processes at once, "
          f"{comparison.items} items of each body per process after {comparison.warmup} "
          f"warm-up, blocks of {comparison.block} in the order A B B A ... "
          f"(A = {LONG_LIVED}, B = {FORK})")
    if comparison.errors:
        for error in comparison.errors:
            print(f"    ERROR {error}")
        return
    for report in comparison.reports:
        print(f"    {report['worker_id']} (pid {report['pid']}): RSS {report['rss_mb']:.1f} MB, "
              f"VmSize {report['vm_mb']:.0f} MB, {report['fds']} fds, {report['modules']} "
              f"modules; its execution template: RSS {report['template_rss_mb']:.1f} MB; "
              f"RLIMIT_AS +{report['memory_mb']} MB")
    if reference:
        print(f"    {reference}")
    for mode in MODES:
        times = comparison.times(mode)
        rates = comparison.block_rates(mode)
        print(f"    {mode:18} {comparison.rate(mode):7.1f} executions/s  "
              f"(blocks: min {min(rates):.0f}, median {statistics.median(rates):.0f}, "
              f"max {max(rates):.0f}/s)")
        print(f"    {'':18} per item p50 {_percentile(times, 0.5):6.2f}  "
              f"p90 {_percentile(times, 0.9):6.2f}  p99 {_percentile(times, 0.99):6.2f}  "
              f"max {max(times):6.2f} ms  ({len(times)} items)")
    print(f"    fork / long-lived = {comparison.ratio * 100:.1f}% of the loop's own throughput "
          "(no HTTP, no pool: the cost of a process per execution; section 1b compares "
          "the whole path)")
    print(f"    results drained from result_queue: {comparison.drained} of "
          f"{comparison.expected_results}")
    print(f"    non-Success: {len(comparison.failures)} (target 0) "
          f"{'OK' if not comparison.failures else 'MISSED'}")
    for failure in comparison.failures[:5]:
        print(f"      {failure}")
    if profile:
        print_profile(comparison)


def print_profile(comparison: Comparison) -> None:
    fork, long_lived = comparison.profile(FORK), comparison.profile(LONG_LIVED)
    if not fork:
        return
    runs = len(fork["run"])
    print(f"\n    Where the time goes ({runs} more items of each body over "
          f"{comparison.workers} processes at once, untimed above; wrappers on the steps; "
          "median and mean per item, ms):")
    labels = dict(STEPS)
    for name, label in labels.items():
        values = fork.get(name)
        if not values or name.startswith("ll_"):
            continue
        unit = "" if name in _COUNTS else " ms"
        print(f"      {label:38} median {statistics.median(values):8.3f}{unit}  "
              f"mean {statistics.fmean(values):8.3f}{unit}")
    print(f"      {'long-lived body, whole':38} median "
          f"{statistics.median(long_lived['run']):8.3f} ms  "
          f"mean {statistics.fmean(long_lived['run']):8.3f} ms")
    for name in ("ll_execute", "reset", "connect", "index", "read", "ll_dumps", "ll_put"):
        values = long_lived.get(name)
        if values:
            label = labels[name] if name.startswith("ll_") else labels[name].strip()
            print(f"        {label:36} median {statistics.median(values):8.3f} ms  "
                  f"mean {statistics.fmean(values):8.3f} ms")
    floor = comparison.profile("floor")
    if floor:
        print(f"      {'bare fork + os._exit(0) + reap':38} median "
              f"{statistics.median(floor['total']):8.3f} ms  mean "
              f"{statistics.fmean(floor['total']):8.3f} ms  (os.fork() "
              f"{statistics.median(floor['fork']):.3f} ms; child page faults "
              f"{statistics.median(floor['minflt']):.0f}): the floor of any fork per execution")


def stack_env(env: dict[str, str]) -> dict[str, str]:
    """What a pool's workers get: the stack's environment without the admin token."""
    return {k: v for k, v in env.items() if k != "BIFROST_ADMIN_TOKEN"}
