"""A work item for the benchmark's real worker: which heavy modules did it import?"""

from __future__ import annotations

import sys

HEAVY = {"fastapi", "sqlalchemy", "uvicorn", "starlette"}


def heavy_modules() -> list[str]:
    """The web-stack and ORM modules loaded in this process (a worker needs none)."""
    return sorted(m for m in sys.modules if m.split(".")[0] in HEAVY)
