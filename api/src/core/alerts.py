"""Install-failure alerts: one per failed package per requirements hash,
however many workers on however many hosts saw it fail.

A pool hands each worker's install outcome to `note_outcome` (one round trip,
a Lua script, so that any number of pools reporting at once agree):

- each failed package: the first report creates the alert and queues its one
  webhook delivery (`alert_outbox`, sent by the API); every report adds its
  host and bumps `last_seen` and `count`. A failure of an alert that was
  resolved opens it again, without a second delivery (one alert per package
  per hash);
- an outcome that built or reused an environment for the hash (no failure of
  the whole install) resolves the hash's open alerts whose package it does
  not list as failed: a reused environment reports the failures recorded at
  its build, so a reuse never passes for a success.

An install abandoned because nobody would use it (the worker was retiring, or
the requirements moved on) says nothing about any package: it is ignored.

Keys:
- `bifrost:alert:<hash>:<name>` (name: the canonical distribution name, or
  `requirements.txt` when the whole install failed), a hash: `hash`,
  `package` (as the installer named it, `needs-gcc==1.0`), `error` (the first
  report's), `first_seen`, `last_seen`, `count`, `resolved` (`0`/`1`),
  `resolved_at`, and the delivery's `delivery_status`, `delivery_attempts`,
  `delivery_error`, `delivered_at` (see `alert_outbox`);
- `<that key>:hosts`: the hosts that saw it fail;
- `bifrost:alerts`: every alert key by `first_seen`, for the listing; the
  oldest are dropped beyond `MAX_ALERTS`;
- `bifrost:alerts:open:<hash>`: the hash's alerts not resolved.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from typing import Any, TypedDict

import redis
from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from src.core import alert_outbox

logger = logging.getLogger(__name__)

ALERT_PREFIX = "bifrost:alert:"
INDEX_KEY = "bifrost:alerts"
OPEN_PREFIX = "bifrost:alerts:open:"
MAX_ALERTS = 1000
# The `package` of a failure of the whole install, as the installer names it
# (src.services.installer.outcome.WHOLE_INSTALL; core sits below the installer).
WHOLE_INSTALL = "requirements.txt"
# How the worker names an install it abandoned (src.services.execution.simple_worker).
ABANDONED_PREFIX = "install stopped"
MAX_ERROR_CHARS = 4000

# KEYS: the index, the outbox, the hash's open set.
# ARGV: now, host, hash, whether this outcome resolves what it does not list
# ("1"/"0"), the open-set prefix, MAX_ALERTS, the first delivery's delay, the
# most that delay may grow to while new hosts report, then the failures as
# JSON [[key, package, error], ...]. Returns {created, resolved}.
_NOTE = """
local now = tonumber(ARGV[1])
local gather, gather_max = tonumber(ARGV[7]), tonumber(ARGV[8])
local failing, created, resolved = {}, 0, 0
for _, failure in ipairs(cjson.decode(ARGV[9])) do
    local key, package, err = failure[1], failure[2], failure[3]
    failing[key] = true
    if redis.call('EXISTS', key) == 0 then
        redis.call('HSET', key, 'hash', ARGV[3], 'package', package, 'error', err,
            'first_seen', ARGV[1], 'last_seen', ARGV[1], 'count', 0, 'resolved', 0,
            'resolved_at', '', 'delivery_status', 'pending', 'delivery_attempts', 0,
            'delivery_error', '', 'delivered_at', '')
        redis.call('ZADD', KEYS[1], now, key)
        redis.call('ZADD', KEYS[2], now + gather, key)
        created = created + 1
    elseif redis.call('HGET', key, 'resolved') == '1' then
        redis.call('HSET', key, 'resolved', 0, 'resolved_at', '')
    end
    local new_host = redis.call('SADD', key .. ':hosts', ARGV[2]) == 1
    redis.call('HINCRBY', key, 'count', 1)
    redis.call('HSET', key, 'last_seen', ARGV[1])
    redis.call('SADD', KEYS[3], key)
    -- A host that joins while the first delivery still waits: wait a little
    -- longer, so that the one POST names the hosts that fail together.
    if new_host and redis.call('HGET', key, 'delivery_status') == 'pending' then
        local first = tonumber(redis.call('HGET', key, 'first_seen'))
        redis.call('ZADD', KEYS[2], 'XX', math.min(now + gather, first + gather_max), key)
    end
end
if ARGV[4] == '1' then
    for _, key in ipairs(redis.call('SMEMBERS', KEYS[3])) do
        if not failing[key] then
            if redis.call('EXISTS', key) == 1 then
                redis.call('HSET', key, 'resolved', 1, 'resolved_at', ARGV[1])
                resolved = resolved + 1
            end
            redis.call('SREM', KEYS[3], key)
        end
    end
end
local excess = redis.call('ZCARD', KEYS[1]) - tonumber(ARGV[6])
if excess > 0 then
    for _, key in ipairs(redis.call('ZRANGE', KEYS[1], 0, excess - 1)) do
        local hash = redis.call('HGET', key, 'hash')
        if hash then redis.call('SREM', ARGV[5] .. hash, key) end
        redis.call('DEL', key, key .. ':hosts')
        redis.call('ZREM', KEYS[1], key)
        redis.call('ZREM', KEYS[2], key)
    end
