"""The command line of the remote commands (the ones that talk to the API)
and the parsing of their values. argparse and json only: `bifrost worker`
builds this parser too and must stay light.

Global options (`--url`, `--json`, `--no-wait`, `--timeout`) go before the
command or after it (`bifrost --json workers`, `bifrost workers --json`).
`run` has its own `--json '{...}'` (the parameters) and `--timeout S` (the
execution's limit): for it, machine output is `bifrost --json run ...`.
"""

from __future__ import annotations

import argparse
import json
import math
import re
from typing import Any

DEFAULT_WAIT_TIMEOUT = 600.0
# A name with optional extras, then whatever version specifier follows it.
_PACKAGE = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*(?:\[[^\]]*\])?)\s*(.*?)\s*$")
_IDENTIFIER = r"[A-Za-z_][A-Za-z0-9_]*"
_TARGET = re.compile(rf"^({_IDENTIFIER}(?:\.{_IDENTIFIER})*):({_IDENTIFIER})$")

def add_global_options(parser: argparse.ArgumentParser, *, leaf: bool, run: bool = False) -> None:
    """The options every remote command takes. On a command (`leaf`) they
    default to SUPPRESS, so they only override what was given before it."""
    def default(value: Any) -> Any:
        return argparse.SUPPRESS if leaf else value

    parser.add_argument("--url", default=default(None),
                        help="the API (default: BIFROST_URL, else http://127.0.0.1:BIFROST_PORT)")
    parser.add_argument("--no-wait", dest="no_wait", action="store_true", default=default(False),
                        help="do not wait for the workers (or the execution)")
    if run:  # `run` has its own --json and --timeout
        return
    parser.add_argument("--json", dest="json_output", action="store_true", default=default(False),
                        help="machine output: the API's JSON (for waits: the final progress)")
    parser.add_argument("--timeout", dest="wait_timeout", type=_seconds,
                        default=default(DEFAULT_WAIT_TIMEOUT), metavar="S",
                        help=f"seconds to wait for the workers (default {DEFAULT_WAIT_TIMEOUT:g})")


def add_remote_commands(commands: Any) -> None:
    """`packages ...`, `requirements ...`, `workers` and `run` on the
    top-level subcommands (`commands`, argparse's subparsers action)."""
    packages = commands.add_parser("packages", help="list, install, remove, upgrade packages")
    actions = packages.add_subparsers(dest="action", required=True)
    _leaf(actions, "list", "requirements, lock and what each host runs")
    install = _leaf(actions, "install", "add or replace a package's line, then wait")
    install.add_argument("requirement", metavar="NAME[==VERSION]", type=package_and_version)
    remove = _leaf(actions, "remove", "remove a package's line, then wait")
    remove.add_argument("name", metavar="NAME")
    _leaf(actions, "sync", "re-install the current requirements on every worker, then wait")
    _leaf(actions, "outdated", "locked, newest allowed and newest version per line")
    upgrade = _leaf(actions, "upgrade", "move one package (or all) to the newest allowed")
    upgrade.add_argument("name", metavar="NAME", nargs="?")

    requirements = commands.add_parser("requirements", help="the whole requirements.txt")
    file_actions = requirements.add_subparsers(dest="action", required=True)
    _leaf(file_actions, "show", "print requirements.txt")
    replace = _leaf(file_actions, "set", "replace requirements.txt with FILE (- for stdin)")
    replace.add_argument("file", metavar="FILE")

    _leaf(commands, "workers", "every live worker and its last install")
    run = commands.add_parser("run", help="run MODULE:FUNCTION and print its result")
    add_global_options(run, leaf=True, run=True)
    run.add_argument("target", metavar="MODULE:FUNCTION", type=module_and_function)
    run.add_argument("--param", dest="params", action="append", type=parameter, default=[],
                     metavar="K=V", help="a parameter; V is read as JSON when it is JSON")
    run.add_argument("--json", dest="parameters_json", type=parameters_object, default=None,
                     metavar="'{...}'", help="parameters as one JSON object (--param wins)")
    run.add_argument("--timeout", dest="execution_timeout", type=_seconds, default=None,
                     metavar="S", help="the execution's time limit in seconds")
    run.set_defaults(action=None)


def _leaf(commands: Any, name: str, help_text: str) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = commands.add_parser(name, help=help_text)
    add_global_options(parser, leaf=True)
    return parser


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"seconds must be more than 0: {text!r}")
    return value


def package_and_version(text: str) -> tuple[str, str | None]:
    """'humanize==4.9.0' -> ('humanize', '==4.9.0'); 'humanize' -> ('humanize', None).
    Anything after the name is the version (a specifier set the API checks)."""
    found = _PACKAGE.match(text)
    if found is None:
        raise argparse.ArgumentTypeError(f"not a package name: {text!r}")
    return found.group(1), found.group(2) or None


def module_and_function(text: str) -> tuple[str, str]:
    """'workflows.hello:main' -> ('workflows.hello', 'main'); a path
    'workflows/hello.py:main' is read as the module it names."""
    module, _, function = text.strip().rpartition(":")
    module = module.removesuffix(".py").replace("/", ".")
    found = _TARGET.match(f"{module}:{function}")
    if found is None:
        raise argparse.ArgumentTypeError(
            f"expected MODULE:FUNCTION, e.g. workflows.hello:main, not {text!r}")
    return found.group(1), found.group(2)


def strict_json(text: str) -> Any:
    """json.loads, refusing NaN, Infinity and numbers too large for a float
    (1e999): JSON has no such numbers, and the API refuses them."""
    def finite(number: str) -> float:
        value = float(number)
        if not math.isfinite(value):
            raise ValueError(f"{number} is too large for a JSON number")
        return value

    def refuse(constant: str) -> Any:
        raise ValueError(f"{constant} is not a JSON number")

    return json.loads(text, parse_float=finite, parse_constant=refuse)


def json_or_text(text: str) -> Any:
    """The value of `--param k=V`: V as JSON when it is JSON (`3`, `true`,
    `[1, 2]`, `"x"`), else V as text (`hello`, `NaN`)."""
    try:
        return strict_json(text)
    except ValueError:  # JSONDecodeError included
        return text


def parameter(text: str) -> tuple[str, Any]:
    name, equals, value = text.partition("=")
    if not equals or not name.strip():
        raise argparse.ArgumentTypeError(f"expected K=V, not {text!r}")
    return name.strip(), json_or_text(value)


def parameters_object(text: str) -> dict[str, Any]:
    try:
        value = strict_json(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"--json is not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("--json must be a JSON object: {\"name\": value, ...}")
    return value


def merged_parameters(parameters_json: dict[str, Any] | None,
                      params: list[tuple[str, Any]]) -> dict[str, Any]:
    """--json's object, then each --param over it (the last one of a name wins)."""
    merged = dict(parameters_json or {})
    merged.update(params)
    return merged
