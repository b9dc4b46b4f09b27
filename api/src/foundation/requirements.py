"""Parsing, validating and editing users' requirements.txt text.

Every line a user writes ends up in `pip install -r` / `uv pip install -r` on
every worker host, so each line must be a plain PEP 508 requirement naming a
package from the configured index. Installer options, URLs, local paths and
anything else an installer would interpret beyond "this package, these
versions" are refused: indexes and trust settings are the operator's
environment (PIP_INDEX_URL, ...), never a user's line.

`validate_requirements` is the one gate every writer uses. The line checks
it applies live in `requirement_checks`, the editing helpers (`add_or_replace`,
`remove`, `find`) in `requirement_edits`; both are importable from here.

Pure functions, stdlib + `packaging` only: worker processes import this module
before they accept work, so it must stay cheap to import.
"""

from __future__ import annotations

from packaging.requirements import Requirement
from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

from src.foundation.requirement_checks import (
    MAX_LINE_LENGTH,
    MAX_REQUIREMENT_LINES,
    InvalidRequirements,
    LineError,
    check_characters,
    check_form,
    line_error,
    numbered_bodies,
    parse_requirement,
    require_line,
    shorten,
    strip_comment,
)
from src.foundation.requirement_edits import add_or_replace, find, remove

__all__ = [
    "MAX_LINE_LENGTH",
    "MAX_REQUIREMENT_LINES",
    "InvalidRequirements",
    "LineError",
    "add_or_replace",
    "find",
    "make_requirement",
    "normalized_name",
    "remove",
    "requirement_lines",
    "validate_requirements",
]


def normalized_name(name: str) -> str:
    """PEP 503 normalised project name (`Foo_Bar` -> `foo-bar`)."""
    return canonicalize_name(name)


def validate_requirements(content: str) -> list[Requirement]:
    """Parse every requirement line of `content`, or raise InvalidRequirements.

    Every error is collected (with its 1-based line number) before raising, so
    a user can fix the whole file in one go.
    """
    errors: list[LineError] = []
    requirements: list[Requirement] = []
    first_line_of: dict[str, int] = {}
    count = 0
    for number, body in numbered_bodies(content):
        # Character and length checks cover comment lines too: a bidi override
        # in a comment still hides what the file says from its reviewer.
        reason = check_characters(body)
        text = strip_comment(body)
        if reason is None and not text:
            continue
        if text:
            count += 1
            if count > MAX_REQUIREMENT_LINES:
                # One error for the whole overflow; the extra lines are not
                # parsed, which keeps the work bounded for huge uploads.
                if count == MAX_REQUIREMENT_LINES + 1:
                    errors.append(line_error(number, body, (
                        f"more than {MAX_REQUIREMENT_LINES} requirement lines "
                        f"(the limit is {MAX_REQUIREMENT_LINES})"
                    )))
                if reason is not None:
                    errors.append(line_error(number, body, reason))
                continue
        if reason is None:
            parsed = parse_requirement(text)
            if isinstance(parsed, str):
                reason = parsed
            else:
                key = canonicalize_name(parsed.name)
                if key in first_line_of:
                    reason = f"duplicate of line {first_line_of[key]} ({parsed.name!r})"
                else:
                    first_line_of[key] = number
                    requirements.append(parsed)
        if reason is not None:
            errors.append(line_error(number, body, reason))
    if errors:
        raise InvalidRequirements(errors)
    return requirements


def requirement_lines(content: str) -> list[str]:
    """The requirement lines (stripped, inline comments removed), in order; no validation."""
    return [text for _, body in numbered_bodies(content) if (text := strip_comment(body))]


def make_requirement(package: str, version: str | None = None) -> Requirement:
    """Build one requirement from an install request `{"package", "version"}`.

    `package` is a name with optional extras (`uvicorn[standard]`); `version`
    None/"" means unpinned, a bare version `1.2.3` means `==1.2.3`, anything
    else must be a specifier set (`>=1,<2`). Raises InvalidRequirements with a
    single line-0 error.
    """
    name_text = package.strip()
    reason = check_characters(package, "package name")
    if reason is None and not name_text:
        reason = "package name is empty"
    if reason is None:
        reason = check_form(name_text)
    if reason is None:
        parsed = parse_requirement(name_text)
        if isinstance(parsed, Requirement) and (parsed.specifier or parsed.marker):
            reason = (
                f"package must be a name with optional extras, e.g. 'uvicorn[standard]', "
                f"not {shorten(name_text)!r}: give the version separately"
            )
        elif any(char.isspace() for char in name_text):
            reason = f"package name must not contain whitespace: {shorten(name_text)!r}"
        elif isinstance(parsed, str):
            reason = parsed
    if reason is not None:
        raise InvalidRequirements([line_error(0, package, reason)])

    specifier = _version_specifier(version)
    # The full line goes through the same gate as a file line (length included),
    # so an install can never write what a PUT of the file would refuse.
    return require_line(f"{name_text}{specifier}")


def _version_specifier(version: str | None) -> str:
    """The specifier text for an install request's `version` ('' when unpinned)."""
    if version is None or not version.strip():
        return ""
    reason = check_characters(version, "version")
    if reason is None:
        text = version.strip()
        try:
            # A bare version pins exactly: "1.2.3" -> "==1.2.3".
            return f"=={Version(text)}"
        except InvalidVersion:
            pass
        try:
            specifier = SpecifierSet(text)
        except InvalidSpecifier:
            specifier = None
        # SpecifierSet(",") parses as "no constraint": a typo, not a request.
        if specifier:
            return str(specifier)
        reason = (
            f"invalid version {shorten(text)!r}: give a version (1.2.3) or a "
            "specifier set (>=1,<2, ~=2.0, !=1.5)"
        )
    raise InvalidRequirements([line_error(0, version, reason)])
