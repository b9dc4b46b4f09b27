"""The fleet's counters and histograms, added up in Redis.

Pools, workers and API hosts are separate processes on many machines, and any
API host's `GET /metrics` shows the whole fleet: so what they count is added
up in Redis, not kept in one process's memory, and the report
(`src.services.metrics_report`) reads it when Prometheus scrapes.

One hash per metric:
- a counter: `bifrost:metrics:counter:<name>`, one field per label set (the
  labels as JSON, sorted keys), the count as its value;
- a histogram: `bifrost:metrics:histogram:<name>`, fields JSON
  `[labels, part]`, where `part` is a bucket's upper bound (`"0.5"`, `"+Inf"`;
  the observations in that bucket alone, the report makes them cumulative) or
  `"sum"`.

Writing never raises. What a process counts goes in one pipeline, one round
trip (`record`, `incr`, `observe`), or into a pipeline the caller executes
anyway (`stage`). When Redis cannot take it (an outage) it waits in this
process and goes with the next write (writes in the next
`RETRY_AFTER_SECONDS` only add to what waits), or with `flush`, which callers
call when Redis has just answered them; `note` only adds to what waits, for
callers counting the very moment Redis is down. Counts Redis
refuses for another reason are dropped (logged), never retried forever.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass

import redis
from redis.client import Pipeline

from src.foundation.redis_client import get_redis

logger = logging.getLogger(__name__)

KEY_PREFIX = "bifrost:metrics:"

# What the fleet counts (their HELP texts are with the report).
EXECUTIONS = "bifrost_executions_total"
EXECUTION_DURATION = "bifrost_execution_duration_seconds"
BUILDS = "bifrost_environment_builds_total"
BUILD_DURATION = "bifrost_environment_build_duration_seconds"
PACKAGE_FAILURES = "bifrost_package_install_failures_total"
REUSES = "bifrost_environment_reuses_total"
STORE_FALLBACKS = "bifrost_store_fallbacks_total"
CACHE_REFUSALS = "bifrost_cache_refusals_total"

# Every histogram's buckets (seconds); above the last, `+Inf`.
# A fork-per-execution call takes about a millisecond, an install minutes: both ends are covered.
BUCKETS: tuple[float, ...] = (
    0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0
)
INF = "+Inf"
SUM = "sum"
# Distinct package names counted by name; the others are counted as `other`.
PACKAGE_LABELS_MAX = 200
OVERFLOW = "other"

Labels = Mapping[str, str]

# A counter with a bounded number of label sets: a new set is counted under
# its own field while the hash has fewer than the cap, else under the
# overflow field. In Redis, so the cap holds fleet-wide.
_CAPPED_INCR = """
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1
        or redis.call('HLEN', KEYS[1]) < tonumber(ARGV[3]) then
    return redis.call('HINCRBY', KEYS[1], ARGV[1], ARGV[2])
end
return redis.call('HINCRBY', KEYS[1], ARGV[4], ARGV[2])
"""


def counter_key(name: str) -> str:
    return f"{KEY_PREFIX}counter:{name}"


def histogram_key(name: str) -> str:
    return f"{KEY_PREFIX}histogram:{name}"


def labels_field(labels: Labels) -> str:
    return _field(tuple(sorted(labels.items())), None)


def histogram_field(labels: Labels, part: str) -> str:
    return _field(tuple(sorted(labels.items())), part)


# The same few label sets come back on every execution's end: encoded once.
@functools.lru_cache(maxsize=1024)
def _field(items: tuple[tuple[str, str], ...], part: str | None) -> str:
    labels = dict(items)
    return json.dumps(labels if part is None else [labels, part], separators=(",", ":"))


_BOUNDS = tuple(zip(BUCKETS, [str(bound) for bound in BUCKETS], strict=True))


def bucket_bound(seconds: float) -> str:
    """The bucket an observation falls in, as its upper bound's text."""
    return next((text for bound, text in _BOUNDS if seconds <= bound), INF)


@dataclass(frozen=True)
class _Op:
    """One field of one hash that goes up: by an integer, or a float (`real`);
    with `cap`, through `_CAPPED_INCR` (`overflow` is the field beyond it)."""

    key: str
    field: str
    real: bool = False
    cap: int = 0
    overflow: str = ""


