"""The README's shell examples, run as written against the real stack.

Every ```bash block of the README's "Using it" section runs in bash, in a
directory laid out like the one `./run.sh` starts from (`.bifrost/admin-token`,
`.venv`), with only the port changed: `localhost:8000` becomes the stack's.
So the README cannot drift from the API or the CLI again.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from tests.support.stack import API_DIR, Stack
from tests.support.wheels import build_wheel

README = API_DIR.parent / "README.md"
SECTION = "## Using it"
HUMANIZE = '''
def intcomma(value):
    return f"{value:,}"
'''


def readme_blocks() -> list[str]:
    text = README.read_text()
    start = text.index(SECTION)
    end = text.find("\n## ", start + len(SECTION))
    section = text[start:end if end != -1 else None]
    return re.findall(r"```bash\n(.*?)```", section, flags=re.DOTALL)


def user_shell_env(workdir: Path) -> dict[str, str]:
    """What a user's shell has: none of the stack's settings (the CLI finds the
    token in ./.bifrost, as after `./run.sh`)."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("BIFROST_", "PIP_", "UV_")) and k not in ("REDIS_URL",
                                                                          "DATABASE_URL")}
    env["HOME"] = str(workdir)
    return env


def run_block(block: str, port: int, workdir: Path) -> subprocess.CompletedProcess[str]:
    script = "set -euo pipefail\n" + block.replace("localhost:8000", f"localhost:{port}")
    return subprocess.run(["bash", "-c", script], cwd=workdir, env=user_shell_env(workdir),
                          capture_output=True, text=True, timeout=240)


def test_the_readme_has_the_examples() -> None:
    blocks = readme_blocks()
    assert len(blocks) >= 2, "the curl block and the CLI block"
    assert "curl" in blocks[0] and "bifrost packages install" in blocks[1]


def test_readme_examples_run_as_written(make_stack: Callable[..., Stack], tmp_path: Path) -> None:
    stack = make_stack(pools=1, workers_per_pool=2)
    build_wheel(stack.wheelhouse, "humanize", "4.9.0", module_source=HUMANIZE)
    stack.start()
    workdir = tmp_path / "checkout"
    (workdir / ".bifrost").mkdir(parents=True)
    (workdir / ".bifrost" / "admin-token").write_text(stack.token + "\n")
    (workdir / ".venv").symlink_to(Path(sys.executable).parent.parent)

    curl, cli = readme_blocks()[:2]
    done = run_block(curl, stack.port, workdir)
    assert done.returncode == 0, done.stdout + done.stderr
    assert '"detail"' not in done.stdout, done.stdout  # every error answer carries one
    assert '"status":"Success"' in done.stdout and "hello world, 1,234,567" in done.stdout

    done = run_block(cli, stack.port, workdir)
    assert done.returncode == 0, done.stdout + done.stderr + stack.logs()
    assert "hello Ada, 1,234,567" in done.stdout, done.stdout
    assert stack.client.get("/api/requirements").json()["content"].strip() == ""
