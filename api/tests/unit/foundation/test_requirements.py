"""Unit tests for src.foundation.requirements: validation, install requests, editing."""

from __future__ import annotations

import pickle

import pytest
from packaging.requirements import Requirement

from src.foundation.requirements import (
    MAX_LINE_LENGTH,
    MAX_REQUIREMENT_LINES,
    InvalidRequirements,
    LineError,
    add_or_replace,
    find,
    make_requirement,
    normalized_name,
    remove,
    requirement_lines,
    validate_requirements,
)


def errors_of(content: str) -> list[LineError]:
    with pytest.raises(InvalidRequirements) as info:
        validate_requirements(content)
    return info.value.errors


def only_error(content: str) -> LineError:
    errors = errors_of(content)
    assert len(errors) == 1, errors
    return errors[0]


# --- validate_requirements: refused lines ---------------------------------------

OPTIONS_REASON = "operator's environment settings"


@pytest.mark.parametrize(
    ("line", "option"),
    [
        ("-i https://pypi.example/simple", "-i"),
        ("--index-url https://pypi.example/simple", "--index-url"),
        ("--index-url=https://pypi.example/simple", "--index-url"),
        ("--extra-index-url https://evil.example/simple", "--extra-index-url"),
        ("-e git+https://github.com/x/y#egg=y", "-e"),
        ("-e .", "-e"),
        ("-r other.txt", "-r"),
        ("-c constraints.txt", "-c"),
        ("--trusted-host evil.example", "--trusted-host"),
        ("--find-links /tmp/wheels", "--find-links"),
        ("  -i https://indented.example", "-i"),
    ],
)
def test_option_lines_are_refused(line: str, option: str) -> None:
    error = only_error(f"requests\n{line}\n")
    assert error.line_number == 2
    assert error.line == line
    assert OPTIONS_REASON in error.reason
    assert "not a requirement line" in error.reason
    assert repr(option) in error.reason


@pytest.mark.parametrize(
    "line",
    [
        "pkg @ https://example.com/pkg-1.0.tar.gz",
        "pkg@https://example.com/pkg.whl",
        "git+https://github.com/x/y.git",
        "pkg @ git+https://github.com/x/y.git@main",
        "git+ssh://git@github.com/x/y.git",
        "http://example.com/pkg.tar.gz",
        "https://example.com/pkg.whl",
        "file:///tmp/pkg",
        "file:pkg",
        "hg+https://hg.example/x",
    ],
)
def test_url_requirements_are_refused(line: str) -> None:
    error = only_error(f"requests\n{line}\n")
    assert error.line_number == 2
    assert "URL" in error.reason


def test_name_at_non_scheme_url_is_a_direct_reference() -> None:
    error = only_error("foo@1.0\n")
    assert error.line_number == 1
    assert "direct URL reference" in error.reason
    assert "'foo'" in error.reason


@pytest.mark.parametrize(
    "line",
    [
        "./local",
        ".",
        "/abs/path",
        "../x",
        "~/pkgs/x",
        "C:\\x",
        "C:/x",
        "sub/dir",
        "sub\\dir",
        "x/y>=1",
        "pkg-1.0.tar.gz",
        "pkg-1.0-py3-none-any.whl",
        "pkg.zip",
    ],
)
def test_path_requirements_are_refused(line: str) -> None:
    error = only_error(f"# header\nrequests\n{line}\n")
    assert error.line_number == 3
    assert "local paths" in error.reason


@pytest.mark.parametrize(
    ("line", "code"),
    [
        ("requests\x07", "U+0007"),
        ("\x1b[31mrequests", "U+001B"),
        ("requests\u202e", "U+202E"),
        ("req\u200buests", "U+200B"),
        ("requests\x00", "U+0000"),
        ("requests\rhidden", "U+000D"),
        ("requests\x0c", "U+000C"),
        ("requests\u2028", "U+2028"),
        ("\ufeffrequests", "U+FEFF"),
        ("# a comment can hide things too \u202e", "U+202E"),
        ("requests  # \x1b[2J", "U+001B"),
    ],
)
def test_control_characters_are_refused_by_code_point(line: str, code: str) -> None:
    error = only_error(f"numpy\n\n{line}\n")
    assert error.line_number == 3
    assert f"control character {code}" in error.reason


def test_lone_surrogate_is_refused() -> None:
    error = only_error("requests\ud800\n")
    assert "U+D800" in error.reason


def test_control_characters_are_escaped_in_the_displayed_line() -> None:
    error = only_error("evil\u202e\x1b[0m\n")
    assert error.line == "evil\\u202e\\x1b[0m"


def test_tab_is_allowed() -> None:
    assert [str(r) for r in validate_requirements("requests\t>=2\t# pinned\n")] == ["requests>=2"]


