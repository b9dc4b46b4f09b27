"""A lock's pins as the installer gets them, and what the build context makes
of a lock it cannot read: no installer runs here (see
tests/integration/installer/test_locked_builds.py for real builds)."""

from __future__ import annotations

import pytest

from src.foundation.locks import InvalidLock, Lock, LockedPackage
from src.foundation.settings import get_settings
from src.services.installer import context as context_module
from src.services.installer.context import BuildContext
from src.services.installer.locked import batches, requirements_text

HASHED = LockedPackage("Alpha", "1.0", ("sha256:" + "a" * 64, "sha256:" + "b" * 64), ("x",))
BARE = LockedPackage("beta", "2.0")
H = "h" * 64


def test_the_lock_file_holds_exact_pins_with_or_without_hashes() -> None:
    assert requirements_text([HASHED, BARE], hashes=True) == (
        f"Alpha==1.0 --hash=sha256:{'a' * 64} --hash=sha256:{'b' * 64}\nbeta==2.0\n")
    assert requirements_text([HASHED, BARE], hashes=False) == "Alpha==1.0\nbeta==2.0\n"


def test_uv_takes_one_batch_and_pip_splits_hashed_from_unhashed() -> None:
    # pip turns hash checking on for a whole file when one line has a hash.
    assert batches("uv", [BARE, HASHED]) == [[BARE, HASHED]]
    assert batches("pip", [BARE, HASHED]) == [[HASHED], [BARE]]
    assert batches("pip", [HASHED]) == [[HASHED]]
    assert batches("pip", [BARE]) == [[BARE]]


def _context(monkeypatch: pytest.MonkeyPatch, read: object) -> BuildContext:
    def fake_read_lock(requirements_hash: str, worker_id: str = "-") -> Lock | None:
        assert (requirements_hash, worker_id) == (H, "w1")
        if isinstance(read, BaseException):
            raise read
        return read  # type: ignore[return-value]

    monkeypatch.setattr(context_module, "read_lock", fake_read_lock)
    ctx = BuildContext.create("alpha\n", H, "w1", get_settings())
    ctx.load_lock()
    return ctx


def test_a_lock_keys_the_fleet_cache_by_its_digest(monkeypatch: pytest.MonkeyPatch) -> None:
    lock = Lock.of(H, [HASHED, BARE])
    ctx = _context(monkeypatch, lock)
    assert ctx.lock == lock and ctx.lock_digest == lock.digest() != H
    assert ctx.cache_key == lock.digest() and ctx.lock_problem is None


def test_no_lock_keys_the_fleet_cache_by_the_hash(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO")
    ctx = _context(monkeypatch, None)
    assert ctx.lock is None and ctx.lock_digest is None and ctx.cache_key == H
    ctx.log_resolving()
    assert caplog.messages == [f"[w1] No lock for requirements {H[:12]}: resolving here"]


@pytest.mark.parametrize("error, reason", [
    (InvalidLock("line 2: 'x' is not an exact pin (name==version)"),
     "line 2: 'x' is not an exact pin (name==version)"),
    (RuntimeError("surprise"), "RuntimeError: surprise"),  # never stops a start-up
])
def test_a_lock_that_cannot_be_read_is_resolved_here(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
    error: Exception, reason: str,
) -> None:
    ctx = _context(monkeypatch, error)
    assert ctx.lock is None and ctx.cache_key == H and ctx.lock_problem == reason
    ctx.log_resolving()
    assert caplog.messages == [
        f"[w1] The lock for requirements {H[:12]} cannot be read ({reason}): resolving here"]
