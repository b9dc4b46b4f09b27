"""The code's shape, enforced: the import contracts in pyproject.toml (layers
run one way, no cycles, no web stack in a worker process), and small pieces
(no file in src over MAX_FILE_LINES lines, no function over MAX_FUNCTION_LINES)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

API_DIR = Path(__file__).resolve().parents[2]
SRC = API_DIR / "src"
MAX_FILE_LINES = 350
MAX_FUNCTION_LINES = 50


def test_import_contracts_hold(tmp_path: Path) -> None:
    lint_imports = Path(sys.executable).with_name("lint-imports")
    done = subprocess.run([str(lint_imports), "--no-cache"], cwd=API_DIR, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert "0 broken" in done.stdout


def test_no_file_is_too_long() -> None:
    long = {str(path.relative_to(API_DIR)): lines
            for path in SRC.rglob("*.py")
            if (lines := len(path.read_text().splitlines())) > MAX_FILE_LINES}
    assert long == {}


def test_no_function_is_too_long() -> None:
    long: dict[str, int] = {}
    for path in SRC.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = (node.end_lineno or node.lineno) - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    long[f"{path.relative_to(API_DIR)}:{node.lineno} {node.name}"] = lines
    assert long == {}
