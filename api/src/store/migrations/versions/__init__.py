"""Alembic revisions (a package so that wheels ship it; alembic skips this file)."""
