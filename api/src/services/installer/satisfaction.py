"""Is an environment already complete? Answered in-process from installed metadata.

A worker restarting with unchanged requirements asks this before it would run
the installer: every requirement, and every dependency of those, must have a
``*.dist-info`` (or ``*.egg-info``) on the given paths at a version its
specifier allows. A marker file alone proves nothing (an install can die half
way, a package can be deleted), so this reads what is really there.

Only the standard library and ``packaging``: it runs on every worker start and
must cost milliseconds, so it reads the metadata of only the distributions a
walk reaches, once each, and parses a dependency only when the walk needs it.

Metadata is read leniently (see ``metadata``): a Latin-1 Summary does not stop
the check, and a distribution whose metadata cannot be read at all makes only
the requirements that need it unsatisfied, with a reason that names it.
"""

from __future__ import annotations

import importlib.metadata
import os
import re
import sys
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from email.message import Message
from pathlib import Path

from packaging.markers import Marker, UndefinedComparison, UndefinedEnvironmentName
from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import NormalizedName, canonicalize_name
from packaging.version import InvalidVersion, Version

from src.services.installer.metadata import (
    LenientDistribution,
    UnreadableMetadata,
    distribution_label,
    lenient,
    read_headers,
)

__all__ = [
    "Unsatisfied",
    "Verdict",
    "check",
    "find_unsatisfied",
    "metadata_headers",
    "platform_paths",
]

# A node of the dependency walk: a distribution together with the extras asked of it.
_Node = tuple[NormalizedName, frozenset[NormalizedName]]

# Marker evaluation can fail on odd metadata; these are what packaging raises.
_MARKER_ERRORS = (UndefinedComparison, UndefinedEnvironmentName, InvalidVersion)

# A dependency whose whole marker is one `extra == "x"`, the commonest kind and,
# for big projects, most of their Requires-Dist: it can be skipped unparsed
# when "x" is not requested.
_EXTRA_ONLY = re.compile(r"""\s*extra\s*==\s*(['"])([^'"]+)\1\s*""")


@dataclass(frozen=True)
class Unsatisfied:
    """A top-level requirement the environment does not satisfy, and the first reason found.

    ``distribution`` is the canonical name of the distribution the reason is
    about (the requirement's own or a dependency's), when there is one.
    """

    requirement: str
    reason: str
    distribution: str | None = field(default=None, compare=False)


@dataclass(frozen=True)
class Verdict:
    """What ``check`` found: the unsatisfied requirements, and the metadata
    directory of every distribution the check read (what a satisfied set relies on)."""

    unsatisfied: list[Unsatisfied]
    distributions: list[Path]


class _Dependency:
    """One Requires-Dist line, parsed only when a walk first needs it."""

    __slots__ = ("_parsed", "line", "only_extra")

    def __init__(self, line: str) -> None:
        self.line = line
        self._parsed: Requirement | None = None
        # rpartition: a direct URL may hold ";" but the marker is always last.
        match = _EXTRA_ONLY.fullmatch(line.rpartition(";")[2]) if ";" in line else None
        self.only_extra = canonicalize_name(match.group(2)) if match else None

    def requirement(self) -> Requirement | None:
        """The parsed requirement, or None when the line is not a valid one."""
        if self._parsed is None:
            try:
                self._parsed = Requirement(self.line)
            except InvalidRequirement:
                return None
        return self._parsed


