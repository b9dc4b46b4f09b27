"""Settings that are checked when a process starts, not when first used."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from src.foundation.settings import Settings


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("store", "store"),
        (" store ", "store"),
        ("dir:/shared/wheels", "dir:/shared/wheels"),
        ("dir:relative/wheels", "dir:relative/wheels"),
        ("s3://bucket/wheels", "s3://bucket/wheels"),
        ("gs://bucket", "gs://bucket"),
        ("file:///shared/wheels", "file:///shared/wheels"),
    ],
)
def test_wheel_cache_values_that_start(
    value: str, expected: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BIFROST_WHEEL_CACHE", value)
    assert Settings().wheel_cache == expected


def test_wheel_cache_defaults_to_the_store(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BIFROST_WHEEL_CACHE", raising=False)
    assert Settings().wheel_cache == "store"


@pytest.mark.parametrize("value", ["", "stor", "dir:", "dir:   ", "/shared/wheels", "file:/x", "s3://", "http://x/y"])
def test_a_bad_wheel_cache_stops_start_up(value: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BIFROST_WHEEL_CACHE", value)
    with pytest.raises(ValidationError) as info:
        Settings()
    message = str(info.value)
    assert "BIFROST_WHEEL_CACHE" in message
    assert "use 'store', 's3://bucket/prefix'" in message
