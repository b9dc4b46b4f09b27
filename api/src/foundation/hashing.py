"""The content hash used everywhere: sha256 hex of the UTF-8 text."""

from __future__ import annotations

import hashlib


def sha256_hex(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


# The hash of requirements.txt before it was ever written: an empty file.
EMPTY_HASH = sha256_hex("")
