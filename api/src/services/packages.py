"""Package install: edit requirements.txt, persist, cache, recycle.

Every change goes store (compare-and-set) -> Redis key -> recycle broadcast,
all before the caller answers, so "200" means every pool has been told to
replace its processes, and the new processes install from the new file.

This module owns the requirements write path: what is written is validated
here, once, and a compare-and-set that loses a race is retried here, and only
here, at most `WRITE_ATTEMPTS` times (then `RequirementsBusy`). The cache
(`src.core.requirements_cache`) writes through to the store in one attempt; the
store (`src.store.files`) makes that attempt atomic.

Synchronous, no web imports: the API runs these in its threadpool, and a CLI
or a test can call them directly.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from typing import TypedDict, TypeVar

import redis

from src.core import events
from src.core.requirements_cache import (
    CachedRequirements,
    read_store_requirements,
    save_requirements_sync,
    warm_requirements_cache_sync,
)
from src.foundation.hashing import sha256_hex
from src.foundation.redis_client import get_redis
from src.foundation.requirements import (
    InvalidRequirements,
    LineError,
    add_or_replace,
    make_requirement,
    remove,
    requirement_lines,
    validate_requirements,
)
from src.foundation.settings import get_settings
from src.services.execution.control import publish_recycle
from src.services.execution.fleet_progress import fleet_progress
from src.services.installer.platform import check_platform
from src.services.package_locks import lock_for, one_writer_at_a_time, stored_lock, upgraded
from src.services.package_report import (  # noqa: F401  # the routers' read side, here too
    InstalledDistribution,
    PackageListing,
    current_requirements,
    empty_requirements,
    install_progress,
    installed_distributions,
    list_packages,
    outdated_packages,
)
from src.store.files import RequirementsConflict

logger = logging.getLogger(__name__)

# Compare-and-set attempts per write. Each conflict means another write landed,
# so the fleet as a whole always progresses; the bound only stops one writer
# that keeps losing from trying forever.
WRITE_ATTEMPTS = 200

_Result = TypeVar("_Result")


class InstallResult(TypedDict):
    content: str
    hash: str
    changed: bool


class RequirementsBusy(RuntimeError):
    """Every compare-and-set of one write lost to another writer."""

    def __init__(self, attempts: int) -> None:
        super().__init__(f"requirements.txt kept changing; gave up after {attempts} tries")
        self.attempts = attempts


class PackageNotInRequirements(LookupError):
    """DELETE of a package no line of requirements.txt names."""

    def __init__(self, name: str) -> None:
        super().__init__(f"package {name} is not in requirements.txt")
        self.name = name


def current_requirements_hash() -> str:
    return current_requirements()["hash"]


def _recycle(reason: str) -> None:
    # Always broadcast, even when nothing changed: a retry after a failed
    # install must make the workers try again.
    heard = publish_recycle(reason)
    logger.info("Recycle broadcast (%s) heard by %d subscriber(s)", reason, heard)


def _announce(before: CachedRequirements, after: CachedRequirements) -> None:
    """A `requirements` event (and the new hash's first progress) on the
    event stream; a Redis that cannot take it loses only the event."""
    if before["hash"] == after["hash"]:
        return
    old, new = requirement_lines(before["content"]), requirement_lines(after["content"])
    client = get_redis()
    events.append(client, "requirements", {
        "hash": after["hash"], "previous_hash": before["hash"],
        "added": [line for line in new if line not in old],
        "removed": [line for line in old if line not in new],
    })
    try:
        first = fleet_progress(after["hash"], after["hash"], client)
    except redis.RedisError as exc:
        logger.warning("No progress event for %s: %s", after["hash"][:12], exc)
        return
    events.append(client, "progress", dict(first))


def _save(before: CachedRequirements, content: str, expected: str | None,
          change: str) -> CachedRequirements:
    saved = save_requirements_sync(content, expected, change)
    _announce(before, saved)
    return saved


# --- the write path -------------------------------------------------------------


def _back_off(attempt: int) -> None:
    # Someone else's write landed first; wait a little (longer after each
    # loss, never more than 50 ms) so the writers spread out, then redo ours.
    time.sleep(random.uniform(0, min(0.05, 0.002 * attempt)))


def _retrying(attempt: Callable[[], _Result]) -> _Result:
    """`attempt()` until it does not raise RequirementsConflict, at most
    WRITE_ATTEMPTS times; then RequirementsBusy (from the last conflict).
    Writers take turns meanwhile (`one_writer_at_a_time`)."""
    with one_writer_at_a_time():
        for number in range(1, WRITE_ATTEMPTS):
            try:
                return attempt()
            except RequirementsConflict:
                _back_off(number)
        try:
            return attempt()
        except RequirementsConflict as conflict:
            raise RequirementsBusy(WRITE_ATTEMPTS) from conflict


def _replace(content: str, expected_hash: str | None, change: str) -> CachedRequirements:
    """Write already validated `content` as requirements.txt, its lock first.

    With `expected_hash`, one compare-and-set: RequirementsConflict (409 to a
    client) when the file has another hash. Without, the file is replaced
    whatever it holds, retried when another write lands in between.
    """

    def attempt(expected: str | None) -> CachedRequirements:
        current = read_store_requirements() or empty_requirements()
        lock_for(content, sha256_hex(content), stored_lock(current["hash"]))
        return _save(current, content, expected, change)

    if expected_hash is not None:
        return attempt(expected_hash)
    return _retrying(lambda: attempt(None))


def update_requirements(
    edit: Callable[[str], str], change: str, removed: str | None = None
) -> tuple[CachedRequirements, bool]:
    """Read-modify-write of the store's requirements, retried on conflict.

    `edit` maps the current content to the new one (and may raise to refuse);
    the result is validated before it is written (InvalidRequirements, nothing
    changed), and its lock resolved and stored (`removed`: the package whose
    line the edit drops, see `package_locks.lock_for`). Returns the
    requirements in effect and whether they changed.
    """

    def attempt() -> tuple[CachedRequirements, bool]:
        current = read_store_requirements() or empty_requirements()
        new_content = edit(current["content"])
        if new_content == current["content"]:
            return current, False
        validate_requirements(new_content)
        lock_for(new_content, sha256_hex(new_content), stored_lock(current["hash"]), removed)
        return _save(current, new_content, current["hash"], change), True

    return _retrying(attempt)


def add_package_line(line: str) -> tuple[CachedRequirements, bool]:
    """Add or replace one package's line (a PEP 508 requirement)."""
    return update_requirements(lambda content: add_or_replace(content, line), f"install {line}")


def remove_package_line(name: str) -> CachedRequirements:
    """Remove a package's line(s); KeyError when no line names it."""
    cached, _ = update_requirements(lambda content: remove(content, name), f"remove {name}",
                                    removed=name)
    return cached


# --- what the routers call ---------------------------------------------------------


def put_requirements(content: str, expected_hash: str | None = None) -> CachedRequirements:
    """Replace requirements.txt (validated; compare-and-set when `expected_hash`).

    Raises PlatformConflict (nothing changed) when a line would replace a
    distribution the platform runs on.
    """
    check_platform(validate_requirements(content), get_settings().packages_dir)
    saved = _replace(content, expected_hash, "put")
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
        # Re-sync: the store is the truth; its lock (resolved now if it has
        # none yet) and the file go back into Redis, then recycle.
        current = read_store_requirements() or empty_requirements()
        if current["content"].strip():
            lock_for(current["content"], current["hash"], None)
        warm_requirements_cache_sync()
        _recycle("re-sync requested")
        return InstallResult(content=current["content"], hash=current["hash"], changed=False)

    requirement = make_requirement(package, version)
    check_platform([requirement], get_settings().packages_dir)
    cached, changed = add_package_line(str(requirement))
    _recycle(f"install {requirement}")
    return InstallResult(content=cached["content"], hash=cached["hash"], changed=changed)


def remove_package(name: str) -> CachedRequirements:
    """Remove a package's line; PackageNotInRequirements when none names it."""
    try:
        cached = remove_package_line(name)
    except KeyError:
        raise PackageNotInRequirements(name) from None
    _recycle(f"remove {name}")
    return cached


def upgrade_packages(name: str | None = None) -> InstallResult:
    """Re-resolve one package (or all) to the newest versions its lines allow:
    a new lock under a new hash, and a recycle; `changed` False when nothing
    is newer. PackageNotInRequirements when `name` is not in the lock."""
    if name is not None:
        lock = stored_lock(current_requirements()["hash"])
        if lock is None or lock.find(name) is None:
            raise PackageNotInRequirements(name)

    def attempt() -> InstallResult:
        current = read_store_requirements() or empty_requirements()
        result = upgraded(current["content"], stored_lock(current["hash"]),
                          None if name is None else [name])
        if result is None:
            return InstallResult(content=current["content"], hash=current["hash"], changed=False)
        content, _lock = result
        saved = _save(current, content, current["hash"], f"upgrade {name or 'all'}")
        return InstallResult(content=saved["content"], hash=saved["hash"], changed=True)

    outcome = _retrying(attempt)
    if outcome["changed"]:
        _recycle(f"upgrade {name or 'all'}")
    return outcome
