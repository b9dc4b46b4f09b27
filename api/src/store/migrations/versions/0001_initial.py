"""Workspace files and the requirements history.

Revision ID: 0001
Revises:
Create Date: 2025-01-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "workspace_files",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("path", sa.String(1024), nullable=False),
        sa.Column("content", sa.Text(), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("entity_type", sa.String(32), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_workspace_files"),
        sa.UniqueConstraint("path", name="uq_workspace_files_path"),
    )
    op.create_table(
        "requirements_history",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("old_hash", sa.String(64), nullable=True),
        sa.Column("new_hash", sa.String(64), nullable=False),
        sa.Column("content", sa.Text(), nullable=False),
        sa.Column("changed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("change", sa.String(2000), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_requirements_history"),
    )
    op.create_index("ix_requirements_history_changed_at", "requirements_history", ["changed_at"])


def downgrade() -> None:
    op.drop_index("ix_requirements_history_changed_at", table_name="requirements_history")
    op.drop_table("requirements_history")
    op.drop_table("workspace_files")
