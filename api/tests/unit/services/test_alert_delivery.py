"""The webhook sender's decisions, with the outbox faked: the backoff
schedule, what is recorded after a success, a failure, the last failure and
without a webhook; the payload; errors that never carry the URL."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from src.core import alert_outbox
from src.core.alerts import Alert, Delivery
from src.services import alert_delivery
from src.services.alert_delivery import (
    BACKOFF_CAP_SECONDS,
    MAX_ATTEMPTS,
    AlertSender,
    HttpPost,
    backoff,
    payload,
)

KEY = "bifrost:alert:" + "a" * 64 + ":needs-gcc"
NOW = 1_700_000_000.0


def make_alert() -> Alert:
    return Alert(
        id=KEY.removeprefix("bifrost:alert:"), hash="a" * 64, package="needs-gcc==1.0",
        error="needs a C compiler", hosts=["host-a", "host-b"], first_seen=NOW - 5,
        last_seen=NOW - 1, count=4, resolved=False, resolved_at=None,
        delivery=Delivery(status="sending", attempts=1, last_error=None, delivered_at=None),
    )


class FakeOutbox:
    """claim/settle/read_alert as the sender calls them, recorded."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, attempts: int,
                 alert: Alert | None = None) -> None:
        self.due: list[alert_outbox.Claimed] = [alert_outbox.Claimed(KEY, attempts)]
        self.settled: list[tuple[str, str, dict[str, Any]]] = []
        self.alert = alert if alert is not None else make_alert()
        monkeypatch.setattr(alert_outbox, "claim",
                            lambda client, now=None: self.due.pop() if self.due else None)
        monkeypatch.setattr(alert_outbox, "settle", self.settle)
        monkeypatch.setattr(alert_delivery, "read_alert", lambda client, key: self.alert)

    def settle(self, client: Any, key: str, status: str, **details: Any) -> None:
        self.settled.append((key, status, details))


def sender(answer: str | None, posted: list[tuple[str, dict[str, Any]]]) -> AlertSender:
    def post(url: str, body: dict[str, Any]) -> str | None:
        posted.append((url, body))
        return answer

    return AlertSender(post, clock=lambda: NOW)


def test_backoff_doubles_from_one_second_up_to_five_minutes() -> None:
    assert [backoff(n) for n in range(1, 11)] == [1, 2, 4, 8, 16, 32, 64, 128, 256, 300]
    assert backoff(40) == BACKOFF_CAP_SECONDS == 300


def test_the_payload_names_the_package_the_hash_the_error_and_the_hosts() -> None:
    assert payload(make_alert()) == {
        "event": "package_install_failed", "id": "a" * 64 + ":needs-gcc", "hash": "a" * 64,
        "package": "needs-gcc==1.0", "error": "needs a C compiler",
        "hosts": ["host-a", "host-b"], "first_seen": NOW - 5, "last_seen": NOW - 1, "count": 4,
    }


def test_nothing_due_sends_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    outbox = FakeOutbox(monkeypatch, 1)
    outbox.due.clear()
    posted: list[Any] = []
    assert sender(None, posted).deliver_next(object(), "http://hook") is False  # type: ignore[arg-type]
    assert posted == [] and outbox.settled == []


def test_a_delivery_taken_is_recorded_sent(monkeypatch: pytest.MonkeyPatch) -> None:
    outbox = FakeOutbox(monkeypatch, 1)
    posted: list[Any] = []
    assert sender(None, posted).deliver_next(object(), "http://hook") is True  # type: ignore[arg-type]
    assert posted == [("http://hook", payload(make_alert()))]
    assert outbox.settled == [(KEY, "sent", {"delivered_at": NOW})]


@pytest.mark.parametrize("attempts", [1, 2, 5, MAX_ATTEMPTS - 1])
def test_a_failed_attempt_is_tried_again_after_the_backoff(
    monkeypatch: pytest.MonkeyPatch, attempts: int
) -> None:
    outbox = FakeOutbox(monkeypatch, attempts)
    sender("HTTP 500", []).deliver_next(object(), "http://hook")  # type: ignore[arg-type]
    assert outbox.settled == [(KEY, "retrying",
                               {"retry_at": NOW + backoff(attempts), "error": "HTTP 500"})]


def test_the_last_attempt_gives_up(monkeypatch: pytest.MonkeyPatch) -> None:
    outbox = FakeOutbox(monkeypatch, MAX_ATTEMPTS)
    sender("ConnectError: refused", []).deliver_next(object(), "http://hook")  # type: ignore[arg-type]
    assert outbox.settled == [(KEY, "failed", {"error": "ConnectError: refused"})]


def test_without_a_webhook_the_alert_is_kept_and_nothing_sent(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    outbox = FakeOutbox(monkeypatch, 1)
    posted: list[Any] = []
    sender(None, posted).deliver_next(object(), None)  # type: ignore[arg-type]
    assert posted == [] and outbox.settled == [(KEY, "no webhook", {})]


def test_an_alert_gone_meanwhile_is_dropped(monkeypatch: pytest.MonkeyPatch) -> None:
    outbox = FakeOutbox(monkeypatch, 0)
    posted: list[Any] = []
    sender(None, posted).deliver_next(object(), "http://hook")  # type: ignore[arg-type]
    assert posted == [] and outbox.settled[0][1] == "failed"


def test_http_post_says_what_went_wrong_without_the_url() -> None:
    secret_url = "http://127.0.0.1:1/hook?token=s3cret"
    post = HttpPost(timeout=2)
    try:
        error = post(secret_url, {"x": 1})
    finally:
        post.close()
    assert error is not None and error.startswith("ConnectError")
    assert "s3cret" not in error


def test_http_post_answers_by_status() -> None:
    statuses = iter([204, 500])
    seen: list[bytes] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request.content)
        return httpx.Response(next(statuses))

    post = HttpPost()
    post.client = httpx.Client(transport=httpx.MockTransport(answer))
    assert post("http://hook/x", {"package": "p"}) is None
    assert post("http://hook/x", {"package": "p"}) == "HTTP 500"
    assert json.loads(seen[0]) == {"package": "p"}
    post.close()
