"""`installed_distributions`: what a packages dir holds, by metadata alone."""

from __future__ import annotations

from pathlib import Path

from src.services.package_report import installed_distributions


def dist_info(root: Path, dirname: str, metadata: str) -> None:
    (root / dirname).mkdir(parents=True)
    (root / dirname / "METADATA").write_text(metadata)


def test_sorted_by_canonical_name_and_deduplicated(tmp_path: Path) -> None:
    dist_info(tmp_path, "Zeta_Pkg-2.0.dist-info", "Name: Zeta_Pkg\nVersion: 2.0\n")
    dist_info(tmp_path, "alpha-1.0.dist-info", "Name: alpha\nVersion: 1.0\n")
    dist_info(tmp_path, "beta-0.1.dist-info", "Name: Beta\nVersion: 0.1\n")
    dist_info(tmp_path, "beta-0.2.dist-info", "Name: beta\nVersion: 0.2\n")
    dist_info(tmp_path, "broken-1.0.dist-info", "Version: 1.0\n")
    found = installed_distributions(tmp_path)
    assert [d["name"].lower() for d in found] == ["alpha", "beta", "zeta_pkg"]
    assert found[0] == {"name": "alpha", "version": "1.0"}
    assert found[2] == {"name": "Zeta_Pkg", "version": "2.0"}
    assert found[1]["version"] in {"0.1", "0.2"}


def test_a_missing_or_empty_dir_holds_nothing(tmp_path: Path) -> None:
    assert installed_distributions(tmp_path / "absent") == []
    assert installed_distributions(tmp_path) == []
