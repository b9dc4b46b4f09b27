"""Worker start-up benchmark: the start-up spec's own install function
(BASELINE, `bench/_baseline.py`) against ours (OURS).

Run from `api/`:

    ../.venv/bin/python -m bench.startup [--profile] [--keep] [--no-lock]

What it measures, all inside one temp dir (deleted at the end) with a private
redis-server (LocalRedis, free port, stopped at the end) and no store:

* a local wheelhouse of 22 wheels: 10 pinned top-level packages
  (`bench-pkg-0==1.0.0` ... `bench-pkg-9==1.0.0`) that pull 12 dependencies
  (`bench-dep-0..11`); the 10 pins are requirements.txt, cached in Redis under
  `bifrost:requirements:content` as `{"content", "hash"}`;
* the time of ONE CALL of the install function in each of N worker processes
  started at once (spawned, imports done, then a barrier, then the call timed
  with `time.perf_counter`), for
  BASELINE = the worker start-up spec's own function (bench/_baseline.py, plus `--target`) and
  OURS = `src.services.execution.simple_worker._install_requirements_from_cache_sync`,
  cold (empty packages dir and installer caches) and warm (installed by a
  previous run of the same function, caches kept), 4 workers, 3 runs each;
  each figure is the median over the runs of the per-run max (or mean);
* how many installer processes ran when 8 workers start cold (ours);
* a cold build of ours from the hash's lock (its 22 exact pins with their
  sha256, cached in Redis as the write path leaves it: installed with
  `--no-deps`, no resolution) next to a cold build of ours that resolves
  (no lock, as before locks): same wheelhouse, same packages, 4 workers,
  3 runs each, and their ratio (resolve / lock), for the call (what a worker
  waits, the lock's read included) and for the build alone (the installer
  run and the listing, as the environment's record times it); every other
  figure is taken with the lock cached in Redis (as every write leaves it
  now), or with `--no-lock`, with none (requirements written before locks);
* the resident memory (VmRSS) of a real, ready worker (`run_worker_process`,
  warm), and whether it imported the web stack or the ORM.

Targets: warm >= 40x, cold >= 10x (baseline time / ours), 1 installer run per
host per hash, a ready worker <= 60 MB. Exits 0 whether or not they are met;
a target not met prints MISSED, and then the time of our call is broken down
by engine step (as with --profile). --keep keeps the temp dir (logs).

Only the standard library is imported at module level: spawned children
import this module too, and must not carry the benchmark's weight.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import queue
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import _procs

FUNCTIONS = ("baseline", "ours")
STATES = ("cold", "warm")
WORKERS = 4
INSTALLER_WORKERS = 8
REPEATS = 3
SPEEDUP_TARGETS = {"warm": 40.0, "cold": 10.0}
RSS_TARGET_MB = 60.0
TOP_LEVEL_PACKAGES = 10
DEPENDENCIES = 12
SUBMODULES = 20  # modules per package, besides the top-level module
REQUIREMENTS_KEY = "bifrost:requirements:content"
LOCK_KEY_PREFIX = "bifrost:requirements:lock:"  # + the requirements hash (src.core.lock_cache)
BUILD_MODES = ("resolve", "lock")
WAIT_SECONDS = 600.0


# --- setup ------------------------------------------------------------------------


@dataclass(frozen=True)
class Bench:
    """The temp dir's layout, and each worker's environment variables."""

    root: Path
    redis_url: str
    requirements: str
    requirements_hash: str

    @property
    def wheelhouse(self) -> Path:
        return self.root / "wheelhouse"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    def home(self, function: str) -> Path:
        """Each function's own dirs: they never share installs or caches."""
        return self.root / function

    def packages_dir(self, function: str) -> Path:
        return self.home(function) / "packages"

    def env(self, function: str, state: str = "cold") -> dict[str, str]:
        home = self.home(function)
        return {
            **self.baseline_mode(function, state),
            "REDIS_URL": self.redis_url,
            "BIFROST_DATA_DIR": str(home / "data"),
            "BIFROST_PACKAGES_DIR": str(self.packages_dir(function)),
            "PIP_FIND_LINKS": str(self.wheelhouse),
            "PIP_NO_INDEX": "1",
            "UV_CACHE_DIR": str(home / "uv-cache"),
            "PIP_CACHE_DIR": str(home / "pip-cache"),
            "TMPDIR": str(home / "tmp"),  # the installers' temp files stay in here too
        }

    def baseline_mode(self, function: str, state: str) -> dict[str, str]:
        """The spec's function installs into the interpreter's site-packages,
        where a warm start is pip's no-op. So warm runs it verbatim with its packages
        dir on PYTHONPATH (pip sees them installed and skips them); cold runs it
        with `--target`, so it never writes into the project's venv."""
        if function != "baseline":
            return {}
        if state == "warm":
            return {"PYTHONPATH": str(self.packages_dir(function))}
        return {"BENCH_BASELINE_TARGET": "1"}

    def make_cold(self, function: str) -> None:
        """Empty packages dir, installer caches, data and temp dirs."""
        for key in ("BIFROST_DATA_DIR", "BIFROST_PACKAGES_DIR", "UV_CACHE_DIR",
                    "PIP_CACHE_DIR", "TMPDIR"):
            path = Path(self.env(function)[key])
            shutil.rmtree(path, ignore_errors=True)
            path.mkdir(parents=True)


