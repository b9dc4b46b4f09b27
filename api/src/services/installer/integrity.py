"""Is an installed distribution's code still on disk? A cheap, bounded look.

A dist-info can outlive its package (someone ran `rm -r <env>/humanize/`, a
disk filled up halfway through a copy): the metadata check then says
"satisfied" for ever, and imports fail. So the fast path also reads each
distribution's RECORD and checks that a sample of the files it lists exist:
for every top-level name it installs (at most `MAX_TOP_LEVEL_NAMES`), the
package's `__init__.py`, else the first file listed under that name, or the
module itself. Deleting a package, a module or a whole top-level directory is
caught; a single file deleted deep inside a package is not (that would mean
statting every file at every start).

Files the interpreter or the installer make again by themselves are never
sampled: `__pycache__`/`.pyc`, scripts (`bin/`), anything outside the
environment (`../`). The RECORD is scanned with one regular expression, so a
distribution with thousands of files costs about as little as a small one.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from src.services.installer.metadata import decode, distribution_label

MAX_TOP_LEVEL_NAMES = 8
# The first path component of each RECORD line (up to "/" or ","), for lines
# that are not CSV-quoted (a quoted path holds a comma: rare, and not sampled).
_TOP_LEVEL = re.compile(r"^([^/,\r\n\"]+)[/,]", re.MULTILINE)
# Top-level names the installer or the interpreter makes again when they are gone.
_NOT_SAMPLED = frozenset({"..", ".", "__pycache__", "bin", "Scripts"})


@dataclass(frozen=True)
class Damage:
    """A distribution whose RECORD lists a file that is not there."""

    distribution: str
    missing: str

    def describe(self) -> str:
        return f"{self.distribution} is missing {self.missing}"


def first_damage(dist_infos: Iterable[Path]) -> Damage | None:
    """The first distribution (of these metadata directories) with a sampled file missing."""
    for dist_info in dist_infos:
        missing = missing_file(dist_info)
        if missing is not None:
            return Damage(distribution_label(dist_info)[0], missing)
    return None


def missing_file(dist_info: Path) -> str | None:
    """A sampled file the distribution's RECORD lists that is gone (relative to
    the directory holding the dist-info), or None; None too when there is no
    RECORD to go by (an egg-info, or an installer that wrote none)."""
    try:
        record = decode((dist_info / "RECORD").read_bytes())
    except OSError:
        return None
    site = dist_info.parent
    for relative in sample(record, dist_info.name):
        if not os.path.lexists(site / relative):
            return relative
    return None


def sample(record: str, dist_info_name: str) -> list[str]:
    """The files to look for: per top-level name, its `__init__.py` if the
    RECORD lists one, else the first file listed under it (or the module)."""
    chosen: list[str] = []
    for top in dict.fromkeys(_TOP_LEVEL.findall(record)):
        if top in _NOT_SAMPLED or top == dist_info_name or top.endswith(".pyc"):
            continue
        file = _file_under(record, top)
        if file is not None:
            chosen.append(file)
        if len(chosen) == MAX_TOP_LEVEL_NAMES:
            break
    return chosen


def _file_under(record: str, top: str) -> str | None:
    """`top` itself when it is a file (a module), else a file inside it that
    the interpreter would not make again by itself."""
    init = f"{top}/__init__.py"
    if record.startswith(f"{init},") or f"\n{init}," in record:
        return init
    for match in re.finditer(rf"^{re.escape(top)}(/[^,\r\n]*)?,", record, re.MULTILINE):
        inside = match.group(1) or ""
        if "/__pycache__/" not in f"{inside}/" and not inside.endswith(".pyc"):
            return top + inside
    return None
