"""`bifrost packages | requirements | workers | run` through a real server.

The CLI runs as a subprocess (`python -m src.cli ...` from api/) with
BIFROST_URL and BIFROST_ADMIN_TOKEN pointing at a stack of real processes
(API + one pool of two workers). The install, its progress and a failing
package are written to tests/artifacts/cli-transcript.txt as they ran.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from src.foundation.local_redis import free_port
from tests.support.stack import Stack
from tests.support.wheels import build_sdist, build_wheel

API_DIR = Path(__file__).resolve().parents[2]
TRANSCRIPT = API_DIR / "tests" / "artifacts" / "cli-transcript.txt"
CLI_TIMEOUT = 180

HELLO = '''
def main(name, n=1, extra=None):
    return {"greeting": f"hello {name}", "n": n, "extra": extra}


def broken():
    raise ValueError("this workflow fails on purpose")
'''


@dataclass
class Cli:
    """Runs `bifrost ...` against one API; keeps a transcript of what it ran."""

    url: str
    token: str
    transcript: list[str] = field(default_factory=list)

    def __call__(self, *args: str, stdin: str | None = None,
                 token: str | None = None) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("BIFROST_")}
        env.update(BIFROST_URL=self.url, BIFROST_ADMIN_TOKEN=token or self.token,
                   BIFROST_DATA_DIR=str(API_DIR / ".no-data-dir"), COLUMNS="120")
        started = time.monotonic()
        done = subprocess.run([sys.executable, "-m", "src.cli", *args], cwd=API_DIR, env=env,
                              input=stdin, capture_output=True, text=True, timeout=CLI_TIMEOUT)
        self.transcript.append(
            f"$ bifrost {' '.join(_quote(a) for a in args)}"
            + (f"  <<< {stdin!r}" if stdin is not None else "")
            + f"\n[exit {done.returncode} after {time.monotonic() - started:.1f} s]\n"
            + f"--- stdout ---\n{done.stdout}--- stderr ---\n{done.stderr}\n")
        return done

    def ok(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        done = self(*args, stdin=stdin)
        assert done.returncode == 0, f"exit {done.returncode}\n{done.stdout}\n{done.stderr}"
        return done

    def json(self, *args: str) -> Any:
        return json.loads(self.ok("--json", *args).stdout)


def _quote(arg: str) -> str:
    return repr(arg) if not arg or any(c in arg for c in " {}\"'[]$") else arg


def cli_for(stack: Stack) -> Cli:
    return Cli(f"http://127.0.0.1:{stack.port}", stack.token)


def all_on(stack: Stack, expected_hash: str) -> bool:
    """GET /api/workers, read once: every serving worker is ready on
    `expected_hash`, as the CLI promises when it returns. Workers a recycle
    replaced may still be finishing: they are on their way out, not serving."""
    fleet = stack.fleet()
    serving = [w for w in fleet["workers"] if not w.get("retiring")]
    return (fleet["summary"]["current_hash"] == expected_hash
            and len(serving) == stack.expected_workers
            and all(w["status"] in ("idle", "busy") and w["requirements_hash"] == expected_hash
                    for w in serving))


def locked(stack: Stack) -> list[str]:
    return list(stack.client.get("/api/packages").json()["lock"])


def test_install_waits_for_every_worker_and_failures_exit_non_zero(
    make_stack: Callable[..., Stack],
) -> None:
    stack = make_stack(pools=1, workers_per_pool=2).start()
    build_wheel(stack.wheelhouse, "cli-good", "1.0")
    build_sdist(stack.wheelhouse, "cli-broken", "1.0", behaviour="fail")
    cli = cli_for(stack)

    # Install: waits (the bar's text on stderr), exit 0, every worker on the new hash.
    done = cli.ok("packages", "install", "cli-good>=1.0")
    new_hash = stack.current_hash()
    assert "workers ready on" in done.stderr and f"on {new_hash[:8]}" in done.stderr
    assert f"Every live worker is on {new_hash[:8]} (2/2 ready)" in done.stderr
    assert all_on(stack, new_hash), stack.fleet()
    assert "cli-good==1.0" in locked(stack)
    again = cli.ok("packages", "install", "cli-good>=1.0")
    assert "nothing to install" in again.stderr and "workers ready on" not in again.stderr

    # A package that cannot build: exit 1 naming it and the installer's reason.
    failed = cli("packages", "install", "cli-broken==1.0")
    assert failed.returncode == 1, failed.stderr
    assert "package(s) failed to install" in failed.stderr
    assert all_on(stack, stack.current_hash())  # the workers still run, all of them
    # Each worker's failure, as GET /api/workers has it: package, host, worker, error.
    # (Which words the installer gives varies; the CLI must print them, whatever they are.)
    serving = [w for w in stack.fleet()["workers"] if not w.get("retiring")]
    assert len(serving) == 2
    for worker in serving:
        (failure,) = worker["install"]["failed"]
        assert failure["package"] == "cli-broken==1.0"
        first_line = failure["error"].strip().splitlines()[0]
        assert f"cli-broken==1.0 on {worker['host']} (" in failed.stderr
        assert worker["worker_id"] in failed.stderr and first_line in failed.stderr

    # A resolver refusal is the API's 422, read out; nothing changes.
    unknown = cli("packages", "install", "no-such-package-anywhere")
    assert unknown.returncode == 1
    assert "the API answered 422" in unknown.stderr and "no-such-package-anywhere" in unknown.stderr
    assert "Traceback" not in unknown.stderr

    # Remove: waits again; the failure is gone with the line.
    before = stack.current_hash()
    cli.ok("packages", "remove", "cli-broken")
    assert stack.current_hash() != before and all_on(stack, stack.current_hash())
    missing = cli("packages", "remove", "cli-broken")
    assert missing.returncode == 1 and "404" in missing.stderr

    # Re-sync: the hash stays, the workers are replaced, exit 0.
    ids = {w["worker_id"] for w in stack.fleet()["workers"]}
    cli.ok("packages", "sync")
    assert ids.isdisjoint(w["worker_id"] for w in stack.fleet()["workers"] if not w.get("retiring"))
    _listings_and_upgrade(stack, cli)
    _requirements_show_and_set(stack, cli)

    # No live workers: nothing to wait for, exit 0.
    stack.stop_pools()
    stack.wait(lambda: stack.fleet()["summary"]["total"] == 0, 60, "the pool to leave")
    alone = cli.ok("packages", "remove", "cli-good")
    assert "no live workers: the change applies when workers start" in alone.stderr
    _write_transcript(cli.transcript)


def _listings_and_upgrade(stack: Stack, cli: Cli) -> None:
    """list / outdated / workers, human and --json; upgrade to a newer wheel."""
    listing = cli.ok("packages", "list").stdout
    assert "cli-good>=1.0" in listing and "1.0" in listing and "yes" in listing
    assert "cli-good==1.0" in cli.json("packages", "list")["lock"]

    build_wheel(stack.wheelhouse, "cli-good", "1.1")
    rows = cli.json("packages", "outdated")
    good = next(row for row in rows if row["name"] == "cli-good")
    assert (good["locked"], good["newest_allowed"], good["newest"]) == ("1.0", "1.1", "1.1")
    assert "cli-good" in cli.ok("packages", "outdated").stdout

    upgraded = cli.ok("packages", "upgrade", "cli-good")
    assert "Every live worker is on" in upgraded.stderr
    assert "cli-good==1.1" in locked(stack) and all_on(stack, stack.current_hash())
    unchanged = cli.ok("packages", "upgrade")
    assert "Nothing to upgrade" in unchanged.stderr

    fleet = cli.json("workers")
    assert fleet["summary"]["total"] == fleet["summary"]["ready"] == 2
    human = cli.ok("workers").stdout
    assert f"2 live worker(s), 2 ready on {stack.current_hash()[:8]}" in human
    assert all(w["worker_id"] in human for w in fleet["workers"])


def _requirements_show_and_set(stack: Stack, cli: Cli) -> None:
    shown = cli.ok("requirements", "show")
    assert "cli-good" in shown.stdout and stack.current_hash() in shown.stderr
    assert cli.json("requirements", "show")["hash"] == stack.current_hash()
    content = shown.stdout + "# set through the CLI\n"
    done = cli("--json", "requirements", "set", "-", stdin=content)
    assert done.returncode == 0, done.stderr
    progress = json.loads(done.stdout)
    assert progress["done"] and progress["hash"] == stack.current_hash()
    assert stack.client.get("/api/requirements").json()["content"] == content
    assert all_on(stack, stack.current_hash())


def test_run_prints_the_result_and_errors_exit_non_zero(make_stack: Callable[..., Stack]) -> None:
    stack = make_stack(pools=1, workers_per_pool=1).start()
    stack.upload("workflows/hello.py", HELLO)
    cli = cli_for(stack)

    done = cli.ok("run", "workflows.hello:main", "--param", "name=world", "--param", "n=3",
                  "--json", '{"extra": [1, {"a": null}], "n": 1}')
    assert json.loads(done.stdout) == {"greeting": "hello world", "n": 3,
                                       "extra": [1, {"a": None}]}
    record = cli.json("run", "workflows/hello.py:main", "--param", "name=x", "--timeout", "30")
    assert record["status"] == "Success" and record["result"]["greeting"] == "hello x"

    failed = cli("run", "workflows.hello:broken")
    assert failed.returncode == 1 and failed.stdout == ""
    assert "ended Failed" in failed.stderr and "this workflow fails on purpose" in failed.stderr

    queued = cli.ok("run", "workflows.hello:main", "--param", "name=later", "--no-wait")
    execution_id = queued.stdout.strip()
    assert stack.wait_final(execution_id)["result"]["greeting"] == "hello later"

    # A wrong token: exit 2, one line, the token not echoed.
    refused = cli("workers", token="not-the-token")
    assert refused.returncode == 2
    assert refused.stderr.count("\n") == 1 and "refused the token (401" in refused.stderr
    assert "not-the-token" not in refused.stderr


def test_an_unreachable_api_is_one_line_and_exit_2() -> None:
    port = free_port()  # nobody listens there
    cli = Cli(f"http://127.0.0.1:{port}", "any-token")
    for args in (("packages", "list"), ("packages", "install", "x"), ("run", "a.b:c")):
        done = cli(*args)
        assert done.returncode == 2, done.stderr
        assert done.stderr == (f"bifrost: cannot reach the API at http://127.0.0.1:{port} "
                               "(connection refused); is it running? set BIFROST_URL\n")


def _write_transcript(entries: list[str]) -> None:
    TRANSCRIPT.parent.mkdir(parents=True, exist_ok=True)
    header = ("# The bifrost CLI against a real stack (API + one pool of 2 workers), as run by\n"
              "# tests/e2e/test_cli.py (BIFROST_URL and BIFROST_ADMIN_TOKEN set; stderr is\n"
              "# a pipe, so the bar is drawn once at the end and each change is a line).\n\n")
    TRANSCRIPT.write_text(header + "\n".join(entries), encoding="utf-8")
