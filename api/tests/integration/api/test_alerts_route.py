"""GET /api/alerts on the real server and Redis, and the API's delivery
thread: one POST per alert to a real receiver, retried after 500s, and
`no webhook` when none is set."""

from __future__ import annotations

import time

import pytest
import redis

from src.core import alert_outbox, alerts
from src.core.alerts import note_outcome
from src.foundation.settings import get_settings
from tests.support.waiting import wait_for
from tests.support.webhook_receiver import webhook_receiver

from .conftest import serving

HASH = "c" * 64


def failing(package: str, requirements_hash: str = HASH) -> dict[str, object]:
    return {"ok": False, "skipped": False, "installed": [], "duration_ms": 5,
            "failed": [{"package": package, "error": f"{package} needs a C compiler"}],
            "requirements_hash": requirements_hash}


def succeeding(requirements_hash: str = HASH) -> dict[str, object]:
    return {"ok": True, "skipped": True, "installed": [], "failed": [], "duration_ms": 1,
            "requirements_hash": requirements_hash}


class Clock:
    """Stands in for the `time` module of src.core.alerts: which report came
    first is the test's to say, not the machine's speed's."""

    def __init__(self) -> None:
        self.now = time.time()

    def time(self) -> float:
        return self.now


def test_lists_alerts_newest_first_and_only_open_ones_when_asked(
    redis_client: redis.Redis, admin_token: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = Clock()
    monkeypatch.setattr(alerts, "time", clock)
    note_outcome(failing("old==1.0"), "host-a", redis_client)
    clock.now += 1
    note_outcome(succeeding(), "host-a", redis_client)  # old==1.0 installed at last
    clock.now += 1
    note_outcome(failing("needs-gcc==1.0", "d" * 64), "host-a", redis_client)
    clock.now += 1
    note_outcome(failing("needs-gcc==1.0", "d" * 64), "host-b", redis_client)
    with serving(admin_token) as api:
        answer = api.client.get("/api/alerts")
        assert answer.status_code == 200, answer.text
        newest, oldest = answer.json()["alerts"]
        assert {k: newest[k] for k in ("id", "hash", "package", "error", "hosts", "count",
                                       "resolved", "resolved_at")} == {
            "id": "d" * 64 + ":needs-gcc", "hash": "d" * 64, "package": "needs-gcc==1.0",
            "error": "needs-gcc==1.0 needs a C compiler", "hosts": ["host-a", "host-b"],
            "count": 2, "resolved": False, "resolved_at": None}
        assert newest["first_seen"] < newest["last_seen"]
        assert newest["delivery"]["status"] in {"pending", "sending", "no webhook"}
        assert oldest["package"] == "old==1.0" and oldest["resolved"] is True
        assert oldest["resolved_at"] > oldest["first_seen"]

        open_only = api.client.get("/api/alerts", params={"open": "true"}).json()["alerts"]
        assert [a["package"] for a in open_only] == ["needs-gcc==1.0"]
        bad = api.client.get("/api/alerts", params={"open": "maybe"})
        assert bad.status_code == 422 and "open" in bad.text
        assert api.anonymous.get("/api/alerts").status_code == 401


def test_without_a_webhook_alerts_are_kept_and_marked_so(
    redis_client: redis.Redis, admin_token: str
) -> None:
    note_outcome(failing("needs-gcc==1.0"), "host-a", redis_client)
    with serving(admin_token) as api:
        def delivery() -> dict[str, object] | None:
            [alert] = api.client.get("/api/alerts").json()["alerts"]
            # `sending` is the moment between the claim and the settling: not an answer.
            settled = alert["delivery"]["status"] not in ("pending", "sending")
            return alert["delivery"] if settled else None

        assert wait_for(delivery, 60, what="the delivery thread to look at the alert") == {
            "status": "no webhook", "attempts": 1, "last_error": None, "delivered_at": None}
        assert alert_outbox.pending(redis_client) == 0


def test_one_post_per_alert_retried_after_failures(
    redis_client: redis.Redis, admin_token: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with webhook_receiver(fail_first=2) as receiver:
        monkeypatch.setenv("BIFROST_ALERT_WEBHOOK", receiver.url)
        get_settings.cache_clear()
        with serving(admin_token) as api:
            for host in ("host-a", "host-a", "host-b", "host-b"):
                note_outcome(failing("needs-gcc==1.0"), host, redis_client)
            wait_for(lambda: alert_outbox.pending(redis_client) == 0, 30,
                     what="the alert's delivery to settle")
            # More reports of the same failure after it went out: nothing more is sent.
            note_outcome(failing("needs-gcc==1.0"), "host-c", redis_client)
            [alert] = api.client.get("/api/alerts").json()["alerts"]
            assert alert_outbox.pending(redis_client) == 0
    assert len(receiver.refused) == 2
    [body] = receiver.bodies()
    assert body == {"event": "package_install_failed", "id": HASH + ":needs-gcc", "hash": HASH,
                    "package": "needs-gcc==1.0", "error": "needs-gcc==1.0 needs a C compiler",
                    "hosts": ["host-a", "host-b"], "first_seen": alert["first_seen"],
                    "last_seen": body["last_seen"], "count": 4}
    assert receiver.refused[0] == receiver.refused[1] == body
    assert alert["delivery"]["status"] == "sent" and alert["delivery"]["attempts"] == 3
    assert alert["delivery"]["last_error"] is None
    assert alert["hosts"] == ["host-a", "host-b", "host-c"]
