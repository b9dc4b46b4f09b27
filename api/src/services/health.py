"""What `GET /health` checks: that this API process reaches Redis and the store.

An API that answers but cannot reach either would accept requests it can
only refuse; a load balancer or an operator asking /health learns which part
is down instead (503, naming it). /health needs no token, so the answer names
the part only; the reason (addresses, errors) goes to the log, once per change.
"""

from __future__ import annotations

import logging

import redis
from sqlalchemy import text

from src.foundation.redis_client import get_redis
from src.foundation.settings import get_settings
from src.store.database import StoreUnavailable, connection_scope, store_exists

logger = logging.getLogger(__name__)

# What the last check found: a change is logged once, not at every poll.
_last: dict[str, str] = {}


def parts_down() -> list[str]:
    """The parts that are down ("redis", "store"); empty when all answer."""
    settings = get_settings()
    found: dict[str, str] = {}
    try:
        get_redis(settings.redis_url).ping()
    except redis.RedisError as exc:
        found["redis"] = str(exc)
    try:
        if not store_exists():  # a reader never creates a SQLite file
            raise StoreUnavailable("there is no store (run `bifrost init`)")
        with connection_scope() as connection:
            connection.execute(text("SELECT 1"))
    except StoreUnavailable as exc:
        found["store"] = str(exc)
    if found.keys() != _last.keys():
        if found:
            logger.warning("Health check: %s", "; ".join(
                f"{part} unavailable: {reason}" for part, reason in found.items()))
        else:
            logger.info("Health check: Redis and the store answer again")
        _last.clear()
        _last.update(found)
    return list(found)
