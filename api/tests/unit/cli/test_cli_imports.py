"""The CLI stays light: the remote commands never load the web stack or
`src.api`, and `bifrost worker`'s start (building the parser) loads neither
httpx nor rich. Checked in a fresh interpreter, where sys.modules is honest."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

API_DIR = Path(__file__).resolve().parents[3]
WEB_STACK = ("fastapi", "starlette", "uvicorn", "src.api")


def loaded_after(code: str) -> set[str]:
    probe = code + "\nimport sys\nprint('\\n'.join(sorted(sys.modules)))\n"
    done = subprocess.run([sys.executable, "-c", probe], cwd=API_DIR, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return set(done.stdout.split())


def under(modules: set[str], roots: tuple[str, ...]) -> set[str]:
    return {m for m in modules if any(m == r or m.startswith(r + ".") for r in roots)}


def test_the_remote_commands_import_no_web_stack() -> None:
    modules = loaded_after(
        "import src.cli.remote, src.cli.main\n"
        "src.cli.main.build_parser().parse_args(['packages', 'list'])\n"
    )
    assert "httpx" in modules and "rich" in modules
    assert under(modules, WEB_STACK) == set()


def test_the_parser_loads_no_client() -> None:
    modules = loaded_after(
        "import src.cli.main\nsrc.cli.main.build_parser().parse_args(['worker'])\n")
    assert under(modules, ("httpx", "rich", "src.cli.remote", *WEB_STACK)) == set()
