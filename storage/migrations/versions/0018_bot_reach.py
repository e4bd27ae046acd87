"""Which of the organisation's bots can write to each person, sealed (backup bots, #15).

Revision ID: 0018
Revises: 0017
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from storage.types import UtcTimestamp

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "reach",
        sa.Column(
            "pseudonym",
            sa.String(64),
            sa.ForeignKey("users.pseudonym", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("chat_key", sa.String(64), nullable=False),
        sa.Column("sealed", sa.LargeBinary(), nullable=False),
        sa.Column("updated_at", UtcTimestamp(), nullable=False),
    )
    op.create_index("ix_reach_chat_key", "reach", ["chat_key"], unique=True)


def downgrade() -> None:
    op.drop_index("ix_reach_chat_key", table_name="reach")
    op.drop_table("reach")
