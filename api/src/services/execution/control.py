"""The control channel: one pub/sub channel every pool on every host listens to.

Messages are JSON objects with an `action`: `recycle` (replace every worker
process, e.g. after requirements changed) or `cancel` (the pool running the
execution `id` kills its process group).
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from typing import Any

import redis

from src.foundation.redis_client import get_redis
from src.foundation.settings import get_settings

logger = logging.getLogger(__name__)

CONTROL_CHANNEL = "bifrost:control"


def control_channel(client: redis.Redis) -> str:
    """The control channel of the database `client` uses. Pub/sub is server-wide
    while keys live in one database, so two deployments that share a server on
    different databases would hear each other's recycles on one channel name:
    database 0 keeps `bifrost:control`, database N listens on `bifrost:control@N`."""
    db = int(client.connection_pool.connection_kwargs.get("db") or 0)
    return CONTROL_CHANNEL if db == 0 else f"{CONTROL_CHANNEL}@{db}"


def publish_recycle(reason: str, client: redis.Redis | None = None) -> int:
    """Tell every pool to recycle; returns how many subscribers heard it."""
    message = json.dumps({"action": "recycle", "reason": reason, "sent_at": time.time()})
    client = client or get_redis()
    return int(client.publish(control_channel(client), message))  # type: ignore[arg-type]


def publish_cancel(execution_id: str, client: redis.Redis | None = None) -> int:
    """Tell the pool running `execution_id` to cancel it."""
    message = json.dumps({"action": "cancel", "id": execution_id, "sent_at": time.time()})
    client = client or get_redis()
    return int(client.publish(control_channel(client), message))  # type: ignore[arg-type]


class ControlListener(threading.Thread):
    """Subscribes in the background and hands messages to `messages`.

    A dropped connection (Redis restarted, network blip) is re-established and
    re-subscribed with backoff; `resubscribed` is set each time that happens,
    so the pool can check for a broadcast it may have missed meanwhile.
    """

    def __init__(self, redis_url: str | None = None) -> None:
        super().__init__(name="bifrost-control", daemon=True)
        self.redis_url = redis_url or get_settings().redis_url
        self.messages: queue.Queue[dict[str, Any]] = queue.Queue()
        self.subscribed = threading.Event()
        self.resubscribed = threading.Event()
        self._stop_event = threading.Event()

    def stop(self) -> None:
        self._stop_event.set()

    def run(self) -> None:
        delay = 0.2
        first = True
        while not self._stop_event.is_set():
            client = redis.from_url(
                self.redis_url, decode_responses=True, socket_connect_timeout=5.0,
                health_check_interval=10,
            )
            pubsub = client.pubsub(ignore_subscribe_messages=True)
            try:
                pubsub.subscribe(control_channel(client))
                if not first:
                    logger.info("Control channel re-subscribed")
                    self.resubscribed.set()
                first, delay = False, 0.2
                self.subscribed.set()
                while not self._stop_event.is_set():
                    message = pubsub.get_message(timeout=1.0)
                    if message is not None:
                        self._deliver(message.get("data"))
            except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
                self.subscribed.clear()
                logger.warning("Control channel lost (%s); reconnecting in %.1f s", exc, delay)
                self._stop_event.wait(delay)
                delay = min(delay * 2, 5.0)
            finally:
                try:
                    pubsub.close()
                    client.close()
                except Exception:  # closing a broken connection may fail; nothing to do
                    pass

    def _deliver(self, data: Any) -> None:
        try:
            message = json.loads(data)
        except (TypeError, ValueError):
            logger.warning("Ignoring a malformed control message: %r", data)
            return
        if isinstance(message, dict):
            self.messages.put(message)
