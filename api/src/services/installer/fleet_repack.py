"""Wheels from an installed environment: each distribution is packed again
from the files its RECORD lists, so that another host can install it with no
package index.

Left out of a wheel is what the installer made when it installed one: its
own dist-info files, bytecode, and the scripts `--target` installs put in
bin/ (the installer generates them again from entry_points.txt, and a copy
would carry this host's interpreter path). RECORD is written afresh by
`wheel.wheelfile.WheelFile`: the installed one has hashes of other files.
"""

from __future__ import annotations

import email.parser
import email.policy
import logging
import os
import re
import tempfile
from pathlib import Path

from src.services.installer.metadata import LenientDistribution

logger = logging.getLogger(__name__)

# Files the installer adds to a dist-info when it installs a wheel (uv_cache.json
# and uv_build.json are uv's); the wheel never had them, and RECORD is written
# afresh by the packer.
_INSTALLER_FILES = frozenset(
    {"INSTALLER", "REQUESTED", "direct_url.json", "uv_cache.json", "uv_build.json", "RECORD"}
)
# Where `--target` installs put scripts.
_SCRIPT_DIRS = frozenset({"bin", "Scripts"})
_DIST_INFO = re.compile(r"^(?P<namever>[^\s-]+?-[^\s-]+?)\.dist-info$")


def produce_wheels(env_path: Path, wheel_dir: Path) -> list[str]:
    """The wheel filename of every distribution of the environment, repacking
    into `wheel_dir` those it lacks. A distribution that cannot be repacked is
    left out (with a warning): the others are still worth keeping."""
    filenames = []
    for dist_info in sorted(env_path.glob("*.dist-info")):
        try:
            filename = wheel_filename(dist_info)
            if not (wheel_dir / filename).is_file():
                repack(env_path, dist_info, wheel_dir / filename)
            filenames.append(filename)
        except Exception as exc:
            logger.warning("Fleet wheel cache: cannot make a wheel of %s: %s", dist_info.name, exc)
    return filenames


def wheel_filename(dist_info: Path) -> str:
    """`<name>-<version>[-<build>]-<tags>.whl`, from the dist-info's name and its
    WHEEL file (the tags the wheel was installed from), as `wheel pack` names it."""
    match = _DIST_INFO.match(dist_info.name)
    if match is None:
        raise ValueError(f"not a wheel's dist-info: {dist_info.name}")
    with (dist_info / "WHEEL").open("rb") as f:
        info = email.parser.BytesParser(policy=email.policy.compat32).parse(f)
    tags: list[str] = info.get_all("Tag") or []
    if not tags or any(tag.count("-") != 2 for tag in tags):
        raise ValueError(f"no usable Tag in {dist_info.name}/WHEEL: {tags}")
    build = info.get("Build")
    parts = [match["namever"], *([str(build)] if build else []), _tagline(tags)]
    return "-".join(parts) + ".whl"


def _tagline(tags: list[str]) -> str:
    """Tags compressed as wheel filenames write them (py2.py3-none-any)."""
    columns = zip(*(tag.split("-") for tag in tags), strict=True)
    return "-".join(".".join(sorted(set(column))) for column in columns)


def repack(env_root: Path, dist_info: Path, dest: Path) -> None:
    """Pack the distribution's files, straight from the environment, into the
    wheel `dest`; it appears whole or not at all."""
    from wheel.wheelfile import WheelFile  # only publishing needs it

    # The packer logs every member at INFO; in a worker's log that is noise.
    logging.getLogger("wheel").setLevel(logging.WARNING)
    members = _wheel_members(env_root, dist_info)
    dest.parent.mkdir(parents=True, exist_ok=True)
    # In the destination dir, so the final rename is atomic; a dot-name, so
    # that a find-links reader never takes it for a wheel. A dir, not a temp
    # file: WheelFile checks the name it writes to is the wheel's own.
    with tempfile.TemporaryDirectory(prefix=".repack-", dir=dest.parent) as tmp:
        packed = Path(tmp) / dest.name
        with WheelFile(packed, "w") as wheel:
            for member in members:
                wheel.write(str(env_root / member), member.as_posix())
        os.replace(packed, dest)


def _wheel_members(env_root: Path, dist_info: Path) -> list[Path]:
    """Paths, relative to the env root, of the distribution's own files (per its
    RECORD), in the order they go into the wheel: its dist-info last, as the
    wheel spec recommends. Raises when one is missing: a partial wheel must
    never be shared."""
    files = LenientDistribution(dist_info).files  # a non-UTF-8 RECORD must not stop the others
    if files is None:
        raise ValueError(f"{dist_info.name} has no RECORD")
    root = Path(os.path.normpath(env_root.absolute()))
    members = set()
    for file in files:
        # Lexically: a symlink inside the env must not be followed out of it.
        path = Path(os.path.normpath(root / file))
        if not path.is_relative_to(root):
            continue  # e.g. pip's ../../bin scripts: outside the environment
        relative = path.relative_to(root)
        if _installer_made(relative, dist_info.name):
            continue
        if not path.is_file():
            raise ValueError(f"{relative} is in the RECORD of {dist_info.name} but missing")
        members.add(relative)
    return sorted(members, key=lambda member: (member.parts[0] == dist_info.name, member))


def _installer_made(relative: Path, dist_info_name: str) -> bool:
    parts = relative.parts
    return (
        "__pycache__" in parts
        or relative.suffix == ".pyc"
        or parts[0] in _SCRIPT_DIRS
        or (len(parts) == 2 and parts[0] == dist_info_name and parts[1] in _INSTALLER_FILES)
    )
