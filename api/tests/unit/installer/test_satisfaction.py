"""find_unsatisfied and platform_paths against real dist-info directories in tmp_path."""

from __future__ import annotations

import sys
from collections.abc import Iterable
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from src.services.installer import satisfaction
from src.services.installer.satisfaction import Unsatisfied, find_unsatisfied, platform_paths


def install(env: Path, name: str, version: str, *requires: str) -> Path:
    """Write ``<name>-<version>.dist-info/METADATA`` into ``env``, as pip --target would."""
    info = env / f"{name}-{version}.dist-info"
    info.mkdir(parents=True)
    lines = ["Metadata-Version: 2.1", f"Name: {name}", f"Version: {version}"]
    lines += [f"Requires-Dist: {req}" for req in requires]
    (info / "METADATA").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return info


def write_metadata(env: Path, dirname: str, text: str, newline: str = "\n") -> None:
    """Write raw METADATA text (for layouts install() does not produce)."""
    info = env / dirname
    info.mkdir(parents=True)
    (info / "METADATA").write_bytes(text.replace("\n", newline).encode())


@pytest.fixture
def env(tmp_path: Path) -> Path:
    path = tmp_path / "env"
    path.mkdir()
    return path


def reasons(requirements: Iterable[str], *paths: Path) -> list[str]:
    return [u.reason for u in find_unsatisfied(requirements, list(paths))]


# -- the requirement itself -------------------------------------------------------------


def test_pinned_requirement_installed_is_satisfied(env: Path) -> None:
    install(env, "foo", "1.0")
    assert find_unsatisfied(["foo==1.0"], [env]) == []


def test_no_requirements_is_satisfied(env: Path) -> None:
    assert find_unsatisfied([], [env]) == []


def test_requirement_objects_and_str_paths_are_accepted(env: Path) -> None:
    install(env, "foo", "1.0")
    assert find_unsatisfied([Requirement("foo==1.0")], [str(env)]) == []
    assert find_unsatisfied([Requirement("foo==2.0")], [str(env)]) == [
        Unsatisfied("foo==2.0", "foo 1.0 installed, needs ==2.0")
    ]


def test_missing_package(env: Path) -> None:
    install(env, "foo", "1.0")
    assert find_unsatisfied(["bar==1.0"], [env]) == [Unsatisfied("bar==1.0", "not installed")]


def test_empty_environment_and_missing_directory(env: Path, tmp_path: Path) -> None:
    assert reasons(["foo"], env) == ["not installed"]
    assert reasons(["foo"], tmp_path / "does-not-exist") == ["not installed"]


def test_wrong_version(env: Path) -> None:
    install(env, "foo", "1.0")
    assert find_unsatisfied(["foo>=2"], [env]) == [
        Unsatisfied("foo>=2", "foo 1.0 installed, needs >=2")
    ]


@pytest.mark.parametrize(
    ("installed", "spec", "ok"),
    [
        ("1.5", ">=1,<2", True),
        ("2.0", ">=1,<2", False),
        ("0.9", ">=1,<2", False),
        ("1.4.2", "~=1.4", True),
        ("2.0", "~=1.4", False),
        ("1.0", "!=1.0", False),
        ("1.0.0", "==1.0", True),  # PEP 440: 1.0.0 == 1.0
        ("1.0.post1", "==1.0.*", True),
        ("3.0", "", True),  # no specifier: any version will do
        # An installed prerelease was chosen on purpose, so it counts when in range.
        ("2.0rc1", ">=1.0", True),
        ("2.0rc1", "==2.0rc1", True),
        ("2.0rc1", ">=2.0", False),  # 2.0rc1 sorts before 2.0
        ("1.0.dev3", "<2", True),
    ],
)
def test_specifier_ranges_and_prereleases(env: Path, installed: str, spec: str, ok: bool) -> None:
    install(env, "foo", installed)
    assert (find_unsatisfied([f"foo{spec}"], [env]) == []) is ok


