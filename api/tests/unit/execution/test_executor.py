"""execute_item: results, errors, and missing modules explained by the install outcome."""

from __future__ import annotations

from src.services.execution.executor import execute_item

FAILED_INSTALL = {
    "ok": False, "skipped": False, "installed": ["good-pkg==1.0"],
    "failed": [{"package": "Broken_Pkg==2.0", "error": "error: command 'gcc' failed"}],
    "duration_ms": 5, "requirements_hash": "h",
}


def _item(module: str, function: str = "main") -> dict:
    return {"id": "e", "module": module, "function": function, "parameters": {}}


def test_missing_module_of_a_failed_requirement_says_why() -> None:
    result = execute_item(_item("broken_pkg.sub"), "w1", FAILED_INSTALL)
    assert result["status"] == "Failed"
    assert result["error"] == (
        "ModuleNotFoundError: No module named 'broken_pkg' (the requirement "
        "Broken_Pkg==2.0 failed to install: error: command 'gcc' failed)"
    )


def test_missing_module_unrelated_to_a_failure_is_plain() -> None:
    result = execute_item(_item("some_other_module"), "w1", FAILED_INSTALL)
    assert result["error"] == "ModuleNotFoundError: No module named 'some_other_module'"


def test_a_whole_failed_install_is_mentioned() -> None:
    install = {**FAILED_INSTALL, "failed": [{"package": "requirements.txt",
                                             "error": "Redis and store unreachable"}]}
    result = execute_item(_item("anything_missing"), "w1", install)
    assert result["error"].endswith(
        "(the requirement requirements.txt failed to install: Redis and store unreachable)")
