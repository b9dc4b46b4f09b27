"""A worker holds what Redis gives it against what its pool read from the store."""

from __future__ import annotations

import pytest

from src.core import metrics_store
from src.services.execution import simple_worker
from src.services.execution.store_truth import StoreTruth

OLD = StoreTruth(content="alpha==1\n", hash="a" * 64, lock=None)
NEW = StoreTruth(content="alpha==2\n", hash="b" * 64, lock=None)
FORGED = {"content": "evil==1\n", "hash": "c" * 64}


@pytest.fixture
def refusals(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    counted: list[str] = []
    monkeypatch.setattr(metrics_store, "cache_refusal", counted.append)
    return counted


def test_redis_agreeing_with_the_store_is_used(
        monkeypatch: pytest.MonkeyPatch, refusals: list[str]) -> None:
    monkeypatch.setattr(simple_worker, "_STORE_TRUTH", OLD)
    cached = {"content": OLD["content"], "hash": OLD["hash"]}
    assert simple_worker._as_the_store_holds("w", cached) is cached  # type: ignore[arg-type]
    assert refusals == []


def test_a_write_since_the_pool_read_the_store_is_no_refusal(
        monkeypatch: pytest.MonkeyPatch, refusals: list[str]) -> None:
    monkeypatch.setattr(simple_worker, "_STORE_TRUTH", OLD)
    monkeypatch.setattr(simple_worker, "read_store_truth", lambda: NEW)
    cached = {"content": NEW["content"], "hash": NEW["hash"]}
    assert simple_worker._as_the_store_holds("w", cached) is cached  # type: ignore[arg-type]
    assert refusals == []
    assert simple_worker._STORE_TRUTH == NEW  # its lock is the one the install checks


def test_what_the_store_never_held_is_refused_for_the_stores(
        monkeypatch: pytest.MonkeyPatch, refusals: list[str],
        caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(simple_worker, "_STORE_TRUTH", OLD)
    monkeypatch.setattr(simple_worker, "read_store_truth", lambda: NEW)
    used = simple_worker._as_the_store_holds("w-7", FORGED)  # type: ignore[arg-type]
    assert used == {"content": NEW["content"], "hash": NEW["hash"]}
    assert refusals == ["requirements"]
    assert "[w-7] Refused the requirements Redis holds (cccccccccccc)" in caplog.text


def test_without_the_pools_word_redis_is_used_as_before(refusals: list[str]) -> None:
    assert simple_worker._STORE_TRUTH is None
    assert simple_worker._as_the_store_holds("w", FORGED) is FORGED  # type: ignore[arg-type]
    assert refusals == []


def test_installing_the_store_s_requirements_is_not_stopped_by_the_refused_ones(
        monkeypatch: pytest.MonkeyPatch) -> None:
    named = [FORGED["hash"]]  # what Redis names, as the check reads it
    monkeypatch.setattr(simple_worker, "get_redis", lambda: None)
    monkeypatch.setattr(simple_worker, "cached_hash", lambda client: named[0])
    monkeypatch.setattr(simple_worker, "SUPERSEDED_CHECK_SECONDS", 0.0)
    superseded = simple_worker._Superseded(OLD["hash"])  # the store's, installed instead
    assert not superseded()  # the forged hash Redis still names is not a newer one
    named[0] = NEW["hash"]  # a write of new requirements: every pool recycles
    assert superseded()
