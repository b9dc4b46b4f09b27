"""The fleet's numbers for `GET /metrics`, read from Redis when Prometheus scrapes.

`FleetCollector` is a Prometheus collector. On each scrape it reads, in a
few round trips, what every pool, worker and API host added up in Redis
(`src.core.metrics_store`: executions, environment builds, package install
failures, reuses, fallbacks to the store), the execution stream's length and
what its consumer group holds, and the worker registry (workers by host and
status). Every API host reads the same Redis, so each shows the whole fleet,
each number counted once.

When Redis cannot answer, the scrape still succeeds: `bifrost_metrics_redis_up`
is 0 and the fleet's numbers are left out (the API process's own HTTP
metrics are still there).
"""

from __future__ import annotations

import json
import logging
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import redis
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from src.core import metrics_store as store
from src.foundation.redis_client import get_redis
from src.services.execution import registry
from src.services.execution.executions import GROUP, STREAM_KEY

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class FleetMetric:
    """A metric kept in Redis: its name, HELP text, label names, and the label
    values shown (at 0) before anything was counted under them."""

    name: str
    help: str
    labels: tuple[str, ...] = ()
    known: tuple[tuple[str, ...], ...] = ()


COUNTERS = (
    FleetMetric(store.EXECUTIONS,
                "Executions that ended, by final status (Success, Failed, Timeout); "
                "Failed includes cancelled ones.",
                ("status",), (("Success",), ("Failed",), ("Timeout",))),
    FleetMetric(store.BUILDS,
                "Environment builds (per requirements hash and host, and each retry of "
                "failed lines), by outcome: ok, or failed when a package failed to install.",
                ("outcome",), (("ok",), ("failed",))),
    FleetMetric(store.PACKAGE_FAILURES,
                "Packages that failed to install in an environment build, by canonical name "
                f"(beyond {store.PACKAGE_LABELS_MAX} names, counted as package=\"other\").",
                ("package",)),
    FleetMetric(store.REUSES,
                "Installs that used the environment already built for the requirements hash "
                "instead of building one.",
                (), ((),)),
    FleetMetric(store.STORE_FALLBACKS,
                "Reads that went to the store because Redis could not answer, by cache.",
                ("cache",), (("requirements",), ("lock",), ("module",))),
    FleetMetric(store.CACHE_REFUSALS,
                "Values read from Redis and not used as given because they are not what the "
                "platform writes (a line the API refuses, a hash that is not the content's), "
                "by cache.",
                ("cache",), (("requirements",),)),
)
HISTOGRAMS = (
    FleetMetric(store.EXECUTION_DURATION,
                "How long executions ran, in seconds (those a worker ended, "
                "including by a timeout, or whose worker died).",
                (), ((),)),
    FleetMetric(store.BUILD_DURATION, "How long environment builds took, in seconds.",
                (), ((),)),
)
# Worker statuses shown (at 0) for every host that has workers.
WORKER_STATUSES = ("starting", "installing", "idle", "busy")

LabelValues = tuple[str, ...]


class FleetCollector(Collector):
    """Reads the fleet's numbers from Redis on every scrape."""

    def __init__(self, client: Callable[[], redis.Redis] = get_redis) -> None:
        self._client = client

    def collect(self) -> Iterator[Metric]:
        try:
            client = self._client()
            hashes, stream_length, pending = _read_counts(client)
            pools = registry.list_pools(client)
        except (redis.RedisError, OSError) as exc:
            logger.warning("Could not read the fleet's metrics from Redis: %s", exc)
            yield _redis_up(0)
            return
        yield _redis_up(1)
        for metric in COUNTERS:
            yield _counter(metric, hashes[store.counter_key(metric.name)])
        for metric in HISTOGRAMS:
            yield _histogram(metric, hashes[store.histogram_key(metric.name)])
        yield GaugeMetricFamily("bifrost_execution_stream_length",
                                "Entries in the execution stream (bifrost:executions): "
                                "waiting or running.", value=stream_length)
        yield GaugeMetricFamily("bifrost_execution_stream_pending",
                                "Stream entries a pool has read and not yet acknowledged "
                                "(consumer group bifrost:pools): running or handed out.",
                                value=pending)
        yield _workers(pools)


