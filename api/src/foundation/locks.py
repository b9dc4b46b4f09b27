"""A lock: the exact versions one requirements hash runs, on every host, forever.

The write path resolves requirements.txt once (uv, see
`src/services/installer/resolver.py`) into a lock before anything is stored;
workers then install the lock's pins with no resolution of their own. Its text
is a requirements file any installer reads, one distribution per line:

    # Locked by Bifrost: the exact versions of requirements 1a2b3c..., do not edit
    humanize==4.9.0 --hash=sha256:5ad3...  # via requirements.txt
    six==1.16.0 --hash=sha256:1e61...  # via python-dateutil

`via` names what brought each distribution in (`requirements.txt` for a line
of the file itself), so a line can be removed without asking the index again:
what only it brought in goes with it (`Lock.without`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from src.foundation.hashing import sha256_hex

# What `via` says of a distribution requirements.txt asks for itself.
DIRECT = "requirements.txt"
_HEADER = "# Locked by Bifrost: the exact versions of requirements {hash}, do not edit"
_VIA = "  # via "
_HEADER_HASH = re.compile(r"^# Locked by Bifrost\b.* requirements ([^\s,]+),")
_DIGEST = re.compile(r"^[a-z0-9]+:[0-9a-f]+$")  # "sha256:<hex>"


class InvalidLock(ValueError):
    """A lock's text that cannot be read back: the worker resolves by itself."""


@dataclass(frozen=True)
class LockedPackage:
    name: str  # as the index spells it
    version: str
    hashes: tuple[str, ...] = ()  # "sha256:<hex>", where the index gives them
    via: tuple[str, ...] = ()  # canonical names of what needs it, or DIRECT

    @property
    def key(self) -> str:
        return canonicalize_name(self.name)

    def pin(self) -> str:
        return f"{self.name}=={self.version}"

    def line(self) -> str:
        hashes = "".join(f" --hash={digest}" for digest in self.hashes)
        via = f"{_VIA}{', '.join(self.via)}" if self.via else ""
        return f"{self.pin()}{hashes}{via}"


@dataclass(frozen=True)
class Lock:
    requirements_hash: str  # the sha256 of the requirements.txt it was resolved from
    packages: tuple[LockedPackage, ...]  # sorted by canonical name

    @classmethod
    def of(cls, requirements_hash: str, packages: Iterable[LockedPackage]) -> Lock:
        return cls(requirements_hash, tuple(sorted(packages, key=lambda p: p.key)))

    def text(self) -> str:
        lines = [_HEADER.format(hash=self.requirements_hash)]
        lines += [package.line() for package in self.packages]
        return "\n".join(lines) + "\n"

    def digest(self) -> str:
        """Names the lock's exact files (versions and hashes, not which
        requirements they were resolved for): equal digests, identical wheels."""
        return sha256_hex("\n".join(f"{p.pin()} {' '.join(p.hashes)}" for p in self.packages))

    def pins(self) -> list[str]:
        return [package.pin() for package in self.packages]

    def find(self, name: str) -> LockedPackage | None:
        key = canonicalize_name(name)
        return next((package for package in self.packages if package.key == key), None)

    def without(self, name: str, requirements_hash: str) -> Lock:
        """This lock once requirements.txt no longer asks for `name`: what
        the remaining lines need, directly or through each other, stays (the
        package too, if one of them depends on it); the rest goes."""
        removed = canonicalize_name(name)

        def reasons(package: LockedPackage) -> set[str]:
            if not package.via:
                return {DIRECT}  # no record of what needs it: keep it
            via = {v if v == DIRECT else canonicalize_name(v) for v in package.via}
            return via - ({DIRECT} if package.key == removed else set())

        needs: dict[str, set[str]] = {}  # what X needs: every Y whose via names X
        for package in self.packages:
            for reason in reasons(package) - {DIRECT}:
                needs.setdefault(reason, set()).add(package.key)
        kept = {package.key for package in self.packages if DIRECT in reasons(package)}
        frontier = list(kept)
        while frontier:
            for key in needs.get(frontier.pop(), set()) - kept:
                kept.add(key)
                frontier.append(key)
        return Lock.of(requirements_hash, [
            # (one with no record of what needs it keeps none: it is not a line)
            LockedPackage(p.name, p.version, p.hashes, tuple(sorted(
                v for v in reasons(p) if v == DIRECT or v in kept)) if p.via else ())
            for p in self.packages if p.key in kept
        ])

    @classmethod
    def parse(cls, text: str) -> Lock:
        """Read back what `text()` wrote; InvalidLock names what is wrong."""
        lines = text.splitlines()
        if not lines or not lines[0].startswith("# Locked by Bifrost"):
            raise InvalidLock("not a Bifrost lock (no header line)")
        header = _HEADER_HASH.match(lines[0])
        if header is None:
            raise InvalidLock("the header line names no requirements hash")
        packages = [_parse_line(number, line) for number, line in enumerate(lines[1:], 2)
                    if line.strip()]
        seen: set[str] = set()
        for package in packages:
            if package.key in seen:
                raise InvalidLock(f"{package.name} is locked twice")
            seen.add(package.key)
        return cls.of(header.group(1), packages)


def _parse_line(number: int, line: str) -> LockedPackage:
    body, _, via = line.partition(_VIA)
    words = body.split()
    if not words:
        raise InvalidLock(f"line {number} names no distribution")
    try:
        requirement = Requirement(words[0])
    except InvalidRequirement as exc:
        raise InvalidLock(f"line {number}: {exc}") from None
    pins = [spec for spec in requirement.specifier
            if spec.operator == "==" and "*" not in spec.version]
    if (len(pins) != 1 or len(requirement.specifier) != 1 or requirement.extras
            or requirement.marker is not None or requirement.url):
        raise InvalidLock(f"line {number}: {words[0]!r} is not an exact pin (name==version)")
    hashes = []
    for word in words[1:]:
        if not word.startswith("--hash="):
            raise InvalidLock(f"line {number}: unexpected {word!r}")
        if not _DIGEST.match(digest := word.removeprefix("--hash=")):
            raise InvalidLock(f"line {number}: {word!r} is not a hash (--hash=sha256:<hex>)")
        hashes.append(digest)
    names = tuple(part.strip() for part in via.split(",") if part.strip())
    return LockedPackage(requirement.name, pins[0].version, tuple(hashes), names)
