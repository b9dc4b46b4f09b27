"""The requirements write path (src.services.packages) with the cache's
write-through mocked: conflicts are retried in one place, with a bound, and
what is written is validated once."""

from __future__ import annotations

import contextlib
from unittest.mock import MagicMock

import pytest

from src.foundation import requirements
from src.foundation.hashing import EMPTY_HASH, sha256_hex
from src.services import packages
from src.store.files import RequirementsConflict

CONTENT = "alpha==1.0\n"
SAVED = {"content": CONTENT, "hash": sha256_hex(CONTENT)}


@pytest.fixture(autouse=True)
def locks(monkeypatch: pytest.MonkeyPatch) -> MagicMock:
    """Each write's lock (resolved by uv in the real write path, tested over
    HTTP in tests/integration/api/test_locked_writes.py) recorded instead,
    and no writers' lock in Redis."""
    lock_for = MagicMock()
    monkeypatch.setattr(packages, "lock_for", lock_for)
    monkeypatch.setattr(packages, "stored_lock", MagicMock(return_value=None))
    monkeypatch.setattr(packages, "one_writer_at_a_time", contextlib.nullcontext)
    return lock_for


@pytest.fixture
def save(monkeypatch: pytest.MonkeyPatch) -> MagicMock:
    """The cache's write-through (one compare-and-set, then the key)."""
    mock = MagicMock(return_value=SAVED)
    monkeypatch.setattr(packages, "save_requirements_sync", mock)
    return mock


@pytest.fixture
def stored(monkeypatch: pytest.MonkeyPatch) -> MagicMock:
    mock = MagicMock(return_value=None)
    monkeypatch.setattr(packages, "read_store_requirements", mock)
    return mock


@pytest.fixture
def back_off(monkeypatch: pytest.MonkeyPatch) -> MagicMock:
    mock = MagicMock()
    monkeypatch.setattr(packages, "_back_off", mock)
    return mock


@pytest.fixture
def no_platform_or_recycle(monkeypatch: pytest.MonkeyPatch) -> MagicMock:
    """No platform check, and the recycle broadcast recorded instead of sent."""
    recycle = MagicMock(return_value=0)
    monkeypatch.setattr(packages, "check_platform", MagicMock())
    monkeypatch.setattr(packages, "publish_recycle", recycle)
    return recycle


@pytest.fixture
def validate(monkeypatch: pytest.MonkeyPatch) -> MagicMock:
    # Counted under both names, so validation anywhere below would show up.
    mock = MagicMock(wraps=requirements.validate_requirements)
    monkeypatch.setattr(packages, "validate_requirements", mock)
    monkeypatch.setattr(requirements, "validate_requirements", mock)
    return mock


def conflicts(count: int) -> list[object]:
    return [RequirementsConflict(f"hash-{n}") for n in range(count)] + [SAVED]


def test_an_unconditional_put_is_retried_until_it_lands(
    save: MagicMock, back_off: MagicMock, no_platform_or_recycle: MagicMock
) -> None:
    save.side_effect = conflicts(3)
    assert packages.put_requirements(CONTENT) == SAVED
    assert save.call_count == 4
    save.assert_called_with(CONTENT, None, "put")
    assert [call.args for call in back_off.call_args_list] == [(1,), (2,), (3,)]
    no_platform_or_recycle.assert_called_once()


def test_a_put_with_an_expected_hash_is_not_retried(
    save: MagicMock, back_off: MagicMock, no_platform_or_recycle: MagicMock
) -> None:
    save.side_effect = RequirementsConflict("theirs")
    with pytest.raises(RequirementsConflict) as conflict:
        packages.put_requirements(CONTENT, expected_hash="mine")
    assert conflict.value.current_hash == "theirs"
    save.assert_called_once_with(CONTENT, "mine", "put")
    back_off.assert_not_called()
    no_platform_or_recycle.assert_not_called()


def test_the_retries_are_bounded(
    save: MagicMock, back_off: MagicMock, no_platform_or_recycle: MagicMock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(packages, "WRITE_ATTEMPTS", 5)
    save.side_effect = RequirementsConflict("theirs")
    with pytest.raises(packages.RequirementsBusy) as busy:
        packages.put_requirements(CONTENT)
    assert str(busy.value) == "requirements.txt kept changing; gave up after 5 tries"
    assert isinstance(busy.value, RuntimeError)
    assert isinstance(busy.value.__cause__, RequirementsConflict)
    assert save.call_count == 5
    assert back_off.call_count == 4  # none after the last attempt
    no_platform_or_recycle.assert_not_called()


def test_an_edit_is_bounded_too_and_redone_on_the_latest_content(
    save: MagicMock, stored: MagicMock, back_off: MagicMock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(packages, "WRITE_ATTEMPTS", 3)
    versions = ["a==1\n", "a==1\nb==1\n", "a==1\nb==1\nc==1\n"]
    stored.side_effect = [{"content": v, "hash": sha256_hex(v)} for v in versions]
    save.side_effect = RequirementsConflict("theirs")
    with pytest.raises(packages.RequirementsBusy, match="gave up after 3 tries"):
        packages.add_package_line("new==2")
    assert [call.args for call in save.call_args_list] == [
        (f"{v}new==2\n", sha256_hex(v), "install new==2") for v in versions
    ]


def test_the_default_bound() -> None:
    assert packages.WRITE_ATTEMPTS == 200


def test_a_put_is_validated_once_however_often_it_is_retried(
    save: MagicMock, back_off: MagicMock, no_platform_or_recycle: MagicMock,
    validate: MagicMock,
) -> None:
    save.side_effect = conflicts(2)
    packages.put_requirements(CONTENT)
    validate.assert_called_once_with(CONTENT)
    assert save.call_count == 3


def test_an_edit_validates_the_text_it_writes_once(
    save: MagicMock, stored: MagicMock, validate: MagicMock
) -> None:
    stored.return_value = None  # nothing saved yet: the empty file
    assert packages.add_package_line("alpha==1.0") == (SAVED, True)
    validate.assert_called_once_with(CONTENT)
    save.assert_called_once_with(CONTENT, EMPTY_HASH, "install alpha==1.0")


def test_an_edit_that_changes_nothing_writes_nothing(
    save: MagicMock, stored: MagicMock, validate: MagicMock
) -> None:
    stored.return_value = SAVED
    assert packages.add_package_line("alpha==1.0") == (SAVED, False)
    save.assert_not_called()
    validate.assert_not_called()


def test_invalid_content_is_refused_before_any_write(
    save: MagicMock, no_platform_or_recycle: MagicMock
) -> None:
    with pytest.raises(requirements.InvalidRequirements):
        packages.put_requirements("-i https://evil.example/simple\n")
    save.assert_not_called()


def test_the_lock_is_stored_before_the_requirements_that_name_its_hash(
    locks: MagicMock, save: MagicMock, stored: MagicMock, no_platform_or_recycle: MagicMock
) -> None:
    order: list[str] = []
    locks.side_effect = lambda *args, **kwargs: order.append("lock")
    save.side_effect = lambda *args, **kwargs: order.append("requirements") or SAVED
    packages.put_requirements(CONTENT)
    assert order == ["lock", "requirements"]
    assert locks.call_args.args[:2] == (CONTENT, sha256_hex(CONTENT))
