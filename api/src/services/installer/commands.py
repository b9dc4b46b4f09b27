"""The installer's command line and environment: uv (the default) or pip, into a target dir.

Both get the operator's index settings (`PIP_INDEX_URL`, `PIP_EXTRA_INDEX_URL`,
`PIP_FIND_LINKS`, `PIP_NO_INDEX`). pip reads them from its environment itself.
uv reads only its own variables, so its environment gets the matching ones
(`UV_INDEX_URL`, `UV_EXTRA_INDEX_URL`, `UV_FIND_LINKS`), each only where the
operator has not set that `UV_*` variable already: the operator's own uv
settings win. uv has no variable for `--no-index`, so that one stays a flag.

Local wheel directories (the fleet cache's) are `--find-links` flags for pip;
for uv they join `UV_FIND_LINKS`, since uv ignores that variable altogether
once `--find-links` is on its command line. A `local_only` run sees those
directories and nothing else: no index, none of the operator's find-links
(a lock's pins installed from the fleet's wheels alone, see `locked`).

`no_deps` installs exactly what the requirements file names (a lock's pins):
the installer resolves nothing.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from src.foundation.hardening import for_executions
from src.services.installer.reach import installer_reach

Installer = Literal["uv", "pip"]

_TRUE = {"1", "true", "yes", "on"}
# The uv variable each operator's pip index setting becomes, and the other uv
# variables that already say the same thing (then the pip setting is left out).
_UV_VARIABLES = {
    "PIP_INDEX_URL": ("UV_INDEX_URL", ("UV_DEFAULT_INDEX",)),
    "PIP_EXTRA_INDEX_URL": ("UV_EXTRA_INDEX_URL", ()),
    "PIP_FIND_LINKS": ("UV_FIND_LINKS", ()),
}


@dataclass(frozen=True)
class InstallerCall:
    """One installer run: its argv, the whole environment it runs with, and
    what it may touch (`reach.installer_reach`; None: unconfined)."""

    argv: list[str]
    env: dict[str, str]
    confine: dict[str, Any] | None = None


def choose_installer(setting: str) -> Installer:
    """`auto` means uv when the uv package is importable, else pip."""
    if setting == "pip":
        return "pip"
    if setting == "uv" or importlib.util.find_spec("uv") is not None:
        return "uv"
    return "pip"


def install_command(
    installer: Installer,
    target: Path,
    *,
    requirements_file: str | None = None,
    requirement: str | None = None,
    constraints_file: Path | None = None,
    find_links: Sequence[Path] = (),
    environ: Mapping[str, str] | None = None,
    no_deps: bool = False,
    local_only: bool = False,
) -> InstallerCall:
    """The run installing `-r requirements_file` (or one `requirement`) into
    `target`, with the operator's settings from `environ` (this process's
    environment by default), less the control plane's variables. `find_links`
    adds local wheel directories (the fleet cache's) to the operator's; with
    `local_only` they are all the run sees. `no_deps`: exactly what is named,
    no dependency resolved."""
    # Installers build sdists, which runs package code: never with a way into
    # the control plane (Redis, the store, the tokens, the webhook).
    environ = for_executions(os.environ if environ is None else environ)
    what = ["-r", requirements_file] if requirements_file else [str(requirement)]
    reads = [Path(path) for path in (requirements_file, constraints_file) if path] + [*find_links]
    what += ["--no-deps"] if no_deps else []
    constraints = ["--constraint", str(constraints_file)] if constraints_file else []
    if installer == "pip":
        local = [flag for path in find_links for flag in ("--find-links", str(path))]
        argv = [
            sys.executable, "-m", "pip", "install", *what, "--target", str(target),
            "--no-input", "--disable-pip-version-check", *constraints, *local,
        ]
        if local_only:
            argv.append("--no-index")
            return _confined(argv, _without(environ, "PIP_FIND_LINKS"), target, reads)
        return _confined(argv, dict(environ), target, reads)
    no_index = local_only or _is_true(environ.get("PIP_NO_INDEX", ""))
    argv = [
        sys.executable, "-m", "uv", "pip", "install", *what, "--target", str(target),
        "--python", sys.executable, "--no-progress", *constraints,
        *(["--no-index"] if no_index else []),
    ]
    if local_only:
        # uv reads find-links from its environment only: ours alone, no operator's.
        env = _without(environ, "UV_FIND_LINKS")
        env["UV_FIND_LINKS"] = ",".join(str(path) for path in find_links)
        return _confined(argv, env, target, reads)
    return _confined(argv, uv_environment(environ, find_links), target, reads)


@dataclass(frozen=True)
class IndexSources:
    """Where the operator's settings say packages come from."""

    index_urls: list[str]
    find_links: list[str]


def index_sources(environ: Mapping[str, str] | None = None) -> IndexSources:
    """The index URLs and find-links of the operator's settings, pip's
    variables first, uv's where pip's are not set (as the installers read
    them); no index with `PIP_NO_INDEX`."""
    environ = os.environ if environ is None else environ
    index = (environ.get("PIP_INDEX_URL") or environ.get("UV_INDEX_URL")
             or environ.get("UV_DEFAULT_INDEX") or "https://pypi.org/simple/").strip()
    extra = (environ.get("PIP_EXTRA_INDEX_URL") or environ.get("UV_EXTRA_INDEX_URL") or "")
    links = environ.get("PIP_FIND_LINKS", "").split() + [
        entry for entry in environ.get("UV_FIND_LINKS", "").split(",") if entry.strip()]
    urls = [] if _is_true(environ.get("PIP_NO_INDEX", "")) else [index, *extra.split()]
    return IndexSources(index_urls=urls, find_links=[entry.strip() for entry in links])


def wheel_command(installer: Installer, sdist: Path, dest: Path,
                  environ: Mapping[str, str] | None = None) -> InstallerCall:
    """The run that builds the wheel of one downloaded sdist into `dest`, for
    this interpreter (`uv build`, or `pip wheel`); its build dependencies
    come from the operator's index."""
    environ = for_executions(os.environ if environ is None else environ)
    if installer == "pip":
        argv = [sys.executable, "-m", "pip", "wheel", "--no-deps", str(sdist), "--wheel-dir",
                str(dest), "--no-input", "--disable-pip-version-check"]
        return _confined(argv, dict(environ), dest, [sdist])
    no_index = ["--no-index"] if _is_true(environ.get("PIP_NO_INDEX", "")) else []
    argv = [sys.executable, "-m", "uv", "build", "--wheel", str(sdist), "--out-dir", str(dest),
            "--python", sys.executable, "--no-progress", *no_index]
    return _confined(argv, uv_environment(environ), dest, [sdist])


def _confined(argv: list[str], env: dict[str, str], target: Path,
              reads: Sequence[Path]) -> InstallerCall:
    return InstallerCall(argv, env, installer_reach(env, target, reads=reads))


def _without(environ: Mapping[str, str], name: str) -> dict[str, str]:
    return {key: value for key, value in environ.items() if key != name}


def uv_environment(environ: Mapping[str, str], find_links: Sequence[Path] = ()) -> dict[str, str]:
    """`environ` with the operator's pip index settings as uv's variables (an
    operator's own `UV_*` setting is kept as it is), and `find_links` first
    in `UV_FIND_LINKS`."""
    env = dict(environ)
    for pip_name, (uv_name, same_as) in _UV_VARIABLES.items():
        if any(env.get(name) for name in (uv_name, *same_as)):
            continue
        if value := _uv_value(pip_name, environ.get(pip_name, "")):
            env[uv_name] = value
    if find_links:
        # uv splits UV_FIND_LINKS at commas (pip's list is split at whitespace).
        operators = [entry for entry in env.get("UV_FIND_LINKS", "").split(",") if entry]
        env["UV_FIND_LINKS"] = ",".join([*(str(path) for path in find_links), *operators])
    return env


def _uv_value(pip_name: str, value: str) -> str:
    """A pip setting's value as uv reads it; "" when nothing of it applies."""
    if pip_name == "PIP_FIND_LINKS":
        # pip skips a local directory that is not there; uv would fail the install.
        return ",".join(entry for entry in value.split()
                        if "://" in entry or os.path.exists(entry))
    if pip_name == "PIP_EXTRA_INDEX_URL":
        return " ".join(value.split())  # both split the list at whitespace
    return value.strip()


def _is_true(value: str) -> bool:
    return value.strip().lower() in _TRUE


def installed_lines(installer: Installer, output: str) -> list[str]:
    """`name==version` of what the installer reports it installed."""
    if installer == "uv":
        return [line.strip()[2:] for line in output.splitlines() if line.startswith(" + ")]
    for line in output.splitlines():
        if line.startswith("Successfully installed "):
            return [_pip_pair(item) for item in line.split()[2:]]
    return []


def _pip_pair(item: str) -> str:
    name, _, version = item.rpartition("-")
    return f"{name}=={version}" if name else item
