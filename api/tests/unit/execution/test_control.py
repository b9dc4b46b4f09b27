"""The control channel on the test run's own Redis: what `publish_recycle` and
`publish_cancel` send, and what a `ControlListener` hands the pool (malformed
messages skipped, a lost connection re-subscribed and reported)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from src.foundation.settings import get_settings
from src.services.execution.control import (
    ControlListener,
    control_channel,
    publish_cancel,
    publish_recycle,
)
from tests.support.waiting import wait_for


@pytest.fixture
def listener(redis_client: redis.Redis, redis_url: str) -> Iterator[ControlListener]:
    """A listener subscribed to the channel; stopped after the test."""
    started = ControlListener(redis_url)
    started.start()
    assert started.subscribed.wait(10), "the listener did not subscribe"
    yield started
    started.stop()
    started.join(10)


@pytest.fixture
def subscriber(redis_client: redis.Redis) -> Iterator[Any]:
    """A plain subscriber, to read exactly what was published."""
    pubsub = redis_client.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(control_channel(redis_client))
    wait_for(lambda: redis_client.pubsub_numsub(control_channel(redis_client))[0][1] == 1, 10,
             what="the subscription")
    yield pubsub
    pubsub.close()


def next_published(pubsub: Any) -> dict[str, Any]:
    message = wait_for(lambda: pubsub.get_message(timeout=0.1), 10, what="a message")
    return json.loads(message["data"])


def next_delivered(listener: ControlListener) -> dict[str, Any]:
    return listener.messages.get(timeout=10)


# --- publishing -----------------------------------------------------------------


def test_publishing_with_nobody_listening_reaches_nobody(redis_client: redis.Redis) -> None:
    assert publish_recycle("nobody", redis_client) == 0
    assert publish_cancel("e-1", redis_client) == 0


def test_publish_recycle_sends_the_action_and_reason(
    redis_client: redis.Redis, subscriber: Any
) -> None:
    before = time.time()
    assert publish_recycle("requirements changed", redis_client) == 1
    message = next_published(subscriber)
    assert message["action"] == "recycle" and message["reason"] == "requirements changed"
    assert before <= message["sent_at"] <= time.time()
    assert set(message) == {"action", "reason", "sent_at"}


def test_publish_cancel_names_the_execution(redis_client: redis.Redis, subscriber: Any) -> None:
    assert publish_cancel("e-42", redis_client) == 1
    message = next_published(subscriber)
    assert (message["action"], message["id"]) == ("cancel", "e-42")
    assert set(message) == {"action", "id", "sent_at"}


def test_publishing_uses_the_settings_redis_when_given_no_client(
    redis_client: redis.Redis, subscriber: Any
) -> None:
    assert publish_cancel("e-7") == 1  # REDIS_URL points at the test's Redis
    assert next_published(subscriber)["id"] == "e-7"


# --- listening ------------------------------------------------------------------


def test_the_listener_hands_over_recycle_and_cancel_in_order(
    redis_client: redis.Redis, listener: ControlListener
) -> None:
    assert publish_recycle("first", redis_client) == 1
    assert publish_cancel("e-1", redis_client) == 1
    recycle, cancel = next_delivered(listener), next_delivered(listener)
    assert (recycle["action"], recycle["reason"]) == ("recycle", "first")
    assert (cancel["action"], cancel["id"]) == ("cancel", "e-1")
    assert listener.messages.empty() and not listener.resubscribed.is_set()


def test_the_listener_skips_what_is_not_a_json_object(
    redis_client: redis.Redis, listener: ControlListener
) -> None:
    for data in ("not json", "[1, 2]", "\"recycle\"", "{broken"):
        redis_client.publish(control_channel(redis_client), data)
    publish_recycle("after the junk", redis_client)
    # Messages arrive in order: once the last one is delivered, the junk
    # before it has been read and skipped, so nothing else may be queued.
    assert next_delivered(listener)["reason"] == "after the junk"
    assert listener.messages.empty()


def test_a_lost_connection_is_resubscribed_and_reported(
    redis_client: redis.Redis, listener: ControlListener
) -> None:
    killed = redis_client.client_kill_filter(_type="pubsub")
    assert killed == 1
    wait_for(listener.resubscribed.is_set, 60, what="the listener to re-subscribe")
    wait_for(lambda: publish_recycle("after the blip", redis_client) == 1, 60,
             what="the listener subscribed again")
    assert next_delivered(listener)["reason"] == "after the blip"


def test_a_stopped_listener_ends_and_unsubscribes(
    redis_client: redis.Redis, listener: ControlListener
) -> None:
    listener.stop()
    listener.join(10)
    assert not listener.is_alive()
    wait_for(lambda: publish_recycle("too late", redis_client) == 0, 10,
             what="the subscription to go")


def test_the_listener_reads_the_settings_redis_by_default(redis_client: redis.Redis) -> None:
    assert ControlListener().redis_url == get_settings().redis_url
