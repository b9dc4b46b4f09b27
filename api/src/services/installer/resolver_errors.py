"""Why a resolution failed, told apart from uv's exit status and its own words.

Two failures reach the API, each carrying what it must say:

- `Unresolvable` (the user's lines cannot be satisfied: an unknown package,
  no version matching, two lines or a line and the platform that conflict),
  naming the package uv blames and quoting uv;
- `IndexUnreachable` (the operator's index or find-links location could not
  be read: connection refused, DNS, a time-out, HTTP 5xx, 401/403, offline),
  naming the location tried.

uv exits with 1 when it finds no solution and with 2 when it could not run
to the end (a fetch failed, a file could not be read). Neither status alone
is enough: with `--offline`, or an index refusing our credentials, uv reports
"No solution found" and says why in a hint. So the index failures are
recognised by what uv says about the network, whatever the status; any other
failure is the requirements' (an unexpected one too, with uv's words).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

# How much of uv's explanation a reason quotes.
QUOTE_CHARS = 1000
# uv's index when the operator configured none.
DEFAULT_INDEX = "https://pypi.org/simple"
# What uv says when an index or find-links location could not be read.
_UNREACHABLE = (
    "Failed to fetch",
    "error sending request",
    "HTTP status server error",
    "Failed to read `--find-links`",
    "operation timed out",
    "dns error",
    "tcp connect error",
    "network was disabled",  # --offline / UV_OFFLINE, and the cache lacks the package
    "lack of valid authentication credentials",  # 401 (uv's hint)
    "returned a 403 Forbidden",
)
# Where uv names the location it could not read, most precise first.
_LOCATION = (
    re.compile(r"Failed to read `--find-links` (?:directory|URL): (\S+)"),
    re.compile(r"An index(?: URL)? \((\S+)\)"),
    re.compile(r"Failed to fetch: `?(\S+?)`?(?:\s|$)"),
    re.compile(r"(https?://[^\s`()]+)"),
)
_NAME = r"[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?"
# The package uv says does not exist at all (a line, or a dependency of one).
_MISSING = (
    re.compile(rf"(?<![\w.-])({_NAME}) was not found in"),
    re.compile(rf"there (?:are|is) no versions? of ({_NAME})"),
)
_WORD = re.compile(rf"(?<![\w.-])({_NAME})")


class ResolveError(Exception):
    """A resolution that produced no lock."""


class Unresolvable(ResolveError):
    """The requirements have no solution: `package` is the one the resolver
    blames (None when it names none and there is no line), `reason` uv's words."""

    def __init__(self, package: str | None, reason: str) -> None:
        super().__init__(f"{package}: {reason}" if package else reason)
        self.package = package
        self.reason = reason


class IndexUnreachable(ResolveError):
    """The package index (or find-links location) `index` could not be read."""

    def __init__(self, index: str, reason: str) -> None:
        super().__init__(f"{index}: {reason}")
        self.index = index
        self.reason = reason


def failure(stderr: str, lines: Sequence[str], env: Mapping[str, str],
            no_index: bool) -> ResolveError:
    """The error a failed `uv pip compile` stands for; `lines` are the
    requirement lines it was given, `env` and `no_index` the index settings
    it ran with."""
    reason = quoted(stderr)
    if any(marker in stderr for marker in _UNREACHABLE):
        return IndexUnreachable(_location(stderr, env, no_index), reason)
    return Unresolvable(blamed(stderr, lines), reason or "the resolver failed and said nothing")


def quoted(stderr: str, limit: int = QUOTE_CHARS) -> str:
    """uv's explanation on one line, from its first `error:` on: the error,
    each `cause:` after a colon, then its hints; cut at `limit`."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    first = next((i for i, line in enumerate(lines) if line.startswith("error:")), 0)
    text = ""
    for line in lines[first:]:
        if line.startswith(("error:", "cause:")):
            words = line.partition(":")[2].strip()
            text += f": {words}" if text else words
        elif line.startswith("hint:"):
            text += f" {line}" if text.endswith(".") else f"; {line}"
        else:  # an explanation continued on the next line
            text += f" {line}"
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "\u2026"


def blamed(stderr: str, lines: Sequence[str]) -> str | None:
    """The package uv blames: one it says does not exist; else the first
    requirement line it names (as the line spells it); else the first line."""
    for pattern in _MISSING:
        if found := pattern.search(stderr):
            return _spelling(found.group(1), lines)
    names = _line_names(lines)
    for word in _WORD.finditer(stderr):
        if (name := names.get(canonicalize_name(word.group(1)))) is not None:
            return name
    return next(iter(names.values()), None)


def configured_indexes(env: Mapping[str, str], no_index: bool) -> list[str]:
    """The index URLs and find-links locations uv reads with `env`, in order."""
    found: list[str] = []
    if not no_index:
        for name in ("UV_DEFAULT_INDEX", "UV_INDEX_URL"):
            found += env.get(name, "").split()[:1]
        # UV_INDEX entries may be named: `name=https://...`
        found += [entry.partition("=")[2] if "=" in entry.split("://")[0] else entry
                  for entry in env.get("UV_INDEX", "").split()]
        found += env.get("UV_EXTRA_INDEX_URL", "").split()
        if not any(env.get(name) for name in ("UV_DEFAULT_INDEX", "UV_INDEX_URL")):
            found.append(DEFAULT_INDEX)
    found += [entry for entry in env.get("UV_FIND_LINKS", "").split(",") if entry.strip()]
    return found


def unreachable_index(env: Mapping[str, str], no_index: bool) -> str:
    """The location to name when uv did not say which one failed."""
    return next(iter(configured_indexes(env, no_index)), DEFAULT_INDEX)


def _location(stderr: str, env: Mapping[str, str], no_index: bool) -> str:
    """The configured index under which uv's failed URL lies, else what uv names."""
    for pattern in _LOCATION:
        if found := pattern.search(stderr):
            tried = found.group(1).rstrip(".,:;")
            for index in configured_indexes(env, no_index):
                if tried.startswith(index.rstrip("/")):
                    return index
            return tried
    return unreachable_index(env, no_index)


def _line_names(lines: Sequence[str]) -> dict[str, str]:
    """canonical name -> the name as the line spells it, in line order."""
    names: dict[str, str] = {}
    for line in lines:
        try:
            name = Requirement(line).name
        except InvalidRequirement:
            continue
        names.setdefault(canonicalize_name(name), name)
    return names


def _spelling(name: str, lines: Sequence[str]) -> str:
    return _line_names(lines).get(canonicalize_name(name), name)