def module_source(name: str, functions: int = 60) -> str:
    """A module of real code (~15 KB): something for an installer to copy and compile."""
    lines = [
        f'"""{name}: a generated benchmark module."""',
        "",
        "from __future__ import annotations",
        "",
        "import math",
        "",
        f"NAME = {name!r}",
        'VERSION = "1.0.0"',
        "SQUARES = {" + ", ".join(f"{i}: {i * i}" for i in range(200)) + "}",
    ]
    for i in range(functions):
        lines += [
            "",
            "",
            f"def f{i}(x: float, y: float = {i}.0) -> float:",
            f'    """Function {i} of {name}."""',
            "    total = 0.0",
            "    for k in range(int(abs(x)) % 7 + 1):",
            f"        total += math.sqrt(k + y) * {i + 1}",
            "    return total",
        ]
    lines += [
        "",
        "",
        "class Registry:",
        '    """Maps names to the functions above."""',
        "",
        "    def __init__(self) -> None:",
        f"        names = [f'f{{i}}' for i in range({functions})]",
        "        self.items = {name: globals()[name] for name in names}",
    ]
    return "\n".join(lines) + "\n"


def package_files(name: str) -> dict[str, str]:
    """A package of SUBMODULES modules next to the top module: real wheels hold
    tens of files (requests ~20, flask ~25), and installers' work grows with them.
    The issue's figures (the spec's function: ~1 s warm, ~4.4 s cold) were taken
    with such wheels."""
    package = name.replace("-", "_") + "_impl"
    files = {f"{package}/__init__.py": f'"""{name} internals."""\n'}
    for m in range(SUBMODULES):
        files[f"{package}/part{m}.py"] = module_source(f"{name}.part{m}", functions=25)
    return files


def build_wheelhouse(wheelhouse: Path) -> str:
    """22 wheels; returns requirements.txt (the 10 top-level pins)."""
    from tests.support.wheels import build_wheel

    for d in range(DEPENDENCIES):
        name = f"bench-dep-{d}"
        build_wheel(wheelhouse, name, module_source=module_source(name),
                    extra_files=package_files(name))
    pins = []
    for p in range(TOP_LEVEL_PACKAGES):
        name = f"bench-pkg-{p}"
        # Each needs one dependency; the first two need a second one (12 in all).
        requires = [f"bench-dep-{p}>=1.0"]
        if p + TOP_LEVEL_PACKAGES < DEPENDENCIES:
            requires.append(f"bench-dep-{p + TOP_LEVEL_PACKAGES}>=1.0")
        build_wheel(wheelhouse, name, module_source=module_source(name), requires=requires,
                    extra_files=package_files(name))
        pins.append(f"{name}==1.0.0")
    return "\n".join(pins) + "\n"


def cache_requirements(redis_url: str, content: str) -> str:
    import redis

    digest = hashlib.sha256(content.encode()).hexdigest()
    client = redis.from_url(redis_url)
    try:
        client.set(REQUIREMENTS_KEY, json.dumps({"content": content, "hash": digest}))
    finally:
        client.close()
    return digest


