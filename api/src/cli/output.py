"""What the remote commands print: JSON for machines (`--json`), rich tables
for people. Data goes to stdout, messages to stderr."""

from __future__ import annotations

import json
import re
import sys
from typing import Any

from rich.console import Console
from rich.table import Table

from src.cli.progress import short

_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")


def print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, ensure_ascii=False))


def message(text: str) -> None:
    print(text, file=sys.stderr)


def _stdout() -> Console:
    # Wide enough when stdout is a pipe that a table is not squeezed to 80 columns.
    console = Console()
    return console if console.is_terminal else Console(width=200)


def canonical_name(text: str) -> str:
    """The distribution name a requirement line or `name==version` starts
    with, normalized as PEP 503 does (so `Foo_Bar` and `foo-bar` match)."""
    found = _NAME.match(text)
    return re.sub(r"[-_.]+", "-", found.group(1)).lower() if found else text.strip().lower()


def print_packages(answer: dict[str, Any]) -> None:
    """GET /api/packages: each requirement line with its locked version, the
    locked dependencies, then per host whether its workers match the lock."""
    console = _stdout()
    lock = {canonical_name(pin): pin.partition("==")[2] for pin in answer.get("lock") or []}
    lines = answer.get("requirements") or []
    table = Table(title=f"Requirements ({short(answer.get('hash'))})", title_justify="left")
    table.add_column("Requirement")
    table.add_column("Locked")
    for line in lines:
        table.add_row(line, lock.get(canonical_name(line), "-"))
    if lines:
        console.print(table)
    else:
        console.print("No packages in requirements.txt", highlight=False)
    named = {canonical_name(line) for line in lines}
    dependencies = [pin for pin in answer.get("lock") or [] if canonical_name(pin) not in named]
    if dependencies:
        console.print("Locked dependencies: " + ", ".join(dependencies), highlight=False)
    _print_hosts(console, answer.get("hosts") or [])


def _print_hosts(console: Console, hosts: list[dict[str, Any]]) -> None:
    if not hosts:
        console.print("No host runs workers on this hash yet", highlight=False)
        return
    table = Table(title="Hosts", title_justify="left")
    for column in ("Host", "Workers", "Installed", "Matches lock"):
        table.add_column(column)
    for host in hosts:
        installed = host.get("installed") or []
        table.add_row(str(host.get("host")), str(host.get("workers", "-")),
                      str(len(installed)), "yes" if host.get("matches_lock") else "NO")
    console.print(table)


def print_outdated(rows: list[dict[str, Any]]) -> None:
    """GET /api/packages/outdated: what an upgrade would move."""
    if not rows:
        _stdout().print("No packages in requirements.txt", highlight=False)
        return
    table = Table()
    for column in ("Package", "Line", "Locked", "Newest allowed", "Newest"):
        table.add_column(column)
    for row in rows:
        cells = [row.get(key) for key in ("name", "line", "locked", "newest_allowed", "newest")]
        table.add_row(*[str(cell) if cell is not None else "-" for cell in cells])
    _stdout().print(table)
    movable = [row for row in rows
               if row.get("newest_allowed") and row.get("newest_allowed") != row.get("locked")]
    message(f"{len(movable)} package(s) can be upgraded within their lines"
            if movable else "Everything is at the newest version its line allows")


def print_workers(answer: dict[str, Any]) -> None:
    """GET /api/workers: one row per live worker, its install outcome, then
    the summary and each failed package with its error."""
    workers = answer.get("workers") or []
    summary = answer.get("summary") or {}
    table = Table()
    for column in ("Worker", "Host", "PID", "Status", "Hash", "Install"):
        table.add_column(column)
    for worker in workers:
        status = str(worker.get("status"))
        if worker.get("retiring"):
            status += " (retiring)"
        table.add_row(str(worker.get("worker_id")), str(worker.get("host")),
                      str(worker.get("pid") or "-"), status,
                      short(worker.get("requirements_hash")), _install_cell(worker.get("install")))
    if workers:
        _stdout().print(table)
    print(f"{summary.get('total', 0)} live worker(s), {summary.get('ready', 0)} ready on "
          f"{short(summary.get('current_hash'))}")
    for worker in workers:
        for failure in (worker.get("install") or {}).get("failed") or []:
            error = str(failure.get("error") or "").strip().splitlines() or ["no reason given"]
            print(f"  {failure.get('package')} failed on {worker.get('worker_id')}: {error[0]}")


def _install_cell(install: dict[str, Any] | None) -> str:
    if not install:
        return "-"
    failed = install.get("failed") or []
    installed = install.get("installed") or []
    parts = ["skipped" if install.get("skipped") else f"{len(installed)} installed"]
    if failed:
        parts.append(f"{len(failed)} failed")
    duration = install.get("duration_ms")
    if isinstance(duration, int | float):
        parts.append(f"{duration:.1f} ms")
    return ", ".join(parts)
