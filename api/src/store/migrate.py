"""Bring the store's schema up to date (the init step runs this before anything
reads the store)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, text

from src.store.database import connection_scope

_MIGRATIONS = Path(__file__).resolve().parent / "migrations"
# Any fixed number: the key of the PostgreSQL advisory lock held while migrating.
_MIGRATION_LOCK_KEY = 0x62696672  # "bifr"


def _config(connection: Connection) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(_MIGRATIONS))
    url = connection.engine.url.render_as_string(hide_password=False)
    # ConfigParser interpolates "%", which URL-encoded passwords contain.
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    cfg.attributes["connection"] = connection
    return cfg


def upgrade_to_head(url: str | None = None) -> None:
    """Apply every pending migration; a no-op when the schema is current.

    Raises StoreUnavailable when the store cannot be reached.
    """
    with connection_scope(url) as connection:
        if connection.dialect.name == "postgresql":
            # Hosts starting at once against one server would race to create the
            # tables; the lock lets one migrate and the others find it done.
            connection.execute(
                text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK_KEY}
            )
        command.upgrade(_config(connection), "head")