def test_nul_in_content_is_refused() -> None:
    error = only_error("requests\nnum\x00py\n")
    assert error.line_number == 2
    assert "U+0000" in error.reason


def test_line_longer_than_limit_is_refused() -> None:
    long_line = "a" * (MAX_LINE_LENGTH + 1)
    error = only_error(f"requests\n{long_line}\n")
    assert error.line_number == 2
    assert f"{MAX_LINE_LENGTH + 1} characters" in error.reason
    assert str(MAX_LINE_LENGTH) in error.reason
    assert len(error.line) <= 100


def test_long_comment_line_is_refused_too() -> None:
    error = only_error("#" + "x" * MAX_LINE_LENGTH + "\n")
    assert error.line_number == 1
    assert "characters long" in error.reason


def test_line_at_the_limit_is_accepted() -> None:
    line = "a" * MAX_LINE_LENGTH
    assert [r.name for r in validate_requirements(line)] == [line]


def test_too_many_requirement_lines_is_one_error_at_the_first_extra_line() -> None:
    lines = ["# header", ""] + [f"pkg{i}" for i in range(MAX_REQUIREMENT_LINES + 5)]
    error = only_error("\n".join(lines) + "\n")
    # 2 leading non-requirement lines, then the 1001st requirement.
    assert error.line_number == MAX_REQUIREMENT_LINES + 3
    assert f"more than {MAX_REQUIREMENT_LINES} requirement lines" in error.reason


def test_exactly_max_requirement_lines_is_accepted() -> None:
    content = "\n".join(f"pkg{i}" for i in range(MAX_REQUIREMENT_LINES)) + "\n"
    assert len(validate_requirements(content)) == MAX_REQUIREMENT_LINES


@pytest.mark.parametrize("line", ["foo==", "foo bar", ";;", "foo[bar", "é", "foo#frag"])
def test_unparsable_lines_are_refused_with_packagings_message(line: str) -> None:
    error = only_error(f"requests\n{line}\n")
    assert error.line_number == 2
    assert error.reason.startswith("not a valid PEP 508 requirement: ")
    # Only packaging's first line; the caret display is dropped.
    assert "\n" not in error.reason
    assert "Expected" in error.reason


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ("requests", "requests>=2"),
        ("Foo_Bar", "foo-bar==1"),
        ("foo.bar", "FOO--BAR"),
        ("django[argon2]", "Django; python_version > '3.8'"),
    ],
)
def test_duplicate_names_are_an_error_on_the_later_line(first: str, second: str) -> None:
    error = only_error(f"{first}\n# between\n{second}\n")
    assert error.line_number == 3
    assert "duplicate of line 1" in error.reason


def test_line_continuation_is_refused() -> None:
    errors = errors_of("requests \\\n>=2\n")
    assert errors[0].line_number == 1
    assert "continuation" in errors[0].reason


def test_environment_variable_references_are_refused() -> None:
    error = only_error("foo; \"a\" in \"${DATABASE_URL}\"\n")
    assert "environment variable" in error.reason


def test_several_errors_are_reported_at_once_with_line_numbers() -> None:
    content = "\n".join(
        [
            "requests>=2",  # 1 ok
            "-i https://evil.example",  # 2
            "# comment",  # 3 ok
            "foo==",  # 4
            "",  # 5 ok
            "./local",  # 6
            "numpy\x07",  # 7
            "Requests",  # 8 duplicate of 1
        ]
    )
    errors = errors_of(content)
    assert [e.line_number for e in errors] == [2, 4, 6, 7, 8]
    message = str(InvalidRequirements(errors))
    assert message.count("; line ") == 4
    assert message.startswith("line 2: ")
    assert "line 8: duplicate of line 1" in message


def test_invalid_requirements_is_a_value_error_and_pickles() -> None:
    error = InvalidRequirements([LineError(3, "x", "bad")])
    assert isinstance(error, ValueError)
    assert str(error) == "line 3: bad"
    copy = pickle.loads(pickle.dumps(error))
    assert copy.errors == error.errors
    assert str(copy) == "line 3: bad"


# --- validate_requirements: accepted content ------------------------------------


def test_valid_content_with_comments_blanks_extras_markers() -> None:
    content = (
        "# Workflows need these\n"
        "\n"
        "requests>=2.31,<3  # http\n"
        "   \n"
        "uvicorn[standard]==0.30.1\n"
        "pywin32; sys_platform == 'win32'\n"
        "  humanize  \n"
        "Foo_Bar~=1.0\n"
        "# trailing comment"
    )
    requirements = validate_requirements(content)
    assert [str(r) for r in requirements] == [
        "requests<3,>=2.31",
        "uvicorn[standard]==0.30.1",
        'pywin32; sys_platform == "win32"',
        "humanize",
        "Foo_Bar~=1.0",
    ]


