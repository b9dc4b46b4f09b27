"""Why a requirement line failed, in the words an operator can act on.

Two kinds of failure are explained here: the installer's own (its output,
cut to where it says why), and a distribution that landed but whose metadata
cannot be read (reported under the requirement line that brought it in).
"""

from __future__ import annotations

import contextlib
from pathlib import Path

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from src.services.installer.context import BuildContext
from src.services.installer.metadata import Unreadable
from src.services.installer.outcome import FailedPackage
from src.services.installer.satisfaction import check

ERROR_EXCERPT_CHARS = 1500
# How uv and pip begin the lines that say why ("\u00d7" is pip's cross mark).
ERROR_STARTS = ("error", "\u00d7")


def excerpt(output: str, limit: int) -> str:
    """Where the installer says why: from its first error line, tail kept."""
    lines = [line for line in output.splitlines() if line.strip()]
    first_error = next(
        (i for i, line in enumerate(lines) if line.lstrip().lower().startswith(ERROR_STARTS)),
        0,
    )
    text = "\n".join(lines[first_error:])
    return text if len(text) <= limit else "..." + text[-limit:]


def unreadable_failures(
    ctx: BuildContext,
    build_dir: Path,
    unreadable: list[Unreadable],
    failed: list[FailedPackage],
) -> list[FailedPackage]:
    """A failure for each distribution in `build_dir` whose metadata cannot be
    read, under the requirement line that brought it (else its own name);
    lines that failed already (`failed`) are not reported twice."""
    if not unreadable:
        return []
    already = {f["package"] for f in failed}
    brought_by = _lines_by_distribution(
        [line for line in ctx.lines if line not in already], ctx.search_paths(build_dir))
    extra: list[FailedPackage] = []
    for dist in unreadable:
        package = brought_by.get(canonicalize_name(dist.name), dist.name)
        ctx.log.warning("x %s: %s", package, dist.describe())
        if package not in already:
            already.add(package)
            extra.append(FailedPackage(package=package, error=dist.describe()))
    return extra


def _lines_by_distribution(lines: list[str], paths: list[str]) -> dict[str, str]:
    """canonical distribution name -> the first line that needs it: the line
    naming it, else a line whose dependencies (looked for on `paths`) stop at it."""
    by_name: dict[str, str] = {}
    for line in lines:
        with contextlib.suppress(InvalidRequirement):
            by_name.setdefault(canonicalize_name(Requirement(line).name), line)
    for unsatisfied in check(lines, paths).unsatisfied:
        if unsatisfied.distribution is not None:
            by_name.setdefault(unsatisfied.distribution, unsatisfied.requirement)
    return by_name
