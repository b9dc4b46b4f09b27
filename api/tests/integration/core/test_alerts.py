"""Install-failure alerts on a real Redis: one per failed package per hash
however many pools report at once, hosts gathered, resolved by a later
success (never by a reuse that still lists the failure), and never an
exception, Redis down included."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
import redis

from src.core import alert_outbox, alerts
from src.core.alerts import WHOLE_INSTALL, alert_key, list_alerts, note_outcome

HASH = "a" * 64
OTHER_HASH = "b" * 64
PIN = "needs-gcc==1.0"
ERROR = "error: command 'gcc' failed: No such file or directory"


def outcome(failed: list[tuple[str, str]] | None = None, requirements_hash: str | None = HASH,
            *, skipped: bool = False) -> dict[str, Any]:
    failures = [{"package": p, "error": e} for p, e in failed or []]
    return {"ok": not failures, "skipped": skipped, "installed": ["good-one==1.0"],
            "failed": failures, "duration_ms": 12, "requirements_hash": requirements_hash}


FAILING = outcome([(PIN, ERROR)])


class Clock:
    """Stands in for the `time` module of src.core.alerts: the test says what
    time each report is made at, so which came first never rests on how far
    apart the machine happened to make them."""

    def __init__(self) -> None:
        self.now = time.time()

    def time(self) -> float:
        return self.now

    def advance(self, seconds: float = 1.0) -> None:
        self.now += seconds


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    clock = Clock()
    monkeypatch.setattr(alerts, "time", clock)
    return clock


def test_many_pools_reporting_at_once_make_one_alert(redis_client: redis.Redis,
                                                      redis_url: str) -> None:
    reporters = [("host-a", 0), ("host-a", 1), ("host-b", 0), ("host-b", 1)]
    rounds = 5
    barrier = threading.Barrier(len(reporters))
    errors: list[BaseException] = []

    def report(host: str) -> None:
        client = redis.from_url(redis_url, decode_responses=True)  # a pool's own connection
        try:
            for _ in range(rounds):
                barrier.wait(60)
                note_outcome(FAILING, host, client)
        except BaseException as exc:
            errors.append(exc)
        finally:
            client.close()

    threads = [threading.Thread(target=report, args=(host,)) for host, _ in reporters]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors
    [alert] = list_alerts(redis_client)
    assert alert["package"] == PIN and alert["hash"] == HASH and alert["error"] == ERROR
    assert alert["hosts"] == ["host-a", "host-b"]
    assert alert["count"] == len(reporters) * rounds
    assert alert["resolved"] is False and alert["resolved_at"] is None
    assert alert["delivery"]["status"] == "pending"
    assert redis_client.zrange(alert_outbox.OUTBOX_KEY, 0, -1) == [alert_key(HASH, PIN)]


def test_each_package_and_each_hash_has_its_own_alert(redis_client: redis.Redis) -> None:
    note_outcome(outcome([(PIN, ERROR), ("Other_Pkg==2.0", "boom")]), "host-a", redis_client)
    note_outcome(outcome([("needs_GCC==1.0", ERROR)]), "host-b", redis_client)  # same name
    note_outcome(outcome([(PIN, ERROR)], OTHER_HASH), "host-a", redis_client)
    found = {(a["hash"], a["package"]): a for a in list_alerts(redis_client)}
    assert set(found) == {(HASH, PIN), (HASH, "Other_Pkg==2.0"), (OTHER_HASH, PIN)}
    assert found[(HASH, PIN)]["hosts"] == ["host-a", "host-b"]
    assert found[(OTHER_HASH, PIN)]["hosts"] == ["host-a"]
    assert alert_outbox.pending(redis_client) == 3


def test_newest_first(redis_client: redis.Redis, clock: Clock) -> None:
    for name in ("first", "second", "third"):
        note_outcome(outcome([(f"{name}==1", "x")]), "host-a", redis_client)
        clock.advance()  # the next one is first seen later
    assert [a["package"] for a in list_alerts(redis_client)] == ["third==1", "second==1",
                                                                 "first==1"]


def test_a_reuse_that_still_lists_the_failure_resolves_nothing(redis_client: redis.Redis) -> None:
    note_outcome(FAILING, "host-a", redis_client)
    # A worker that reused the environment reports the failures its build recorded.
    note_outcome(outcome([(PIN, ERROR)], skipped=True), "host-a", redis_client)
    [alert] = list_alerts(redis_client)
    assert alert["resolved"] is False and alert["count"] == 2


def test_a_later_success_on_the_hash_resolves_it(redis_client: redis.Redis) -> None:
    note_outcome(outcome([(PIN, ERROR), ("other==1", "boom")]), "host-a", redis_client)
    before = time.time()
    note_outcome(outcome([("other==1", "boom")]), "host-b", redis_client)  # needs-gcc landed
    by_package = {a["package"]: a for a in list_alerts(redis_client)}
    resolved_at = by_package[PIN]["resolved_at"]
    assert by_package[PIN]["resolved"] is True
    assert resolved_at is not None and resolved_at >= before
    assert by_package["other==1"]["resolved"] is False
    assert [a["package"] for a in list_alerts(redis_client, open_only=True)] == ["other==1"]
    # A success on another hash says nothing about this one.
    note_outcome(outcome([], OTHER_HASH), "host-a", redis_client)
    assert [a["package"] for a in list_alerts(redis_client, open_only=True)] == ["other==1"]
    note_outcome(outcome([], skipped=True), "host-a", redis_client)  # a clean reuse counts
    assert list_alerts(redis_client, open_only=True) == []


def test_failing_again_after_resolving_reopens_without_another_delivery(
    redis_client: redis.Redis,
) -> None:
    note_outcome(FAILING, "host-a", redis_client)
    claimed = alert_outbox.claim(redis_client, time.time() + 60)
    assert claimed is not None
    alert_outbox.settle(redis_client, claimed.key, "sent", delivered_at=time.time())
    note_outcome(outcome([]), "host-a", redis_client)
    assert list_alerts(redis_client)[0]["resolved"] is True
    note_outcome(FAILING, "host-b", redis_client)
    [alert] = list_alerts(redis_client)
    assert alert["resolved"] is False and alert["resolved_at"] is None
    assert alert["hosts"] == ["host-a", "host-b"]
    assert alert["delivery"]["status"] == "sent"
    assert alert_outbox.pending(redis_client) == 0


def test_a_whole_install_failure_is_an_alert_but_no_success(redis_client: redis.Redis) -> None:
    note_outcome(FAILING, "host-a", redis_client)
    whole = outcome([(WHOLE_INSTALL, "timed out waiting for another process to build")])
    note_outcome(whole, "host-b", redis_client)
    by_package = {a["package"]: a for a in list_alerts(redis_client)}
    assert set(by_package) == {PIN, WHOLE_INSTALL}
    assert by_package[PIN]["resolved"] is False
    note_outcome(outcome([]), "host-b", redis_client)  # everything installed at last
    assert list_alerts(redis_client, open_only=True) == []


def test_an_abandoned_install_is_ignored(redis_client: redis.Redis) -> None:
    note_outcome(FAILING, "host-a", redis_client)
    stopped = outcome([(WHOLE_INSTALL, "install stopped: stopped while waiting for ...")])
    note_outcome(stopped, "host-b", redis_client)
    [alert] = list_alerts(redis_client)
    assert alert["package"] == PIN and alert["resolved"] is False and alert["count"] == 1


def test_an_outcome_without_a_hash_is_ignored(redis_client: redis.Redis) -> None:
    note_outcome(outcome([(WHOLE_INSTALL, "Redis unavailable")], None), "host-a", redis_client)
    note_outcome({"garbage": True}, "host-a", redis_client)
    assert list_alerts(redis_client) == []


def test_a_new_host_delays_the_first_delivery_within_a_bound(
    redis_client: redis.Redis, clock: Clock
) -> None:
    key = alert_key(HASH, PIN)
    note_outcome(FAILING, "host-a", redis_client)
    first_due = redis_client.zscore(alert_outbox.OUTBOX_KEY, key)
    assert first_due is not None
    clock.advance()  # the next reports come a second later
    note_outcome(FAILING, "host-a", redis_client)  # the same host: no change
    assert redis_client.zscore(alert_outbox.OUTBOX_KEY, key) == first_due
    note_outcome(FAILING, "host-b", redis_client)
    later = redis_client.zscore(alert_outbox.OUTBOX_KEY, key)
    assert later is not None and later > first_due
    first_seen = list_alerts(redis_client)[0]["first_seen"]
    assert later <= first_seen + alert_outbox.GATHER_MAX_SECONDS
    # Once claimed, the delivery is the sender's: a new host does not move it.
    claimed = alert_outbox.claim(redis_client, later)
    assert claimed == (key, 1)
    leased = redis_client.zscore(alert_outbox.OUTBOX_KEY, key)
    note_outcome(FAILING, "host-c", redis_client)
    assert redis_client.zscore(alert_outbox.OUTBOX_KEY, key) == leased


def test_one_claim_per_due_delivery(redis_client: redis.Redis, redis_url: str) -> None:
    note_outcome(FAILING, "host-a", redis_client)
    due = redis_client.zscore(alert_outbox.OUTBOX_KEY, alert_key(HASH, PIN))
    assert due is not None
    assert alert_outbox.claim(redis_client, due - 1) is None  # not due yet
    barrier = threading.Barrier(4)
    claims: list[Any] = []

    def claim() -> None:
        client = redis.from_url(redis_url, decode_responses=True)
        barrier.wait(60)
        claims.append(alert_outbox.claim(client, due + 1))
        client.close()

    threads = [threading.Thread(target=claim) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert sorted(claims, key=lambda c: c is None) == [(alert_key(HASH, PIN), 1), None, None, None]
    assert list_alerts(redis_client)[0]["delivery"]["status"] == "sending"
    # A sender that died holding it: the delivery comes due again after the lease.
    assert alert_outbox.claim(redis_client, due + 1 + alert_outbox.LEASE_SECONDS + 1) == (
        alert_key(HASH, PIN), 2)


def test_settle_retries_or_finishes(redis_client: redis.Redis) -> None:
    note_outcome(FAILING, "host-a", redis_client)
    now = time.time() + 10
    claimed = alert_outbox.claim(redis_client, now)
    assert claimed is not None
    alert_outbox.settle(redis_client, claimed.key, "retrying", retry_at=now + 4, error="HTTP 500")
    delivery = list_alerts(redis_client)[0]["delivery"]
    assert delivery == {"status": "retrying", "attempts": 1, "last_error": "HTTP 500",
                        "delivered_at": None}
    assert alert_outbox.claim(redis_client, now + 3) is None
    assert alert_outbox.claim(redis_client, now + 4) == (claimed.key, 2)
    alert_outbox.settle(redis_client, claimed.key, "sent", delivered_at=now + 4)
    delivery = list_alerts(redis_client)[0]["delivery"]
    assert delivery == {"status": "sent", "attempts": 2, "last_error": None,
                        "delivered_at": now + 4}
    assert alert_outbox.pending(redis_client) == 0


def test_the_oldest_alerts_are_dropped_beyond_the_cap(
    redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch, clock: Clock
) -> None:
    monkeypatch.setattr(alerts, "MAX_ALERTS", 3)
    hashes = [str(n) * 64 for n in range(5)]
    for n, requirements_hash in enumerate(hashes):
        note_outcome(outcome([(f"p{n}==1", "x")], requirements_hash), "host-a", redis_client)
        clock.advance()  # the next one is first seen later
    assert [a["package"] for a in list_alerts(redis_client)] == ["p4==1", "p3==1", "p2==1"]
    dropped = alert_key(hashes[0], "p0==1")
    assert not redis_client.exists(dropped, dropped + ":hosts", alerts.OPEN_PREFIX + hashes[0])
    assert redis_client.exists(alerts.OPEN_PREFIX + hashes[2])
    assert alert_outbox.pending(redis_client) == 3


def test_redis_down_never_raises(caplog: pytest.LogCaptureFixture) -> None:
    client = redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=1)
    try:
        note_outcome(FAILING, "host-a", client)
    finally:
        client.close()
    assert "Could not record the install outcome's alerts" in caplog.text
