"""Shared fixtures: every test gets its own data dir and settings."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from src.core.settings import get_settings


@pytest.fixture(autouse=True)
def isolated_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A private data dir per test, and settings read afresh from the
    environment the test sets up (never the developer's own .bifrost)."""
    data_dir = tmp_path / "bifrost-data"
    monkeypatch.setenv("BIFROST_DATA_DIR", str(data_dir))
    for name in ("BIFROST_PACKAGES_DIR", "DATABASE_URL", "BIFROST_ADMIN_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    get_settings.cache_clear()
    yield data_dir
    get_settings.cache_clear()
