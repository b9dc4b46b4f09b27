"""Sending install-failure alerts to the operator's webhook (`BIFROST_ALERT_WEBHOOK`).

Every API process runs one `AlertDelivery`: a daemon thread, started and
stopped by the app's lifespan, that takes due deliveries from the shared
outbox (`src.core.alert_outbox`; a claim is atomic, so two API hosts never
both send one) and POSTs each alert once as JSON (`payload`). A failed POST
(no answer within `POST_TIMEOUT_SECONDS`, or not 2xx) is tried again after
1 s, 2 s, 4 s, ... (at most `BACKOFF_CAP_SECONDS`), `MAX_ATTEMPTS` times in
all; then the alert's delivery is `failed`, with the last error. Without a
webhook the alerts are still recorded and listed, their delivery `no webhook`.

Nothing here runs in a worker or a pool: a slow or dead webhook delays only
this thread. The webhook's URL may hold a secret (many do): it is never
logged, nor kept in an error.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import httpx
import redis

from src.core import alert_outbox
from src.core.alerts import Alert, read_alert
from src.foundation.redis_client import get_redis
from src.foundation.settings import get_settings

logger = logging.getLogger(__name__)

POST_TIMEOUT_SECONDS = 5.0
BACKOFF_BASE_SECONDS = 1.0
BACKOFF_CAP_SECONDS = 300.0
MAX_ATTEMPTS = 10
# How often the outbox is looked at when nothing was due, and after Redis failed.
IDLE_POLL_SECONDS = 0.5
REDIS_DOWN_PAUSE_SECONDS = 2.0
PAYLOAD_EVENT = "package_install_failed"


def backoff(attempt: int) -> float:
    """Seconds to wait after failed attempt number `attempt` (1, 2, 3, ...)."""
    return min(BACKOFF_BASE_SECONDS * 2 ** max(attempt - 1, 0), BACKOFF_CAP_SECONDS)


def payload(alert: Alert) -> dict[str, Any]:
    """The JSON body the webhook gets (README, "Operating it")."""
    return {
        "event": PAYLOAD_EVENT,
        "id": alert["id"],
        "hash": alert["hash"],
        "package": alert["package"],
        "error": alert["error"],
        "hosts": alert["hosts"],
        "first_seen": alert["first_seen"],
        "last_seen": alert["last_seen"],
        "count": alert["count"],
    }


# POSTs a body to a URL; None when it was taken (2xx), else what went wrong.
Post = Callable[[str, dict[str, Any]], str | None]


def _label(alert: Alert) -> str:
    return f"{alert['package']} on {alert['hash'][:12]}"


class AlertSender:
    """Sends the outbox's due deliveries, one per `deliver_next`."""

    def __init__(self, post: Post, clock: Callable[[], float] = time.time) -> None:
        self.post = post
        self.clock = clock

    def deliver_next(self, client: redis.Redis, webhook: str | None) -> bool:
        """Claim one due delivery and send it; False when none was due."""
        claimed = alert_outbox.claim(client, self.clock())
        if claimed is None:
            return False
        alert = read_alert(client, claimed.key) if claimed.attempts else None
        if alert is None:  # dropped as one of the oldest meanwhile
            alert_outbox.settle(client, claimed.key, "failed", error="the alert is gone")
            return True
        if webhook is None:
            alert_outbox.settle(client, claimed.key, "no webhook")
            return True
        error = self.post(webhook, payload(alert))
        self._settle(client, claimed, alert, error)
        return True

    def _settle(self, client: redis.Redis, claimed: alert_outbox.Claimed, alert: Alert,
                error: str | None) -> None:
        now, attempts = self.clock(), claimed.attempts
        if error is None:
            logger.info("Alert %s sent to the webhook (attempt %d)", _label(alert), attempts)
            alert_outbox.settle(client, claimed.key, "sent", delivered_at=now)
        elif attempts >= MAX_ATTEMPTS:
            logger.error("Alert %s not delivered: giving up after %d attempts (%s)",
                         _label(alert), attempts, error)
            alert_outbox.settle(client, claimed.key, "failed", error=error)
        else:
            wait = backoff(attempts)
            logger.warning("Alert %s: webhook attempt %d failed (%s); trying again in %g s",
                           _label(alert), attempts, error, wait)
            alert_outbox.settle(client, claimed.key, "retrying", retry_at=now + wait, error=error)


class HttpPost:
    """POSTs JSON with httpx; errors say what happened, never the URL."""

    def __init__(self, timeout: float = POST_TIMEOUT_SECONDS) -> None:
        self.client = httpx.Client(timeout=timeout, follow_redirects=False)

    def __call__(self, url: str, body: dict[str, Any]) -> str | None:
        try:
            response = self.client.post(url, json=body)
        except httpx.HTTPError as exc:
            return f"{type(exc).__name__}: {exc}".replace(url, "<webhook>")[:500]
        if response.is_success:
            return None
        return f"HTTP {response.status_code}"

    def close(self) -> None:
        self.client.close()


class AlertDelivery:
    """The thread that sends alerts, in an API process (see the module docstring)."""

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._post = HttpPost()
        self._sender = AlertSender(self._post)
        self._thread = threading.Thread(target=self._run, name="bifrost-alerts", daemon=True)
        self._redis_down = False

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Stop after the POST in hand (if any); an unsent delivery stays queued."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(POST_TIMEOUT_SECONDS + 2)
        self._post.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            pause = self._turn()
            if pause:
                self._stop.wait(pause)

    def _turn(self) -> float:
        """Deliver one; the pause before the next turn (0: look again at once)."""
        settings = get_settings()  # per turn, as the routers read them
        try:
            busy = self._sender.deliver_next(get_redis(settings.redis_url), settings.alert_webhook)
        except redis.RedisError as exc:
            if not self._redis_down:
                logger.warning("Alert delivery: Redis unavailable (%s); retrying", exc)
            self._redis_down = True
            return REDIS_DOWN_PAUSE_SECONDS
        except Exception:
            logger.exception("Alert delivery failed; going on")
            return IDLE_POLL_SECONDS
        if self._redis_down:
            logger.info("Alert delivery: Redis is back")
            self._redis_down = False
        return 0.0 if busy else IDLE_POLL_SECONDS


def lifespan() -> Callable[[object], AbstractAsyncContextManager[None]]:
    """The API app's lifespan: the delivery thread runs while the app serves."""

    @asynccontextmanager
    async def run(_app: object) -> AsyncIterator[None]:
        delivery = AlertDelivery()
        delivery.start()
        try:
            yield
        finally:
            await asyncio.to_thread(delivery.stop)

    return run
