"""What a platform's list of a lock's files says, and which files suit this
interpreter.

Each host that gathers a lock's files (`lock_files`) lists them in the fleet
cache under its platform's tag: name, sha256, the pin each is a file of,
and, for a wheel it built from an sdist, the sdist's sha256. Any host may
have written a list: what is not a plain file name and a sha256 hex is
dropped when it is read, since a name becomes a local path.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import cache
from typing import Any

from packaging.tags import Tag, sys_tags
from packaging.utils import InvalidWheelFilename, parse_wheel_filename

from src.foundation.locks import LockedPackage

_SAFE_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.+!-]*$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


@cache
def platform_tag() -> str:
    """This interpreter's most specific tag (`cp311-cp311-manylinux_2_36_x86_64`):
    what a wheel built here, and a platform's list of files, are kept under."""
    return str(next(iter(sys_tags())))


@cache
def _tag_ranks() -> dict[Tag, int]:
    return {tag: rank for rank, tag in enumerate(sys_tags())}


def wheel_rank(filename: str) -> int | None:
    """How well a wheel suits this interpreter (lower is better); None when
    it does not, or is not a wheel."""
    try:
        _, _, _, tags = parse_wheel_filename(filename)
    except InvalidWheelFilename:
        return None
    ranks = [_tag_ranks()[tag] for tag in tags if tag in _tag_ranks()]
    return min(ranks) if ranks else None


@dataclass(frozen=True)
class FileEntry:
    """One file of a lock, as a platform's list names it."""

    name: str
    sha256: str
    pin: str  # name==version
    built_from: str | None = None  # the sdist's sha256, for a wheel built here

    def key(self) -> str:
        return f"files/{self.sha256}/{self.name}"

    def as_json(self) -> dict[str, Any]:
        return {"name": self.name, "sha256": self.sha256, "pin": self.pin,
                "built_from": self.built_from}


def parse_entries(data: bytes) -> list[FileEntry]:
    """A platform's list as written by any host: entries that are not plain
    file names and sha256 hex are dropped (a name becomes a local path)."""
    try:
        raw = json.loads(data)
    except ValueError:
        return []
    entries = []
    for item in raw if isinstance(raw, list) else []:
        if not isinstance(item, dict):
            continue
        name, sha, pin, built = (item.get(k) for k in ("name", "sha256", "pin", "built_from"))
        if (isinstance(name, str) and _SAFE_NAME.match(name) and isinstance(sha, str)
                and _SHA256.match(sha) and isinstance(pin, str)
                and (built is None or (isinstance(built, str) and _SHA256.match(built)))):
            entries.append(FileEntry(name, sha, pin, built))
    return entries


def sha256_of(package: LockedPackage) -> set[str]:
    return {digest.removeprefix("sha256:") for digest in package.hashes
            if digest.startswith("sha256:")}
