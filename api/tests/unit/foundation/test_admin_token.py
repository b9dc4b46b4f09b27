"""The admin token: setting first, else the 0600 file in the data dir."""

from __future__ import annotations

import os
import stat
import threading
from pathlib import Path

import pytest

from src.api.app import create_app
from src.foundation import admin_token
from src.foundation.admin_token import (
    ADMIN_TOKEN_FD_VARIABLE,
    admin_token_path,
    configured_admin_token,
    load_or_create_admin_token,
    receive_admin_token,
    token_pipe,
)
from src.foundation.settings import get_settings


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_created_once_with_mode_0600_and_reused(isolated_settings: Path) -> None:
    path = isolated_settings / "admin-token"
    assert not isolated_settings.exists()
    token = load_or_create_admin_token()
    assert len(token) >= 40
    assert path.read_text().strip() == token
    assert mode(path) == 0o600
    assert load_or_create_admin_token() == token
    assert admin_token_path() == path


def test_the_setting_wins_and_no_file_is_written(
    isolated_settings: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BIFROST_ADMIN_TOKEN", "  from-env  ")
    get_settings.cache_clear()
    assert load_or_create_admin_token() == "from-env"
    assert not (isolated_settings / "admin-token").exists()


def test_an_existing_file_is_read_and_narrowed_to_0600(isolated_settings: Path) -> None:
    isolated_settings.mkdir(parents=True)
    path = isolated_settings / "admin-token"
    path.write_text("operator-chosen\n")
    path.chmod(0o644)
    assert load_or_create_admin_token() == "operator-chosen"
    assert mode(path) == 0o600


def test_an_empty_file_is_replaced(isolated_settings: Path) -> None:
    isolated_settings.mkdir(parents=True)
    (isolated_settings / "admin-token").write_text("")
    token = load_or_create_admin_token()
    assert token
    assert (isolated_settings / "admin-token").read_text().strip() == token


def test_concurrent_creators_agree_on_one_token(isolated_settings: Path) -> None:
    tokens: list[str] = []
    barrier = threading.Barrier(8)

    def create() -> None:
        barrier.wait()
        tokens.append(load_or_create_admin_token())

    threads = [threading.Thread(target=create) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(tokens)) == 1
    assert (isolated_settings / "admin-token").read_text().strip() == tokens[0]
    # No temporary files are left behind.
    assert sorted(p.name for p in isolated_settings.iterdir()) == ["admin-token"]


def test_create_app_creates_the_token_file(isolated_settings: Path) -> None:
    app = create_app()
    assert (isolated_settings / "admin-token").read_text().strip() == app.state.admin_token


def test_a_token_handed_over_through_a_pipe_is_the_configured_one(
    isolated_settings: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`bifrost up` passes the operator's token to the API through an inherited
    pipe: never in argv, never in the API's environment, never on disk."""
    monkeypatch.setattr(admin_token, "_received", None)
    fd = token_pipe("handed-over")
    environ = {ADMIN_TOKEN_FD_VARIABLE: str(fd), "OTHER": "kept"}
    assert receive_admin_token(environ) is True
    assert environ == {"OTHER": "kept"}
    with pytest.raises(OSError):
        os.fstat(fd)  # read and closed
    assert configured_admin_token() == "handed-over"
    assert load_or_create_admin_token() == "handed-over"
    assert create_app().state.admin_token == "handed-over"
    assert not (isolated_settings / "admin-token").exists()


def test_nothing_is_received_without_a_descriptor(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(admin_token, "_received", None)
    assert receive_admin_token({}) is False
    assert configured_admin_token() is None
