"""What an installer run may touch: every installer run is confined (see
`supervisor.py` and `src/confinement/sandbox.py`), because uv and pip run
package code when they build an sdist (its setup.py, its build backend).

The run reads anything but the data dir (the packages dir stays readable),
and writes only in the directory it installs into, the installer's caches
and a temp dir of its own (`TMPDIR`, made and removed by `runner.py`: the
system's temp dir may hold the data dir). So a package's build code cannot read the admin token, the
store or Redis's files, nor change anything the platform or another
environment relies on.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from src.foundation.settings import get_settings


def installer_reach(environ: Mapping[str, str], *writable: Path) -> dict[str, Any]:
    """What a run in `environ` may write in besides its own temp dir: `writable`
    (its target, its work dir) and its caches; the supervisor's `--confine`
    spec once `runner.py` adds that temp dir as `scratch`."""
    settings = get_settings()
    caches = cache_dirs(environ)
    for directory in (*writable, *caches):  # a rule needs the directory to exist
        directory.mkdir(parents=True, exist_ok=True)
    return {"data_dir": str(settings.data_path), "packages_dir": str(settings.packages_dir),
            "writable": [str(path) for path in (*writable, *caches)]}


def cache_dirs(environ: Mapping[str, str]) -> list[Path]:
    """uv's and pip's cache directories in `environ` (their defaults included)."""
    home = Path(environ.get("HOME") or os.path.expanduser("~"))
    base = Path(environ.get("XDG_CACHE_HOME") or home / ".cache")
    return [Path(environ.get("UV_CACHE_DIR") or base / "uv"),
            Path(environ.get("PIP_CACHE_DIR") or base / "pip")]
