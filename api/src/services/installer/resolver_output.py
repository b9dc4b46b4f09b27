"""Reading what `uv pip compile` writes into a lock's packages.

uv writes one entry per distribution, its hashes and `# via` annotations on
the lines below it (`--annotation-style split`):

    good-dep==1.5 \\
        --hash=sha256:34aa...
        # via
        #   -c /.../.platform-constraints-....txt
        #   good-a

`-r <file>` in `via` is a line of requirements.txt itself (`DIRECT`); a
`-c <file>` (the platform's constraints) brought nothing in by itself and is
left out; anything else is a distribution, kept by its canonical name.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from src.foundation.locks import DIRECT, LockedPackage
from src.services.installer.resolver_errors import Unresolvable

_NAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?")


def compiled_packages(text: str) -> list[LockedPackage]:
    """The packages of uv's output `text`. An entry that is not an exact
    `name==version` pin (uv never writes one for our inputs) is Unresolvable."""
    return [_package(lines) for lines in _entries(text)]


def line_name(line: str) -> str | None:
    """The package a requirement line names, as it spells it (None: not a requirement)."""
    try:
        return Requirement(line).name
    except InvalidRequirement:
        return None


def _entries(text: str) -> Iterator[list[str]]:
    """The lines of each entry: an unindented requirement and what follows it
    indented (its hashes and annotations). Comments before the first entry,
    and option lines, are no entries."""
    entry: list[str] = []
    for raw in text.splitlines():
        if not raw.strip():
            continue
        if raw[0].isspace():
            if entry:
                entry.append(raw.strip())
            continue
        if entry:
            yield entry
        entry = [] if raw.startswith(("#", "-")) else [raw.strip()]
    if entry:
        yield entry


def _package(lines: list[str]) -> LockedPackage:
    words: list[str] = []
    via: set[str] = set()
    annotating = False
    for line in lines:
        if line.startswith("#"):
            comment = line[1:].strip()
            if comment == "via" or comment.startswith("via "):
                annotating = True
                comment = comment[3:].strip()
            if annotating and comment and (reason := _via(comment)) is not None:
                via.add(reason)
        else:
            annotating = False
            words += line.removesuffix("\\").split()
    options = next((i for i, word in enumerate(words) if word.startswith("--")), len(words))
    spec = " ".join(words[:options])
    hashes = tuple(word.removeprefix("--hash=") for word in words[options:]
                   if word.startswith("--hash="))
    name, version = _exact_pin(spec)
    return LockedPackage(name, version, hashes, tuple(sorted(via)))


def _exact_pin(spec: str) -> tuple[str, str]:
    """`name==version` read with packaging; anything else is Unresolvable."""
    try:
        requirement = Requirement(spec)
    except InvalidRequirement as exc:
        raise Unresolvable(None, f"the resolver wrote {spec!r}, which is no requirement: {exc}"
                           ) from None
    pins = [s.version for s in requirement.specifier if s.operator == "==" and "*" not in s.version]
    if len(pins) != 1 or len(requirement.specifier) != 1:
        raise Unresolvable(requirement.name,
                           f"the resolver gave no exact version for {requirement.name}: {spec!r}")
    return requirement.name, pins[0]


def _via(item: str) -> str | None:
    """One `# via` item as the lock keeps it: DIRECT, a canonical name, or None."""
    if item.startswith("-r"):
        return DIRECT
    if item.startswith("-"):
        return None  # -c: a constraint alone needs nothing
    found = _NAME.match(item)
    return canonicalize_name(found.group(0)) if found else None