class _Installed:
    """One distribution found on the paths; version and dependencies parsed lazily, once."""

    __slots__ = ("_requires", "_version", "dist", "headers", "name")

    def __init__(self, dist: importlib.metadata.Distribution, headers: Message) -> None:
        self.dist = dist
        self.headers = headers
        self.name = str(headers["Name"])
        self._version: Version | str | None = None
        self._requires: list[_Dependency] | None = None

    def version(self) -> Version | str:
        """The parsed version, or an explanation of why there is none."""
        if self._version is None:
            text = self.headers["Version"]
            if not text:
                self._version = "has no version"
            else:
                try:
                    self._version = Version(str(text))
                except InvalidVersion:
                    self._version = f"has unparsable version {text!r}"
        return self._version

    def requires(self) -> list[_Dependency]:
        """Declared dependencies, in metadata order (egg-info's requires.txt too)."""
        if self._requires is None:
            lines = self.headers.get_all("Requires-Dist")
            if lines is None and self.dist.read_text("requires.txt") is not None:
                lines = self.dist.requires  # egg-info: sections become extra markers
            self._requires = [_Dependency(str(line)) for line in lines or []]
        return self._requires


def metadata_headers(dist: importlib.metadata.Distribution) -> Message:
    """The metadata's header block (decoded leniently, the description cut off);
    raises UnreadableMetadata when the file is there but cannot be read."""
    return read_headers(dist)


class _Unreadable:
    """A distribution whose metadata file is there but cannot be read."""

    __slots__ = ("name", "reason")

    def __init__(self, location: Path, reason: str) -> None:
        self.name = distribution_label(location)[0]
        self.reason = reason


class _Index:
    """Distributions on ``paths`` by canonical name, looked up only when asked.

    importlib.metadata finds a name by its ``*.dist-info`` directory name, so
    only the distributions a walk reaches have their metadata read: a few
    dozen, not every package of the platform. Earlier paths win, as on sys.path.
    """

    def __init__(self, paths: Sequence[str | Path]) -> None:
        self.paths = [str(path) for path in paths]
        self._found: dict[NormalizedName, _Installed | _Unreadable | None] = {}

    def get(self, name: str) -> _Installed | _Unreadable | None:
        key = canonicalize_name(name)
        if key not in self._found:
            self._found[key] = None
            for found in importlib.metadata.distributions(name=key, path=self.paths):
                dist = lenient(found)
                try:
                    headers = read_headers(dist)
                except UnreadableMetadata as exc:
                    self._found[key] = _Unreadable(exc.location, exc.reason)
                    break
                if headers["Name"]:  # a broken or half-written dist-info names nothing
                    self._found[key] = _Installed(dist, headers)
                    break
        return self._found[key]

    def locations(self) -> list[Path]:
        """The metadata directory of every readable distribution looked up so far."""
        return [
            found.dist.path for found in self._found.values()
            if isinstance(found, _Installed) and isinstance(found.dist, LenientDistribution)
        ]


def _applies(marker: Marker | None, extras: Iterable[str]) -> bool:
    """Whether a dependency with ``marker`` is needed here, for the base or any extra."""
    if marker is None:
        return True
    try:
        return any(marker.evaluate({"extra": extra}) for extra in ("", *extras))
    except _MARKER_ERRORS:
        # Cannot tell: requiring it errs towards reinstalling, never towards a
        # broken environment.
        return True


def _extras(req: Requirement) -> frozenset[NormalizedName]:
    return frozenset(canonicalize_name(extra) for extra in req.extras)


