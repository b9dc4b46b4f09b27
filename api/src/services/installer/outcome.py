"""What one worker's start-up install did: the install engine returns it, the
worker reports it to its pool, and GET /api/workers shows it."""

from __future__ import annotations

from typing import NotRequired, TypedDict

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
    # Where a build from a lock got its pins' files: "the fleet cache", "the
    # index, fetched for the fleet", "the index, alone: waited 300 s for <worker>".
    files_from: NotRequired[str]
