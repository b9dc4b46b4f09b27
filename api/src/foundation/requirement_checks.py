"""What one requirement line may hold, and how requirements text splits into lines.

The checks every writer's text goes through (refused characters, installer
options, URLs, local paths, PEP 508 parsing) and the errors that report them,
shared by validation (`src.foundation.requirements`) and line editing
(`src.foundation.requirement_edits`). Line handling keeps every byte: joining
`split_lines(content)` gives back `content`, so edits touch only their line.

Pure functions, stdlib + `packaging` only, like the modules that use them.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass

from packaging.requirements import InvalidRequirement, Requirement

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


# --- lines -------------------------------------------------------------------


def split_lines(content: str) -> list[str]:
    # Only '\n' ends a line (str.splitlines would also split on \x0b, \x1c,
    # U+2028, ...; those are refused as characters instead). Endings are kept,
    # so joining the pieces gives back `content` exactly.
    pieces = content.split("\n")
    lines = [piece + "\n" for piece in pieces[:-1]]
    if pieces[-1]:
        lines.append(pieces[-1])
    return lines


def line_body(line: str) -> str:
    # The line without its ending; CRLF files lose their '\r' here only.
    return line.removesuffix("\n").removesuffix("\r")


def line_ending(line: str) -> str:
    return line[len(line_body(line)):]


def numbered_bodies(content: str) -> Iterator[tuple[int, str]]:
    for number, line in enumerate(split_lines(content), start=1):
        yield number, line_body(line)


def strip_comment(body: str) -> str:
    return _INLINE_COMMENT_RE.sub("", body).strip()


# --- checks ------------------------------------------------------------------


def check_characters(text: str, what: str = "line") -> str | None:
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


def check_form(text: str) -> str | None:
    """Reason when `text` (a stripped requirement line) is not a plain index requirement.

    These checks run before packaging parses, because packaging would either
    accept the line (paths that look like names, `name @ url`) or fail with a
    message that does not tell the user what is wrong.
    """
    if text.startswith("-"):
        option = text.split(maxsplit=1)[0].split("=", 1)[0]
        return f"{shorten(option)!r} is an option: {_OPTIONS_REASON}"
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


def parse_requirement(text: str) -> Requirement | str:
    """The parsed requirement, or the reason it is refused (form, then PEP 508)."""
    reason = check_form(text)
    if reason is not None:
        return reason
    try:
        requirement = Requirement(text)
    except InvalidRequirement as exc:
        # packaging's message is "what was expected", then the line and a
        # caret; the first line is the useful part.
        detail = str(exc).splitlines()[0] if str(exc) else "unparsable"
        return f"not a valid PEP 508 requirement: {shorten(detail, _REASON_DETAIL_LENGTH)}"
    if requirement.url:
        return (
            f"{shorten(requirement.name)!r} @ ... is a direct URL reference: name a "
            "package from the configured index (with an optional version)"
        )
    return requirement


def require_line(text: str) -> Requirement:
    """One requirement line through every check, or InvalidRequirements (line 0)."""
    stripped = text.strip()
    reason = check_characters(text, "requirement")
    if reason is None and not stripped:
        reason = "requirement is empty"
    if reason is None:
        parsed = parse_requirement(stripped)
        if isinstance(parsed, Requirement):
            return parsed
        reason = parsed
    raise InvalidRequirements([line_error(0, text, reason)])


def line_error(line_number: int, line: str, reason: str) -> LineError:
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
    return shorten(safe, _DISPLAY_LENGTH)


def shorten(text: str, limit: int = _DISPLAY_LENGTH) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."