def lock_text(wheelhouse: Path, requirements_hash: str) -> str:
    """The lock the write path stores for requirements.txt: every wheel of the
    wheelhouse (the 10 pins and their 12 dependencies) with its sha256."""
    from src.foundation.locks import DIRECT, Lock, LockedPackage

    packages = []
    for wheel in sorted(wheelhouse.glob("*.whl")):
        name, version = wheel.name.split("-")[:2]
        digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
        via = (DIRECT,) if name.startswith("bench_pkg") else ("bench-pkg",)
        packages.append(LockedPackage(name.replace("_", "-"), version, (f"sha256:{digest}",), via))
    return Lock.of(requirements_hash, packages).text()


def cache_lock(bench: Bench, text: str | None) -> None:
    """Put the hash's lock in Redis (`text`), or take it away (None)."""
    import redis

    client = redis.from_url(bench.redis_url)
    try:
        key = LOCK_KEY_PREFIX + bench.requirements_hash
        if text is None:
            client.delete(key)
        else:
            client.set(key, text)
    finally:
        client.close()


# --- child processes --------------------------------------------------------------


def _spawn() -> Any:
    return multiprocessing.get_context("spawn")


def _collect(results: Any, count: int, processes: list[Any], log: Path) -> list[dict[str, Any]]:
    """`count` messages from `results`; raises when the children died without them."""
    got: list[dict[str, Any]] = []
    deadline = time.monotonic() + WAIT_SECONDS
    while len(got) < count:
        try:
            got.append(results.get(timeout=1.0))
        except queue.Empty:
            if time.monotonic() > deadline or not any(p.is_alive() for p in processes):
                raise RuntimeError(f"{count - len(got)} benchmark processes gave no result; "
                                   f"see {log}") from None
    return got


def run_group(
    bench: Bench, function: str, workers: int, label: str, instrument: bool = False,
    state: str = "cold",
) -> list[dict[str, Any]]:
    """Start `workers` processes at once; each times one call of `function`'s install."""
    ctx = _spawn()
    barrier = ctx.Barrier(workers)
    results = ctx.Queue()
    log = bench.logs / f"{label}.log"
    processes = [
        ctx.Process(
            target=_procs.timed_install,
            args=(function, f"{label}-w{i}", bench.env(function, state), str(log), barrier,
                  results,
                  instrument),
            daemon=True,
        )
        for i in range(workers)
    ]
    for process in processes:
        process.start()
    try:
        return _collect(results, workers, processes, log)
    finally:
        for process in processes:
            process.join(timeout=30)


def installed_distributions(bench: Bench, function: str) -> int:
    """How many dist-info dirs the function's install left (a fairness check)."""
    packages = bench.packages_dir(function)
    if function == "baseline":
        return len(list(packages.glob("*.dist-info")))
    envs = sorted(packages.glob(f".envs/{bench.requirements_hash}.*"))
    return len(list(envs[-1].glob("*.dist-info"))) if envs else 0


# --- timed scenarios --------------------------------------------------------------


