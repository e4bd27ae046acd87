"""Drafts and staged evidence name their owner by a keyed tag, the pseudonym sealed beside it.

Revision ID: 0011
Revises: 0010
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Existing rows keep their clear pseudonym (the migration has no key); the first scrub after the start
    # re-tags them and seals the owner.
    with op.batch_alter_table("drafts") as batch:
        batch.add_column(sa.Column("owner", sa.LargeBinary(), nullable=True))
    with op.batch_alter_table("evidence_staged") as batch:
        batch.add_column(sa.Column("owner_seal", sa.LargeBinary(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("evidence_staged") as batch:
        batch.drop_column("owner_seal")
    with op.batch_alter_table("drafts") as batch:
        batch.drop_column("owner")
