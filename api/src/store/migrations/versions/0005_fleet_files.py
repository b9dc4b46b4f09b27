"""The fleet's copies of the lock's own files: blobs of the `store` backend
of the fleet cache, and the wheels one host built from an sdist for its
platform, with their sha256, which every reader checks.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "fleet_blobs",
        sa.Column("key", sa.String(1024), nullable=False),
        sa.Column("content", sa.LargeBinary(), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("key", name="pk_fleet_blobs"),
    )
    op.create_table(
        "fleet_built_wheels",
        sa.Column("source_sha256", sa.String(64), nullable=False),
        sa.Column("platform", sa.String(200), nullable=False),
        sa.Column("filename", sa.String(512), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("source_sha256", "platform", name="pk_fleet_built_wheels"),
    )


def downgrade() -> None:
    op.drop_table("fleet_built_wheels")
    op.drop_table("fleet_blobs")
