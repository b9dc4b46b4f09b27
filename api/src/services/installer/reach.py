"""What an installer run may touch: every installer run is confined (see
`supervisor.py` and `src/confinement/`), because uv and pip run package
code when they build an sdist (its setup.py, its build backend).

The run reads anything but the data dir (the packages dir stays readable),
and writes only in the directory it installs into, the installer's caches
and a temp dir of its own (`TMPDIR`, made and removed by `runner.py`: the
system's temp dir may hold the data dir). Where the platform runs as root it
also runs as the execution uid (`BIFROST_EXECUTION_UID`), in a mount
namespace that shows that uid only the way to what the run needs
(`src/confinement/mounts.py`): the caches are that uid's, and the directory
it installs into is root's again once the run is over.

So a package's build code cannot read the admin token, the store, Redis's
files or anything only root may read, nor change anything the platform or
another environment relies on.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from src.confinement.uid import execution_uid
from src.foundation.settings import get_settings


def installer_reach(environ: Mapping[str, str], *writable: Path,
                    reads: Sequence[Path] = ()) -> dict[str, Any]:
    """What a run in `environ` may write in besides its own temp dir: `writable`
    (its target, its work dir) and its caches; what it reads that may lie
    where the execution uid cannot go (`reads`, and the find-links dirs in
    `environ`). The supervisor's `--confine` spec once `runner.py` adds the
    temp dir as `scratch`."""
    settings = get_settings()
    caches = cache_dirs(environ)
    for directory in (*writable, *caches):  # a rule needs the directory to exist
        directory.mkdir(parents=True, exist_ok=True)
    uid = execution_uid(settings.execution_uid)
    return {"data_dir": str(settings.data_path), "packages_dir": str(settings.packages_dir),
            "writable": [str(path) for path in writable],
            "caches": [str(path) for path in caches],
            "reads": [str(path) for path in (*reads, *find_links_dirs(environ))],
            "uid": None if uid is None else [uid.uid, uid.gid]}


def cache_dirs(environ: Mapping[str, str]) -> list[Path]:
    """uv's and pip's cache directories in `environ` (their defaults included)."""
    home = Path(environ.get("HOME") or os.path.expanduser("~"))
    base = Path(environ.get("XDG_CACHE_HOME") or home / ".cache")
    return [Path(environ.get("UV_CACHE_DIR") or base / "uv"),
            Path(environ.get("PIP_CACHE_DIR") or base / "pip")]


def find_links_dirs(environ: Mapping[str, str]) -> list[Path]:
    """The local directories among the find-links uv and pip are given."""
    found: list[Path] = []
    for name in ("PIP_FIND_LINKS", "UV_FIND_LINKS"):
        for item in environ.get(name, "").replace(",", " ").split():
            path = Path(item.removeprefix("file://"))
            if path.is_absolute() and path.exists():
                found.append(path)
    return found
