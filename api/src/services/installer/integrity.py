"""Is an installed distribution's code still on disk? A cheap, bounded look.

A dist-info can outlive its package (someone ran `rm -r <env>/humanize/`, a
disk filled up halfway through a copy): the metadata check then says
"satisfied" for ever, and imports fail. So the fast path also checks, for
each distribution it relies on, that a sample of the files its RECORD lists
exist: for every top-level name it installs (at most `MAX_TOP_LEVEL_NAMES`),
the package's `__init__.py`, else the first file listed under that name, or
the module itself. Deleting a package, a module or a whole top-level
directory is caught; a single file deleted deep inside a package is not
(that would mean statting every file at every start).

An environment never changes once built, so its build reads each RECORD once
and writes the samples to `SAMPLES_FILE`: a start then costs one small read
and a stat per sampled file (about 0.1 ms for 20 distributions, where reading
their RECORDs took 1 ms). A distribution the file does not know (an
environment built before it existed) has its RECORD read there and then.

Files the interpreter or the installer make again by themselves are never
sampled: `__pycache__`/`.pyc`, scripts (`bin/`), anything outside the
environment (`../`).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from src.services.installer.metadata import decode, distribution_label

MAX_TOP_LEVEL_NAMES = 8
SAMPLES_FILE = ".bifrost-samples.json"
# The first path component of each RECORD line (up to "/" or ","), for lines
# that are not CSV-quoted (a quoted path holds a comma: rare, and not sampled).
# Anchored on a literal newline rather than ^: the regex engine then jumps from
# line to line (three times faster on a RECORD; the text is given a leading "\n").
_TOP_LEVEL = re.compile(r"\n([^/,\r\n\"]+)[/,]")
# Top-level names the installer or the interpreter makes again when they are gone.
_NOT_SAMPLED = frozenset({"..", ".", "__pycache__", "bin", "Scripts"})


@dataclass(frozen=True)
class Damage:
    """A distribution whose RECORD lists a file that is not there."""

    distribution: str
    missing: str

    def describe(self) -> str:
        return f"{self.distribution} is missing {self.missing}"


def record_samples(env: Path) -> None:
    """Write the sample of every distribution in `env` (a build, before it is
    published) to its SAMPLES_FILE."""
    samples = {info.name: sample_of(info) for info in sorted(env.glob("*.dist-info"))}
    (env / SAMPLES_FILE).write_text(json.dumps(samples))


def first_damage(env: Path, dist_infos: Iterable[Path]) -> Damage | None:
    """The first of these distributions (metadata directories in `env`) with a
    sampled file missing, or None."""
    samples = _recorded_samples(env)
    root = str(env)
    for info in dist_infos:
        files = samples.get(info.name)
        if files is None:
            files = sample_of(info)
        for relative in files:
            if not os.path.lexists(f"{root}/{relative}"):
                return Damage(distribution_label(info)[0], relative)
    return None


def _recorded_samples(env: Path) -> dict[str, list[str]]:
    try:
        data = json.loads((env / SAMPLES_FILE).read_bytes())
    except (OSError, ValueError):
        return {}  # built before samples were recorded: RECORDs are read instead
    return data if isinstance(data, dict) else {}


def sample_of(dist_info: Path) -> list[str]:
    """The files to look for, from the distribution's RECORD (paths relative to
    the directory holding the dist-info); none when there is no RECORD to go
    by (an egg-info, or an installer that wrote none)."""
    try:
        record = decode((dist_info / "RECORD").read_bytes())
    except OSError:
        return []
    return sample(record, dist_info.name)


def missing_file(dist_info: Path) -> str | None:
    """A sampled file the distribution's RECORD lists that is gone, or None."""
    site = str(dist_info.parent)
    return next((f for f in sample_of(dist_info) if not os.path.lexists(f"{site}/{f}")), None)


def sample(record: str, dist_info_name: str) -> list[str]:
    """The files to look for: per top-level name, its `__init__.py` if the
    RECORD lists one, else the first file listed under it (or the module)."""
    chosen: list[str] = []
    for top in dict.fromkeys(_TOP_LEVEL.findall(f"\n{record}")):
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
    the interpreter would not make again by itself. Plain string searches: a
    pattern per name would cost a regex compilation per distribution."""
    init = f"{top}/__init__.py"
    if _line_starting(record, f"{init},") >= 0:
        return init
    if _line_starting(record, f"{top},") >= 0:
        return top
    prefix = f"{top}/"
    at = _line_starting(record, prefix)
    while at >= 0:
        path = record[at:record.find(",", at)]
        if "/__pycache__/" not in f"{path}/" and not path.endswith(".pyc"):
            return path
        at = _line_starting(record, prefix, at + len(prefix))
    return None


def _line_starting(record: str, prefix: str, start: int = 0) -> int:
    """Where the first line at or after `start` that begins with `prefix` begins, or -1."""
    if start == 0 and record.startswith(prefix):
        return 0
    found = record.find(f"\n{prefix}", start)
    return found + 1 if found >= 0 else -1