def test_unparsable_installed_version_is_unsatisfied(env: Path) -> None:
    install(env, "foo", "not-a-version")
    assert reasons(["foo"], env) == ["foo has unparsable version 'not-a-version'"]


@pytest.mark.parametrize("asked", ["foo-bar", "Foo_Bar", "FOO.bar", "foo__bar"])
def test_names_are_compared_canonically(env: Path, asked: str) -> None:
    install(env, "Foo_Bar", "1.0")
    assert find_unsatisfied([f"{asked}==1.0"], [env]) == []


def test_dist_info_without_name_is_skipped(env: Path) -> None:
    info = env / "foo-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nVersion: 1.0\n", encoding="utf-8")
    (env / "bar-1.0.dist-info").mkdir()  # no METADATA at all
    assert reasons(["foo", "bar"], env) == ["not installed", "not installed"]


# -- markers ------------------------------------------------------------------------------


def test_false_marker_skips_requirement(env: Path) -> None:
    assert find_unsatisfied(['foo==1.0; python_version < "3"'], [env]) == []


def test_true_marker_is_enforced(env: Path) -> None:
    req = 'foo==1.0; python_version >= "3"'
    assert find_unsatisfied([req], [env]) == [Unsatisfied(req, "not installed")]
    install(env, "foo", "1.0")
    assert find_unsatisfied([req], [env]) == []


def test_platform_marker(env: Path) -> None:
    here = f'foo; sys_platform == "{sys.platform}"'
    elsewhere = f'bar; sys_platform != "{sys.platform}"'
    assert reasons([here, elsewhere], env) == ["not installed"]


# -- dependencies -------------------------------------------------------------------------


def test_dependencies_satisfied(env: Path) -> None:
    install(env, "foo", "1.0", "bar>=2", "baz")
    install(env, "bar", "2.1", "qux<1")
    install(env, "baz", "0.1")
    install(env, "qux", "0.5")
    assert find_unsatisfied(["foo"], [env]) == []


def test_missing_dependency(env: Path) -> None:
    install(env, "foo", "1.0", "bar>=2")
    assert find_unsatisfied(["foo==1.0"], [env]) == [
        Unsatisfied("foo==1.0", "dependency bar (of foo) not installed")
    ]


def test_dependency_with_wrong_version(env: Path) -> None:
    install(env, "foo", "1.0", "bar>=2")
    install(env, "bar", "1.5")
    assert reasons(["foo"], env) == ["dependency bar (of foo) 1.5 installed, needs >=2"]


def test_missing_transitive_dependency_is_reported_against_top_level(env: Path) -> None:
    install(env, "app", "1.0", "middle")
    install(env, "middle", "1.0", "leaf==3")
    assert find_unsatisfied(["app"], [env]) == [
        Unsatisfied("app", "dependency leaf (of middle) not installed")
    ]


def test_dependency_with_false_marker_is_ignored(env: Path) -> None:
    install(
        env,
        "foo",
        "1.0",
        'bar; python_version < "3"',
        f'baz; sys_platform != "{sys.platform}"',
    )
    assert find_unsatisfied(["foo"], [env]) == []


def test_dependency_with_true_marker_is_required(env: Path) -> None:
    install(env, "foo", "1.0", 'bar; python_version >= "3"')
    assert reasons(["foo"], env) == ["dependency bar (of foo) not installed"]


def test_extra_dependency_required_only_when_extra_requested(env: Path) -> None:
    install(env, "pkg", "1.0", 'click>=8; extra == "cli"', 'rich; extra == "fancy"')
    assert find_unsatisfied(["pkg"], [env]) == []
    assert reasons(["pkg[cli]"], env) == ["dependency click (of pkg) not installed"]
    assert reasons(["pkg[fancy,cli]"], env) == ["dependency click (of pkg) not installed"]
    install(env, "click", "8.1")
    assert find_unsatisfied(["pkg[cli]"], [env]) == []
    assert reasons(["pkg[cli,fancy]"], env) == ["dependency rich (of pkg) not installed"]


