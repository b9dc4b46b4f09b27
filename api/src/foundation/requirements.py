"""Parsing, validating and editing users' requirements.txt text.

Every line a user writes ends up in `pip install -r` / `uv pip install -r` on
every worker host, so each line must be a plain PEP 508 requirement naming a
package from the configured index. Installer options, URLs, local paths and
anything else an installer would interpret beyond "this package, these
versions" are refused: indexes and trust settings are the operator's
environment (PIP_INDEX_URL, ...), never a user's line.

`validate_requirements` is the one gate every writer uses; the editing helpers
(`add_or_replace`, `remove`) keep every other byte of the file as it was, so a
user's comments, order and line endings survive API edits.

Pure functions, stdlib + `packaging` only: worker processes import this module
before they accept work, so it must stay cheap to import.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass

from packaging.requirements import InvalidRequirement, Requirement
from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

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

MAX_LINE_LENGTH = 1000
MAX_REQUIREMENT_LINES = 1000

# LineError.line is for display (API answers, logs); long lines are cut here.
_DISPLAY_LENGTH = 100
# packaging's messages can quote the whole input; keep reasons readable.
_REASON_DETAIL_LENGTH = 200

# pip's own rule: '#' at the start or after whitespace starts a comment, so
# 'pkg#frag' is not a comment (and then fails to parse, as it does for pip).
_INLINE_COMMENT_RE = re.compile(r"(^|\s+)#.*$")
# Any 'scheme://' (http, https, file, ftp, git+ssh, ...) is a URL to an installer.
_URL_SCHEME_RE = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://")
# VCS prefixes pip understands even without '//' after them (git+file:..., hg+...).
_VCS_RE = re.compile(r"\b(?:git|hg|svn|bzr)\+", re.IGNORECASE)
# 'file:' without slashes still makes pip read a local file.
_FILE_SCHEME_RE = re.compile(r"\bfile:", re.IGNORECASE)
# Windows drive paths: C:\x, C:/x.
_DRIVE_RE = re.compile(r"^[A-Za-z]:[\\/]")
# The name part of a line ends at the first extras, specifier, marker, URL or space.
_NAME_END_RE = re.compile(r"[\[(<>=!~;@\s]")
# pip treats a bare name that looks like an archive file name as a local path
# (pip._internal.utils.filetypes.ARCHIVE_EXTENSIONS), even though packaging
# happily parses e.g. 'foo-1.0.tar.gz' as a project name.
_ARCHIVE_SUFFIXES = (
    ".zip", ".whl",
    ".tar.bz2", ".tbz",
    ".tar.xz", ".txz", ".tlz", ".tar.lz", ".tar.lzma",
    ".tar.gz", ".tgz", ".tar",
)
# pip and uv expand ${VAR} in requirement files: a marker such as
# '"a" in "${DATABASE_URL}"' would turn the installer into a secret oracle.
_ENV_VAR_MARK = "${"
# Cc and Cf control/format characters (bidi overrides, zero-width), Cs lone
# surrogates (cannot be stored as UTF-8) and Zl/Zp separators (editors show
# them as line breaks, the installer does not); tab is ordinary whitespace.
_REFUSED_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})
_ALLOWED_CONTROL = frozenset({"\t"})

_OPTIONS_REASON = (
    "index and installer options are the operator's environment settings "
    "(PIP_INDEX_URL, PIP_EXTRA_INDEX_URL, ...), not a requirement line"
)


@dataclass(frozen=True)
class LineError:
    """One refused line; `line_number` is 1-based (0: not from a file)."""

    line_number: int
    line: str
    reason: str


class InvalidRequirements(ValueError):
    """Requirements text (or an install request) that must not be saved."""

    def __init__(self, errors: list[LineError]) -> None:
        # errors is the only constructor argument, so the exception pickles
        # across process boundaries (workers, pools) unchanged.
        super().__init__(list(errors))
        self.errors: list[LineError] = list(errors)

    def __str__(self) -> str:
        # line 0 means "not from a file" (make_requirement): the reason alone reads better.
        return "; ".join(
            f"line {error.line_number}: {error.reason}" if error.line_number else error.reason
            for error in self.errors
        )


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
    for number, body in _numbered_bodies(content):
        # Character and length checks cover comment lines too: a bidi override
        # in a comment still hides what the file says from its reviewer.
        reason = _check_characters(body)
        text = _strip_comment(body)
        if reason is None and not text:
            continue
        if text:
            count += 1
            if count > MAX_REQUIREMENT_LINES:
                # One error for the whole overflow; the extra lines are not
                # parsed, which keeps the work bounded for huge uploads.
                if count == MAX_REQUIREMENT_LINES + 1:
                    errors.append(_error(number, body, (
                        f"more than {MAX_REQUIREMENT_LINES} requirement lines "
                        f"(the limit is {MAX_REQUIREMENT_LINES})"
                    )))
                if reason is not None:
                    errors.append(_error(number, body, reason))
                continue
        if reason is None:
            parsed = _parse_requirement(text)
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
            errors.append(_error(number, body, reason))
    if errors:
        raise InvalidRequirements(errors)
    return requirements


def requirement_lines(content: str) -> list[str]:
    """The requirement lines (stripped, inline comments removed), in order; no validation."""
    return [text for _, body in _numbered_bodies(content) if (text := _strip_comment(body))]


def make_requirement(package: str, version: str | None = None) -> Requirement:
    """Build one requirement from an install request `{"package", "version"}`.

    `package` is a name with optional extras (`uvicorn[standard]`); `version`
    None/"" means unpinned, a bare version `1.2.3` means `==1.2.3`, anything
    else must be a specifier set (`>=1,<2`). Raises InvalidRequirements with a
    single line-0 error.
    """
    name_text = package.strip()
    reason = _check_characters(package, "package name")
    if reason is None and not name_text:
        reason = "package name is empty"
    if reason is None:
        reason = _check_form(name_text)
    if reason is None:
        parsed = _parse_requirement(name_text)
        if isinstance(parsed, Requirement) and (parsed.specifier or parsed.marker):
            reason = (
                f"package must be a name with optional extras, e.g. 'uvicorn[standard]', "
                f"not {_shorten(name_text)!r}: give the version separately"
            )
        elif any(char.isspace() for char in name_text):
            reason = f"package name must not contain whitespace: {_shorten(name_text)!r}"
        elif isinstance(parsed, str):
            reason = parsed
    if reason is not None:
        raise InvalidRequirements([_error(0, package, reason)])

    specifier = _version_specifier(version)
    # The full line goes through the same gate as a file line (length included),
    # so an install can never write what a PUT of the file would refuse.
    return _require_line(f"{name_text}{specifier}")


def find(content: str, name: str) -> Requirement | None:
    """The requirement naming `name` (canonical comparison), or None."""
    key = canonicalize_name(name)
    for line in _split_lines(content):
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
    new = _require_line(requirement if isinstance(requirement, str) else str(requirement))
    key = canonicalize_name(new.name)
    new_text = str(new)
    lines = _split_lines(content)
    result: list[str] = []
    replaced = False
    for line in lines:
        old = _requirement_of(line)
        if old is None or canonicalize_name(old.name) != key:
            result.append(line)
        elif not replaced:
            result.append(new_text + _line_ending(line))
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
    for line in _split_lines(content):
        requirement = _requirement_of(line)
        if requirement is not None and canonicalize_name(requirement.name) == key:
            found = True
        else:
            kept.append(line)
    if not found:
        raise KeyError(name)
    return "".join(kept)


# --- shared line handling -------------------------------------------------------


def _split_lines(content: str) -> list[str]:
    # Only '\n' ends a line (str.splitlines would also split on \x0b, \x1c,
    # U+2028, ...; those are refused as characters instead). Endings are kept,
    # so joining the pieces gives back `content` exactly.
    pieces = content.split("\n")
    lines = [piece + "\n" for piece in pieces[:-1]]
    if pieces[-1]:
        lines.append(pieces[-1])
    return lines


def _body(line: str) -> str:
    # The line without its ending; CRLF files lose their '\r' here only.
    return line.removesuffix("\n").removesuffix("\r")


def _line_ending(line: str) -> str:
    return line[len(_body(line)):]


def _numbered_bodies(content: str) -> Iterator[tuple[int, str]]:
    for number, line in enumerate(_split_lines(content), start=1):
        yield number, _body(line)


def _strip_comment(body: str) -> str:
    return _INLINE_COMMENT_RE.sub("", body).strip()


def _requirement_of(line: str) -> Requirement | None:
    # Editing helpers match by name on whatever parses; lines that do not
    # (comments, blanks, junk in unvalidated content) are left untouched.
    text = _strip_comment(_body(line))
    if not text:
        return None
    try:
        return Requirement(text)
    except InvalidRequirement:
        return None


def _check_characters(text: str, what: str = "line") -> str | None:
    """Reason when `text` holds a refused character or is too long."""
    for char in text:
        category = unicodedata.category(char)
        if category in _REFUSED_CATEGORIES and char not in _ALLOWED_CONTROL:
            code = f"U+{ord(char):04X}"
            if category == "Cs":
                return f"lone surrogate {code}"
            name = unicodedata.name(char, "")
            return f"control character {code}" + (f" ({name})" if name else "")
    if len(text) > MAX_LINE_LENGTH:
        return f"{what} is {len(text)} characters long (the limit is {MAX_LINE_LENGTH})"
    return None


def _check_form(text: str) -> str | None:
    """Reason when `text` (a stripped requirement line) is not a plain index requirement.

    These checks run before packaging parses, because packaging would either
    accept the line (paths that look like names, `name @ url`) or fail with a
    message that does not tell the user what is wrong.
    """
    if text.startswith("-"):
        option = text.split(maxsplit=1)[0].split("=", 1)[0]
        return f"{_shorten(option)!r} is an option: {_OPTIONS_REASON}"
    if text.endswith("\\"):
        return "line continuation ('\\' at the end of the line) is not allowed"
    if _ENV_VAR_MARK in text:
        return "environment variable references ('${...}') are not allowed"
    if _URL_SCHEME_RE.search(text) or _VCS_RE.search(text) or _FILE_SCHEME_RE.search(text):
        return (
            "URL and VCS requirements are not allowed: name a package from the "
            "configured index (with an optional version)"
        )
    head = _NAME_END_RE.split(text, maxsplit=1)[0]
    if (
        text.startswith((".", "/", "~", "\\"))
        or _DRIVE_RE.match(text)
        or "/" in head
        or "\\" in head
        or head.lower().endswith(_ARCHIVE_SUFFIXES)
    ):
        return (
            "local paths and archive files are not allowed: name a package from "
            "the configured index (with an optional version)"
        )
    return None


def _parse_requirement(text: str) -> Requirement | str:
    """The parsed requirement, or the reason it is refused (form, then PEP 508)."""
    reason = _check_form(text)
    if reason is not None:
        return reason
    try:
        requirement = Requirement(text)
    except InvalidRequirement as exc:
        # packaging's message is "what was expected", then the line and a
        # caret; the first line is the useful part.
        detail = str(exc).splitlines()[0] if str(exc) else "unparsable"
        return f"not a valid PEP 508 requirement: {_shorten(detail, _REASON_DETAIL_LENGTH)}"
    if requirement.url:
        return (
            f"{_shorten(requirement.name)!r} @ ... is a direct URL reference: name a "
            "package from the configured index (with an optional version)"
        )
    return requirement


def _require_line(text: str) -> Requirement:
    """One requirement line through every check, or InvalidRequirements (line 0)."""
    stripped = text.strip()
    reason = _check_characters(text, "requirement")
    if reason is None and not stripped:
        reason = "requirement is empty"
    if reason is None:
        parsed = _parse_requirement(stripped)
        if isinstance(parsed, Requirement):
            return parsed
        reason = parsed
    raise InvalidRequirements([_error(0, text, reason)])


def _version_specifier(version: str | None) -> str:
    """The specifier text for an install request's `version` ('' when unpinned)."""
    if version is None or not version.strip():
        return ""
    reason = _check_characters(version, "version")
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
            f"invalid version {_shorten(text)!r}: give a version (1.2.3) or a "
            "specifier set (>=1,<2, ~=2.0, !=1.5)"
        )
    raise InvalidRequirements([_error(0, version, reason)])


def _error(line_number: int, line: str, reason: str) -> LineError:
    return LineError(line_number=line_number, line=_display(line), reason=reason)


def _display(line: str) -> str:
    # Refused characters are shown escaped so an error message can never carry
    # a terminal escape or a bidi override into an API answer or a log line.
    safe = "".join(
        char
        if unicodedata.category(char) not in _REFUSED_CATEGORIES or char in _ALLOWED_CONTROL
        else (f"\\x{ord(char):02x}" if ord(char) < 0x100 else f"\\u{ord(char):04x}")
        for char in line[: _DISPLAY_LENGTH * 2]
    )
    return _shorten(safe, _DISPLAY_LENGTH)


def _shorten(text: str, limit: int = _DISPLAY_LENGTH) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."
