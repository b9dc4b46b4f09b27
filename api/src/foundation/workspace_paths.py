"""Validation of workspace file paths (`PUT /api/files/{path}`).

A path names a file inside the workspace and becomes a module name, so it is
held to a small alphabet: relative, normalised, no `..`, no hidden segments,
no backslashes, percent signs or control characters (encoded slashes and NUL
are refused here, not interpreted), and a known file type.
"""

from __future__ import annotations

import re

MAX_PATH_LENGTH = 512
MAX_FILE_BYTES = 1024 * 1024

# .py modules, and data files a workflow may read next to them.
ALLOWED_SUFFIXES = frozenset(
    {".py", ".txt", ".json", ".yaml", ".yml", ".toml", ".csv", ".md", ".cfg", ".ini"}
)
RESERVED_PATHS = frozenset({"requirements.txt"})  # has its own API and validation

_SEGMENT = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]*")


class InvalidPath(ValueError):
    """The path is not an acceptable workspace path; the message says why."""


def validate_path(path: str) -> str:
    """Return `path` when it is a valid workspace path; else raise InvalidPath."""
    if not path:
        raise InvalidPath("path is empty")
    if len(path) > MAX_PATH_LENGTH:
        raise InvalidPath(f"path is longer than {MAX_PATH_LENGTH} characters")
    if "\x00" in path:
        raise InvalidPath("path contains a NUL character")
    if path.startswith("/") or re.match(r"^[A-Za-z]:", path):
        raise InvalidPath("path must be relative to the workspace, not absolute")
    if "\\" in path:
        raise InvalidPath("path must use '/' as separator, not '\\'")
    if "%" in path:
        raise InvalidPath("path contains '%': encoded characters are not accepted")
    segments = path.split("/")
    for segment in segments:
        if segment in ("", ".", ".."):
            raise InvalidPath(f"path segment {segment!r} is not allowed (no '..', '.' or '//')")
        if not _SEGMENT.fullmatch(segment):
            raise InvalidPath(
                f"path segment {segment[:50]!r} may hold only letters, digits, '_', '-' and '.',"
                " and may not start with '.' or '-'"
            )
    suffix = "." + segments[-1].rsplit(".", 1)[-1] if "." in segments[-1] else ""
    if suffix not in ALLOWED_SUFFIXES:
        raise InvalidPath(
            f"file type {suffix or '(none)'!r} is not accepted; use one of "
            + ", ".join(sorted(ALLOWED_SUFFIXES))
        )
    if path in RESERVED_PATHS:
        raise InvalidPath(f"{path} is managed through /api/requirements and /api/packages")
    return path


def validate_content(content: str) -> str:
    if len(content.encode("utf-8")) > MAX_FILE_BYTES:
        raise InvalidPath(f"file is larger than {MAX_FILE_BYTES} bytes")
    if "\x00" in content:
        raise InvalidPath("file content contains a NUL character")
    return content
