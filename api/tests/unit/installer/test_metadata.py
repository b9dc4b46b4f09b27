"""Lenient metadata reading against real dist-info directories in tmp_path."""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

import pytest

from src.services.installer.metadata import (
    Found,
    LenientDistribution,
    Unreadable,
    UnreadableMetadata,
    decode,
    distribution_label,
    read_headers,
    scan,
)
from tests.support.wheels import latin1_metadata


def dist_info(env: Path, dirname: str, metadata: bytes | None) -> Path:
    info = env / dirname
    info.mkdir(parents=True)
    if metadata is not None:
        (info / "METADATA").write_bytes(metadata)
    return info


def test_decode_is_utf8_when_it_can_be_and_replaces_otherwise() -> None:
    assert decode("caf\u00e9".encode()) == "caf\u00e9"
    assert decode(b"caf\xe9") == "caf\ufffd"


def test_latin1_metadata_reads_name_version_and_requires(tmp_path: Path) -> None:
    info = dist_info(tmp_path, "latin_pkg-1.0.dist-info",
                     latin1_metadata("latin-pkg", "1.0", requires=["dep>=1"]))
    with pytest.raises(UnicodeDecodeError):  # what importlib.metadata itself does
        importlib.metadata.PathDistribution(info).metadata  # noqa: B018
    dist = LenientDistribution(info)
    headers = read_headers(dist)
    assert (headers["Name"], headers["Version"]) == ("latin-pkg", "1.0")
    assert headers["Author"] == "Ren\ufffd M\ufffdller"
    assert dist.requires == ["dep>=1"] and dist.version == "1.0"


def test_scan_reports_each_distribution_and_names_the_unreadable_ones(tmp_path: Path) -> None:
    dist_info(tmp_path, "good-1.0.dist-info", b"Metadata-Version: 2.1\nName: good\nVersion: 1.0\n")
    dist_info(tmp_path, "latin_pkg-2.0.dist-info", latin1_metadata("latin-pkg", "2.0"))
    utf16 = "Metadata-Version: 2.1\nName: wide\nVersion: 3.0\n".encode("utf-16")
    dist_info(tmp_path, "wide-3.0.dist-info", utf16)
    (dist_info(tmp_path, "folder-4.0.dist-info", None) / "METADATA").mkdir()
    dist_info(tmp_path, "empty-5.0.dist-info", None)
    found = sorted(scan([tmp_path]), key=lambda f: f.name)
    readable = [(f.name, f.version) for f in found if isinstance(f, Found)]
    assert readable == [("good", "1.0"), ("latin-pkg", "2.0")]
    unreadable = {f.name: f for f in found if isinstance(f, Unreadable)}
    assert sorted(unreadable) == ["empty", "folder", "wide"]
    assert unreadable["folder"].version == "4.0"
    assert "IsADirectoryError" in unreadable["folder"].reason
    assert "no readable Name" in unreadable["wide"].reason
    assert "missing or empty" in unreadable["empty"].reason
    described = unreadable["wide"].describe()
    assert described.startswith("the metadata of wide 3.0 (wide-3.0.dist-info) is unreadable")


def test_a_metadata_file_that_cannot_be_read_raises_unreadable(tmp_path: Path) -> None:
    info = dist_info(tmp_path, "folder-4.0.dist-info", None)
    (info / "METADATA").mkdir()
    with pytest.raises(UnreadableMetadata) as raised:
        read_headers(LenientDistribution(info))
    assert raised.value.location == info / "METADATA"


def test_a_missing_metadata_file_is_an_empty_header_block(tmp_path: Path) -> None:
    info = dist_info(tmp_path, "half-1.0.dist-info", None)
    assert read_headers(LenientDistribution(info)).keys() == []


@pytest.mark.parametrize(
    ("dirname", "label"),
    [
        ("good_b-2.0.dist-info", ("good-b", "2.0")),
        ("Foo.Bar-1.0rc1.dist-info", ("foo-bar", "1.0rc1")),
        ("legacy-0.3-py3.11.egg-info", ("legacy", "0.3")),
        ("odd.dist-info", ("odd", "")),
    ],
)
def test_distribution_label_from_the_directory_name(
    tmp_path: Path, dirname: str, label: tuple[str, str]
) -> None:
    assert distribution_label(tmp_path / dirname) == label
    assert distribution_label(tmp_path / dirname / "METADATA") == label
