"""What one worker's start-up install did: the install engine returns it, the
worker reports it to its pool, and GET /api/workers shows it."""

from __future__ import annotations

from typing import TypedDict

# The `package` of a failure that is not one line's: nothing could be installed.
WHOLE_INSTALL = "requirements.txt"


class FailedPackage(TypedDict):
    package: str
    error: str


class InstallOutcome(TypedDict):
    """What one worker's start-up install did (shown by GET /api/workers)."""

    ok: bool
    skipped: bool
    installed: list[str]
    failed: list[FailedPackage]
    duration_ms: float
    requirements_hash: str | None
