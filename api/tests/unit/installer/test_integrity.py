"""The bounded RECORD sample, against real files in tmp_path."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from src.services.installer.integrity import (
    MAX_TOP_LEVEL_NAMES,
    SAMPLES_FILE,
    Damage,
    first_damage,
    missing_file,
    record_samples,
    sample,
)


def installed(env: Path, name: str, files: list[str], *, extra_record: list[str] = ()) -> Path:
    """A distribution as an installer leaves it: its files, and a RECORD listing
    them (plus `extra_record` lines that name files not written)."""
    info = env / f"{name}-1.0.dist-info"
    info.mkdir(parents=True)
    for relative in files:
        path = env / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("# code\n")
    lines = [f"{relative},sha256=x,7" for relative in [*files, *extra_record]]
    lines += [f"{info.name}/METADATA,sha256=x,1", f"{info.name}/RECORD,,"]
    (info / "RECORD").write_text("\n".join(lines) + "\n")
    return info


def test_sample_takes_init_first_file_or_module_per_top_level_name() -> None:
    record = "\n".join([
        "pkg/sub/mod.py,sha256=a,1",
        "pkg/__init__.py,sha256=a,1",
        "nspace/inner/__init__.py,sha256=a,1",
        "single.py,sha256=a,1",
        "__pycache__/single.cpython-311.pyc,,",
        "nspace/__pycache__/x.cpython-311.pyc,,",
        "bin/tool,sha256=a,1",
        "../../bin/tool,sha256=a,1",
        '"odd,name.py",sha256=a,1',
        "pkg-1.0.dist-info/METADATA,sha256=a,1",
        "pkg-1.0.dist-info/RECORD,,",
    ])
    assert sample(record, "pkg-1.0.dist-info") == [
        "pkg/__init__.py", "nspace/inner/__init__.py", "single.py"]


def test_sample_skips_a_top_level_name_with_only_bytecode_listed() -> None:
    record = "gen/__pycache__/a.cpython-311.pyc,,\ngen/b.pyc,,\nreal.py,sha256=a,1\n"
    assert sample(record, "x-1.0.dist-info") == ["real.py"]


def test_sample_is_bounded() -> None:
    record = "\n".join(f"mod{i}.py,sha256=a,1" for i in range(50))
    assert len(sample(record, "x-1.0.dist-info")) == MAX_TOP_LEVEL_NAMES


def test_crlf_record(tmp_path: Path) -> None:
    info = installed(tmp_path, "crlf", ["crlf/__init__.py"])
    record = (info / "RECORD").read_text().replace("\n", "\r\n")
    (info / "RECORD").write_bytes(record.encode())
    assert sample(record, info.name) == ["crlf/__init__.py"]
    assert missing_file(info) is None


def test_an_intact_distribution_has_nothing_missing(tmp_path: Path) -> None:
    info = installed(tmp_path, "humanize", ["humanize/__init__.py", "humanize/time.py"])
    assert missing_file(info) is None


@pytest.mark.parametrize(
    ("delete", "missing"),
    [("humanize", "humanize/__init__.py"), ("humanize/__init__.py", "humanize/__init__.py"),
     ("helper.py", "helper.py")],
)
def test_a_deleted_package_or_module_is_missing(tmp_path: Path, delete: str, missing: str) -> None:
    files = ["humanize/__init__.py", "humanize/time.py", "helper.py"]
    info = installed(tmp_path, "humanize", files)
    target = tmp_path / delete
    if target.is_dir():
        shutil.rmtree(target)
    else:
        target.unlink()
    assert missing_file(info) == missing
    assert first_damage(tmp_path, [info]) == Damage("humanize", missing)
    assert first_damage(tmp_path, [info]).describe() == f"humanize is missing {missing}"


def test_deleted_bytecode_and_scripts_are_not_damage(tmp_path: Path) -> None:
    info = installed(tmp_path, "tool", ["tool.py"],
                     extra_record=["__pycache__/tool.cpython-311.pyc", "bin/tool"])
    assert missing_file(info) is None


def test_no_record_means_nothing_to_go_by(tmp_path: Path) -> None:
    info = tmp_path / "legacy-1.0.dist-info"
    info.mkdir()
    assert missing_file(info) is None
    assert first_damage(tmp_path, [info]) is None


def test_non_utf8_record_is_read(tmp_path: Path) -> None:
    info = installed(tmp_path, "latin", ["latin/__init__.py"])
    record = (info / "RECORD").read_bytes() + b"latin/caf\xe9.txt,sha256=x,1\n"
    (info / "RECORD").write_bytes(record)
    assert missing_file(info) is None


def test_samples_recorded_at_build_time_are_what_a_start_checks(tmp_path: Path) -> None:
    humanize = installed(tmp_path, "humanize", ["humanize/__init__.py", "humanize/time.py"])
    helper = installed(tmp_path, "helper", ["helper.py"])
    record_samples(tmp_path)
    assert json.loads((tmp_path / SAMPLES_FILE).read_text()) == {
        "helper-1.0.dist-info": ["helper.py"],
        "humanize-1.0.dist-info": ["humanize/__init__.py"],
    }
    assert first_damage(tmp_path, [humanize, helper]) is None
    (humanize / "RECORD").unlink()  # no longer read: the recorded sample is used
    shutil.rmtree(tmp_path / "humanize")
    assert first_damage(tmp_path, [humanize, helper]) == Damage("humanize", "humanize/__init__.py")


def test_without_recorded_samples_the_record_is_read(tmp_path: Path) -> None:
    info = installed(tmp_path, "helper", ["helper.py"])
    (tmp_path / SAMPLES_FILE).write_text("not json")
    assert first_damage(tmp_path, [info]) is None
    (tmp_path / "helper.py").unlink()
    assert first_damage(tmp_path, [info]) == Damage("helper", "helper.py")
