"""Transient keys lent between instances: each one's live epochs and public keys, and the sealed shares.

Revision ID: 0014
Revises: 0013
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from storage.types import UtcTimestamp

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "transient_peers",
        sa.Column("instance", sa.String(16), nullable=False),
        sa.Column("epoch", sa.BigInteger(), nullable=False),
        sa.Column("public_key", sa.LargeBinary(), nullable=False),
        sa.Column("seen_at", UtcTimestamp(), nullable=False),
        sa.PrimaryKeyConstraint("instance", "epoch", name="pk_transient_peers"),
    )
    op.create_table(
        "transient_shares",
        sa.Column("holder", sa.String(16), nullable=False),
        sa.Column("holder_epoch", sa.BigInteger(), nullable=False),
        sa.Column("owner", sa.String(16), nullable=False),
        sa.Column("epoch", sa.BigInteger(), nullable=False),
        sa.Column("sealed", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("holder", "holder_epoch", "owner", "epoch", name="pk_transient_shares"),
    )


def downgrade() -> None:
    op.drop_table("transient_shares")
    op.drop_table("transient_peers")
