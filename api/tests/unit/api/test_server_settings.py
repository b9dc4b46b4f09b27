"""The request-head timeout `bifrost api` serves with."""

from __future__ import annotations

import pytest

from src.api.head_timeout import DEFAULT_HEAD_TIMEOUT_SECONDS
from src.api.server import make_server
from src.foundation.settings import get_settings


def test_the_default_is_ten_seconds() -> None:
    assert DEFAULT_HEAD_TIMEOUT_SECONDS == 10.0
    assert get_settings().head_timeout == DEFAULT_HEAD_TIMEOUT_SECONDS


def test_the_setting_is_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BIFROST_HEAD_TIMEOUT", "2.5")
    get_settings.cache_clear()
    assert get_settings().head_timeout == 2.5


def test_make_server_uses_the_timed_protocol() -> None:
    from fastapi import FastAPI

    server = make_server(FastAPI(), head_timeout=3.0)
    protocol = server.config.http
    assert isinstance(protocol, type)
    assert getattr(protocol, "head_timeout", None) == 3.0