def test_extra_names_are_compared_canonically(env: Path) -> None:
    install(env, "pkg", "1.0", 'click; extra == "with-cli"')
    assert reasons(["pkg[With_CLI]"], env) == ["dependency click (of pkg) not installed"]


def test_extra_and_marker_combined(env: Path) -> None:
    install(
        env,
        "pkg",
        "1.0",
        'old; extra == "cli" and python_version < "3"',
        'new; extra == "cli" and python_version >= "3"',
    )
    assert reasons(["pkg[cli]"], env) == ["dependency new (of pkg) not installed"]


def test_extras_requested_by_a_dependency_propagate(env: Path) -> None:
    install(env, "app", "1.0", "pkg[cli]>=1")
    install(env, "pkg", "1.0", 'click; extra == "cli"')
    assert reasons(["app"], env) == ["dependency click (of pkg) not installed"]
    install(env, "click", "8.0")
    assert find_unsatisfied(["app"], [env]) == []


def test_extras_do_not_leak_to_dependencies(env: Path) -> None:
    # app[cli] asks pkg for nothing extra, so pkg's own "cli" extra stays off.
    install(env, "app", "1.0", 'pkg; extra == "cli"')
    install(env, "pkg", "1.0", 'click; extra == "cli"')
    assert find_unsatisfied(["app[cli]"], [env]) == []


def test_dependency_cycle_terminates(env: Path) -> None:
    install(env, "a", "1.0", "b")
    install(env, "b", "1.0", "c")
    install(env, "c", "1.0", "a>=1")
    assert find_unsatisfied(["a"], [env]) == []
    install(env, "d", "1.0", "d[x]", 'missing; extra == "x"')  # itself, with an extra
    assert reasons(["d"], env) == ["dependency missing (of d) not installed"]


def test_cycle_with_a_failing_member(env: Path) -> None:
    install(env, "a", "1.0", "b")
    install(env, "b", "1.0", "a>=2")
    assert reasons(["a"], env) == ["dependency a (of b) 1.0 installed, needs >=2"]


def test_shared_dependency_is_reported_for_each_requirement(env: Path) -> None:
    install(env, "one", "1.0", "shared")
    install(env, "two", "1.0", "shared")
    assert reasons(["one", "two"], env) == [
        "dependency shared (of one) not installed",
        "dependency shared (of two) not installed",
    ]


def test_each_edge_checks_its_own_specifier(env: Path) -> None:
    # "shared" is walked once, but every dependant's specifier is still checked.
    install(env, "one", "1.0", "shared>=1")
    install(env, "two", "1.0", "shared>=2")
    install(env, "shared", "1.5")
    assert reasons(["one", "two"], env) == ["dependency shared (of two) 1.5 installed, needs >=2"]


def test_unparsable_declared_dependency_is_unsatisfied(env: Path) -> None:
    install(env, "foo", "1.0", "bar >>> 1")
    assert reasons(["foo"], env) == ["foo declares an unparsable dependency 'bar >>> 1'"]


def test_egg_info_requires_txt_is_followed(env: Path) -> None:
    info = env / "legacy-1.0.egg-info"
    info.mkdir()
    (info / "PKG-INFO").write_text(
        "Metadata-Version: 1.1\nName: legacy\nVersion: 1.0\n", encoding="utf-8"
    )
    (info / "requires.txt").write_text("bar>=1\n\n[cli]\nclick\n", encoding="utf-8")
    assert reasons(["legacy"], env) == ["dependency bar (of legacy) not installed"]
    install(env, "bar", "1.0")
    assert find_unsatisfied(["legacy"], [env]) == []
    assert reasons(["legacy[cli]"], env) == ["dependency click (of legacy) not installed"]


