"""Editing requirements text one package at a time.

`add_or_replace` and `remove` change only the line(s) naming the package and
keep every other byte of the file as it was, so a user's comments, order and
line endings survive API edits. Names compare canonically (`Foo_Bar` is
`foo-bar`). The line added goes through every line check; the text as a
whole does not (its other lines are the caller's): whoever saves the result
validates it.

Pure functions, stdlib + `packaging` only.
"""

from __future__ import annotations

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from src.foundation.requirement_checks import (
    line_body,
    line_ending,
    require_line,
    split_lines,
    strip_comment,
)


def find(content: str, name: str) -> Requirement | None:
    """The requirement naming `name` (canonical comparison), or None."""
    key = canonicalize_name(name)
    for line in split_lines(content):
        requirement = _requirement_of(line)
        if requirement is not None and canonicalize_name(requirement.name) == key:
            return requirement
    return None


def add_or_replace(content: str, requirement: Requirement | str) -> str:
    """Content with `requirement`'s line replaced in place, or appended.

    Names compare canonically (`Foo_Bar` is `foo-bar`). Every other line is
    kept byte-for-byte; the replaced line keeps its line ending. Further lines
    for the same name (only possible in invalid content) are dropped so one
    line remains.
    """
    new = require_line(requirement if isinstance(requirement, str) else str(requirement))
    key = canonicalize_name(new.name)
    new_text = str(new)
    lines = split_lines(content)
    result: list[str] = []
    replaced = False
    for line in lines:
        old = _requirement_of(line)
        if old is None or canonicalize_name(old.name) != key:
            result.append(line)
        elif not replaced:
            result.append(new_text + line_ending(line))
            replaced = True
    if replaced:
        return "".join(result)
    # Follow the file's own line-ending convention, so a CRLF file stays CRLF.
    newline = "\r\n" if lines and lines[0].endswith("\r\n") else "\n"
    separator = "" if not content or content.endswith("\n") else newline
    return f"{content}{separator}{new_text}{newline}"


def remove(content: str, name: str) -> str:
    """Content without the line(s) naming `name`; KeyError(name) when none does."""
    key = canonicalize_name(name)
    kept: list[str] = []
    found = False
    for line in split_lines(content):
        requirement = _requirement_of(line)
        if requirement is not None and canonicalize_name(requirement.name) == key:
            found = True
        else:
            kept.append(line)
    if not found:
        raise KeyError(name)
    return "".join(kept)


def _requirement_of(line: str) -> Requirement | None:
    # Editing helpers match by name on whatever parses; lines that do not
    # (comments, blanks, junk in unvalidated content) are left untouched.
    text = strip_comment(line_body(line))
    if not text:
        return None
    try:
        return Requirement(text)
    except InvalidRequirement:
        return None
