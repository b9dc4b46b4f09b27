"""The process's shared synchronous Redis client.

One connection pool per process and URL. The API uses it from worker threads
(`asyncio.to_thread`), pools and workers directly: one client, no event-loop
binding, and redis-py's pool notices a fork and reconnects in the child.
"""

from __future__ import annotations

import threading

import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from src.foundation.settings import get_settings

_lock = threading.Lock()
_clients: dict[str, redis.Redis] = {}


def get_redis(url: str | None = None) -> redis.Redis:
    url = url or get_settings().redis_url
    with _lock:
        client = _clients.get(url)
        if client is None:
            client = redis.Redis.from_url(
                url,
                decode_responses=True,
                socket_timeout=5.0,
                socket_connect_timeout=5.0,
                health_check_interval=30,
                # A pooled connection that died with a Redis restart is replaced
                # on the spot, instead of failing the command that found it. A
                # Redis that refuses connections is reported within ~30 ms: the
                # callers have their own answer to an outage (503, the store).
                retry=Retry(ExponentialBackoff(cap=0.1, base=0.01), retries=2),
                retry_on_error=[redis.ConnectionError, redis.TimeoutError],
            )
            _clients[url] = client
        return client


def close_clients() -> None:
    """Drop every cached client (tests, and processes about to exit)."""
    with _lock:
        for client in _clients.values():
            client.close()
        _clients.clear()


class CacheNotCleared(redis.RedisError):
    """Something changed in the store, and Redis could neither take the change
    nor drop its old copy: readers may get the old value until it does. The
    API answers 503 with the message (a write must never look done)."""