def test_crlf_line_endings_are_accepted() -> None:
    content = "# c\r\n\r\nrequests>=2\r\nhumanize  # x\r\n"
    assert [str(r) for r in validate_requirements(content)] == ["requests>=2", "humanize"]


@pytest.mark.parametrize("content", ["", "\n", "# only comments\n\n# more\n", "   \r\n"])
def test_empty_content_is_valid(content: str) -> None:
    assert validate_requirements(content) == []


def test_requirement_lines_strips_comments_and_skips_blanks_without_validating() -> None:
    content = "# c\nrequests>=2  # http\n\n  humanize\r\n-i https://x\nfoo==\n"
    assert requirement_lines(content) == ["requests>=2", "humanize", "-i https://x", "foo=="]


# --- make_requirement -----------------------------------------------------------


@pytest.mark.parametrize(
    ("package", "version", "expected"),
    [
        ("humanize", None, "humanize"),
        ("humanize", "", "humanize"),
        ("humanize", "  ", "humanize"),
        ("humanize", "4.9.0", "humanize==4.9.0"),
        ("humanize", " 4.9 ", "humanize==4.9"),
        ("humanize", "1.0+local", "humanize==1.0+local"),
        ("humanize", ">=1,<2", "humanize<2,>=1"),
        ("humanize", "~=2.0", "humanize~=2.0"),
        ("humanize", "!=1.5", "humanize!=1.5"),
        ("humanize", "==4.9.0", "humanize==4.9.0"),
        ("uvicorn[standard]", "0.30.1", "uvicorn[standard]==0.30.1"),
        ("Foo_Bar", None, "Foo_Bar"),
        ("  requests  ", None, "requests"),
    ],
)
def test_make_requirement(package: str, version: str | None, expected: str) -> None:
    requirement = make_requirement(package, version)
    assert isinstance(requirement, Requirement)
    assert str(requirement) == expected


@pytest.mark.parametrize(
    ("package", "version", "reason_part"),
    [
        ("requests>=2", None, "name with optional extras"),
        ("requests==2", "2", "name with optional extras"),
        ('x; os_name=="nt"', None, "name with optional extras"),
        ("-e x", None, OPTIONS_REASON),
        ("--index-url=https://x", None, OPTIONS_REASON),
        ("a b", None, "whitespace"),
        ("uvicorn [standard]", None, "whitespace"),
        ("x" * 5000, None, "5000 characters"),
        ("", None, "empty"),
        ("   ", None, "empty"),
        ("pkg @ https://x/y.whl", None, "URL"),
        ("foo@1.0", None, "direct URL reference"),
        ("./local", None, "local paths"),
        ("/abs", None, "local paths"),
        ("git+https://github.com/x/y", None, "URL"),
        ("req\x07", None, "U+0007"),
        ("req\u202e", None, "U+202E"),
        ("req\nnumpy", None, "U+000A"),
        ("é", None, "not a valid PEP 508 requirement"),
        ("humanize", "==", "invalid version"),
        ("humanize", "abc def", "invalid version"),
        ("humanize", ",", "invalid version"),
        ("humanize", "1.*", "invalid version"),
        ("humanize", ">=1; os_name=='nt'", "invalid version"),
        ("humanize", "1.0\x1b", "U+001B"),
        ("humanize", "1" * 2000, "version is 2000 characters"),
    ],
)
def test_make_requirement_refuses(package: str, version: str | None, reason_part: str) -> None:
    with pytest.raises(InvalidRequirements) as info:
        make_requirement(package, version)
    assert len(info.value.errors) == 1
    error = info.value.errors[0]
    assert error.line_number == 0
    assert reason_part in error.reason
    # Line 0 is not from a file: the message is the reason alone.
    assert str(info.value) == error.reason


def test_make_requirement_refuses_a_line_longer_than_the_limit() -> None:
    name = "a" * (MAX_LINE_LENGTH - 3)
    assert str(make_requirement(name, None)) == name
    with pytest.raises(InvalidRequirements, match="characters long"):
        make_requirement(name, ">=1.0.0")


def test_make_requirement_output_passes_validation() -> None:
    requirement = make_requirement("uvicorn[standard]", ">=0.30,<1")
    assert [str(r) for r in validate_requirements(str(requirement))] == [str(requirement)]


# --- add_or_replace -------------------------------------------------------------


def test_add_appends_at_the_end() -> None:
    content = "# deps\nrequests>=2\n\nnumpy\n"
    assert add_or_replace(content, "humanize==4.9") == content + "humanize==4.9\n"


