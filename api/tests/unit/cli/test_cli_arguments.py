"""The remote commands' command line: global options before or after the
command, `run`'s own --json/--timeout, and the parsing of values."""

from __future__ import annotations

import argparse

import pytest

from src.cli.arguments import (
    json_or_text,
    merged_parameters,
    module_and_function,
    package_and_version,
    parameter,
)
from src.cli.main import build_parser


def parse(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(list(argv))


@pytest.mark.parametrize(("text", "value"), [
    ("3", 3), ("2.5", 2.5), ("true", True), ("null", None), ('"quoted"', "quoted"),
    ("[1, 2]", [1, 2]), ('{"a": 1}', {"a": 1}),
    ("hello", "hello"), ("", ""), ("1e999", "1e999"), ("NaN", "NaN"), ("Infinity", "Infinity"),
    ("{not json", "{not json"), ("a=b", "a=b"),
])
def test_a_param_value_is_json_when_it_parses_else_text(text: str, value: object) -> None:
    assert json_or_text(text) == value


def test_a_param_splits_at_the_first_equals_sign() -> None:
    assert parameter("query=a=b") == ("query", "a=b")
    assert parameter("n=42") == ("n", 42)
    assert parameter(" name =x") == ("name", "x")
    for bad in ("novalue", "=3"):
        with pytest.raises(argparse.ArgumentTypeError):
            parameter(bad)


def test_params_override_the_json_object_and_the_last_param_wins() -> None:
    merged = merged_parameters({"a": 1, "b": 2}, [("b", 3), ("c", "x"), ("c", "y")])
    assert merged == {"a": 1, "b": 3, "c": "y"}
    assert merged_parameters(None, []) == {}


def test_module_and_function() -> None:
    assert module_and_function("workflows.hello:main") == ("workflows.hello", "main")
    assert module_and_function("workflows/hello.py:run_it") == ("workflows.hello", "run_it")
    for bad in ("workflows.hello", "workflows.hello:", ":main", "a-b:main", "x:y:z"):
        with pytest.raises(argparse.ArgumentTypeError):
            module_and_function(bad)


def test_package_and_version() -> None:
    assert package_and_version("humanize") == ("humanize", None)
    assert package_and_version("humanize==4.9.0") == ("humanize", "==4.9.0")
    assert package_and_version("uvicorn[standard]>=0.20,<1") == ("uvicorn[standard]", ">=0.20,<1")
    assert package_and_version("Foo_Bar ~= 1.2") == ("Foo_Bar", "~= 1.2")
    with pytest.raises(argparse.ArgumentTypeError):
        package_and_version("==1.0")


def test_global_options_go_before_or_after_the_command() -> None:
    before = parse("--json", "--url", "http://h:1", "--no-wait", "--timeout", "5",
                   "packages", "install", "humanize==4.9.0")
    after = parse("packages", "install", "humanize==4.9.0", "--json", "--url", "http://h:1",
                  "--no-wait", "--timeout", "5")
    for args in (before, after):
        assert (args.command, args.action) == ("packages", "install")
        assert args.requirement == ("humanize", "==4.9.0")
        assert (args.json_output, args.url, args.no_wait, args.wait_timeout) == (
            True, "http://h:1", True, 5.0)


def test_global_options_have_defaults() -> None:
    args = parse("workers")
    assert (args.json_output, args.url, args.no_wait, args.wait_timeout) == (
        False, None, False, 600.0)


def test_run_has_its_own_json_and_timeout() -> None:
    args = parse("--json", "--timeout", "9", "run", "workflows.hello:main",
                 "--param", "name=world", "--param", "n=3", "--json", '{"a": [1]}',
                 "--timeout", "20", "--no-wait")
    assert args.target == ("workflows.hello", "main")
    assert args.params == [("name", "world"), ("n", 3)]
    assert args.parameters_json == {"a": [1]}
    assert args.execution_timeout == 20.0
    assert (args.json_output, args.wait_timeout, args.no_wait) == (True, 9.0, True)


@pytest.mark.parametrize("argv", [
    ["run", "workflows.hello:main", "--json", "[1]"],
    ["run", "workflows.hello:main", "--json", '{"a": NaN}'],
    ["run", "workflows.hello:main", "--timeout", "0"],
    ["run", "nocolon"],
    ["packages", "install"],
    ["packages", "frobnicate"],
    ["--timeout", "-1", "workers"],
])
def test_bad_arguments_are_usage_errors(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        parse(*argv)
    assert exited.value.code == 2


def test_every_command_parses() -> None:
    assert parse("packages", "list").action == "list"
    assert parse("packages", "remove", "humanize").name == "humanize"
    assert parse("packages", "sync").action == "sync"
    assert parse("packages", "outdated").action == "outdated"
    assert parse("packages", "upgrade").name is None
    assert parse("packages", "upgrade", "humanize").name == "humanize"
    assert parse("requirements", "show").action == "show"
    assert parse("requirements", "set", "-").file == "-"
    assert parse("worker", "--workers", "3").workers == 3
