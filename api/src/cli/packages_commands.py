"""`bifrost packages ...` and `bifrost requirements ...`.

Reads print the API's answer (a table, or its JSON with `--json`). Writes that
give the requirements a new hash (install, remove, upgrade, requirements set)
and every sync then wait until each live worker runs that hash
(`src/cli/progress.py`), unless `--no-wait`.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

from src.cli.client import ApiClient, CliError, Unreachable
from src.cli.context import Context
from src.cli.output import message, print_json, print_outdated, print_packages
from src.cli.progress import report, short, wait_for_rollout


def apply_change(ctx: Context, answer: dict[str, Any],
                 retired: Callable[[], bool] | None = None,
                 stale_workers: frozenset[str] = frozenset()) -> int:
    """After a write: wait for the workers to run `answer["hash"]` and report
    (`retired`, `stale_workers`: see `wait_for_rollout`)."""
    if ctx.no_wait:
        if ctx.json_output:
            print_json(answer)
        else:
            message(f"Not waiting for the workers to install {short(answer.get('hash'))} "
                    "(--no-wait)")
        return 0
    rollout = wait_for_rollout(ctx.client, str(answer["hash"]), timeout=ctx.wait_timeout,
                               retired=retired, stale_workers=stale_workers)
    if ctx.json_output:
        print_json(rollout.last)
    return report(rollout)


def _unchanged(ctx: Context, answer: dict[str, Any], text: str) -> int:
    if ctx.json_output:
        print_json(answer)
    else:
        message(text)
    return 0


def packages_list(ctx: Context, args: Any) -> int:
    return ctx.show("/api/packages", print_packages)


def packages_install(ctx: Context, args: Any) -> int:
    name, version = args.requirement
    body = {"package": name} | ({"version": version} if version else {})
    answer = ctx.client.post("/api/packages/install", body)
    wanted = f"{name}{version or ''}"
    if not answer.get("changed"):
        return _unchanged(ctx, answer, f"requirements.txt already has {wanted} "
                                       f"({short(answer.get('hash'))}): nothing to install")
    if not ctx.json_output:
        message(f"Added {wanted}: requirements {short(answer.get('hash'))}")
    return apply_change(ctx, answer)


def packages_remove(ctx: Context, args: Any) -> int:
    answer = ctx.client.delete(f"/api/packages/{quote(args.name, safe='')}")
    if not ctx.json_output:
        message(f"Removed {args.name}: requirements {short(answer.get('hash'))}")
    return apply_change(ctx, answer)


def packages_sync(ctx: Context, args: Any) -> int:
    """Re-install the stored requirements on every worker. The hash stays, so
    the wait also waits for the workers running now to be replaced, and
    their failures (the ones a sync retries) are not reported."""
    before = {str(w.get("worker_id")) for w in _live_workers(ctx.client)}
    answer = ctx.client.post("/api/packages/install", {})
    if not ctx.json_output:
        message(f"Re-syncing every worker on {short(answer.get('hash'))}")

    def retired() -> bool:
        try:
            live = _live_workers(ctx.client)
        except Unreachable:  # a moment without the API: the progress polls judge that
            return False
        return not any(str(w.get("worker_id")) in before and not w.get("retiring")
                       for w in live)

    return apply_change(ctx, answer, retired if before else None, frozenset(before))


def _live_workers(client: ApiClient) -> list[dict[str, Any]]:
    fleet = client.get("/api/workers")
    return [w for w in fleet.get("workers") or [] if w.get("status") != "stopped"]


def packages_outdated(ctx: Context, args: Any) -> int:
    return ctx.show("/api/packages/outdated", print_outdated)


def packages_upgrade(ctx: Context, args: Any) -> int:
    body = {"package": args.name} if args.name else {}
    answer = ctx.client.post("/api/packages/upgrade", body)
    what = args.name or "every package"
    if not answer.get("changed"):
        return _unchanged(ctx, answer, f"Nothing to upgrade: {what} is already at the newest "
                                       "version its line allows")
    if not ctx.json_output:
        message(f"Upgraded {what}: requirements {short(answer.get('hash'))}")
    return apply_change(ctx, answer)


def requirements_show(ctx: Context, args: Any) -> int:
    answer = ctx.client.get("/api/requirements")
    if ctx.json_output:
        print_json(answer)
        return 0
    content = str(answer.get("content") or "")
    # The file as is on stdout (so `show > requirements.txt` round-trips), the hash aside.
    sys.stdout.write(content if not content or content.endswith("\n") else content + "\n")
    message(f"# hash {answer.get('hash')}")
    return 0


def requirements_set(ctx: Context, args: Any) -> int:
    content = _read_content(args.file)
    answer = ctx.client.put("/api/requirements", {"content": content})
    if not ctx.json_output:
        message(f"requirements.txt replaced: {short(answer.get('hash'))}")
    return apply_change(ctx, answer)


def _read_content(name: str) -> str:
    """FILE's text, or stdin's for `-`."""
    if name == "-":
        return sys.stdin.read()
    try:
        return Path(name).read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise CliError(f"{name} is not UTF-8 text") from None
    except OSError as exc:
        raise CliError(f"cannot read {name}: {exc.strerror or exc}") from None
