"""One requirements hash, one set of versions on every host, through the real
processes: two pools standing in for two hosts (each its own packages dir and
host name) build the same hash before and after the index gains a newer
release, and run identical versions."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

from tests.support.stack import Stack
from tests.support.wheels import build_wheel

WHICH = "import drift\n\n\ndef main():\n    return drift.VERSION\n"


def test_two_hosts_run_the_versions_of_the_lock_after_the_index_moves(
    make_stack: Callable[..., Stack], tmp_path: Path
) -> None:
    hosts = {name: tmp_path / f"{name}-packages" for name in ("host-a", "host-b")}
    stack = make_stack(pools=2, workers_per_pool=1, pool_env=[
        {"BIFROST_PACKAGES_DIR": str(path), "BIFROST_HOST_NAME": name}
        for name, path in hosts.items()
    ])
    build_wheel(stack.wheelhouse, "drift", "1.0")
    stack.start()
    stack.upload("workflows/which.py", WHICH)
    changed = stack.install("drift")  # unpinned: the lock decides
    stack.wait_ready(changed["hash"])

    build_wheel(stack.wheelhouse, "drift", "1.1")  # the index gains a newer release
    stack.stop_pools()
    shutil.rmtree(hosts["host-b"])  # host B starts again with nothing installed
    stack.start_pools()
    stack.wait_subscribed()
    stack.wait_ready(changed["hash"])

    listing = stack.client.get("/api/packages").json()
    assert listing["lock"] == ["drift==1.0"]
    reported = {host["host"]: host for host in listing["hosts"]}
    assert set(reported) == set(hosts)
    for host in reported.values():
        assert host["matches_lock"] is True, host
        assert host["installed"] == [{"name": "drift", "version": "1.0"}]
    assert {stack.execute("workflows.which")["result"] for _ in range(6)} == {"1.0"}
    # Host B rebuilt from the lock: exact pins, no resolution of its own.
    assert "no resolution" in (stack.logs_dir / "pool-1.log").read_text()