def test_unparsable_dependency_of_an_unrequested_extra_is_ignored(env: Path) -> None:
    install(env, "foo", "1.0", 'bar >>> 1; extra == "dev"')
    assert find_unsatisfied(["foo"], [env]) == []
    assert reasons(["foo[dev]"], env) == [
        "foo declares an unparsable dependency 'bar >>> 1; extra == \"dev\"'"
    ]


# -- reading METADATA ---------------------------------------------------------------------


def test_metadata_body_is_not_read_as_headers(env: Path) -> None:
    write_metadata(
        env,
        "foo-1.0.dist-info",
        "Metadata-Version: 2.1\nName: foo\nVersion: 1.0\nRequires-Dist: bar\n\n"
        "# foo\n\nRequires-Dist: not-a-header\nVersion: 9\n",
    )
    install(env, "bar", "1.0")
    assert find_unsatisfied(["foo==1.0"], [env]) == []


def test_folded_description_header_does_not_hide_later_fields(env: Path) -> None:
    # Old PKG-INFO style: a folded Description with a whitespace-only line in
    # it, and the dependencies after it.
    write_metadata(
        env,
        "foo-1.0.dist-info",
        "Metadata-Version: 1.2\nName: foo\nDescription: Foo.\n        \n"
        "        Usage: more text\n        and a\fform feed\nVersion: 1.0\nRequires-Dist: bar\n",
    )
    assert reasons(["foo==1.0"], env) == ["dependency bar (of foo) not installed"]


def test_crlf_metadata(env: Path) -> None:
    write_metadata(
        env,
        "foo-1.0.dist-info",
        "Metadata-Version: 2.1\nName: foo\nVersion: 1.0\nRequires-Dist: bar>=2\n\nBody\n",
        newline="\r\n",
    )
    install(env, "bar", "1.0")
    assert reasons(["foo==1.0"], env) == ["dependency bar (of foo) 1.0 installed, needs >=2"]


def test_earlier_path_wins(tmp_path: Path) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    install(first, "foo", "1.0")
    install(second, "foo", "2.0")
    assert find_unsatisfied(["foo==1.0"], [first, second]) == []
    assert reasons(["foo==2.0"], first, second) == ["foo 1.0 installed, needs ==2.0"]
    assert find_unsatisfied(["foo==2.0"], [second, first]) == []


def test_dependency_found_on_a_later_path(tmp_path: Path) -> None:
    env, platform = tmp_path / "env", tmp_path / "platform"
    install(env, "foo", "1.0", "bar")
    install(platform, "bar", "1.0")
    assert find_unsatisfied(["foo"], [env, platform]) == []
    assert reasons(["foo"], env) == ["dependency bar (of foo) not installed"]


def test_invalid_requirement(env: Path) -> None:
    [result] = find_unsatisfied(["foo >>> 1"], [env])
    assert result.requirement == "foo >>> 1"
    assert result.reason.startswith("invalid requirement: ")


def test_multiple_unsatisfied_listed_in_order(env: Path) -> None:
    install(env, "ok", "1.0")
    install(env, "old", "1.0")
    install(env, "needy", "1.0", "gone")
    result = find_unsatisfied(["zzz", "ok", "old>=2", "!!bad", "needy", "aaa"], [env])
    assert [u.requirement for u in result] == ["zzz", "old>=2", "!!bad", "needy", "aaa"]
    assert result[0] == Unsatisfied("zzz", "not installed")
    assert result[1] == Unsatisfied("old>=2", "old 1.0 installed, needs >=2")
    assert result[3] == Unsatisfied("needy", "dependency gone (of needy) not installed")


def test_one_report_per_requirement(env: Path) -> None:
    install(env, "foo", "1.0", "bar", "baz")
    assert find_unsatisfied(["foo>=2"], [env]) == [
        Unsatisfied("foo>=2", "foo 1.0 installed, needs >=2")
    ]
    assert reasons(["foo"], env) == ["dependency bar (of foo) not installed"]


def test_requirements_may_be_a_one_shot_iterable(env: Path) -> None:
    install(env, "foo", "1.0")
    assert reasons(iter(["foo", "bar"]), env) == ["not installed"]


