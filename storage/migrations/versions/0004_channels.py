"""Registered channels and groups that receive public announcements.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from storage.types import UtcTimestamp

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "channels",
        sa.Column("chat_id", sa.BigInteger, autoincrement=False, nullable=False),
        sa.Column("added_at", UtcTimestamp, nullable=False),
        sa.PrimaryKeyConstraint("chat_id", name="pk_channels"),
    )


def downgrade() -> None:
    op.drop_table("channels")
