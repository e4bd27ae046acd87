"""Alerts that hold in a crisis: every copy of a card, coordinators on duty, SOS escalation.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from storage.types import UtcTimestamp

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("reports") as batch:
        batch.add_column(sa.Column("escalate_at", UtcTimestamp, nullable=True))
        batch.add_column(sa.Column("escalations", sa.Integer, nullable=False, server_default=sa.text("0")))
    op.create_index("ix_reports_escalate_at", "reports", ["escalate_at"])
    op.create_table(
        "alert_copies",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("report_id", sa.Integer, nullable=False),
        sa.Column("uid", sa.String(32), nullable=False),
        sa.Column("chat_key", sa.String(64), nullable=False),
        sa.Column("chat", sa.LargeBinary, nullable=False),
        sa.Column("message_id", sa.Integer, nullable=False),
        sa.Column("holder", sa.String(64), nullable=True),
        sa.Column("created_at", UtcTimestamp, nullable=False),
        sa.ForeignKeyConstraint(
            ["report_id"], ["reports.id"], name="fk_alert_copies_report_id_reports", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_alert_copies"),
        sa.UniqueConstraint("uid", name="uq_alert_copies_uid"),
        sa.UniqueConstraint("report_id", "chat_key", "message_id", name="uq_alert_copies_report_id"),
    )
    op.create_index("ix_alert_copies_report_id", "alert_copies", ["report_id"])
    op.create_table(
        "duty",
        sa.Column("pseudonym", sa.String(64), nullable=False),
        sa.Column("chat", sa.LargeBinary, nullable=False),
        sa.Column("since", UtcTimestamp, nullable=False),
        sa.ForeignKeyConstraint(
            ["pseudonym"], ["users.pseudonym"], name="fk_duty_pseudonym_users", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("pseudonym", name="pk_duty"),
    )


def downgrade() -> None:
    op.drop_table("duty")
    op.drop_index("ix_alert_copies_report_id", "alert_copies")
    op.drop_table("alert_copies")
    op.drop_index("ix_reports_escalate_at", "reports")
    with op.batch_alter_table("reports") as batch:
        batch.drop_column("escalations")
        batch.drop_column("escalate_at")
