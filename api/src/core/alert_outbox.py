"""The alerts' webhook deliveries waiting to go out, shared by every API host.

`bifrost:alerts:outbox` is a sorted set of alert keys (`src.core.alerts`)
scored by when their delivery is due. The alert that creates a key puts it
there `GATHER_SECONDS` ahead, so that the one POST names the hosts failing
together (each new host pushes it back, never past `GATHER_MAX_SECONDS`
after the first report).

A sender `claim`s a due delivery atomically: it stays in the set, scored
`LEASE_SECONDS` ahead, so that no other API host takes it meanwhile, and
comes due again by itself should the sender die before it `settle`s it
(delivery is at least once: a receiver may deduplicate on the alert's id).
`settle` then removes it (sent, given up, no webhook) or scores it for its
next attempt.
"""

from __future__ import annotations

import time
from typing import NamedTuple

import redis

OUTBOX_KEY = "bifrost:alerts:outbox"
GATHER_SECONDS = 2.0
GATHER_MAX_SECONDS = 30.0
LEASE_SECONDS = 60.0

# KEYS: the outbox. ARGV: now, the lease. Returns {key, attempts} of the
# delivery claimed (attempts counts this one; 0 when its alert is gone), or nil.
_CLAIM = """
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, 1)
if #due == 0 then return false end
local key = due[1]
if redis.call('EXISTS', key) == 0 then
    redis.call('ZREM', KEYS[1], key)
    return {key, 0}
end
redis.call('ZADD', KEYS[1], tonumber(ARGV[1]) + tonumber(ARGV[2]), key)
redis.call('HSET', key, 'delivery_status', 'sending')
return {key, redis.call('HINCRBY', key, 'delivery_attempts', 1)}
"""

# KEYS: the outbox, the alert. ARGV: when to try again ('' for never), the
# delivery's status, its last error, when it was delivered ('' for not).
_SETTLE = """
if ARGV[1] == '' then
    redis.call('ZREM', KEYS[1], KEYS[2])
else
    redis.call('ZADD', KEYS[1], tonumber(ARGV[1]), KEYS[2])
end
if redis.call('EXISTS', KEYS[2]) == 1 then
    redis.call('HSET', KEYS[2], 'delivery_status', ARGV[2], 'delivery_error', ARGV[3],
               'delivered_at', ARGV[4])
end
return 1
"""


class Claimed(NamedTuple):
    key: str  # the alert's key
    attempts: int  # this one included; 0: the alert is gone, nothing to send


def claim(client: redis.Redis, now: float | None = None) -> Claimed | None:
    """The next due delivery, now this sender's for `LEASE_SECONDS`; None when none is due."""
    now = time.time() if now is None else now
    claimed = client.register_script(_CLAIM)(keys=[OUTBOX_KEY], args=[now, LEASE_SECONDS])
    if not claimed:
        return None
    key, attempts = claimed
    return Claimed(str(key), int(attempts))


def settle(client: redis.Redis, key: str, status: str, *, retry_at: float | None = None,
           error: str | None = None, delivered_at: float | None = None) -> None:
    """Record how the claimed delivery went; `retry_at` queues another attempt."""
    client.register_script(_SETTLE)(
        keys=[OUTBOX_KEY, key],
        args=["" if retry_at is None else retry_at, status, error or "",
              "" if delivered_at is None else delivered_at],
    )


def pending(client: redis.Redis) -> int:
    """Deliveries not settled yet (waiting, or being sent)."""
    return int(client.zcard(OUTBOX_KEY))  # type: ignore[arg-type]