def test_add_accepts_a_requirement_object_and_writes_markers_and_extras() -> None:
    requirement = Requirement("uvicorn[standard]>=0.30; python_version >= '3.11'")
    assert add_or_replace("requests\n", requirement) == (
        'requests\nuvicorn[standard]>=0.30; python_version >= "3.11"\n'
    )


def test_add_without_trailing_newline_adds_exactly_one() -> None:
    assert add_or_replace("requests", "humanize") == "requests\nhumanize\n"
    assert add_or_replace("# only a comment", "humanize") == "# only a comment\nhumanize\n"


def test_add_keeps_existing_trailing_blank_lines() -> None:
    assert add_or_replace("requests\n\n", "humanize") == "requests\n\nhumanize\n"


def test_add_to_empty_content() -> None:
    assert add_or_replace("", "humanize") == "humanize\n"


def test_add_to_crlf_content_keeps_crlf() -> None:
    assert add_or_replace("requests\r\n", "humanize") == "requests\r\nhumanize\r\n"
    assert add_or_replace("requests", "humanize") == "requests\nhumanize\n"


@pytest.mark.parametrize("spelling", ["foo-bar", "Foo_Bar", "FOO.BAR", "foo__bar"])
def test_replace_in_place_with_any_spelling(spelling: str) -> None:
    content = "# top\nrequests>=2  # http\nFoo_Bar==1.0  # old pin\n\n# tail\nnumpy\n"
    result = add_or_replace(content, f"{spelling}>=2")
    assert result == f"# top\nrequests>=2  # http\n{spelling}>=2\n\n# tail\nnumpy\n"
    assert requirement_lines(result) == ["requests>=2", f"{spelling}>=2", "numpy"]


def test_replace_keeps_other_bytes_and_the_line_ending() -> None:
    content = "a  \r\n# c\r\nfoo==1\r\n\tb\n"
    assert add_or_replace(content, "foo==2") == "a  \r\n# c\r\nfoo==2\r\n\tb\n"


def test_replace_last_line_without_trailing_newline() -> None:
    assert add_or_replace("a\nfoo==1", "foo==2") == "a\nfoo==2"


def test_replace_collapses_duplicates_of_invalid_content() -> None:
    assert add_or_replace("foo==1\nbar\nFOO==3\n", "foo==2") == "foo==2\nbar\n"


@pytest.mark.parametrize(
    "requirement",
    ["-i https://evil", "foo @ https://x/y.whl", "./local", "foo==", "foo\x07", "", "a" * 1001],
)
def test_add_refuses_what_validation_refuses(requirement: str) -> None:
    with pytest.raises(InvalidRequirements) as info:
        add_or_replace("requests\n", requirement)
    assert info.value.errors[0].line_number == 0


def test_add_leaves_unparsable_lines_alone() -> None:
    assert add_or_replace("weird line\nfoo\n", "bar") == "weird line\nfoo\nbar\n"


# --- remove / find --------------------------------------------------------------


def test_remove_present_keeps_everything_else_byte_for_byte() -> None:
    content = "# top\r\nrequests>=2  # http\r\n\r\nFoo_Bar==1\r\n  numpy  \r\n# tail"
    assert remove(content, "foo-bar") == "# top\r\nrequests>=2  # http\r\n\r\n  numpy  \r\n# tail"


@pytest.mark.parametrize("spelling", ["foo-bar", "FOO_BAR", "Foo.Bar"])
def test_remove_uses_canonical_names(spelling: str) -> None:
    assert remove("a\nfoo_bar[x]>=1; os_name == 'nt'\nb\n", spelling) == "a\nb\n"


def test_remove_last_line_without_newline() -> None:
    assert remove("a\nfoo", "foo") == "a\n"


def test_remove_removes_every_line_of_that_name() -> None:
    assert remove("foo\nbar\nFOO==2\n", "foo") == "bar\n"


@pytest.mark.parametrize("content", ["", "requests\n", "# foo\n", "foobar\n", "foo-bar\n"])
def test_remove_absent_raises_key_error(content: str) -> None:
    with pytest.raises(KeyError) as info:
        remove(content, "foo")
    assert info.value.args == ("foo",)


def test_find() -> None:
    content = "# foo\nrequests>=2  # http\nFoo_Bar[x]==1\n"
    found = find(content, "foo-bar")
    assert found is not None
    assert str(found) == "Foo_Bar[x]==1"
    assert find(content, "REQUESTS") == Requirement("requests>=2")
    assert find(content, "foo") is None
    assert find("", "foo") is None


@pytest.mark.parametrize(
    ("name", "expected"), [("Foo_Bar", "foo-bar"), ("foo.bar", "foo-bar"), ("A__B", "a-b")]
)
def test_normalized_name(name: str, expected: str) -> None:
    assert normalized_name(name) == expected
