"""Seals on cached workspace files: only the key's holder makes one, and a
seal holds for one path and one text."""

from __future__ import annotations

import pytest

from src.core import module_seal
from src.core.module_seal import SealKeyUnknown, seal, seal_key, unseal, use_seal_key

KEY = b"k" * 32
TEXT = "def main():\n    return 'hi'\n"


def test_a_sealed_text_unseals_to_itself() -> None:
    assert unseal(KEY, "flows/a.py", seal(KEY, "flows/a.py", TEXT)) == TEXT
    assert unseal(KEY, "flows/a.py", seal(KEY, "flows/a.py", "")) == ""
    odd = "caf\u00e9 \U0001f600 : with colons:\n"
    assert unseal(KEY, "flows/a.py", seal(KEY, "flows/a.py", odd)) == odd


@pytest.mark.parametrize("value", [
    TEXT,  # never sealed
    "",
    "0" * 64 + ":" + TEXT,  # a seal of its own making
    seal(KEY, "flows/a.py", TEXT)[:-1] + "X",  # the text altered
    seal(KEY, "flows/b.py", TEXT),  # another file's sealed copy
    seal(b"x" * 32, "flows/a.py", TEXT),  # another key
    seal(KEY, "flows/a.py", TEXT).replace(":", ";", 1),
    seal(KEY, "flows/a.py", TEXT)[:64],
])
def test_anything_else_is_refused(value: str) -> None:
    assert unseal(KEY, "flows/a.py", value) is None


def test_a_worker_uses_the_key_its_pool_handed_it_and_never_the_store() -> None:
    try:
        use_seal_key(KEY)
        assert seal_key() == KEY
        use_seal_key(None)  # the pool could not read it
        with pytest.raises(SealKeyUnknown, match="seal key"):
            seal_key()
    finally:
        module_seal._handed = None
