"""Workspace modules import from the module cache (real Redis and store)."""

from __future__ import annotations

import sys
from collections.abc import Iterator

import pytest
import redis

from src.core import module_cache
from src.services.execution.executor import execute_item
from src.services.execution.virtual_import import (
    WorkspaceFinder,
    install_virtual_import_hook,
    reset_workspace_modules,
)


@pytest.fixture
def hook(sqlite_system: str) -> Iterator[WorkspaceFinder]:
    finder = install_virtual_import_hook()
    reset_workspace_modules()
    yield finder
    reset_workspace_modules()
    sys.meta_path.remove(finder)


def _run(module: str, function: str = "main", **parameters: object) -> dict:
    return dict(execute_item(
        {"id": "x", "module": module, "function": function, "parameters": parameters}, "w-vi"))


def test_module_package_and_namespace_package(hook: WorkspaceFinder) -> None:
    module_cache.save_file_sync("flows/hello.py", "def main(name):\n    return f'hi {name}'\n")
    module_cache.save_file_sync("pkg/__init__.py", "BASE = 40\n")
    module_cache.save_file_sync("pkg/calc.py", "from pkg import BASE\n\ndef main():\n"
                                               "    return BASE + 2\n")
    assert _run("flows.hello", name="you")["result"] == "hi you"
    assert sys.modules["flows"].__spec__.submodule_search_locations is not None  # namespace
    assert _run("pkg.calc")["result"] == 42
    assert sys.modules["pkg"].__file__ == "workspace://pkg/__init__.py"


def test_an_edit_takes_effect_on_the_next_execution(hook: WorkspaceFinder) -> None:
    module_cache.save_file_sync("flows/edit.py", "def main():\n    return 1\n")
    assert _run("flows.edit")["result"] == 1
    module_cache.save_file_sync("flows/edit.py", "def main():\n    return 2\n")
    assert _run("flows.edit")["result"] == 2


def test_installed_modules_win_over_workspace_files(hook: WorkspaceFinder) -> None:
    module_cache.save_file_sync("json.py", "def dumps(x):\n    return 'hijacked'\n")
    assert _run("json", "dumps", obj=[1])["result"] == "[1]"


def test_after_flushall_modules_come_from_the_store(
    hook: WorkspaceFinder, redis_client: redis.Redis
) -> None:
    module_cache.save_file_sync("flows/kept.py", "def main():\n    return 'kept'\n")
    redis_client.flushall()
    assert _run("flows.kept")["result"] == "kept"


def test_errors_in_workspace_code_and_missing_modules_fail_cleanly(
    hook: WorkspaceFinder,
) -> None:
    module_cache.save_file_sync("flows/bad.py", "def main():\n    raise KeyError('k')\n")
    result = _run("flows.bad")
    assert result["status"] == "Failed" and result["error"] == "KeyError: 'k'"
    missing = _run("flows.nothing_here")
    assert missing["error"] == "ModuleNotFoundError: No module named 'flows.nothing_here'"
