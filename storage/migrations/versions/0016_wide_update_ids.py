"""Telegram update ids as 64-bit integers on PostgreSQL, as acted_updates already has them.

The Bot API documents update ids only as increasing integers; a bot's ids are past 2^31 in some
installations, and a 32-bit `inbox.update_id` then refuses every update (polling stops, Telegram's webhook
resends forever). SQLite's INTEGER is 64-bit already: nothing changes there.

Revision ID: 0016
Revises: 0015
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.alter_column(
            "inbox", "update_id", type_=sa.BigInteger(), existing_type=sa.Integer(), existing_nullable=False
        )


def downgrade() -> None:
    # Fails if an id past 2^31 is stored: narrowing would lose it.
    if op.get_bind().dialect.name == "postgresql":
        op.alter_column(
            "inbox", "update_id", type_=sa.Integer(), existing_type=sa.BigInteger(), existing_nullable=False
        )
