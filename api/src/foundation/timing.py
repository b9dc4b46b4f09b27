"""Durations as the platform reports them.

Every duration the platform keeps (an execution's `duration_ms`, an install's,
a histogram's seconds) is measured on the monotonic clock and kept as a float
with microsecond resolution: work that takes a fraction of a millisecond still
counts, in records and in `/metrics` alike.
"""

from __future__ import annotations

import time


def ms_since(started: float) -> float:
    """Milliseconds since `started` (a `time.monotonic()` reading), to the microsecond."""
    return round((time.monotonic() - started) * 1000, 3)
