"""`GET /metrics` over the real stack: two pools standing in for two hosts
(each its own host name and packages dir, one worker each), real executions,
real environment builds (one that works, one with a package that cannot
build), a recycle that reuses what was built; then the exact numbers, parsed
as Prometheus parses them.

What each host contributes is deterministic: with one worker per host, every
requirements change makes each host build its environment exactly once, and a
recycle on an unchanged hash makes each host reuse it exactly once."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from tests.support.stack import Stack
from tests.support.wheels import build_sdist, build_wheel

HOSTS = ("host-a", "host-b")
WORKFLOW = """\
def ok(n=1):
    return n


def boom():
    raise ValueError("boom")
"""

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(stack: Stack) -> Samples:
    response = stack.client.get("/metrics")
    assert response.status_code == 200, response.text
    return {(sample.name, frozenset(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(response.text)
            for sample in family.samples}


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def series(samples: Samples, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    return {tuple(sorted(labels)): count for (sample, labels), count in samples.items()
            if sample == name}


def http(samples: Samples, method: str, route: str, status: int) -> float | None:
    return value(samples, "bifrost_http_requests_total",
                 method=method, route=route, status=str(status))


def settled(stack: Stack) -> Samples:
    """The metrics once the registry shows one idle worker per host and
    nothing else (retired workers have exited, so all they counted is in)."""
    idle = {(("host", host), ("status", status)): 1.0 if status == "idle" else 0.0
            for host in HOSTS for status in ("starting", "installing", "idle", "busy")}

    def one_idle_worker_per_host() -> Samples | None:
        samples = scrape(stack)
        return samples if series(samples, "bifrost_workers") == idle else None

    return stack.wait(one_idle_worker_per_host, 60, "one idle worker per host")


def test_metrics_count_the_whole_fleet_exactly(
    make_stack: Callable[..., Stack], tmp_path: Path
) -> None:
    stack = make_stack(pools=2, workers_per_pool=1, pool_env=[
        {"BIFROST_HOST_NAME": host, "BIFROST_PACKAGES_DIR": str(tmp_path / f"{host}-packages")}
        for host in HOSTS
    ])
    build_wheel(stack.wheelhouse, "metrics-good", "1.0")
    build_sdist(stack.wheelhouse, "needs-gcc", "1.0", behaviour="fail")
    stack.start()
    assert stack.client.get("/metrics", headers={"Authorization": ""}).status_code == 401

    # Executions: three succeed, one fails.
    stack.upload("workflows/m.py", WORKFLOW)
    records = [stack.execute("workflows.m", "ok", {"n": n}) for n in range(3)]
    records.append(stack.execute("workflows.m", "boom"))
    assert [r["status"] for r in records] == ["Success"] * 3 + ["Failed"]

    # A build that works on each host, then a recycle that reuses it on each host.
    good_hash = stack.install("metrics-good", "1.0")["hash"]
    stack.wait_ready(good_hash)
    # A pool may recycle twice for one change (it noticed the new hash on a
    # heartbeat just before the broadcast came): the twin reuses what its
    # sibling built. Count the reuses of the recycle alone, once every
    # worker but the serving ones has left.
    reuses = value(settled(stack), "bifrost_environment_reuses_total") or 0
    assert stack.client.post("/api/workers/recycle-all").status_code == 202
    stack.wait(lambda: value(scrape(stack), "bifrost_environment_reuses_total")
               == reuses + len(HOSTS), 90, "each host to reuse its environment once")
    stack.wait_ready(good_hash)

    # A package that cannot build: each host builds once, and it fails there.
    bad_hash = stack.install("needs-gcc", "1.0")["hash"]
    fleet = stack.wait_ready(bad_hash)
    assert all([f["package"] for f in w["install"]["failed"]] == ["needs-gcc==1.0"]
               for w in fleet["workers"]), fleet
    samples = settled(stack)

    assert series(samples, "bifrost_executions_total") == {
        (("status", "Success"),): 3, (("status", "Failed"),): 1, (("status", "Timeout"),): 0}
    assert value(samples, "bifrost_execution_duration_seconds_count") == 4
    assert value(samples, "bifrost_execution_duration_seconds_bucket", le="+Inf") == 4
    assert (value(samples, "bifrost_execution_duration_seconds_sum") or 0) > 0
    assert value(samples, "bifrost_execution_stream_length") == 0
    assert value(samples, "bifrost_execution_stream_pending") == 0

    assert series(samples, "bifrost_environment_builds_total") == {
        (("outcome", "ok"),): 2, (("outcome", "failed"),): 2}
    assert value(samples, "bifrost_environment_build_duration_seconds_count") == 4
    assert series(samples, "bifrost_package_install_failures_total") == {
        (("package", "needs-gcc"),): 2}
    assert (value(samples, "bifrost_environment_reuses_total") or 0) >= len(HOSTS)
    assert series(samples, "bifrost_store_fallbacks_total") == {
        (("cache", "requirements"),): 0, (("cache", "lock"),): 0, (("cache", "module"),): 0}
    assert value(samples, "bifrost_metrics_redis_up") == 1

    # This API process's requests, by route template.
    assert http(samples, "POST", "/api/executions", 202) == 4
    assert (http(samples, "GET", "/api/executions/{execution_id}", 200) or 0) >= 4
    assert http(samples, "PUT", "/api/files/{path:path}", 200) == 1
    assert http(samples, "POST", "/api/packages/install", 200) == 2
    assert http(samples, "POST", "/api/workers/recycle-all", 202) == 1
    assert http(samples, "GET", "/metrics", 401) == 1
    assert not any(r["id"] in dict(labels).get("route", "")
                   for r in records for (_name, labels) in samples)
