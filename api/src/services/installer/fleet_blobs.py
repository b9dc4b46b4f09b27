"""Where the fleet cache keeps the lock's own files: objects by key, in the
place `BIFROST_WHEEL_CACHE` names.

- `store`: the SQL store every host already shares (table `fleet_blobs`);
- `s3://bucket/prefix`, `gs://...`, `az://...`: object storage, through
  obstore, with the credentials and endpoint of the standard variables
  (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`,
  `AWS_ENDPOINT_URL` for MinIO and other S3-compatible servers);
- `file:///path` or `dir:/path`: a directory every host mounts.

Every method may raise `FleetCacheUnreachable`: the cache only saves work,
and its callers go to the index instead. `check` is for start-up, where a
bucket that does not exist or credentials that are refused stop the start
with the reason.

obstore and SQLAlchemy are imported when a backend is opened, not with this
module: worker processes import it and must stay small.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from src.foundation.settings import Settings

if TYPE_CHECKING:
    from obstore.store import ClientConfig
    from sqlalchemy.orm import Session

logger = logging.getLogger(__name__)

OBJECT_SCHEMES = ("s3://", "gs://", "az://", "abfs://", "file://")
# A cache that stops answering costs a start this much at most per call.
REQUEST_TIMEOUT = "60s"
CONNECT_TIMEOUT = "5s"
RETRIES = 2
RETRY_TIMEOUT = timedelta(seconds=15)


class FleetCacheUnreachable(Exception):
    """The fleet cache did not answer, or refused (its reason in the message)."""


class FleetCacheRefused(FleetCacheUnreachable):
    """The fleet cache answered, and said no: a bucket that does not exist,
    credentials it refuses, a write it does not allow."""


def check_at_start(settings: Settings) -> str | None:
    """Why a process must not start with this fleet cache (None: it may).
    A cache that answers "no" stops the start; one that does not answer at
    all costs a log line: it may be back by the first install, and every
    install falls back to the index anyway."""
    if settings.wheel_cache.strip() == "store":
        return None  # the store is checked by everything that starts
    try:
        open_blobs(settings).check()
    except FleetCacheRefused as exc:
        return f"BIFROST_WHEEL_CACHE={settings.wheel_cache}: {exc}"
    except FleetCacheUnreachable as exc:
        logger.warning("%s; starting anyway: installs use the index until it answers", exc)
    return None


class Blobs(Protocol):
    """Objects by key ("files/<sha256>/<name>", "lock-files/<digest>/<platform>.json")."""

    where: str  # for log lines: what BIFROST_WHEEL_CACHE says

    def add(self, key: str, data: bytes) -> None:
        """Store `data` unless `key` holds something already (content-addressed keys)."""

    def replace(self, key: str, data: bytes) -> None: ...

    def get(self, key: str) -> bytes | None: ...

    def keys(self, prefix: str) -> list[str]: ...

    def check(self) -> None:
        """Raise FleetCacheUnreachable unless the cache can be listed and written."""


def open_blobs(settings: Settings) -> Blobs:
    """The backend `BIFROST_WHEEL_CACHE` names (validated by `Settings`)."""
    value = settings.wheel_cache.strip()
    if value == "store":
        return StoreBlobs(settings)
    if value.startswith("dir:"):
        value = Path(value[4:].strip()).expanduser().resolve().as_uri()
    return ObjectBlobs(value)


class ObjectBlobs:
    """Object storage (or a directory) through obstore."""

    def __init__(self, url: str) -> None:
        self.where = url
        self._store = _object_store(url)

    def add(self, key: str, data: bytes) -> None:
        import obstore
        from obstore.exceptions import AlreadyExistsError

        with self._answering(f"writing {key}"), contextlib.suppress(AlreadyExistsError):
            obstore.put(self._store, key, data, mode="create")

    def replace(self, key: str, data: bytes) -> None:
        import obstore

        with self._answering(f"writing {key}"):
            obstore.put(self._store, key, data)

    def get(self, key: str) -> bytes | None:
        import obstore

        with self._answering(f"reading {key}"):
            try:
                return bytes(obstore.get(self._store, key).bytes())
            except FileNotFoundError:
                return None

    def keys(self, prefix: str) -> list[str]:
        import obstore

        with self._answering(f"listing {prefix}"):
            try:
                return sorted(meta["path"] for batch in obstore.list(self._store, prefix=prefix)
                              for meta in batch)
            except FileNotFoundError:  # a directory not made yet
                return []

    def check(self) -> None:
        import obstore

        with self._answering("checking it"):
            for _ in obstore.list(self._store, prefix="lock-files/", chunk_size=1):
                break
            obstore.put(self._store, "bifrost-check", b"written by a starting host\n")

    @contextlib.contextmanager
    def _answering(self, what: str) -> Iterator[None]:
        from obstore.exceptions import PermissionDeniedError, UnauthenticatedError

        try:
            yield
        except (FileNotFoundError, FleetCacheUnreachable):
            raise
        except Exception as exc:  # obstore's errors, OSError: the cache did not answer
            refused = isinstance(exc, PermissionDeniedError | UnauthenticatedError) or (
                _ANSWERED_NO.search(str(exc)) is not None)
            kind = FleetCacheRefused if refused else FleetCacheUnreachable
            raise kind(f"the fleet cache {self.where} failed {what}: {_reason(exc)}") from exc


def _object_store(url: str) -> Any:
    from obstore.store import LocalStore, from_url

    if url.startswith("file://"):
        path = Path(url.removeprefix("file://")).expanduser()
        path.mkdir(parents=True, exist_ok=True)
        return LocalStore(path)
    endpoint = os.environ.get("AWS_ENDPOINT_URL", "")
    options: ClientConfig = {"timeout": REQUEST_TIMEOUT, "connect_timeout": CONNECT_TIMEOUT,
                             "allow_http": endpoint.startswith("http://")}
    return from_url(url, client_options=options,
                    retry_config={"max_retries": RETRIES, "retry_timeout": RETRY_TIMEOUT,
                                  "backoff": {"init_backoff": timedelta(milliseconds=100),
                                              "max_backoff": timedelta(seconds=2),
                                              "base": 2}})


# An S3 answer that says no (a 4xx status), and the error code in its body.
_ANSWERED_NO = re.compile(r"status code: 4\d\d")
_ERROR_CODE = re.compile(r"<Code>([A-Za-z]+)</Code>")


def _reason(exc: BaseException) -> str:
    """The first line of an obstore error, with the server's error code."""
    text = str(exc)
    lines = text.strip().splitlines()
    code = _ERROR_CODE.search(text)
    first = lines[0].split(": <?xml")[0] if lines else ""
    return (f"{code.group(1)}: " if code else "") + f"{type(exc).__name__}: {first}"[:500]


