"""Seals on workspace files in the module cache.

Redis is a cache that any client holding its password can write. A
workspace file is cached sealed: an HMAC-SHA256 of its path and text, under
a key only the store holds (`platform_secrets`, made by the first host that
needs it, the same for the whole fleet). Whoever reached Redis without the
store cannot seal a text of their own, so a worker refuses it and reads the
file again once a process with the store re-cached it (`module_cache`).

Who seals (the API on a write, a pool or the API warming the cache) reads
the key from the store; a worker, which holds no store after its start, is
handed it by its pool (`use_seal_key`), as an argument. An execution never
holds it: it asks its worker for files (`workspace_requests.py`).

What a seal cannot tell: an older sealed text of the same path, kept by
someone who reached Redis, is still the platform's own and is taken.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import threading

logger = logging.getLogger(__name__)

SEAL_SECRET = "module-seal"
_DIGEST_CHARS = 64  # hex of a SHA-256
_SEPARATOR = ":"


class SealKeyUnknown(RuntimeError):
    """This process has no seal key: no store, and none was handed to it."""


def seal(key: bytes, path: str, text: str) -> str:
    """What the cache holds for `path`: its seal, then its text."""
    return _digest(key, path, text) + _SEPARATOR + text


def unseal(key: bytes, path: str, value: str) -> str | None:
    """The text of a cached value of `path`; None unless its seal is the
    platform's (another path's value, an unsealed or altered text)."""
    digest, separator, text = value[:_DIGEST_CHARS], value[_DIGEST_CHARS:_DIGEST_CHARS + 1], \
        value[_DIGEST_CHARS + 1:]
    if separator != _SEPARATOR or not hmac.compare_digest(digest, _digest(key, path, text)):
        return None
    return text


def _digest(key: bytes, path: str, text: str) -> str:
    message = path.encode() + b"\0" + text.encode("utf-8", "surrogatepass")
    return hmac.new(key, message, hashlib.sha256).hexdigest()


_lock = threading.Lock()
_handed: tuple[bytes | None] | None = None  # given by the pool (`use_seal_key`)
_read: dict[str, bytes] = {}  # read from the store, by its URL


def use_seal_key(key: bytes | None) -> None:
    """Check with `key` in this process, and never read the store for it (a
    worker: its pool read it; None when the pool could not)."""
    global _handed
    _handed = (key,)


def seal_key() -> bytes:
    """The fleet's seal key: the one handed to this process, else the store's
    (read once per store; made there if the store has none)."""
    if _handed is not None:
        if _handed[0] is None:
            raise SealKeyUnknown("the pool could not read the seal key from the store when "
                                 "it started this worker: cached workspace files cannot be "
                                 "checked, so none is used")
        return _handed[0]
    from src.store.database import resolve_database_url

    url = resolve_database_url()
    with _lock:
        key = _read.get(url)
        if key is None:
            key = _read[url] = read_seal_key_from_store()
        return key


def read_seal_key_from_store() -> bytes:
    from src.store.database import session_scope
    from src.store.secrets import platform_secret

    with session_scope() as session:
        return platform_secret(session, SEAL_SECRET)


def seal_key_for_a_worker() -> bytes | None:
    """The key a pool hands a worker it starts; None (logged) when the store
    cannot be read: that worker then uses no cached workspace file."""
    try:
        return seal_key()
    except Exception as exc:  # a store down must not stop the pool from starting workers
        logger.warning("the module cache's seal key cannot be read from the store: a worker "
                       "started now imports no workspace file: %s", exc)
        return None
