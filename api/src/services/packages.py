"""Package install (phase 2): edit requirements.txt, persist, cache, recycle.

Every change goes store (compare-and-set) -> Redis key -> recycle broadcast,
all before the caller answers, so "200" means every pool has been told to
replace its processes, and the new processes install from the new file.

Synchronous, no web imports: the API runs these in its threadpool, and a CLI
or a test can call them directly.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TypedDict

from packaging.utils import canonicalize_name

from src.core.requirements_cache import (
    CachedRequirements,
    add_package_sync,
    read_requirements,
    read_store_requirements,
    remove_package_sync,
    save_requirements_sync,
    warm_requirements_cache_sync,
)
from src.foundation.hashing import sha256_hex
from src.foundation.requirements import (
    InvalidRequirements,
    LineError,
    make_requirement,
    requirement_lines,
    validate_requirements,
)
from src.foundation.settings import get_settings
from src.services.execution.control import publish_recycle
from src.services.installer import metadata
from src.services.installer.environments import Environments
from src.services.installer.platform import check_platform

logger = logging.getLogger(__name__)

EMPTY_HASH = sha256_hex("")


class InstallResult(TypedDict):
    content: str
    hash: str
    changed: bool


class InstalledDistribution(TypedDict):
    name: str
    version: str


class PackageListing(TypedDict):
    requirements: list[str]
    installed: list[InstalledDistribution]


class PackageNotInRequirements(LookupError):
    """DELETE of a package no line of requirements.txt names."""

    def __init__(self, name: str) -> None:
        super().__init__(f"package {name} is not in requirements.txt")
        self.name = name


def _empty() -> CachedRequirements:
    return CachedRequirements(content="", hash=EMPTY_HASH)


def current_requirements() -> CachedRequirements:
    """The requirements in effect (Redis, else the store); empty when never saved."""
    return read_requirements() or _empty()


def current_requirements_hash() -> str:
    return current_requirements()["hash"]


def _recycle(reason: str) -> None:
    # Always broadcast, even when nothing changed: a retry after a failed
    # install must make the workers try again.
    heard = publish_recycle(reason)
    logger.info("Recycle broadcast (%s) heard by %d subscriber(s)", reason, heard)


def put_requirements(content: str, expected_hash: str | None = None) -> CachedRequirements:
    """Replace requirements.txt (validated; compare-and-set when `expected_hash`).

    Raises PlatformConflict (nothing changed) when a line would replace a
    distribution the platform runs on.
    """
    check_platform(validate_requirements(content), get_settings().packages_dir)
    saved = save_requirements_sync(content, expected_hash, "put")
    _recycle("requirements replaced")
    return saved


def install_package(package: str | None, version: str | None = None) -> InstallResult:
    """Add or replace one package's line; with no package, re-sync the workers.

    Raises InvalidRequirements for a bad name or version (nothing changed).
    """
    if package is None:
        if version is not None:
            raise InvalidRequirements(
                [LineError(0, version, "a version was given without a package")]
            )
        # Re-sync: the store is the truth; put it back in Redis, then recycle.
        warm_requirements_cache_sync()
        _recycle("re-sync requested")
        current = read_store_requirements() or _empty()
        return InstallResult(content=current["content"], hash=current["hash"], changed=False)

    requirement = make_requirement(package, version)
    check_platform([requirement], get_settings().packages_dir)
    cached, changed = add_package_sync(str(requirement))
    _recycle(f"install {requirement}")
    return InstallResult(content=cached["content"], hash=cached["hash"], changed=changed)


def remove_package(name: str) -> CachedRequirements:
    """Remove a package's line; PackageNotInRequirements when none names it."""
    try:
        cached = remove_package_sync(name)
    except KeyError:
        raise PackageNotInRequirements(name) from None
    _recycle(f"remove {name}")
    return cached


def installed_distributions(path: Path) -> list[InstalledDistribution]:
    """Distributions found in `path`, sorted by canonical name, one per name.

    When a directory holds two metadata dirs for one name (an interrupted
    upgrade), the first one importlib finds is reported: it is the one
    `importlib.metadata.version()` would answer with.
    """
    if not path.is_dir():
        return []
    found: dict[str, InstalledDistribution] = {}
    # Read leniently: metadata that is not UTF-8 still names its distribution;
    # one whose Name or Version cannot be read at all is left out.
    for entry in metadata.scan([path]):
        if not isinstance(entry, metadata.Found):
            continue
        key = canonicalize_name(entry.name)
        if key not in found:
            found[key] = InstalledDistribution(name=entry.name, version=entry.version)
    return [found[key] for key in sorted(found)]


def list_packages() -> PackageListing:
    """What users asked for (requirement lines) and what this host's packages
    dir holds for them: the environment of the current requirements hash."""
    current = current_requirements()
    environment = Environments(get_settings().packages_dir).latest(current["hash"])
    return PackageListing(
        requirements=requirement_lines(current["content"]),
        installed=installed_distributions(environment.path) if environment else [],
    )