class _Checker:
    """One call's state: the index, and the nodes already proven complete."""

    def __init__(self, paths: Sequence[str | Path]) -> None:
        self.index = _Index(paths)
        # Nodes whose whole dependency closure has been verified; shared across
        # top-level requirements so common dependencies are walked once.
        self.complete: set[_Node] = set()

    def problem(self, req: Requirement) -> str | None:
        """What is wrong with the installed distribution for ``req``, or None."""
        installed = self.index.get(req.name)
        if installed is None:
            return "not installed"
        if isinstance(installed, _Unreadable):
            return f"has unreadable metadata ({installed.reason})"
        version = installed.version()
        if isinstance(version, str):
            return version
        # prereleases=True: an installed prerelease was chosen on purpose (a pin
        # or --pre), so it satisfies a specifier its version falls within.
        if not req.specifier.contains(version, prereleases=True):
            return f"{version} installed, needs {req.specifier}"
        return None

    def first_problem(self, req: Requirement) -> tuple[str, NormalizedName] | None:
        """The first reason ``req`` or its dependency closure is not satisfied,
        and the distribution it is about; None when satisfied."""
        problem = self.problem(req)
        if problem is not None:
            reason = problem if problem == "not installed" else f"{req.name} {problem}"
            return reason, canonicalize_name(req.name)
        start: _Node = (canonicalize_name(req.name), _extras(req))
        seen = {start}
        queue = deque([start])
        # Breadth first, so the reported problem is the one nearest the requirement.
        while queue:
            name, extras = queue.popleft()
            if (name, extras) in self.complete:
                continue
            parent = self.index.get(name)
            assert isinstance(parent, _Installed)  # only readable distributions are queued
            for line in parent.requires():
                if line.only_extra is not None and line.only_extra not in extras:
                    continue  # exactly what evaluating its marker would say
                dep = line.requirement()
                if dep is None:
                    reason = f"{parent.name} declares an unparsable dependency {line.line!r}"
                    return reason, name
                if not _applies(dep.marker, extras):
                    continue
                problem = self.problem(dep)
                if problem is not None:
                    reason = f"dependency {dep.name} (of {parent.name}) {problem}"
                    return reason, canonicalize_name(dep.name)
                node: _Node = (canonicalize_name(dep.name), _extras(dep))
                if node not in seen:
                    seen.add(node)
                    queue.append(node)
        # Every node reached was checked and passed, so each one's closure is
        # complete. On failure nothing is recorded: the walk stopped early.
        self.complete |= seen
        return None


def _applies_top_level(marker: Marker) -> bool:
    """Whether a top-level requirement's marker holds here (no extra is being installed)."""
    try:
        return marker.evaluate({"extra": ""})
    except _MARKER_ERRORS:
        return True  # as in _applies: when unsure, require it


def find_unsatisfied(
    requirements: Iterable[str | Requirement], paths: Sequence[str | Path]
) -> list[Unsatisfied]:
    """Requirements not satisfied, with their dependencies, by distributions on ``paths``.

    An empty list means everything is installed at allowed versions. At most
    one entry per requirement, in the order given.
    """
    return check(requirements, paths).unsatisfied


def check(requirements: Iterable[str | Requirement], paths: Sequence[str | Path]) -> Verdict:
    """``find_unsatisfied``, and where the distributions it read live."""
    checker = _Checker(paths)
    unsatisfied: list[Unsatisfied] = []
    for item in requirements:
        text = str(item)
        if isinstance(item, Requirement):
            req = item
        else:
            try:
                req = Requirement(item)
            except InvalidRequirement as exc:
                unsatisfied.append(Unsatisfied(text, f"invalid requirement: {exc}"))
                continue
        # A requirement for another platform or Python is satisfied by absence.
        if req.marker is not None and not _applies_top_level(req.marker):
            continue
        problem = checker.first_problem(req)
        if problem is not None:
            reason, distribution = problem
            unsatisfied.append(Unsatisfied(text, reason, distribution))
    return Verdict(unsatisfied, checker.index.locations())


def platform_paths(exclude: Sequence[str | Path] = ()) -> list[str]:
    """Directories on ``sys.path``, in order, minus any at or inside an ``exclude`` path.

    With the runtime's package directory excluded, this is where the platform's
    own distributions live. sys.path entries are compared in absolute form
    without resolving symlinks (that costs syscalls per entry at every start);
    the worker puts resolved paths there itself.
    """
    excluded = [os.path.realpath(path) for path in exclude]  # few: resolving them is cheap
    result: list[str] = []
    seen: set[str] = set()
    for entry in sys.path:
        absolute = os.path.abspath(entry)  # "" is the current directory
        if absolute in seen or any(
            absolute == ex or absolute.startswith(ex + os.sep) for ex in excluded
        ):
            continue
        if not os.path.isdir(absolute):
            continue  # zip files and entries that do not exist hold no dist-info dirs
        seen.add(absolute)
        result.append(entry)
    return result
