"""Resolving requirements.txt once, into a lock (`src.foundation.locks.Lock`).

Every write of requirements.txt resolves the whole set here before anything
is stored, so one requirements hash runs one set of versions on every host.
`uv pip compile` does the resolving, with what an install would run with:

- the platform's own versions as constraints (a user's line can neither
  replace them nor pull in another version through a dependency);
- the operator's index settings, exactly as `uv pip install` gets them
  (`commands.install_command`: PIP_INDEX_URL & co. as uv's variables,
  PIP_NO_INDEX as `--no-index`);
- `--generate-hashes` (hashes where the index gives them) and `# via`
  annotations, read into each package's `via`: a line of requirements.txt
  is `DIRECT`, a constraint alone is nothing (constraints-only entries are
  not in uv's output at all);
- the current lock's pins as preferences (uv prefers the versions of an
  existing `--output-file`), so adding a line moves no other package, and
  `upgrade` to let every package (`--upgrade`) or some (`--upgrade-package`)
  move to the newest version allowed. uv keeps a preferred version's hashes
  as the preferences give them: a version's files stay the ones first locked.

`outdated` reports, per line, the newest version the index offers within the
line's specifier and overall: `uv pip compile --no-deps` of the lines, then of
their bare names, picks exactly those (for this interpreter), with the same
index settings and the same errors as `resolve`.

Failures are `Unresolvable` or `IndexUnreachable` (see `resolver_errors`).
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from packaging.utils import canonicalize_name

from src.foundation.locks import Lock
from src.foundation.requirements import requirement_lines
from src.foundation.settings import get_settings
from src.services.installer import commands
from src.services.installer.environments import Environments
from src.services.installer.platform import constraints_file
from src.services.installer.reach import installer_reach
from src.services.installer.resolver_errors import (
    IndexUnreachable,
    ResolveError,
    Unresolvable,
    failure,
    unreachable_index,
)
from src.services.installer.resolver_output import compiled_packages, line_name
from src.services.installer.runner import run_installer
from src.services.installer.supervisor import TIMED_OUT

__all__ = [
    "RESOLVE_TIMEOUT",
    "IndexUnreachable",
    "Outdated",
    "ResolveError",
    "Unresolvable",
    "outdated",
    "resolve",
]

# The longest one resolution may take (it runs while an HTTP request waits).
RESOLVE_TIMEOUT = 120.0
# The files of one resolution, in a directory of its own.
_INPUT = "requirements.txt"
_OUTPUT = "lock.txt"
# Parallel resolutions when `outdated` asks line by line.
_OUTDATED_THREADS = 8


@dataclass(frozen=True)
class Outdated:
    """One requirement line against what the index offers now."""

    line: str  # the requirement line, as requirements.txt has it
    name: str  # the package it names, as the line spells it
    locked: str | None  # the version the lock runs (None: not in the lock)
    newest_allowed: str | None  # the newest the line's specifier accepts
    newest: str | None  # the newest of all (None: the index offers none)


def resolve(
    content: str,
    requirements_hash: str,
    *,
    preferences: Lock | None = None,
    upgrade: bool | Sequence[str] = False,
    environ: Mapping[str, str] | None = None,
    timeout: float = RESOLVE_TIMEOUT,
) -> Lock:
    """The lock of requirements.txt `content` (whose sha256 is
    `requirements_hash`): every distribution it needs, at one exact version.

    `preferences`: a lock whose versions are kept wherever they still fit;
    `upgrade`: True lets every package move to the newest version allowed, a
    list of names only those. `environ`: the whole environment uv runs with,
    the operator's index settings included (this process's by default).
    Raises Unresolvable or IndexUnreachable.
    """
    lines = requirement_lines(content)
    if not lines:
        return Lock.of(requirements_hash, [])
    settings = get_settings()
    platform = constraints_file(Environments(settings.packages_dir).root, settings.packages_dir)
    options = ["--generate-hashes", "--annotation-style", "split",
               "--constraint", str(platform), *_upgrade_options(upgrade)]
    with tempfile.TemporaryDirectory(prefix="bifrost-resolve-") as tmp:
        work = Path(tmp)
        (work / _INPUT).write_text(content, encoding="utf-8")
        if preferences is not None:
            (work / _OUTPUT).write_text(preferences.text(), encoding="utf-8")
        output = _compile(work, lines, options, environ, timeout)
    return Lock.of(requirements_hash, compiled_packages(output))


def outdated(
    content: str,
    lock: Lock | None,
    environ: Mapping[str, str] | None = None,
    *,
    timeout: float = RESOLVE_TIMEOUT,
) -> list[Outdated]:
    """Each requirement line of `content`, in order, with the version `lock`
    runs and the newest ones the index offers (within the line, and overall)
    for this interpreter; `environ` as for `resolve`. Raises IndexUnreachable
    when the index cannot be read."""
    lines = requirement_lines(content)
    named = [(line, name) for line in lines if (name := line_name(line)) is not None]
    if not named:
        return []
    allowed = _newest([line for line, _ in named], environ, timeout)
    newest = _newest(sorted({canonicalize_name(name) for _, name in named}), environ, timeout)
    report = []
    for line, name in named:
        key = canonicalize_name(name)
        locked = lock.find(name) if lock is not None else None
        report.append(Outdated(line=line, name=name,
                               locked=locked.version if locked is not None else None,
                               newest_allowed=allowed.get(key), newest=newest.get(key)))
    return report


def _upgrade_options(upgrade: bool | Sequence[str]) -> list[str]:
    if isinstance(upgrade, bool):
        return ["--upgrade"] if upgrade else []
    names = [upgrade] if isinstance(upgrade, str) else list(upgrade)
    return [flag for name in names for flag in ("--upgrade-package", name)]


def _newest(lines: Sequence[str], environ: Mapping[str, str] | None,
            timeout: float) -> dict[str, str]:
    """canonical name -> the version uv picks for each of `lines` on its own
    (`--no-deps`): the newest its specifier allows. A line the index has no
    version for is left out; finding which one takes a resolution per line."""
    try:
        return _pick(lines, environ, timeout)
    except Unresolvable:
        if len(lines) == 1:
            return {}
    with ThreadPoolExecutor(_OUTDATED_THREADS) as pool:
        picks = list(pool.map(lambda line: _newest([line], environ, timeout), lines))
    return {key: version for pick in picks for key, version in pick.items()}


def _pick(lines: Sequence[str], environ: Mapping[str, str] | None,
          timeout: float) -> dict[str, str]:
    with tempfile.TemporaryDirectory(prefix="bifrost-outdated-") as tmp:
        work = Path(tmp)
        (work / _INPUT).write_text("\n".join(lines) + "\n", encoding="utf-8")
        output = _compile(work, lines, ["--no-deps", "--no-annotate"], environ, timeout)
    return {package.key: package.version for package in compiled_packages(output)}


def _compile(work: Path, lines: Sequence[str], options: Sequence[str],
             environ: Mapping[str, str] | None, timeout: float) -> str:
    """Run `uv pip compile` on `work`'s requirements.txt into its lock.txt
    (read as preferences when it exists) and return what uv wrote there."""
    no_index, env = _index_settings(environ)
    argv = [
        sys.executable, "-m", "uv", "pip", "compile", str(work / _INPUT),
        "--output-file", str(work / _OUTPUT), "--python", sys.executable,
        "--no-header", "--no-progress", "--quiet", "--color", "never",
        *(["--no-index"] if no_index else []), *options,
    ]
    try:
        done = run_installer(argv, timeout, env=env,
                             confine=installer_reach(env, work))
    except subprocess.TimeoutExpired:
        done = None
    except OSError as exc:
        raise Unresolvable(None, f"the resolver could not run: {exc}") from None
    if done is None or done.returncode == TIMED_OUT:
        raise IndexUnreachable(unreachable_index(env, no_index),
                               f"resolving took longer than {timeout:.0f} s")
    if done.returncode != 0:
        # Name the input as the user knows it, not by its temporary path.
        stderr = (done.stderr or "").replace(f"{work}/", "")
        raise failure(stderr, lines, env, no_index)
    return (work / _OUTPUT).read_text(encoding="utf-8")


def _index_settings(environ: Mapping[str, str] | None) -> tuple[bool, dict[str, str]]:
    """Whether uv runs with `--no-index`, and its environment: the very
    settings `uv pip install` gets, so resolving asks the indexes the
    install will."""
    install = commands.install_command("uv", Path(), requirement="-", environ=environ)
    return "--no-index" in install.argv, install.env
