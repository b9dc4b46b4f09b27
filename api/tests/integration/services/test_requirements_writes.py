"""The requirements write path (src.services.packages) through the real cache
and store (SQLite and PostgreSQL): validation, edits, concurrent writers."""

from __future__ import annotations

import json
import multiprocessing
from pathlib import Path
from unittest.mock import MagicMock

import pytest
import redis

from src.core import requirements_cache as rc
from src.foundation import requirements
from src.foundation.hashing import sha256_hex
from src.foundation.requirements import InvalidRequirements
from src.services import packages
from src.store.database import dispose_engines, session_scope
from src.store.models import RequirementsChange
from tests.support.wheels import build_wheel

CONTENT = "alpha==1.0\nbeta>=2  # why\n"


@pytest.fixture(autouse=True)
def index(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """What these writes name, as wheels: every write resolves its lock."""
    house = tmp_path / "index"
    for name, version in [("alpha", "1.0"), ("beta", "2"), ("foo-bar", "1.0"),
                          ("foo-bar", "2.0"), ("other", "1.0")]:
        build_wheel(house, name, version)
    for number in range(50):
        build_wheel(house, f"concurrent-pkg-{number}", "1.0")
    monkeypatch.setenv("PIP_FIND_LINKS", str(house))
    return house


def test_invalid_lines_are_refused_with_line_numbers_and_nothing_changes(
    system: str, redis_client: redis.Redis
) -> None:
    rc.save_requirements_sync(CONTENT)
    cached_before = redis_client.get(rc.REQUIREMENTS_KEY)
    bad = "ok==1\n-i https://evil.example/simple\nx @ https://e.example/x.whl\n./local\nfoo==\n"
    with pytest.raises(InvalidRequirements) as refused:
        packages.put_requirements(bad)
    assert [e.line_number for e in refused.value.errors] == [2, 3, 4, 5]
    assert rc.read_store_requirements() == {"content": CONTENT, "hash": sha256_hex(CONTENT)}
    assert redis_client.get(rc.REQUIREMENTS_KEY) == cached_before


def test_a_put_validates_its_content_once(
    system: str, redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Both the service's name and the foundation's: a writer further down that
    # imported the validator (even inside a function) would be counted too.
    validate = MagicMock(wraps=requirements.validate_requirements)
    monkeypatch.setattr(packages, "validate_requirements", validate)
    monkeypatch.setattr(requirements, "validate_requirements", validate)
    saved = packages.put_requirements(CONTENT)
    assert saved == {"content": CONTENT, "hash": sha256_hex(CONTENT)}
    validate.assert_called_once_with(CONTENT)
    assert json.loads(redis_client.get(rc.REQUIREMENTS_KEY) or "{}") == saved


def test_add_replace_and_remove_keep_other_lines(system: str) -> None:
    rc.save_requirements_sync(
        "# team pins\nFoo_Bar==1.0\nother[extra]>=1 ; python_version >= '3'\n"
    )
    cached, changed = packages.add_package_line("foo-bar==2.0")
    assert changed is True
    assert cached["content"] == (
        "# team pins\nfoo-bar==2.0\nother[extra]>=1 ; python_version >= '3'\n"
    )
    assert packages.add_package_line("foo-bar==2.0")[1] is False
    after = packages.remove_package_line("FOO.BAR")
    assert after["content"] == "# team pins\nother[extra]>=1 ; python_version >= '3'\n"
    with pytest.raises(KeyError):
        packages.remove_package_line("foo-bar")


def test_an_edit_that_would_make_the_file_invalid_is_refused(system: str) -> None:
    rc.save_requirements_sync("".join(f"p{i}==1\n" for i in range(1000)))
    with pytest.raises(InvalidRequirements, match="more than 1000 requirement lines"):
        packages.add_package_line("one-too-many==1")
    stored = rc.read_store_requirements()
    assert stored is not None and "one-too-many" not in stored["content"]


def _add_one(index: int, go: multiprocessing.synchronize.Event) -> None:
    dispose_engines(close=False)  # a forked child never shares its parent's connections
    go.wait(60)
    packages.add_package_line(f"concurrent-pkg-{index}==1.0")


def test_fifty_concurrent_adds_from_separate_processes_keep_all_fifty(
    system: str, redis_client: redis.Redis
) -> None:
    # fork: fifty interpreters importing SQLAlchemy afresh would cost ~30 s here
    context = multiprocessing.get_context("fork")
    go = context.Event()
    processes = [context.Process(target=_add_one, args=(i, go)) for i in range(50)]
    for process in processes:
        process.start()
    go.set()  # all at once
    for process in processes:
        # The writers take turns, each resolving once: ~13 s in all on an idle
        # two-core machine, several times that on a busy one.
        process.join(300)
        assert process.exitcode == 0
    stored = rc.read_store_requirements()
    assert stored is not None
    lines = stored["content"].splitlines()
    assert sorted(lines) == sorted(f"concurrent-pkg-{i}==1.0" for i in range(50))
    cached = json.loads(redis_client.get(rc.REQUIREMENTS_KEY) or "{}")
    with session_scope() as session:
        assert session.query(RequirementsChange).count() == 50
    # the cache may have been written by any of the last writers, but only with a
    # version the store held: never a lost edit.
    assert len(cached["content"].splitlines()) <= 50
