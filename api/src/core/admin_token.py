"""The admin bearer token every `/api` route requires.

`BIFROST_ADMIN_TOKEN` wins when set. Otherwise the token lives in
`<data_dir>/admin-token` (mode 0600), generated on first use: `bifrost up`
calls `load_or_create_admin_token` to print it, and the API reads the same file
when it starts, so both agree without the token ever passing through argv or
the environment of child processes.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
from pathlib import Path

from src.core.settings import Settings, get_settings

ADMIN_TOKEN_FILE = "admin-token"


def admin_token_path(settings: Settings | None = None) -> Path:
    return (settings or get_settings()).data_path / ADMIN_TOKEN_FILE


def load_or_create_admin_token(settings: Settings | None = None) -> str:
    """The admin token: the setting, else the token file (created if missing)."""
    settings = settings or get_settings()
    configured = (settings.admin_token or "").strip()
    if configured:
        return configured
    path = admin_token_path(settings)
    token = _read_token(path)
    if token:
        return token
    return _create_token(path)


def _read_token(path: Path) -> str | None:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    # A file someone made readable by others is narrowed again: the token is a secret.
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        path.chmod(0o600)
    return text.strip() or None


def _create_token(path: Path) -> str:
    # 0700 only applies when the directory is new; an operator's own choice stays.
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    token = secrets.token_urlsafe(32)
    # Written in full to a private temporary file, then linked into place: a
    # reader never sees a half-written token, and when two processes start at
    # once exactly one link succeeds and the other adopts the winner's token.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(token + "\n")
        try:
            os.link(tmp, path)
        except FileExistsError:
            existing = _read_token(path)
            if existing:
                return existing
            # An empty file left by hand: replace it rather than run without a token.
            os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    return token
