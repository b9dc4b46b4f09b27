"""The platform guard: user packages never replace what the platform runs on.

The platform is every distribution importable before the runtime packages dir
(the interpreter's own site-packages). A user's requirement that names one of
them must accept the version installed (the API refuses it otherwise, 409),
and every install runs with the platform's versions as constraints, so a
transitive dependency cannot pull in another version either.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

from src.foundation.atomic_files import atomic_write
from src.foundation.hashing import sha256_hex
from src.services.installer.metadata import Listing, list_distributions
from src.services.installer.satisfaction import platform_paths

logger = logging.getLogger(__name__)


class PlatformConflict(Exception):
    """A requirement would replace a distribution the platform runs on."""

    def __init__(self, reasons: list[str]) -> None:
        super().__init__("; ".join(reasons))
        self.reasons = reasons


def check_platform(requirements: Iterable[Requirement], packages_dir: Path) -> None:
    """Raise PlatformConflict naming every requirement the platform cannot accept."""
    reasons = platform_conflicts(requirements, packages_dir)
    if reasons:
        raise PlatformConflict(reasons)


def platform_distributions(packages_dir: Path) -> Listing:
    """The platform's distributions, one per canonical name (the one the
    interpreter imports).

    One whose metadata cannot be read is left out with a warning naming it:
    it cannot be pinned, and the platform's other pins still hold.
    """
    listing = list_distributions(platform_paths(exclude=[packages_dir]))
    for dist in listing.unreadable:
        logger.warning("Platform distribution not pinned: %s", dist.describe())
    return listing


def platform_conflicts(requirements: Iterable[Requirement], packages_dir: Path) -> list[str]:
    """A reason for each requirement the platform's installed version does not meet."""
    platform = platform_distributions(packages_dir)
    reasons = []
    for requirement in requirements:
        if requirement.marker is not None and not requirement.marker.evaluate({"extra": ""}):
            continue
        installed = platform.found.get(canonicalize_name(requirement.name))
        if installed is None:
            continue
        name, version = installed.name, installed.version
        try:
            accepted = requirement.specifier.contains(Version(version), prereleases=True)
        except InvalidVersion:
            accepted = False
        if not accepted:
            reasons.append(
                f"{requirement}: the platform runs on {name} {version}, "
                "and a runtime package may not replace it"
            )
    return reasons


def constraints_file(directory: Path, packages_dir: Path) -> Path:
    """A constraints file pinning the platform's versions.

    Reading every platform distribution's metadata costs tens of milliseconds,
    so the file is named after the platform's site-packages directories and
    their modification times (which change whenever a package is installed or
    removed there) and written only when that changes.
    """
    paths = platform_paths(exclude=[packages_dir])
    # ("" on sys.path is the working directory)
    stamp = "\n".join(f"{path}:{os.stat(path or '.').st_mtime_ns}" for path in paths)
    path = directory / f".platform-constraints-{sha256_hex(stamp)[:16]}.txt"
    if path.exists():
        return path
    pins = platform_distributions(packages_dir).pins()
    directory.mkdir(parents=True, exist_ok=True)
    # Concurrent builds of other hashes may write it at the same moment: each
    # writes the same pins, and none reads half a file.
    atomic_write(path, ("\n".join(pins) + "\n").encode())
    return path
