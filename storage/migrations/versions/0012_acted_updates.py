"""Coordinators' actions remember the update that made them, so a retried update acts once.

Revision ID: 0012
Revises: 0011
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from storage.types import UtcTimestamp

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "acted_updates",
        sa.Column("update_id", sa.BigInteger(), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("action", sa.String(48), nullable=False),
        sa.Column("at", UtcTimestamp(), nullable=False),
        sa.PrimaryKeyConstraint("update_id", "seq", name="pk_acted_updates"),
    )
    op.create_index("ix_acted_updates_at", "acted_updates", ["at"])


def downgrade() -> None:
    op.drop_index("ix_acted_updates_at", table_name="acted_updates")
    op.drop_table("acted_updates")
