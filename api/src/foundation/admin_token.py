"""The admin bearer token every `/api` route requires.

`BIFROST_ADMIN_TOKEN` wins when set. Otherwise the token lives in
`<data_dir>/admin-token` (mode 0600), generated on first use: `bifrost up`
calls `load_or_create_admin_token` to print it, and the API reads the same file
when it starts, so both agree without the token ever passing through argv or
the environment of child processes.

When the operator set `BIFROST_ADMIN_TOKEN` for `bifrost up`, `up` takes it out
of its environment (children inherit that, and /proc/<pid>/environ shows it)
and hands it to the API through a pipe the API inherits: `token_pipe` in `up`,
`receive_admin_token` first thing in the API, which names the pipe's descriptor
in `BIFROST_ADMIN_TOKEN_FD`.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
from collections.abc import MutableMapping
from pathlib import Path

from src.foundation.settings import Settings, get_settings

ADMIN_TOKEN_FILE = "admin-token"
ADMIN_TOKEN_VARIABLE = "BIFROST_ADMIN_TOKEN"
# Names the inherited descriptor a child reads the operator's token from.
ADMIN_TOKEN_FD_VARIABLE = "BIFROST_ADMIN_TOKEN_FD"

# The token this process was handed through a pipe (see `receive_admin_token`).
_received: str | None = None


def admin_token_path(settings: Settings | None = None) -> Path:
    return (settings or get_settings()).data_path / ADMIN_TOKEN_FILE


def load_or_create_admin_token(settings: Settings | None = None) -> str:
    """The admin token: the setting, else the token file (created if missing)."""
    settings = settings or get_settings()
    configured = configured_admin_token(settings)
    if configured:
        return configured
    path = admin_token_path(settings)
    token = _read_token(path)
    if token:
        return token
    return _create_token(path)


def configured_admin_token(settings: Settings | None = None) -> str | None:
    """The operator's token (the setting, or the one handed over by `bifrost up`),
    None when the token file is the source."""
    settings = settings or get_settings()
    return (settings.admin_token or "").strip() or _received


def token_pipe(token: str) -> int:
    """The read end of a pipe holding `token`, for one child to inherit
    (`subprocess.Popen(pass_fds=...)`) and read at start; close it after the start."""
    read_fd, write_fd = os.pipe()
    try:
        os.write(write_fd, token.encode("utf-8"))  # far below a pipe's buffer: never blocks
    finally:
        os.close(write_fd)
    return read_fd


def receive_admin_token(environ: MutableMapping[str, str] | None = None) -> bool:
    """Read the token from the descriptor `BIFROST_ADMIN_TOKEN_FD` names, when it
    names one; it is then this process's configured token. True when one came."""
    global _received
    environ = os.environ if environ is None else environ
    named = environ.pop(ADMIN_TOKEN_FD_VARIABLE, None)
    if named is None:
        return False
    with os.fdopen(int(named), "rb") as pipe:
        token = pipe.read().decode("utf-8").strip()
    _received = token or None
    return _received is not None


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