@dataclass
class Scenario:
    """Per-worker call times (s) of each run of one (state, function)."""

    state: str
    function: str
    runs: list[list[float]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    installed: list[int] = field(default_factory=list)

    @property
    def max(self) -> float:
        return statistics.median(max(run) for run in self.runs)

    @property
    def mean(self) -> float:
        return statistics.median(statistics.fmean(run) for run in self.runs)


def measure_calls(bench: Bench) -> dict[tuple[str, str], Scenario]:
    """Each run: cold (emptied first), then warm (on what that cold run installed)."""
    scenarios = {(s, f): Scenario(s, f) for s in STATES for f in FUNCTIONS}
    for run in range(1, REPEATS + 1):
        for function in FUNCTIONS:
            bench.make_cold(function)
            for state in STATES:
                label = f"{state}-{function}-run{run}"
                results = run_group(bench, function, WORKERS, label, state=state)
                scenario = scenarios[(state, function)]
                scenario.runs.append(sorted(r["seconds"] for r in results))
                scenario.warnings += [w for r in results for w in r["warnings"]]
                scenario.installed.append(installed_distributions(bench, function))
                print(f"  run {run}: {state:4} {function:8} "
                      f"max {max(scenario.runs[-1]):7.3f} s", flush=True)
    return scenarios


@dataclass
class InstallerRuns:
    workers: int
    installer_runs: int  # outcomes with skipped=False: this worker ran the installer
    environments: int  # .envs/<hash>.* directories built
    all_ok: bool


def measure_installer_runs(bench: Bench) -> InstallerRuns:
    bench.make_cold("ours")
    results = run_group(bench, "ours", INSTALLER_WORKERS, "installer-runs-ours")
    outcomes = [r["outcome"] for r in results]
    environments = list(bench.packages_dir("ours").glob(f".envs/{bench.requirements_hash}.*"))
    return InstallerRuns(
        workers=INSTALLER_WORKERS,
        installer_runs=sum(1 for o in outcomes if not o["skipped"]),
        environments=len(environments),
        all_ok=all(o["ok"] for o in outcomes),
    )


@dataclass
class LockedBuilds:
    """Cold builds of ours: per-run max call times (s) by mode, from the lock
    and resolving; `builds` the build's own time (s, from the environment's
    record); `installed` the fewest dist-infos an install left."""

    runs: dict[str, list[float]] = field(default_factory=lambda: {m: [] for m in BUILD_MODES})
    builds: dict[str, list[float]] = field(default_factory=lambda: {m: [] for m in BUILD_MODES})
    installed: dict[str, list[int]] = field(
        default_factory=lambda: {m: [] for m in BUILD_MODES})
    lock_used: bool = True  # every lock run logged its "no resolution" install
    all_ok: bool = True

    def median(self, mode: str, of: str = "runs") -> float:
        return statistics.median(getattr(self, of)[mode])


def measure_locked_builds(bench: Bench, text: str, after: str | None) -> LockedBuilds:
    """Each run: a cold build with no lock, then one from the lock (emptied
    first); then the lock cached is `after` again."""
    builds = LockedBuilds()
    try:
        for run in range(1, REPEATS + 1):
            for mode in BUILD_MODES:
                cache_lock(bench, text if mode == "lock" else None)
                bench.make_cold("ours")
                label = f"cold-{mode}-ours-run{run}"
                results = run_group(bench, "ours", WORKERS, label)
                builds.runs[mode].append(max(r["seconds"] for r in results))
                builds.installed[mode].append(installed_distributions(bench, "ours"))
                builds.builds[mode].append(build_seconds(bench))
                builds.all_ok &= all(r["outcome"]["ok"] for r in results)
                if mode == "lock":
                    log = (bench.logs / f"{label}.log").read_text()
                    builds.lock_used &= "locked packages (no resolution)" in log
                print(f"  run {run}: cold {mode:7} max {builds.runs[mode][-1]:7.3f} s", flush=True)
    finally:
        cache_lock(bench, after)
    return builds


def build_seconds(bench: Bench) -> float:
    """How long the newest environment's build took, by its own record."""
    from src.services.installer.environments import Environments

    env = Environments(bench.packages_dir("ours")).latest(bench.requirements_hash)
    return env.record.duration_ms / 1000 if env else float("nan")


def print_locked_builds(builds: LockedBuilds) -> None:
    print(f"\nCold build of ours from the lock vs resolving, {WORKERS} workers started at "
          f"once; each figure is the median over {REPEATS} runs of the per-run max call "
          "(and of the build alone).")
    for mode in BUILD_MODES:
        per_run = ", ".join(f"{seconds:.3f}" for seconds in builds.runs[mode])
        build = builds.median(mode, "builds")
        print(f"cold {mode:8} {builds.median(mode):9.3f} s  build {build:.3f} s  "
              f"({per_run}; {min(builds.installed[mode])} dists)")
    calls = builds.median("resolve") / builds.median("lock")
    alone = builds.median("resolve", "builds") / builds.median("lock", "builds")
    print(f"cold ratio   {calls:8.2f}x  build {alone:.2f}x  (resolve / lock); every lock run "
          f"installed with no resolution: {builds.lock_used}; all outcomes ok: {builds.all_ok}")


# --- memory of a ready worker -----------------------------------------------------


@dataclass
class WorkerMemory:
    ready_mb: float
    after_item_mb: float
    bare_mb: float  # a spawned interpreter doing nothing, for scale
    heavy_modules: list[str]
    install: dict[str, Any]


def rss_mb(pid: int) -> float:
    """VmRSS in MB (10^6 bytes; /proc reports KiB)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024 / 1e6
    raise RuntimeError(f"no VmRSS for pid {pid}")


def _wait_for(messages: Any, kind: str) -> dict[str, Any]:
    deadline = time.monotonic() + WAIT_SECONDS
    while True:
        message = messages.get(timeout=max(0.1, deadline - time.monotonic()))
        if message.get("type") == kind:
            return message


def measure_worker_memory(bench: Bench) -> WorkerMemory:
    """A real worker on the warm packages dir: RSS when ready, and its heavy modules."""
    ctx = _spawn()
    inbox, outbox = ctx.Queue(), ctx.Queue()
    log = bench.logs / "real-worker.log"
    worker = ctx.Process(target=_procs.real_worker,
                         args=(bench.env("ours"), str(log), inbox, outbox, "rss-w0"), daemon=True)
    worker.start()
    try:
        ready = _wait_for(outbox, "ready")
        time.sleep(0.2)  # let the queue's feeder thread settle
        ready_mb = rss_mb(ready["pid"])
        inbox.put({"id": "m", "module": "bench._probe", "function": "heavy_modules",
                   "parameters": {}})
        from src.services.execution.results import decode_outcome

        result = {**_wait_for(outbox, "result")}
        result.update(decode_outcome(result["payload"]))
        if result["status"] != "Success":
            raise RuntimeError(f"probe failed: {result['error']}")
        after_item_mb = rss_mb(ready["pid"])
        inbox.put(None)
    finally:
        worker.join(timeout=30)
    return WorkerMemory(ready_mb, after_item_mb, measure_bare_interpreter(), result["result"],
                        ready["install"])


def measure_bare_interpreter() -> float:
    ctx = _spawn()
    inbox, outbox = ctx.Queue(), ctx.Queue()
    process = ctx.Process(target=_procs.idle, args=(inbox, outbox), daemon=True)
    process.start()
    try:
        ready = _wait_for(outbox, "ready")
        time.sleep(0.2)
        return rss_mb(ready["pid"])
    finally:
        inbox.put(None)
        process.join(timeout=30)


# --- where our time goes ----------------------------------------------------------


def profile_ours(bench: Bench, states: list[str]) -> None:
    """Our call, broken down by engine step (wrappers in the benchmark's children)."""
    for state in states:
        if state == "cold":
            bench.make_cold("ours")
        else:
            run_group(bench, "ours", WORKERS, "profile-prepare-warm")
        results = run_group(bench, "ours", WORKERS, f"profile-{state}-ours", instrument=True)
        print_timeline(state, results)
        results.sort(key=lambda r: r["seconds"])
        picks = [("slowest", results[-1])] + ([("fastest", results[0])] if state == "cold" else [])
        for which, result in picks:
            print(f"\n{state}, {WORKERS} workers, {which} worker "
                  f"({result['worker_id']}): call {result['seconds'] * 1000:.1f} ms")
            print_steps(result["steps"], result["seconds"])


def print_timeline(state: str, results: list[dict[str, Any]]) -> None:
    """When each worker's call started and ended, from the first start (ms)."""
    first = min(r["started"] for r in results)
    print(f"\n{state}, {WORKERS} workers: each call, in ms from the first call's start:")
    for r in sorted(results, key=lambda r: r["started"]):
        role = "skipped (no installer)" if r["outcome"]["skipped"] else "ran the installer"
        start = (r["started"] - first) * 1000
        print(f"    {r['worker_id']:<24} {start:7.1f} -> {start + r['seconds'] * 1000:7.1f}  "
              f"{role}")


def print_steps(steps: list[tuple[list[str], float, int]], total: float) -> None:
    """The steps as a tree: children under their parent, in the order first called."""
    first_seen = {tuple(path): i for i, (path, _, _) in enumerate(steps)}

    def tree_order(step: tuple[list[str], float, int]) -> tuple[int, ...]:
        path = step[0]
        return tuple(first_seen[tuple(path[:depth])] for depth in range(1, len(path) + 1))

    accounted = 0.0
    for path, seconds, calls in sorted(steps, key=tree_order):
        if len(path) == 1 and not path[0].startswith(_procs.CONCURRENT):
            accounted += seconds
        indent = "  " * len(path)
        times = f" x{calls}" if calls > 1 else ""
        print(f"  {indent}{path[-1]:<{46 - len(indent)}} {seconds * 1000:9.1f} ms{times}")
    print(f"    {'(rest of the call)':<44} {(total - accounted) * 1000:9.1f} ms")


def profile_installer(bench: Bench, repeats: int = 3) -> None:
    """The installer subprocess our engine runs, alone (one process, no contention)."""
    import subprocess

    from src.services.installer import commands
    from src.services.installer.platform import constraints_file

    scratch = bench.root / "installer-alone"
    requirements = scratch / "requirements.txt"
    env = {**bench.env("ours"), "UV_CACHE_DIR": str(scratch / "uv-cache")}
    Path(env["TMPDIR"]).mkdir(parents=True, exist_ok=True)
    scratch.mkdir()
    requirements.write_text(bench.requirements)
    constraints = constraints_file(scratch, bench.packages_dir("ours"))
    installer = commands.choose_installer("auto")

    def median_ms(argv: list[str], reset: list[Path]) -> float:
        times = []
        for _ in range(repeats):
            for path in reset:
                shutil.rmtree(path, ignore_errors=True)
            started = time.perf_counter()
            subprocess.run(argv, capture_output=True, check=True, env=env)
            times.append(time.perf_counter() - started)
        return statistics.median(times) * 1000

    target = scratch / "target"
    call = commands.install_command(installer, target, requirements_file=str(requirements),
                                    constraints_file=constraints, environ=env)
    env = call.env  # the installer's own environment (the operator's PIP_* as UV_* for uv)
    cold = median_ms(call.argv, [target, scratch / "uv-cache"])
    warm = median_ms(call.argv, [target])
    interpreter = median_ms([sys.executable, "-c", "pass"], [])
    trampoline = median_ms([sys.executable, "-m", installer, "--version"], [])
    print(f"\nThe installer subprocess alone ({installer}, 1 process, median of {repeats}):")
    print(f"    {'install, empty installer cache':<44} {cold:9.1f} ms")
    print(f"    {'install, warm installer cache':<44} {warm:9.1f} ms")
    print(f"    {f'python -m {installer} --version':<44} {trampoline:9.1f} ms")
    print(f"    {'python -c pass (interpreter start)':<44} {interpreter:9.1f} ms")


# --- report -----------------------------------------------------------------------


def verdict(ok: bool) -> str:
    return "OK" if ok else "MISSED"


def print_table(scenarios: dict[tuple[str, str], Scenario]) -> None:
    print(f"\nOne install call per worker, {WORKERS} workers started at once; "
          f"each figure is the median over {REPEATS} runs of the per-run max (or mean).")
    header = (f"{'scenario':8} {'function':9} {'max (s)':>9} {'mean (s)':>9}  "
              f"{'per-run max (s)':<26} {'dists':>5}")
    print(header)
    print("-" * len(header))
    for state in STATES:
        for function in FUNCTIONS:
            s = scenarios[(state, function)]
            per_run = ", ".join(f"{max(run):.3f}" for run in s.runs)
            print(f"{state:8} {function:9} {s.max:9.3f} {s.mean:9.3f}  {per_run:<26} "
                  f"{min(s.installed):>5}")
        base, ours = scenarios[(state, "baseline")], scenarios[(state, "ours")]
        print(f"{state:8} {'ratio':9} {base.max / ours.max:8.1f}x {base.mean / ours.mean:8.1f}x"
              f"  (baseline / ours)")
    warnings = {f: [w for s in STATES for w in scenarios[(s, f)].warnings] for f in FUNCTIONS}
    for function, messages in warnings.items():
        if messages:
            print(f"{function}: {len(messages)} warnings logged, e.g. {messages[0][:200]!r}")
    print("dists = fewest dist-info dirs an install left (22 expected)")


def report(
    scenarios: dict[tuple[str, str], Scenario], installer: InstallerRuns, memory: WorkerMemory
) -> list[str]:
    """Prints the figures and one line per target; returns the states whose target ours missed."""
    print_table(scenarios)
    print(f"\nCold start of {installer.workers} workers (ours): {installer.installer_runs} ran "
          f"the installer, {installer.environments} environment(s) built, "
          f"all outcomes ok: {installer.all_ok}")
    print(f"Ready worker (warm): VmRSS {memory.ready_mb:.1f} MB, "
          f"{memory.after_item_mb:.1f} MB after one work item "
          f"(a bare spawned interpreter: {memory.bare_mb:.1f} MB); "
          f"install skipped: {memory.install.get('skipped')}, "
          f"{memory.install.get('duration_ms')} ms")
    heavy = ", ".join(memory.heavy_modules) or "none"
    print(f"fastapi/sqlalchemy/uvicorn/starlette in the ready worker's sys.modules: {heavy}")

    print()
    missed = []
    for state in ("warm", "cold"):
        base, ours = scenarios[(state, "baseline")], scenarios[(state, "ours")]
        by_max, by_mean = base.max / ours.max, base.mean / ours.mean
        target = SPEEDUP_TARGETS[state]
        ok = by_max >= target and by_mean >= target
        if not ok:
            missed.append(state)
        print(f"{state}: {by_max:.1f}x (by mean {by_mean:.1f}x) (target >= {target:.0f}x) "
              f"{verdict(ok)}")
    runs_ok = installer.installer_runs == 1 and installer.environments == 1
    print(f"installer runs: {installer.installer_runs} of {installer.workers} workers "
          f"(target = 1) {verdict(runs_ok)}")
    print(f"worker RSS: {memory.ready_mb:.1f} MB (target <= {RSS_TARGET_MB:.0f} MB) "
          f"{verdict(memory.ready_mb <= RSS_TARGET_MB)}")
    return missed


def source_state() -> str:
    """Which src/ was measured: the commit, and files changed since (uncommitted)."""
    import subprocess

    api = Path(__file__).resolve().parent.parent

    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=api, capture_output=True, text=True)
        return done.stdout.strip() if done.returncode == 0 else "?"

    changed = git("status", "--porcelain", "--", "src").splitlines()
    dirty = f" + {len(changed)} uncommitted change(s) in src/" if changed else ""
    return f"{git('rev-parse', '--short', 'HEAD')}{dirty}"


def host_load() -> str:
    """Other work on the host skews every figure: say how busy it was."""
    import os

    one, five, _ = os.getloadavg()
    return f"{os.cpu_count()} CPUs, load average {one:.2f} (1 min) {five:.2f} (5 min)"


def main(argv: list[str]) -> int:
    root = Path(tempfile.mkdtemp(prefix="bifrost-bench-startup-"))
    from src.foundation.local_redis import LocalRedis

    server = LocalRedis(root / "redis")
    try:
        server.start()
        requirements = build_wheelhouse(root / "wheelhouse")
        bench = Bench(root, server.url, requirements,
                      cache_requirements(server.url, requirements))
        bench.logs.mkdir()
        wheels = len(list(bench.wheelhouse.glob("*.whl")))
        print(f"Setup: {wheels} wheels ({TOP_LEVEL_PACKAGES} pinned + {DEPENDENCIES} deps) in "
              f"{bench.wheelhouse}; Redis {server.url}; hash {bench.requirements_hash[:12]}; "
              f"{WORKERS} workers, {REPEATS} runs; Python {sys.version.split()[0]}; "
              f"src at {source_state()}; {host_load()}")
        lock = lock_text(bench.wheelhouse, bench.requirements_hash)
        cached_lock = None if "--no-lock" in argv else lock
        cache_lock(bench, cached_lock)
        print(f"The hash's lock is {'cached in Redis' if cached_lock else 'nowhere'} "
              "(but in the lock-vs-resolve runs)")
        scenarios = measure_calls(bench)
        installer = measure_installer_runs(bench)
        memory = measure_worker_memory(bench)
        locked = measure_locked_builds(bench, lock, after=cached_lock)
        missed = report(scenarios, installer, memory)
        print_locked_builds(locked)
        print(f"(timed runs done; {host_load()})")
        if missed or "--profile" in argv:
            print("\nWhere our call's time goes (wall time per engine step, nested):")
            profile_ours(bench, list(STATES) if "--profile" in argv else missed)
            profile_installer(bench)
    finally:
        server.stop()
        if "--keep" in argv:
            print(f"(kept {root})")
        else:
            shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
