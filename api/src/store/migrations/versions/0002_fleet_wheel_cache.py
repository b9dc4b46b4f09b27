"""The fleet wheel cache: wheels one host built, and which wheels make up the
environment of each requirements hash, so that every host can rebuild it
without a package index.

Revision ID: 0002
Revises: 0001
Create Date: 2025-01-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "fleet_wheels",
        sa.Column("filename", sa.String(512), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("content", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("filename", name="pk_fleet_wheels"),
    )
    op.create_table(
        "fleet_manifests",
        sa.Column("requirements_hash", sa.String(64), nullable=False),
        sa.Column("filenames", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("requirements_hash", name="pk_fleet_manifests"),
    )


def downgrade() -> None:
    op.drop_table("fleet_manifests")
    op.drop_table("fleet_wheels")
