"""The installer's command line: uv (the default) or pip, into a target dir.

Both get the operator's index settings (`PIP_INDEX_URL`, `PIP_EXTRA_INDEX_URL`,
`PIP_FIND_LINKS`, `PIP_NO_INDEX`): pip reads them from the environment itself,
uv is given them as flags, since it reads only its own `UV_*` variables.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

Installer = Literal["uv", "pip"]

_TRUE = {"1", "true", "yes", "on"}


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
    find_links: list[Path] | None = None,
    environ: Mapping[str, str] | None = None,
) -> list[str]:
    """argv installing `-r requirements_file` (or one `requirement`) into `target`.
    `find_links` adds local wheel directories (the fleet cache's) to the operator's."""
    environ = os.environ if environ is None else environ
    what = ["-r", requirements_file] if requirements_file else [str(requirement)]
    constraints = ["--constraint", str(constraints_file)] if constraints_file else []
    local = [flag for path in find_links or [] for flag in ("--find-links", str(path))]
    if installer == "pip":
        return [
            sys.executable, "-m", "pip", "install", *what, "--target", str(target),
            "--no-input", "--disable-pip-version-check", *constraints, *local,
        ]
    return [
        sys.executable, "-m", "uv", "pip", "install", *what, "--target", str(target),
        "--python", sys.executable, "--no-progress", *constraints, *local,
        *_uv_index_flags(environ),
    ]


def _uv_index_flags(environ: Mapping[str, str]) -> list[str]:
    flags: list[str] = []
    if index := environ.get("PIP_INDEX_URL"):
        flags += ["--index-url", index]
    for extra in environ.get("PIP_EXTRA_INDEX_URL", "").split():
        flags += ["--extra-index-url", extra]
    for links in environ.get("PIP_FIND_LINKS", "").split():
        # pip skips a local directory that is not there; uv would fail the install.
        if "://" in links or os.path.exists(links):
            flags += ["--find-links", links]
    if environ.get("PIP_NO_INDEX", "").strip().lower() in _TRUE:
        flags.append("--no-index")
    return flags


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