@contextlib.contextmanager
def store_session(settings: Settings) -> Iterator[Session]:
    """A session on the store the settings name, for the fleet cache's `store`
    backends; FleetCacheUnreachable when there is none, or it does not answer."""
    from src.store.database import (
        StoreUnavailable,
        resolve_database_url,
        session_scope,
        store_exists,
    )

    url = resolve_database_url(settings)
    if not store_exists(url):
        # A worker must not leave an empty SQLite file where the store should be.
        raise FleetCacheUnreachable(f"there is no store at {url}")
    try:
        with session_scope(url) as session:
            yield session
    except StoreUnavailable as exc:
        raise FleetCacheUnreachable(f"the store did not answer: {exc}") from exc


class StoreBlobs:
    """Blobs in the SQL store (table `fleet_blobs`)."""

    where = "store"

    def __init__(self, settings: Settings) -> None:
        self._settings = settings

    def _session(self) -> contextlib.AbstractContextManager[Session]:
        return store_session(self._settings)

    def add(self, key: str, data: bytes) -> None:
        from src.store.fleet_files import put_blob

        with self._session() as session:
            put_blob(session, key, data, replace=False)

    def replace(self, key: str, data: bytes) -> None:
        from src.store.fleet_files import put_blob

        with self._session() as session:
            put_blob(session, key, data, replace=True)

    def get(self, key: str) -> bytes | None:
        from src.store.fleet_files import get_blob

        with self._session() as session:
            return get_blob(session, key)

    def keys(self, prefix: str) -> list[str]:
        from src.store.fleet_files import blob_keys

        with self._session() as session:
            return blob_keys(session, prefix)

    def check(self) -> None:
        self.keys("lock-files/")
