"""Installed distributions' metadata, read whatever bytes it holds.

METADATA should be UTF-8, but installers copy what the wheel holds: uv installs
a wheel whose Summary or Author is Latin-1, and `importlib.metadata` then raises
UnicodeDecodeError on every read of that distribution, which used to fail the
whole environment. The runtime needs only a few ASCII fields (Name, Version,
Requires-Dist), so text here is decoded as UTF-8 when it is, else with each
undecodable byte replaced by U+FFFD: those fields read the same either way.

A distribution whose metadata still cannot be read (the file is there but
reading it fails, or it names no distribution or no version) is reported as
`Unreadable`, by the name its directory gives, so that callers can name that
one distribution and go on with the others.
"""

from __future__ import annotations

import importlib.metadata
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from email.message import Message
from email.parser import HeaderParser
from pathlib import Path

from packaging.utils import canonicalize_name

__all__ = [
    "Found",
    "LenientDistribution",
    "Unreadable",
    "UnreadableMetadata",
    "decode",
    "distribution_label",
    "lenient",
    "read_headers",
    "scan",
]

# The header block ends at the first blank line; the description after it is
# most of a METADATA file and never needed (parsing it cost ~1 ms a distribution).
_HEADER_END = re.compile(rb"\r?\n\r?\n")
# `<name>-<version>.dist-info` (or `.egg-info`): what a directory says it holds.
_METADATA_DIR = re.compile(r"^(?P<name>[^-]+)(?:-(?P<version>[^-]+))?.*\.(?:dist|egg)-info$")
# Not-found errors mean "no such metadata file", as importlib.metadata reads them.
_ABSENT = (FileNotFoundError, NotADirectoryError)


def decode(data: bytes) -> str:
    """UTF-8 when the bytes are UTF-8, else each undecodable byte as U+FFFD."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("utf-8", errors="replace")


class UnreadableMetadata(Exception):
    """A distribution's metadata file is there, but reading it failed."""

    def __init__(self, location: Path, reason: str) -> None:
        super().__init__(f"{location}: {reason}")
        self.location = location
        self.reason = reason


class LenientDistribution(importlib.metadata.PathDistribution):
    """A `*.dist-info` / `*.egg-info` directory whose text files (METADATA,
    requires.txt, RECORD ...) are decoded leniently; everything importlib
    derives from them (`requires`, `files`, `version`) follows."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.path = path

    def read_text(self, filename: str | os.PathLike[str]) -> str | None:
        # The same absent-file cases importlib.metadata answers None for.
        try:
            data = (self.path / filename).read_bytes()
        except (*_ABSENT, IsADirectoryError, PermissionError):
            return None
        return decode(data)


def lenient(dist: importlib.metadata.Distribution) -> importlib.metadata.Distribution:
    """The distribution as a `LenientDistribution` when it is a directory on a
    path (every one `importlib.metadata.distributions(path=...)` finds there)."""
    if isinstance(dist, LenientDistribution):
        return dist
    # PathDistribution keeps its directory in `_path` (private, but the same since 3.8).
    location = getattr(dist, "_path", None)
    return LenientDistribution(location) if isinstance(location, Path) else dist


def read_headers(dist: importlib.metadata.Distribution) -> Message:
    """The header block of the distribution's METADATA (PKG-INFO for an egg-info).

    Empty when there is no metadata file (a half-written directory); raises
    UnreadableMetadata when the file is there but cannot be read.
    """
    data = _metadata_bytes(dist)
    return _parse(data) if data else Message()


def _metadata_bytes(dist: importlib.metadata.Distribution) -> bytes | None:
    """The raw METADATA (else PKG-INFO); None when neither is there or has anything."""
    dist = lenient(dist)
    if not isinstance(dist, LenientDistribution):
        return _read_other(dist) or None
    for filename in ("METADATA", "PKG-INFO"):
        location = dist.path / filename
        try:
            data = location.read_bytes()
        except _ABSENT:
            continue
        except OSError as exc:
            raise UnreadableMetadata(location, f"{type(exc).__name__}: {exc.strerror}") from exc
        if data:
            return data
    return None


def _read_other(dist: importlib.metadata.Distribution) -> bytes:
    """Metadata of a distribution some other finder supplies (not a directory)."""
    try:
        text = dist.read_text("METADATA") or dist.read_text("PKG-INFO") or ""
    except UnicodeDecodeError as exc:
        return bytes(exc.object)
    return text.encode("utf-8")


def _parse(data: bytes) -> Message:
    head = _HEADER_END.split(data, maxsplit=1)[0]
    return HeaderParser().parsestr(decode(head))


def distribution_label(location: Path) -> tuple[str, str]:
    """(name, version) a metadata directory's own name gives, for naming a
    distribution whose metadata cannot say; version is "" when it gives none."""
    directory = location if location.suffix in (".dist-info", ".egg-info") else location.parent
    match = _METADATA_DIR.match(directory.name)
    if match is None:
        return directory.name, ""
    return canonicalize_name(match["name"]), match["version"] or ""


@dataclass(frozen=True)
class Found:
    """A distribution whose Name and Version could be read."""

    name: str
    version: str
    dist: importlib.metadata.Distribution
    headers: Message


@dataclass(frozen=True)
class Unreadable:
    """A distribution whose metadata could not be read, named by its directory."""

    name: str
    version: str
    location: Path
    reason: str

    def describe(self) -> str:
        what = f"{self.name} {self.version}".strip()
        return f"the metadata of {what} ({self.location.name}) is unreadable: {self.reason}"


def scan(paths: Sequence[str | Path]) -> Iterator[Found | Unreadable]:
    """Every distribution on `paths`, in importlib's order, read leniently."""
    for dist in importlib.metadata.distributions(path=[str(path) for path in paths]):
        yield examine(dist)


def examine(dist: importlib.metadata.Distribution) -> Found | Unreadable:
    """Read one distribution's Name and Version, or say why they cannot be read."""
    dist = lenient(dist)
    location = dist.path if isinstance(dist, LenientDistribution) else Path("<not a directory>")
    try:
        data = _metadata_bytes(dist)
    except UnreadableMetadata as exc:
        return _unreadable(location, exc.reason)
    if data is None:
        return _unreadable(location, "its METADATA is missing or empty")
    headers = _parse(data)
    name, version = headers["Name"], headers["Version"]
    if not name:
        return _unreadable(location, "it names no distribution (no readable Name field)")
    if not version:
        return _unreadable(location, "it gives no version (no readable Version field)")
    return Found(str(name), str(version), dist, headers)


def _unreadable(location: Path, reason: str) -> Unreadable:
    name, version = distribution_label(location)
    return Unreadable(name, version, location, reason)


@dataclass(frozen=True)
class Listing:
    """The distributions on some paths: one per canonical name (the first
    importlib finds, which `importlib.metadata.version()` would answer with),
    and apart, those whose metadata cannot be read."""

    found: dict[str, Found]  # canonical name -> the distribution
    unreadable: list[Unreadable]

    def pins(self) -> list[str]:
        """`name==version` of each readable distribution, sorted by name."""
        return sorted((f"{d.name}=={d.version}" for d in self.found.values()), key=str.lower)


def list_distributions(paths: Sequence[str | Path]) -> Listing:
    """Every distribution on `paths`, read leniently: the one place that lists them."""
    found: dict[str, Found] = {}
    unreadable: list[Unreadable] = []
    for entry in scan(paths):
        if isinstance(entry, Found):
            found.setdefault(canonicalize_name(entry.name), entry)
        else:
            unreadable.append(entry)
    return Listing(found, unreadable)
