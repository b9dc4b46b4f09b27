"""Running a remote command: find the API and the token, call the command,
and turn every failure into one line on stderr and an exit code (no traceback):
2 when the API cannot be reached or refuses the token, 1 when it answered with
an error or a change did not land everywhere, 130 on Ctrl-C."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any

from src.cli import packages_commands, run_command
from src.cli.client import ApiClient, CliError, admin_credentials, api_url
from src.cli.context import Context

Command = Callable[[Context, Any], int]

COMMANDS: dict[tuple[str, str | None], Command] = {
    ("packages", "list"): packages_commands.packages_list,
    ("packages", "install"): packages_commands.packages_install,
    ("packages", "remove"): packages_commands.packages_remove,
    ("packages", "sync"): packages_commands.packages_sync,
    ("packages", "outdated"): packages_commands.packages_outdated,
    ("packages", "upgrade"): packages_commands.packages_upgrade,
    ("requirements", "show"): packages_commands.requirements_show,
    ("requirements", "set"): packages_commands.requirements_set,
    ("workers", None): run_command.workers,
    ("run", None): run_command.run,
}


def run_remote(args: argparse.Namespace) -> int:
    command = COMMANDS[(args.command, getattr(args, "action", None))]
    try:
        client = ApiClient(api_url(args.url), admin_credentials())
    except CliError as exc:
        return fail(str(exc), exc.exit_code)
    except ValueError as exc:  # the settings (BIFROST_PORT, BIFROST_DATA_DIR...) do not parse
        return fail(f"invalid settings: {exc}", 2)
    context = Context(client, args.json_output, args.no_wait, args.wait_timeout)
    try:
        return command(context, args)
    except CliError as exc:
        return fail(str(exc), exc.exit_code)
    except KeyboardInterrupt:
        return fail("interrupted (a change already sent is stored, and workers go on "
                    "installing it)", 130)
    except BrokenPipeError:  # `bifrost packages list | head`
        return 0
    finally:
        client.close()


def fail(text: str, code: int) -> int:
    print(f"bifrost: {text}", file=sys.stderr)
    return code
