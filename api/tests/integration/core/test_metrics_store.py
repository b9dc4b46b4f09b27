"""The fleet's metrics in Redis (src.core.metrics_store), and the report that
reads them back (src.services.metrics_report), on the run's real Redis."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from src.core import lock_cache, metrics_store, module_cache
from src.core.metrics_store import Increments
from src.foundation.redis_client import close_clients
from src.foundation.settings import get_settings
from src.services.execution import executions, registry
from src.services.metrics_report import FleetCollector

DEAD_REDIS = "redis://127.0.0.1:1/0"  # nothing listens on port 1

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@pytest.fixture(autouse=True)
def nothing_pending() -> Iterator[None]:
    """What a test leaves waiting in this process is not the next test's."""
    metrics_store.forget_pending()
    yield
    metrics_store.forget_pending()
    close_clients()


def scrape(client: redis.Redis) -> Samples:
    """What GET /metrics would show of the fleet, parsed as Prometheus parses it."""
    registry_ = CollectorRegistry()
    registry_.register(FleetCollector(lambda: client))
    text = generate_latest(registry_).decode()
    return {(sample.name, frozenset(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def dead_client() -> redis.Redis:
    return redis.Redis.from_url(DEAD_REDIS, socket_connect_timeout=0.5, decode_responses=True)


def test_counters_and_histograms_add_up_across_calls(redis_client: redis.Redis) -> None:
    metrics_store.incr(metrics_store.EXECUTIONS, {"status": "Success"}, client=redis_client)
    metrics_store.incr(metrics_store.EXECUTIONS, {"status": "Success"}, by=2, client=redis_client)
    metrics_store.incr(metrics_store.EXECUTIONS, {"status": "Timeout"}, client=redis_client)
    for seconds in (0.003, 0.2, 0.2, 7.0, 1000.0):
        metrics_store.observe(metrics_store.EXECUTION_DURATION, None, seconds,
                              client=redis_client)

    samples = scrape(redis_client)
    assert value(samples, "bifrost_executions_total", status="Success") == 3
    assert value(samples, "bifrost_executions_total", status="Timeout") == 1
    assert value(samples, "bifrost_executions_total", status="Failed") == 0  # shown at 0
    histogram = "bifrost_execution_duration_seconds"
    assert value(samples, f"{histogram}_bucket", le="0.01") == 1
    assert value(samples, f"{histogram}_bucket", le="0.25") == 3  # cumulative
    assert value(samples, f"{histogram}_bucket", le="10.0") == 4
    assert value(samples, f"{histogram}_bucket", le="300.0") == 4
    assert value(samples, f"{histogram}_bucket", le="+Inf") == 5
    assert value(samples, f"{histogram}_count") == 5
    assert value(samples, f"{histogram}_sum") == pytest.approx(1007.403)
    assert value(samples, "bifrost_metrics_redis_up") == 1


def test_package_labels_are_capped_fleet_wide(redis_client: redis.Redis) -> None:
    for name in ("a", "b", "c", "d", "a"):
        metrics_store.incr(metrics_store.PACKAGE_FAILURES, {"package": name},
                           max_series=3, client=redis_client)

    samples = scrape(redis_client)
    counts = {dict(labels)["package"]: count for (name, labels), count in samples.items()
              if name == "bifrost_package_install_failures_total"}
    # a, b, c take the three places; d goes to `other`; a keeps its own.
    assert counts == {"a": 2, "b": 1, "c": 1, "other": 1}


def test_an_outage_keeps_counts_waiting_then_writes_them_once(
    redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch,
) -> None:
    # "Right after" a failed write lasts RETRY_AFTER_SECONDS; as long as the
    # test needs here, so that a slow machine does not outlive it mid-test.
    monkeypatch.setattr(metrics_store, "RETRY_AFTER_SECONDS", 3600.0)
    down = dead_client()
    metrics_store.incr(metrics_store.BUILDS, {"outcome": "ok"}, client=down)
    metrics_store.incr(metrics_store.BUILDS, {"outcome": "ok"}, client=down)
    metrics_store.observe(metrics_store.BUILD_DURATION, None, 2.0, client=down)
    # Right after a failed write, counts only wait: one outage, not one timeout per count.
    metrics_store.incr(metrics_store.BUILDS, {"outcome": "ok"}, client=redis_client)
    assert redis_client.keys("bifrost:metrics:*") == []

    metrics_store.flush(redis_client)
    metrics_store.flush(redis_client)  # nothing left: nothing twice

    samples = scrape(redis_client)
    assert value(samples, "bifrost_environment_builds_total", outcome="ok") == 3
    assert value(samples, "bifrost_environment_build_duration_seconds_count") == 1
    assert value(samples, "bifrost_environment_build_duration_seconds_sum") == 2.0


def test_counts_redis_refuses_are_dropped_not_retried(redis_client: redis.Redis) -> None:
    redis_client.set(metrics_store.counter_key(metrics_store.REUSES), "not a hash")
    metrics_store.incr(metrics_store.REUSES, client=redis_client)  # WRONGTYPE: no raise
    assert not metrics_store._pending

    redis_client.delete(metrics_store.counter_key(metrics_store.REUSES))
    metrics_store.incr(metrics_store.REUSES, client=redis_client)
    assert value(scrape(redis_client), "bifrost_environment_reuses_total") == 1


def test_a_staged_batch_rides_the_callers_pipeline(redis_client: redis.Redis) -> None:
    with redis_client.pipeline() as pipe:
        pipe.set("unrelated", "1")
        metrics_store.stage(pipe, Increments().count(metrics_store.EXECUTIONS,
                                                     {"status": "Failed"}))
        pipe.execute()
    assert value(scrape(redis_client), "bifrost_executions_total", status="Failed") == 1


def test_module_cache_fallbacks_are_counted_when_redis_answers_again(
    redis_client: redis.Redis,
) -> None:
    down = dead_client()
    assert module_cache.read_file_sync("workflows/none.py", down) is None  # the store: none
    assert module_cache.index_sync(down) == set()
    assert redis_client.keys("bifrost:metrics:*") == []

    module_cache.read_file_sync("workflows/none.py", redis_client)  # Redis answers

    samples = scrape(redis_client)
    assert value(samples, "bifrost_store_fallbacks_total", cache="module") == 2
    assert value(samples, "bifrost_store_fallbacks_total", cache="lock") == 0


def test_lock_cache_fallback_is_counted_when_redis_answers_again(
    redis_client: redis.Redis, redis_url: str, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("REDIS_URL", DEAD_REDIS)
    get_settings.cache_clear()
    assert lock_cache.read_lock("f" * 64) is None  # Redis down, no store: no lock

    monkeypatch.setenv("REDIS_URL", redis_url)
    get_settings.cache_clear()
    assert lock_cache.read_lock("f" * 64) is None  # Redis answers: the count goes with it
    assert value(scrape(redis_client), "bifrost_store_fallbacks_total", cache="lock") == 1


def test_the_report_reads_the_stream_and_the_registry(redis_client: redis.Redis) -> None:
    for _ in range(3):
        redis_client.xadd(executions.STREAM_KEY, {"id": "x", "module": "m", "function": "f"})
    redis_client.xgroup_create(executions.STREAM_KEY, executions.GROUP, id="0")
    redis_client.xreadgroup(executions.GROUP, "pool-1", {executions.STREAM_KEY: ">"}, count=2)
    for pool_id, host, statuses in (("p1", "host-a", ["idle", "busy"]),
                                    ("p2", "host-b", ["installing"]),
                                    ("p3", "host-a", ["idle", "stopped"])):
        registry.publish_pool_state(registry.PoolState(
            pool_id=pool_id, host=host, pid=1, started_at=0.0,
            workers=[_worker(f"{pool_id}-{i}", host, status)
                     for i, status in enumerate(statuses)],
        ), redis_client)

    samples = scrape(redis_client)
    assert value(samples, "bifrost_execution_stream_length") == 3
    assert value(samples, "bifrost_execution_stream_pending") == 2
    workers = {tuple(sorted(dict(labels).items())): count
               for (name, labels), count in samples.items() if name == "bifrost_workers"}
    assert workers == {
        (("host", "host-a"), ("status", "busy")): 1,
        (("host", "host-a"), ("status", "idle")): 2,
        (("host", "host-a"), ("status", "installing")): 0,
        (("host", "host-a"), ("status", "starting")): 0,
        (("host", "host-b"), ("status", "busy")): 0,
        (("host", "host-b"), ("status", "idle")): 0,
        (("host", "host-b"), ("status", "installing")): 1,
        (("host", "host-b"), ("status", "starting")): 0,
    }


def test_an_empty_fleet_reads_as_zeros(redis_client: redis.Redis) -> None:
    samples = scrape(redis_client)
    assert value(samples, "bifrost_execution_stream_length") == 0
    assert value(samples, "bifrost_execution_stream_pending") == 0  # no group yet
    assert value(samples, "bifrost_environment_reuses_total") == 0
    assert value(samples, "bifrost_execution_duration_seconds_count") == 0


def test_without_redis_the_report_says_so_and_does_not_fail() -> None:
    samples = scrape(dead_client())
    assert value(samples, "bifrost_metrics_redis_up") == 0
    assert value(samples, "bifrost_execution_stream_length") is None


def _worker(worker_id: str, host: str, status: str) -> registry.WorkerState:
    return registry.WorkerState(worker_id=worker_id, host=host, pid=1, status=status,  # type: ignore[typeddict-item]
                                requirements_hash=None, install=None, started_at=0.0,
                                ready_at=None)
