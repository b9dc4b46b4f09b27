"""What runs where: the requirement lines, their lock, and per host what its
workers report having installed (from the worker registry in Redis, so an API
host that shares no disk with the workers sees every host), with each host
checked against the lock."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import TypedDict

from packaging.utils import canonicalize_name

from src.core.requirements_cache import CachedRequirements, read_requirements
from src.foundation.hashing import EMPTY_HASH
from src.foundation.locks import Lock
from src.foundation.requirements import requirement_lines
from src.foundation.settings import get_settings
from src.services.execution import registry
from src.services.execution.fleet_progress import Progress, fleet_progress
from src.services.installer import metadata
from src.services.installer.environments import Environments
from src.services.installer.resolver import Outdated, outdated
from src.services.package_locks import stored_lock


class InstalledDistribution(TypedDict):
    name: str
    version: str


class HostReport(TypedDict):
    host: str
    workers: int  # live workers on the current requirements hash
    installed: list[InstalledDistribution]
    matches_lock: bool


class PackageListing(TypedDict):
    requirements: list[str]
    hash: str
    lock: list[str]  # name==version, every distribution the hash runs
    hosts: list[HostReport]
    installed: list[InstalledDistribution]  # this API host's own environment, if any


def empty_requirements() -> CachedRequirements:
    """What is in effect before requirements.txt was ever saved."""
    return CachedRequirements(content="", hash=EMPTY_HASH)


def current_requirements() -> CachedRequirements:
    """The requirements in effect (Redis, else the store); empty when never saved."""
    return read_requirements() or empty_requirements()


def installed_distributions(path: Path) -> list[InstalledDistribution]:
    """Distributions found in `path`, sorted by canonical name, one per name.

    When a directory holds two metadata dirs for one name (an interrupted
    upgrade), the first one importlib finds is reported: it is the one
    `importlib.metadata.version()` would answer with.
    """
    if not path.is_dir():
        return []
    # Read leniently: metadata that is not UTF-8 still names its distribution;
    # one whose Name or Version cannot be read at all is left out.
    found = metadata.list_distributions([path]).found
    return [
        InstalledDistribution(name=found[key].name, version=found[key].version)
        for key in sorted(found)
    ]


def list_packages() -> PackageListing:
    current = current_requirements()
    lock = stored_lock(current["hash"]) if current["content"].strip() else None
    environment = Environments(get_settings().packages_dir).latest(current["hash"])
    return PackageListing(
        requirements=requirement_lines(current["content"]),
        hash=current["hash"],
        lock=lock.pins() if lock else [],
        hosts=host_reports(current["hash"], lock),
        installed=installed_distributions(environment.path) if environment else [],
    )


def host_reports(requirements_hash: str, lock: Lock | None) -> list[HostReport]:
    """Per host, what its live workers on `requirements_hash` installed. A host
    matches the lock when every such worker has exactly the lock's versions
    (no lock: when its workers agree with each other)."""
    by_host: dict[str, list[set[str]]] = {}
    for pool in registry.list_pools():
        for worker in pool["workers"]:
            if worker["status"] == "stopped" or worker["requirements_hash"] != requirements_hash:
                continue
            install = worker["install"]
            pins = _normalized(install["installed"] if install else [])
            by_host.setdefault(pool["host"], []).append(pins)
    expected = _normalized(lock.pins()) if lock else None
    reports = []
    for host in sorted(by_host):
        seen = by_host[host]
        union = set().union(*seen)
        matches = all(pins == (expected if expected is not None else seen[0]) for pins in seen)
        reports.append(HostReport(host=host, workers=len(seen), matches_lock=matches,
                                  installed=_distributions(union)))
    return reports


def install_progress(requirements_hash: str | None = None) -> Progress:
    """How far the fleet is on `requirements_hash` (default: the hash in
    effect): `GET /api/packages/progress`, and what the CLI waits on."""
    current = current_requirements()["hash"]
    return fleet_progress(requirements_hash or current, current)


def outdated_packages() -> list[Outdated]:
    current = current_requirements()
    return outdated(current["content"], stored_lock(current["hash"]))


def _normalized(pins: Iterable[str]) -> set[str]:
    """`name==version` with the canonical name, for comparing hosts and locks."""
    normalized = set()
    for pin in pins:
        name, _, version = pin.partition("==")
        normalized.add(f"{canonicalize_name(name)}=={version}")
    return normalized


def _distributions(pins: set[str]) -> list[InstalledDistribution]:
    return [InstalledDistribution(name=name, version=version)
            for name, _, version in sorted(pin.partition("==") for pin in pins)]