class Increments:
    """Counts to add in Redis together (one pipeline)."""

    def __init__(self) -> None:
        self._amounts: dict[_Op, float] = {}

    def __bool__(self) -> bool:
        return bool(self._amounts)

    def count(self, name: str, labels: Labels | None = None, by: int = 1, *,
              max_series: int = 0) -> Increments:
        """Counter `name` with `labels` goes up by `by`. With `max_series`, at
        most that many label sets are kept; the rest count as `other`."""
        labels = labels or {}
        overflow = labels_field({key: OVERFLOW for key in labels}) if max_series else ""
        self._add(_Op(counter_key(name), labels_field(labels), cap=max_series,
                      overflow=overflow), by)
        return self

    def observe(self, name: str, labels: Labels | None, seconds: float) -> Increments:
        """Histogram `name` with `labels` gets one observation of `seconds`."""
        labels = labels or {}
        key = histogram_key(name)
        self._add(_Op(key, histogram_field(labels, bucket_bound(seconds))), 1)
        self._add(_Op(key, histogram_field(labels, SUM), real=True), max(seconds, 0.0))
        return self

    def add(self, other: Increments) -> None:
        for op, amount in other._amounts.items():
            self._add(op, amount)

    def take(self) -> Increments:
        """These increments, moved into a new batch (this one is left empty)."""
        taken = Increments()
        taken._amounts, self._amounts = self._amounts, {}
        return taken

    def queue(self, pipe: Pipeline) -> None:
        """Queue the commands that add these increments on `pipe`."""
        for op, amount in self._amounts.items():
            if op.real:
                pipe.hincrbyfloat(op.key, op.field, amount)
            elif op.cap:
                pipe.eval(_CAPPED_INCR, 1, op.key, op.field, int(amount), op.cap, op.overflow)
            else:
                pipe.hincrby(op.key, op.field, int(amount))

    def _add(self, op: _Op, amount: float) -> None:
        self._amounts[op] = self._amounts.get(op, 0) + amount


# --- this process's counts that Redis has not taken yet ---------------------------------

_lock = threading.Lock()
_pending = Increments()
# After a write Redis did not answer, counts only wait (no call) for this
# long, so an outage costs one failed write now and then, not one per count;
# a caller that just got an answer from Redis flushes at once (`flush`).
RETRY_AFTER_SECONDS = 5.0
_down_since: float | None = None  # time.monotonic() of the last write Redis did not answer


def forget_pending() -> None:
    """Drop what this process has waiting: a forked child counts its own (what
    its parent had waiting stays the parent's), and a test starts with none."""
    global _lock, _pending, _down_since
    _lock = threading.Lock()
    _pending = Increments()
    _down_since = None


os.register_at_fork(after_in_child=forget_pending)


def incr(name: str, labels: Labels | None = None, by: int = 1, *, max_series: int = 0,
         client: redis.Redis | None = None, redis_url: str | None = None) -> None:
    """Counter `name` goes up by `by`, fleet-wide. Never raises."""
    record(Increments().count(name, labels, by, max_series=max_series), client,
           redis_url=redis_url)


def observe(name: str, labels: Labels | None, seconds: float, *,
            client: redis.Redis | None = None, redis_url: str | None = None) -> None:
    """Histogram `name` gets one observation, fleet-wide. Never raises."""
    record(Increments().observe(name, labels, seconds), client, redis_url=redis_url)


def record(increments: Increments, client: redis.Redis | None = None, *,
           redis_url: str | None = None) -> None:
    """Add `increments`, and whatever waits, in one round trip (with `client`,
    else the process's client for `redis_url`). Never raises."""
    with _lock:
        _pending.add(increments)
        batch = _pending.take()
    _write(batch, client, redis_url)


def note(increments: Increments) -> None:
    """Keep `increments` for the next write (no Redis call: it is down now)."""
    with _lock:
        _pending.add(increments)


def store_fallback(cache: str) -> None:
    """A cache (`requirements`, `lock`, `module`) read the store because Redis
    could not answer: counted now, written with the next successful call."""
    note(Increments().count(STORE_FALLBACKS, {"cache": cache}))


def cache_refusal(cache: str) -> None:
    """A value read from Redis was refused (it is not what the platform
    writes): counted now, written with the next successful call."""
    note(Increments().count(CACHE_REFUSALS, {"cache": cache}))


def flush(client: redis.Redis | None = None) -> None:
    """Write what waits, if anything does (else no Redis call); for callers
    that Redis has just answered. Never raises."""
    if not _pending:
        return
    with _lock:
        batch = _pending.take()
    _write(batch, client, answered=True)


def stage(pipe: Pipeline, increments: Increments) -> None:
    """Queue `increments` on a pipeline the caller executes, and retries with
    the rest of it when Redis was down."""
    increments.queue(pipe)


def _write(batch: Increments, client: redis.Redis | None, redis_url: str | None = None, *,
           answered: bool = False) -> None:
    global _down_since
    if not batch:
        return
    if not answered and _down_since is not None and \
            time.monotonic() - _down_since < RETRY_AFTER_SECONDS:
        note(batch)
        return
    try:
        client = client or get_redis(redis_url)
        with client.pipeline() as pipe:  # MULTI/EXEC: all of it lands, or none
            batch.queue(pipe)
            pipe.execute()
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        note(batch)
        if _down_since is None:
            logger.warning("Metrics wait in this process until Redis answers: %s", exc)
        _down_since = time.monotonic()
        return
    except Exception as exc:  # refused for another reason: retrying would not help
        logger.warning("Metrics dropped, Redis refused them: %s", exc)
    _down_since = None