end
return {created, resolved}
"""


class Delivery(TypedDict):
    status: str  # pending, sending, retrying, sent, failed, no webhook
    attempts: int
    last_error: str | None
    delivered_at: float | None


class Alert(TypedDict):
    id: str  # `<hash>:<name>`: what a receiver may deduplicate on
    hash: str
    package: str
    error: str
    hosts: list[str]
    first_seen: float
    last_seen: float
    count: int  # install outcomes (worker starts) that reported the failure
    resolved: bool
    resolved_at: float | None
    delivery: Delivery


def package_key(package: str) -> str:
    """What identifies a failed package within a hash: its canonical
    distribution name (`needs-gcc==1.0` -> `needs-gcc`)."""
    if package == WHOLE_INSTALL:
        return package
    try:
        return canonicalize_name(Requirement(package).name)
    except InvalidRequirement:
        return "".join(package.lower().split())[:200]


def alert_key(requirements_hash: str, package: str) -> str:
    return f"{ALERT_PREFIX}{requirements_hash}:{package_key(package)}"


def note_outcome(outcome: Mapping[str, Any], host: str, client: redis.Redis) -> None:
    """Record what one worker's install outcome says about alerts (see the
    module docstring). Never raises: alerts are best-effort, the pool goes on."""
    try:
        _note(outcome, host, client)
    except Exception as exc:
        logger.warning("Could not record the install outcome's alerts (host %s): %s", host, exc)


def _note(outcome: Mapping[str, Any], host: str, client: redis.Redis) -> None:
    requirements_hash = outcome.get("requirements_hash")
    if not isinstance(requirements_hash, str) or not requirements_hash:
        return  # nothing could be read: no hash to pin a failure on
    failed = [f for f in outcome.get("failed") or [] if isinstance(f, Mapping)]
    packages = [(str(f.get("package", "")), str(f.get("error", ""))) for f in failed]
    if any(p == WHOLE_INSTALL and e.startswith(ABANDONED_PREFIX) for p, e in packages):
        return  # abandoned: neither a failure nor a success of anything
    whole_failed = any(p == WHOLE_INSTALL for p, _ in packages)
    failures = [[alert_key(requirements_hash, p), p, e[-MAX_ERROR_CHARS:]]
                for p, e in packages if p]
    created, resolved = client.register_script(_NOTE)(
        keys=[INDEX_KEY, alert_outbox.OUTBOX_KEY, OPEN_PREFIX + requirements_hash],
        args=[time.time(), host, requirements_hash, "0" if whole_failed else "1", OPEN_PREFIX,
              MAX_ALERTS, alert_outbox.GATHER_SECONDS, alert_outbox.GATHER_MAX_SECONDS,
              json.dumps(failures, separators=(",", ":"))],
    )
    if created:
        logger.warning("Install failure alert on %s: %s (first seen on %s)",
                       requirements_hash[:12], ", ".join(p for _, p, _ in failures), host)
    if resolved:
        logger.info("%d install failure alert(s) on %s resolved: installed on %s",
                    resolved, requirements_hash[:12], host)


def read_alert(client: redis.Redis, key: str) -> Alert | None:
    """One alert as stored; None when it is gone (dropped as one of the oldest)."""
    with client.pipeline(transaction=True) as pipe:
        pipe.hgetall(key)
        pipe.smembers(key + ":hosts")
        fields, hosts = pipe.execute()
    return _alert(key, fields, hosts)


def list_alerts(client: redis.Redis, *, open_only: bool = False) -> list[Alert]:
    """Every alert kept, newest first (or only those not resolved)."""
    keys: list[str] = list(client.zrevrange(INDEX_KEY, 0, -1))  # type: ignore[arg-type]
    with client.pipeline(transaction=False) as pipe:
        for key in keys:
            pipe.hgetall(key)
            pipe.smembers(key + ":hosts")
        replies = pipe.execute()
    alerts = [_alert(key, replies[2 * i], replies[2 * i + 1]) for i, key in enumerate(keys)]
    return [a for a in alerts if a is not None and not (open_only and a["resolved"])]


def _alert(key: str, fields: dict[str, str], hosts: set[str]) -> Alert | None:
    if not fields or "hash" not in fields:
        return None
    return Alert(
        id=key.removeprefix(ALERT_PREFIX),
        hash=fields["hash"],
        package=fields.get("package", ""),
        error=fields.get("error", ""),
        hosts=sorted(hosts),
        first_seen=_number(fields.get("first_seen")) or 0.0,
        last_seen=_number(fields.get("last_seen")) or 0.0,
        count=int(_number(fields.get("count")) or 0),
        resolved=fields.get("resolved") == "1",
        resolved_at=_number(fields.get("resolved_at")),
        delivery=Delivery(
            status=fields.get("delivery_status") or "pending",
            attempts=int(_number(fields.get("delivery_attempts")) or 0),
            last_error=fields.get("delivery_error") or None,
            delivered_at=_number(fields.get("delivered_at")),
        ),
    )


def _number(text: str | None) -> float | None:
    try:
        return float(text) if text else None
    except ValueError:
        return None
