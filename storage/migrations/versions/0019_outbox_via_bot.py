"""The bot a row that acts on an existing message must go through (backup bots, #15).

An edit or a deletion names a message of one bot's chat: after a switch to a backup, only the bot that
sent the message can edit or delete it.

Revision ID: 0019
Revises: 0018
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0019"
down_revision = "0018"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("outbox") as batch:
        batch.add_column(sa.Column("via_bot", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("outbox") as batch:
        batch.drop_column("via_bot")
