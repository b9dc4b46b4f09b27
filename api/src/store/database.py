"""Engines and sessions for the store.

One engine per URL per process: engines own connection pools, so they are
created lazily and cached. A forked child must call `dispose_engines(close=False)`
before its first query, so that it never shares its parent's connections.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event, make_url
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.orm import Session

from src.foundation.hardening import PRIVATE_DIR_MODE, narrow_files
from src.foundation.settings import Settings, get_settings

# psycopg 3 is the driver we ship; plain `postgresql://` would mean psycopg2.
_POSTGRES_SCHEMES = ("postgresql://", "postgres://")
_POSTGRES_DRIVER_SCHEME = "postgresql+psycopg://"
# Seconds; an unreachable server should fail a request fast, not hang it.
_POSTGRES_CONNECT_TIMEOUT = 5
# Seconds a SQLite writer waits for another writer (API and workers share the file).
_SQLITE_BUSY_TIMEOUT = 30

_engines: dict[str, Engine] = {}
_engines_lock = threading.Lock()


class StoreUnavailable(Exception):
    """The store cannot be reached or the connection to it was lost."""


def normalise_database_url(url: str) -> str:
    for scheme in _POSTGRES_SCHEMES:
        if url.startswith(scheme):
            return _POSTGRES_DRIVER_SCHEME + url[len(scheme) :]
    return url


def resolve_database_url(settings: Settings | None = None) -> str:
    """`DATABASE_URL`, else the SQLite file `bifrost.db` in the data directory."""
    settings = settings or get_settings()
    if settings.database_url:
        return normalise_database_url(settings.database_url)
    return f"sqlite:///{settings.data_path / 'bifrost.db'}"


def _sqlite_file(url: str) -> Path | None:
    """The database file of a SQLite URL; None for other databases and in-memory SQLite."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    return Path(parsed.database)


def store_exists(url: str | None = None) -> bool:
    """Whether there is a store to read, without creating one: readers that only
    fall back to the store (workers) must not leave an empty SQLite file behind."""
    path = _sqlite_file(normalise_database_url(url or resolve_database_url()))
    return path is None or path.exists()


# What SQLite keeps beside the database file, depending on the journal mode.
_SQLITE_COMPANIONS = ("-wal", "-shm", "-journal")


def _on_sqlite_connect(path: Path, dbapi_connection: Any, record: Any) -> None:
    # The store holds the workspace and requirements: owner only. SQLite creates
    # the file with the default mode, and its -wal and -shm files with the
    # file's mode, so narrowing the file first covers them as they appear.
    narrow_files([path])
    _set_sqlite_pragmas(dbapi_connection, record)
    narrow_files([path.with_name(path.name + suffix) for suffix in _SQLITE_COMPANIONS])


def _set_sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    try:
        # busy_timeout first: switching a fresh file to WAL needs a lock that
        # another process may hold for a moment.
        cursor.execute(f"PRAGMA busy_timeout={_SQLITE_BUSY_TIMEOUT * 1000}")
        # WAL lets readers (workers) proceed while a writer (the API) commits.
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
    finally:
        cursor.close()


def _create_engine(url: str) -> Engine:
    path = _sqlite_file(url)
    if path is not None:
        # A new data dir is private (0700); an operator's existing one keeps its mode.
        path.parent.mkdir(mode=PRIVATE_DIR_MODE, parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": _SQLITE_BUSY_TIMEOUT})
        event.listen(engine, "connect", partial(_on_sqlite_connect, path))
        return engine
    if make_url(url).get_backend_name() == "postgresql":
        return create_engine(
            url,
            pool_pre_ping=True,
            connect_args={"connect_timeout": _POSTGRES_CONNECT_TIMEOUT},
        )
    return create_engine(url)


def get_engine(url: str | None = None) -> Engine:
    url = normalise_database_url(url or resolve_database_url())
    with _engines_lock:
        engine = _engines.get(url)
        if engine is None:
            engine = _engines[url] = _create_engine(url)
        return engine


def dispose_engines(close: bool = True) -> None:
    """Forget every cached engine; `close=False` in a forked child leaves the
    parent's connections open for the parent."""
    with _engines_lock:
        engines = list(_engines.values())
        _engines.clear()
    for engine in engines:
        engine.dispose(close=close)


def _raise_if_unavailable(exc: DBAPIError, engine: Engine, connecting: bool) -> None:
    """Turn a failure to reach the store, or a lost connection, into StoreUnavailable."""
    if isinstance(exc, OperationalError | InterfaceError) and (
        connecting or exc.connection_invalidated
    ):
        where = engine.url.render_as_string(hide_password=True)
        raise StoreUnavailable(f"store unavailable at {where}: {exc.orig or exc}") from exc


@contextmanager
def session_scope(url: str | None = None) -> Iterator[Session]:
    """A session that commits when the block succeeds and rolls back otherwise.

    Raises StoreUnavailable when the store cannot be reached or the connection
    is lost; other database errors pass through unchanged.
    """
    engine = get_engine(url)
    # Objects stay readable after the commit: callers return them from the scope.
    with Session(engine, expire_on_commit=False) as session:
        connecting = True
        try:
            # Connect now, so that an unreachable store is told apart from a
            # failing statement.
            session.connection()
            connecting = False
            yield session
            session.commit()
        except BaseException as exc:
            session.rollback()
            if isinstance(exc, DBAPIError):
                _raise_if_unavailable(exc, engine, connecting)
            raise


@contextmanager
def connection_scope(url: str | None = None) -> Iterator[Connection]:
    """A Core connection in a transaction (committed on success), for schema work;
    errors are translated as in `session_scope`."""
    engine = get_engine(url)
    try:
        connection = engine.connect()
    except DBAPIError as exc:
        _raise_if_unavailable(exc, engine, connecting=True)
        raise
    with connection:
        try:
            with connection.begin():
                yield connection
        except DBAPIError as exc:
            _raise_if_unavailable(exc, engine, connecting=False)
            raise
