"""The Telegram accounts of role holders (sealed), and removals from the coordinators' group under way.

Revision ID: 0013
Revises: 0012
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from storage.types import UtcTimestamp

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Existing coordinators have no row yet: theirs is written the next time they use the bot.
    op.create_table(
        "coordinator_ids",
        sa.Column("pseudonym", sa.String(64), nullable=False),
        sa.Column("telegram_id", sa.LargeBinary(), nullable=False),
        sa.Column("captured_at", UtcTimestamp(), nullable=False),
        sa.ForeignKeyConstraint(
            ["pseudonym"], ["users.pseudonym"], name="fk_coordinator_ids_pseudonym_users", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("pseudonym", name="pk_coordinator_ids"),
    )
    op.create_table(
        "member_removals",
        sa.Column("ref", sa.String(40), nullable=False),
        sa.Column("pseudonym", sa.String(64), nullable=False),
        sa.Column("reason", sa.String(8), nullable=False),
        sa.Column("created_at", UtcTimestamp(), nullable=False),
        sa.CheckConstraint("reason IN ('revoked', 'stranger')", name="ck_member_removals_reason_known"),
        sa.PrimaryKeyConstraint("ref", name="pk_member_removals"),
    )


def downgrade() -> None:
    op.drop_table("member_removals")
    op.drop_table("coordinator_ids")
