"""Tiny wheels written by the tests themselves, so installs run offline."""

from __future__ import annotations

import base64
import hashlib
import zipfile
from pathlib import Path

from packaging.utils import canonicalize_name


def _record_hash(data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=")
    return f"sha256={digest.decode()}"


def build_wheel(
    wheelhouse: Path,
    name: str,
    version: str = "1.0.0",
    *,
    module_source: str | None = None,
    requires: list[str] | None = None,
) -> Path:
    """Write `<name>-<version>-py3-none-any.whl` into `wheelhouse`.

    The wheel holds one module, named like the distribution with `-` as `_`,
    whose `VERSION` is the version unless `module_source` says otherwise.
    """
    wheelhouse.mkdir(parents=True, exist_ok=True)
    dist = canonicalize_name(name).replace("-", "_")
    module = dist
    dist_info = f"{dist}-{version}.dist-info"
    metadata = ["Metadata-Version: 2.1", f"Name: {name}", f"Version: {version}"]
    metadata += [f"Requires-Dist: {req}" for req in requires or []]
    files: dict[str, bytes] = {
        f"{module}.py": (module_source or f"VERSION = {version!r}\n").encode(),
        f"{dist_info}/METADATA": ("\n".join(metadata) + "\n").encode(),
        f"{dist_info}/WHEEL": (
            b"Wheel-Version: 1.0\nGenerator: bifrost-tests\nRoot-Is-Purelib: true\n"
            b"Tag: py3-none-any\n"
        ),
    }
    record = [f"{path},{_record_hash(data)},{len(data)}" for path, data in files.items()]
    record.append(f"{dist_info}/RECORD,,")
    files[f"{dist_info}/RECORD"] = ("\n".join(record) + "\n").encode()
    path = wheelhouse / f"{dist}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as archive:
        for member, data in files.items():
            archive.writestr(member, data)
    return path
