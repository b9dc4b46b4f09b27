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
    extra_files: dict[str, str] | None = None,
) -> Path:
    """Write `<name>-<version>-py3-none-any.whl` into `wheelhouse`.

    The wheel holds one module, named like the distribution with `-` as `_`,
    whose `VERSION` is the version unless `module_source` says otherwise,
    plus `extra_files` (archive path -> text).
    """
    wheelhouse.mkdir(parents=True, exist_ok=True)
    dist = canonicalize_name(name).replace("-", "_")
    module = dist
    dist_info = f"{dist}-{version}.dist-info"
    metadata = ["Metadata-Version: 2.1", f"Name: {name}", f"Version: {version}"]
    metadata += [f"Requires-Dist: {req}" for req in requires or []]
    files: dict[str, bytes] = {
        f"{module}.py": (module_source or f"VERSION = {version!r}\n").encode(),
        **{path: text.encode() for path, text in (extra_files or {}).items()},
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


# An in-tree PEP 517 backend: no build requirements, so uv and pip can build
# the sdist offline. BEHAVIOUR is "ok", "fail" (like a package needing a C
# compiler the image lacks), "wait:<url>" (blocks while the exchange file at
# <url> exists: a build is confined, and sees none of the test's files), or
# "probe:<url> <path>..." (tries to read each <path> and to write a file beside
# the first, then POSTs what it found, its environment, uid and effective
# capabilities, as a JSON line, to <url>: a test's exchange, see exchange.py).
_BACKEND = '''
import base64, hashlib, os, sys, time, zipfile

NAME, VERSION, BEHAVIOUR = {name!r}, {version!r}, {behaviour!r}


def _probe():
    import json, urllib.request
    url, *paths = BEHAVIOUR[6:].split(" ")
    tried = {{}}
    for path in paths:
        try:
            with open(path) as secret:
                secret.read()
            tried[path] = "read"
        except OSError as exc:
            tried[path] = type(exc).__name__
    planted = os.path.join(os.path.dirname(paths[0]), "planted-by-a-build")
    try:
        with open(planted, "w") as plant:
            plant.write("x")
        tried["write"] = "written"
    except OSError as exc:
        tried["write"] = type(exc).__name__
    with open("/proc/self/status") as status:
        caps = [line.split()[1] for line in status if line.startswith("CapEff")][0]
    report = {{"environ": dict(os.environ), "uid": os.getuid(), "tried": tried, "caps": caps}}
    body = (json.dumps(report) + "\\n").encode()
    urllib.request.urlopen(urllib.request.Request(url, data=body, method="POST"), timeout=30)


def _behave():
    if BEHAVIOUR.startswith("probe:"):
        _probe()
    if BEHAVIOUR == "fail":
        sys.stderr.write("error: command 'gcc' failed: No such file or directory\\n")
        raise RuntimeError("building " + NAME + " needs a C compiler")
    if BEHAVIOUR.startswith("wait:"):
        import urllib.error, urllib.request
        deadline = time.time() + 120
        while time.time() < deadline:
            try:
                urllib.request.urlopen(urllib.request.Request(BEHAVIOUR[5:], method="HEAD"),
                                       timeout=30)
            except urllib.error.HTTPError:
                break  # 404: the test removed it
            time.sleep(0.05)


def get_requires_for_build_wheel(config_settings=None):
    return []


def prepare_metadata_for_build_wheel(metadata_directory, config_settings=None):
    if BEHAVIOUR.startswith("probe:"):
        _behave()
    dist_info = os.path.join(metadata_directory, f"{{NAME}}-{{VERSION}}.dist-info")
    os.makedirs(dist_info)
    with open(os.path.join(dist_info, "METADATA"), "w") as f:
        f.write(f"Metadata-Version: 2.1\\nName: {{NAME}}\\nVersion: {{VERSION}}\\n")
    return os.path.basename(dist_info)


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    _behave()
    dist_info = f"{{NAME}}-{{VERSION}}.dist-info"
    files = {{
        f"{{NAME}}.py": f"VERSION = {{VERSION!r}}\\n".encode(),
        f"{{dist_info}}/METADATA": f"Metadata-Version: 2.1\\nName: {{NAME}}\\nVersion: {{VERSION}}\\n".encode(),
        f"{{dist_info}}/WHEEL": b"Wheel-Version: 1.0\\nGenerator: t\\nRoot-Is-Purelib: true\\nTag: py3-none-any\\n",
    }}
    record = []
    for path, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{{path}},sha256={{digest}},{{len(data)}}")
    record.append(f"{{dist_info}}/RECORD,,")
    files[f"{{dist_info}}/RECORD"] = ("\\n".join(record) + "\\n").encode()
    name = f"{{NAME}}-{{VERSION}}-py3-none-any.whl"
    with zipfile.ZipFile(os.path.join(wheel_directory, name), "w") as archive:
        for path, data in files.items():
            archive.writestr(path, data)
    return name
'''


def build_sdist(wheelhouse: Path, name: str, version: str = "1.0.0", behaviour: str = "ok") -> Path:
    """Write `<name>-<version>.tar.gz`, built on install by an in-tree backend."""
    import io
    import tarfile

    wheelhouse.mkdir(parents=True, exist_ok=True)
    dist = canonicalize_name(name).replace("-", "_")
    root = f"{dist}-{version}"
    files = {
        "pyproject.toml": (
            '[build-system]\nrequires = []\nbuild-backend = "backend"\nbackend-path = ["."]\n'
        ),
        "backend.py": _BACKEND.format(name=dist, version=version, behaviour=behaviour),
        "PKG-INFO": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
    }
    path = wheelhouse / f"{root}.tar.gz"
    with tarfile.open(path, "w:gz") as archive:
        for member, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(f"{root}/{member}")
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return path


def latin1_metadata(name: str, version: str, requires: list[str] | None = None) -> bytes:
    """METADATA as some older packages ship it: Summary, Author and the
    description in Latin-1 bytes, which are not UTF-8 (b"caf\\xe9")."""
    lines = [b"Metadata-Version: 2.1", f"Name: {name}".encode(), f"Version: {version}".encode(),
             "Summary: Caf\u00e9 cr\u00e8me br\u00fbl\u00e9e".encode("latin-1"),
             "Author: Ren\u00e9 M\u00fcller".encode("latin-1")]
    lines += [f"Requires-Dist: {req}".encode() for req in requires or []]
    body = "D\u00e9j\u00e0 vu, na\u00efve fa\u00e7ade.".encode("latin-1")
    return b"\n".join(lines) + b"\n\n" + body + b"\n"


def build_wheel_files(
    wheelhouse: Path,
    name: str,
    version: str,
    files: dict[str, bytes],
    *,
    metadata: bytes | None = None,
    requires: list[str] | None = None,
) -> Path:
    """Write `<name>-<version>-py3-none-any.whl` holding exactly `files`
    (archive path -> bytes) besides its dist-info, whose METADATA is `metadata`
    byte for byte when given (non-UTF-8 bytes included), else the usual
    Name, Version and Requires-Dist."""
    wheelhouse.mkdir(parents=True, exist_ok=True)
    dist = canonicalize_name(name).replace("-", "_")
    dist_info = f"{dist}-{version}.dist-info"
    if metadata is None:
        lines = ["Metadata-Version: 2.1", f"Name: {name}", f"Version: {version}"]
        lines += [f"Requires-Dist: {req}" for req in requires or []]
        metadata = ("\n".join(lines) + "\n").encode()
    members: dict[str, bytes] = {
        **files,
        f"{dist_info}/METADATA": metadata,
        f"{dist_info}/WHEEL": (
            b"Wheel-Version: 1.0\nGenerator: bifrost-tests\nRoot-Is-Purelib: true\n"
            b"Tag: py3-none-any\n"
        ),
    }
    record = [f"{path},{_record_hash(data)},{len(data)}" for path, data in members.items()]
    record.append(f"{dist_info}/RECORD,,")
    members[f"{dist_info}/RECORD"] = ("\n".join(record) + "\n").encode()
    path = wheelhouse / f"{dist}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as archive:
        for member, data in members.items():
            archive.writestr(member, data)
    return path


def build_package_wheel(
    wheelhouse: Path, name: str, version: str = "1.0.0", *, requires: list[str] | None = None
) -> Path:
    """A wheel installing a package directory (`<name>/__init__.py` and
    `<name>/sub.py`, name with `-` as `_`) rather than a single module."""
    package = canonicalize_name(name).replace("-", "_")
    files = {
        f"{package}/__init__.py": (
            f"VERSION = {version!r}\nfrom {package}.sub import answer\n".encode()
        ),
        f"{package}/sub.py": b"def answer():\n    return 42\n",
    }
    return build_wheel_files(wheelhouse, name, version, files, requires=requires)