# -- platform_paths -----------------------------------------------------------------------


def test_platform_paths_excludes_directory_and_subdirectories(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    keep, runtime = tmp_path / "keep", tmp_path / "runtime"
    inner = runtime / "env" / "abc"
    for path in (keep, inner):
        path.mkdir(parents=True)
    (tmp_path / "lib.zip").write_bytes(b"")
    entries = [
        str(keep),
        str(runtime),
        str(inner),
        str(tmp_path / "lib.zip"),  # a file: holds no dist-info directories
        str(tmp_path / "missing"),
        str(tmp_path / "runtime-sibling-name"),  # absent, and only shares a prefix
    ]
    (tmp_path / "runtime-sibling-name").mkdir()
    monkeypatch.setattr(sys, "path", entries)
    assert platform_paths(exclude=[runtime]) == [str(keep), str(tmp_path / "runtime-sibling-name")]
    assert platform_paths() == [
        str(keep),
        str(runtime),
        str(inner),
        str(tmp_path / "runtime-sibling-name"),
    ]


def test_platform_paths_resolves_before_comparing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    runtime = tmp_path / "runtime"
    (runtime / "sub").mkdir(parents=True)
    link = tmp_path / "link"
    link.symlink_to(runtime)
    monkeypatch.setattr(sys, "path", [str(runtime / "sub" / ".."), str(runtime / "sub")])
    assert platform_paths(exclude=[str(runtime)]) == []
    # An excluded path given through a symlink still excludes the real entries
    # (the worker puts resolved paths on sys.path).
    assert platform_paths(exclude=[link]) == []


def test_platform_paths_default_is_real_sys_path_directories() -> None:
    paths = platform_paths()
    assert paths
    assert all(Path(p).is_dir() for p in paths)
    assert all(p in sys.path for p in paths)


# -- metadata that is not UTF-8, or cannot be read -----------------------------------------


def test_latin1_metadata_is_read_leniently(env: Path) -> None:
    from tests.support.wheels import latin1_metadata

    info = env / "latin_pkg-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_bytes(latin1_metadata("latin-pkg", "1.0", requires=["bar>=2"]))
    install(env, "bar", "2.0")
    assert find_unsatisfied(["latin-pkg==1.0"], [env]) == []
    assert reasons(["latin-pkg==2.0"], env) == ["latin-pkg 1.0 installed, needs ==2.0"]


def test_unreadable_metadata_names_the_distribution(env: Path) -> None:
    install(env, "foo", "1.0", "bar")
    (env / "bar-1.0.dist-info").mkdir()
    (env / "bar-1.0.dist-info" / "METADATA").mkdir()  # there, but cannot be read
    install(env, "baz", "1.0")
    found = find_unsatisfied(["foo", "bar", "baz"], [env])
    assert [u.requirement for u in found] == ["foo", "bar"]
    assert found[0].reason.startswith("dependency bar (of foo) has unreadable metadata (")
    assert "IsADirectoryError" in found[0].reason
    assert found[1].reason.startswith("bar has unreadable metadata (")
    assert [u.distribution for u in found] == ["bar", "bar"]


def test_unsatisfied_names_the_distribution_it_is_about(env: Path) -> None:
    install(env, "foo", "1.0", "bar>=2")
    install(env, "bar", "1.0")
    assert [u.distribution for u in find_unsatisfied(["foo", "qux"], [env])] == ["bar", "qux"]


def test_check_lists_the_distributions_it_read(env: Path, tmp_path: Path) -> None:
    install(env, "foo", "1.0", "bar")
    install(env, "bar", "1.0")
    install(env, "unrelated", "1.0")
    verdict = satisfaction.check(["foo"], [env])
    assert verdict.unsatisfied == []
    assert sorted(p.name for p in verdict.distributions) == [
        "bar-1.0.dist-info", "foo-1.0.dist-info"]
    assert all(p.parent == env for p in verdict.distributions)
