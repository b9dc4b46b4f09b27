"""The real HTTP API (uvicorn on a free port) over the real Redis and store."""

from __future__ import annotations

import http.client
import json
import time
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import redis

from src.api.app import create_app
from src.foundation.settings import get_settings
from src.services.execution.control import control_channel
from tests.support.api_server import running_api

TOKEN = "integration-test-token-0123456789"
MESSAGE_TIMEOUT = 60.0


@dataclass
class Api:
    base_url: str
    token: str
    client: httpx.Client  # sends the token
    anonymous: httpx.Client  # sends none

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def raw(self, method: str, target: str, body: bytes | None = None) -> tuple[int, Any]:
        """A request whose target is sent exactly as given (httpx would
        normalise `..` away before it left the client)."""
        url = urllib.parse.urlsplit(self.base_url)
        connection = http.client.HTTPConnection(url.hostname or "", url.port, timeout=30)
        try:
            connection.request(method, target, body=body, headers=self.auth)
            response = connection.getresponse()
            return response.status, json.loads(response.read() or b"null")
        finally:
            connection.close()


@contextmanager
def serving(token: str = TOKEN) -> Iterator[Api]:
    with (
        running_api(create_app()) as base_url,
        httpx.Client(
            base_url=base_url, headers={"Authorization": f"Bearer {token}"}, timeout=30
        ) as client,
        httpx.Client(base_url=base_url, timeout=30) as anonymous,
    ):
        yield Api(base_url=base_url, token=token, client=client, anonymous=anonymous)


@pytest.fixture
def admin_token(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("BIFROST_ADMIN_TOKEN", TOKEN)
    get_settings.cache_clear()
    return TOKEN


@pytest.fixture
def api(system: str, admin_token: str) -> Iterator[Api]:
    """The API over a migrated store (SQLite and PostgreSQL) and the run's Redis."""
    with serving(admin_token) as api:
        yield api


class ControlWatcher:
    """A subscriber on the control channel, subscribed before the test acts."""

    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        self.pubsub = client.pubsub()
        self.pubsub.subscribe(control_channel(client))
        deadline = time.monotonic() + MESSAGE_TIMEOUT
        while True:  # the subscription is live once Redis confirms it
            message = self.pubsub.get_message(timeout=0.5)
            if message is not None and message["type"] == "subscribe":
                return
            if time.monotonic() > deadline:
                raise AssertionError("no subscribe confirmation from Redis")

    def next(self, timeout: float = MESSAGE_TIMEOUT) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            message = self.pubsub.get_message(timeout=max(0.0, deadline - time.monotonic()))
            if message is not None and message["type"] == "message":
                return json.loads(message["data"])
        raise AssertionError(f"no control message within {timeout} s")

    def assert_nothing_published(self) -> None:
        """Nothing was broadcast before now: a marker we publish comes first."""
        self.client.publish(control_channel(self.client), json.dumps({"action": "marker"}))
        assert self.next() == {"action": "marker"}

    def close(self) -> None:
        self.pubsub.close()


@pytest.fixture
def control(redis_url: str, redis_client: redis.Redis) -> Iterator[ControlWatcher]:
    client = redis.from_url(redis_url, decode_responses=True)
    watcher = ControlWatcher(client)
    try:
        yield watcher
    finally:
        watcher.close()
        client.close()
