"""Write benchmark: what resolving every requirements write into a lock costs.

Run from `api/`:

    ../.venv/bin/python -m bench.writes [--no-pypi]

In one temp dir: a private redis-server (LocalRedis, free port), a migrated
SQLite store, and a local package index (a directory of 20 tiny wheels,
PIP_FIND_LINKS + PIP_NO_INDEX, UV_CACHE_DIR of its own). The write path is
called as the API calls it (`src.services.packages.put_requirements`):

1. RESOLVE: 20 writes, each a requirements.txt never written before
   (`bench-pkg-<i>`, then the earlier ones too), so each resolves a new lock
   with uv before it is stored;
2. BASELINE, in the same process: the same 20 files written again, whose
   hashes have a lock already: the same write with no resolution.
p50 and max of each, and the ratio RESOLVE / BASELINE.
3. Unless --no-pypi: one write of `pandas` against the real index (PyPI, or
   the operator's PIP_INDEX_URL), with an empty uv cache: what a user waits for.
"""

from __future__ import annotations

import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

WRITES = 20


def timed(action: object) -> float:
    started = time.perf_counter()
    action()  # type: ignore[operator]
    return (time.perf_counter() - started) * 1000


def main(argv: list[str]) -> int:
    from src.foundation.local_redis import LocalRedis
    from tests.support.wheels import build_wheel

    root = Path(tempfile.mkdtemp(prefix="bifrost-bench-writes-"))
    server = LocalRedis(root / "redis")
    try:
        server.start()
        index = root / "index"
        for number in range(WRITES):
            build_wheel(index, f"bench-pkg-{number}", "1.0")
        os.environ.update(
            REDIS_URL=server.url, DATABASE_URL=f"sqlite:///{root / 'bifrost.db'}",
            BIFROST_DATA_DIR=str(root / "data"), PIP_FIND_LINKS=str(index), PIP_NO_INDEX="1",
            UV_CACHE_DIR=str(root / "uv-cache"),
        )
        from src.services import packages
        from src.store.migrate import upgrade_to_head

        upgrade_to_head(os.environ["DATABASE_URL"])
        files = ["".join(f"bench-pkg-{i}==1.0\n" for i in range(count + 1))
                 for count in range(WRITES)]
        resolve = [timed(lambda f=f: packages.put_requirements(f)) for f in files]
        baseline = [timed(lambda f=f: packages.put_requirements(f)) for f in files]
        print(f"Write with resolution, {WRITES} writes against a local index of {WRITES} "
              f"wheels (1 to {WRITES} lines):")
        for label, times in (("RESOLVE (new hash: uv pip compile)", resolve),
                             ("BASELINE (hash has a lock: none)", baseline)):
            print(f"    {label:<38} p50 {statistics.median(times):7.1f} ms  "
                  f"max {max(times):7.1f} ms")
        print(f"    RESOLVE / BASELINE (p50) = "
              f"{statistics.median(resolve) / statistics.median(baseline):.1f}x")
        if "--no-pypi" not in argv:
            _pypi(packages, root)
        return 0
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


def _pypi(packages: object, root: Path) -> None:
    for name in ("PIP_FIND_LINKS", "PIP_NO_INDEX"):
        os.environ.pop(name, None)
    os.environ["UV_CACHE_DIR"] = str(root / "uv-cache-pypi")
    index = os.environ.get("PIP_INDEX_URL", "https://pypi.org/simple")
    try:
        took = timed(lambda: packages.put_requirements("pandas\n"))  # type: ignore[attr-defined]
    except Exception as exc:  # the network is the operator's: report, do not fail
        print(f"\nWrite of `pandas` against {index}: failed ({type(exc).__name__}: {exc})")
        return
    lock = packages.list_packages()["lock"]  # type: ignore[attr-defined]
    print(f"\nWrite of `pandas` against {index}, empty uv cache: {took:.0f} ms "
          f"(lock: {', '.join(lock)})")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