def _read_counts(client: redis.Redis) -> tuple[dict[str, dict[str, str]], int, int]:
    """Every metric hash, the stream's length and its group's pending count,
    in one round trip."""
    keys = [store.counter_key(m.name) for m in COUNTERS] + \
        [store.histogram_key(m.name) for m in HISTOGRAMS]
    with client.pipeline(transaction=False) as pipe:
        for key in keys:
            pipe.hgetall(key)
        pipe.xlen(STREAM_KEY)
        pipe.xpending(STREAM_KEY, GROUP)
        replies: list[Any] = pipe.execute(raise_on_error=False)
    for reply in replies[:-1]:
        if isinstance(reply, Exception):
            raise reply if isinstance(reply, redis.RedisError) else redis.RedisError(reply)
    hashes = {key: dict(reply or {}) for key, reply in zip(keys, replies, strict=False)}
    summary = replies[-1]  # an error when the group does not exist yet: nothing pending
    pending = int(summary.get("pending") or 0) if isinstance(summary, dict) else 0
    return hashes, int(replies[-2] or 0), pending


def _redis_up(value: int) -> GaugeMetricFamily:
    return GaugeMetricFamily("bifrost_metrics_redis_up",
                             "1 when this scrape could read the fleet's numbers from Redis, "
                             "else 0 (they are left out).", value=value)


def _label_values(metric: FleetMetric, labels: Any) -> LabelValues | None:
    if not isinstance(labels, dict):
        return None
    return tuple(str(labels.get(name, "")) for name in metric.labels)


def _counter(metric: FleetMetric, fields: Mapping[str, str]) -> CounterMetricFamily:
    values: dict[LabelValues, float] = dict.fromkeys(metric.known, 0.0)
    for field, count in fields.items():
        try:
            labels = _label_values(metric, json.loads(field))
            if labels is not None:
                values[labels] = values.get(labels, 0.0) + float(count)
        except ValueError:
            continue  # not ours: never fail a scrape over it
    family = CounterMetricFamily(metric.name, metric.help, labels=metric.labels)
    for labels, value in sorted(values.items()):
        family.add_metric(labels, value)
    return family


def _histogram(metric: FleetMetric, fields: Mapping[str, str]) -> HistogramMetricFamily:
    buckets: dict[LabelValues, dict[str, float]] = defaultdict(dict)
    for known in metric.known:
        buckets[known] = {}
    for field, count in fields.items():
        try:
            labels, part = json.loads(field)
            values = _label_values(metric, labels)
            if values is not None:
                parts = buckets[values]
                parts[str(part)] = parts.get(str(part), 0.0) + float(count)
        except (ValueError, TypeError):
            continue
    family = HistogramMetricFamily(metric.name, metric.help, labels=metric.labels)
    for labels, parts in sorted(buckets.items()):
        cumulative, total = [], 0.0
        for bound in [str(b) for b in store.BUCKETS] + [store.INF]:
            total += parts.get(bound, 0.0)
            cumulative.append((bound, total))
        family.add_metric(labels, cumulative, parts.get(store.SUM, 0.0))
    return family


def _workers(pools: list[registry.PoolState]) -> GaugeMetricFamily:
    counts: Counter[tuple[str, str]] = Counter()
    for pool in pools:
        for worker in pool["workers"]:
            if worker["status"] != "stopped":
                counts[(str(worker["host"]), str(worker["status"]))] += 1
    for host in {host for host, _status in counts}:
        for status in WORKER_STATUSES:
            counts.setdefault((host, status), 0)
    family = GaugeMetricFamily("bifrost_workers",
                               "Live worker processes, by host and status (from the worker "
                               "registry; a retiring worker counts until it exits).",
                               labels=("host", "status"))
    for (host, status), count in sorted(counts.items()):
        family.add_metric((host, status), count)
    return family
