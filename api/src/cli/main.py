"""`bifrost`: the command line.

    bifrost up       init, then the API and one worker pool, in the foreground
    bifrost api      the HTTP API only
    bifrost worker   one worker pool only (run as many as you like, anywhere)
    bifrost init     migrations, then warm the module and requirements caches

and, talking to a running API (BIFROST_URL, BIFROST_ADMIN_TOKEN or the token
file in the data dir):

    bifrost packages list | install NAME[==VERSION] | remove NAME | sync
                     | outdated | upgrade [NAME]
    bifrost requirements show | set FILE
    bifrost workers
    bifrost run MODULE:FUNCTION [--param K=V ...] [--json '{...}'] [--timeout S]

Each command imports only what it runs: the process commands live in
`serve.py` (`worker` never loads the web stack), the remote ones in
`remote.py` and the modules it names (httpx and rich, never the web stack).
"""

from __future__ import annotations

import argparse
import sys

from src.cli.arguments import add_global_options, add_remote_commands

PROCESS_COMMANDS = ("up", "api", "worker", "init")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bifrost",
        description="Bifrost runtime: API, worker pools and init; packages, requirements, "
                    "workers and runs through the API.",
    )
    add_global_options(parser, leaf=False)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("up", help="init, then serve the API and a worker pool")
    commands.add_parser("api", help="serve the HTTP API")
    worker = commands.add_parser("worker", help="run one worker pool")
    worker.add_argument("--workers", type=int, default=None,
                        help="processes in this pool (default: BIFROST_WORKERS)")
    commands.add_parser("init", help="migrations and cache warm-up")
    add_remote_commands(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command in PROCESS_COMMANDS:
        from src.cli.serve import run_process_command

        return run_process_command(args.command, getattr(args, "workers", None))
    from src.cli.remote import run_remote

    return run_remote(args)


if __name__ == "__main__":
    sys.exit(main())
