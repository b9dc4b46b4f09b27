"""The build context's logger: each line begins with the worker's id, as the
engine's lines always have, under the engine's logger name."""

from __future__ import annotations

import logging

import pytest

from src.services.installer.context import BuildContext, WorkerLog


def test_lines_begin_with_the_worker_id(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    log = WorkerLog("w-1")
    log.info("+ %s (%d ms)", "alpha==1.0", 12)
    log.warning("no arguments: 100% sure")
    assert [r.getMessage() for r in caplog.records] == [
        "[w-1] + alpha==1.0 (12 ms)", "[w-1] no arguments: 100% sure"]
    assert {r.name for r in caplog.records} == {"src.services.installer.engine"}


def test_a_percent_sign_in_the_worker_id_is_text(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    log = WorkerLog("w%d")
    log.info("Building %s", "abc")
    log.info("plain")
    assert [r.getMessage() for r in caplog.records] == ["[w%d] Building abc", "[w%d] plain"]


def test_the_record_names_the_line_that_logged(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    WorkerLog("w").info("here")
    record = caplog.records[0]
    assert record.filename == "test_context.py"
    assert record.funcName == "test_the_record_names_the_line_that_logged"


def test_the_context_reads_the_requirement_lines_once() -> None:
    from src.foundation.settings import get_settings

    ctx = BuildContext.create("# ops\nalpha==1.0\n\nbeta>=2  # why\n", "h" * 64, "w",
                              get_settings())
    assert ctx.lines == ["alpha==1.0", "beta>=2"]
    assert ctx.short_hash == "h" * 12
    assert ctx.envs.root == get_settings().packages_dir / ".envs"
    assert ctx.search_paths(ctx.envs.root)[0] == str(ctx.envs.root)
