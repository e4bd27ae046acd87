"""The coordinators' workspace: triage state on reports, invites, team names, notes and the audit log.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from storage.types import UtcTimestamp

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("reports") as batch:
        batch.add_column(sa.Column("assignee", sa.String(64), nullable=True))
        batch.add_column(sa.Column("acknowledged_by", sa.String(64), nullable=True))
        batch.add_column(sa.Column("acknowledged_at", UtcTimestamp, nullable=True))
        batch.add_column(sa.Column("reason", sa.String(16), nullable=True))
        batch.add_column(sa.Column("duplicate_of", sa.String(16), nullable=True))
        batch.add_column(sa.Column("closed_at", UtcTimestamp, nullable=True))
        batch.add_column(sa.Column("revision", sa.Integer, nullable=False, server_default=sa.text("0")))
        batch.add_column(sa.Column("alert_chat", sa.BigInteger, nullable=True))
        batch.add_column(sa.Column("alert_message_id", sa.Integer, nullable=True))
        batch.create_check_constraint(
            "ck_reports_status_known", "status IN ('new', 'in_progress', 'verified', 'closed', 'rejected')"
        )
    op.create_index("ix_reports_category", "reports", ["category", "id"])
    op.create_index("ix_reports_region", "reports", ["region", "id"])
    op.create_index("ix_reports_assignee", "reports", ["assignee", "id"])
    op.create_index("ix_reports_created_at", "reports", ["created_at"])
    # Lists filtered by status alone walk this in id order instead of sorting every match.
    op.create_index("ix_reports_status_id", "reports", ["status", "id"])
    op.create_table(
        "invites",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("token_hash", sa.String(64), nullable=False),
        sa.Column("created_by", sa.String(64), nullable=False),
        sa.Column("created_at", UtcTimestamp, nullable=False),
        sa.Column("expires_at", UtcTimestamp, nullable=False),
        sa.Column("used_by", sa.String(64), nullable=True),
        sa.Column("used_at", UtcTimestamp, nullable=True),
        sa.Column("withdrawn_at", UtcTimestamp, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_invites"),
        sa.UniqueConstraint("token_hash", name="uq_invites_token_hash"),
    )
    op.create_table(
        "team",
        sa.Column("pseudonym", sa.String(64), nullable=False),
        sa.Column("display_name", sa.LargeBinary, nullable=True),
        sa.Column("joined_at", UtcTimestamp, nullable=False),
        sa.ForeignKeyConstraint(
            ["pseudonym"], ["users.pseudonym"], name="fk_team_pseudonym_users", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("pseudonym", name="pk_team"),
    )
    op.create_table(
        "report_notes",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("report_id", sa.Integer, nullable=False),
        sa.Column("author", sa.String(64), nullable=True),
        sa.Column("kind", sa.String(12), nullable=False),
        sa.Column("body", sa.LargeBinary, nullable=False),
        sa.Column("at", UtcTimestamp, nullable=False),
        sa.Column("message_id", sa.Integer, nullable=True),
        sa.ForeignKeyConstraint(
            ["report_id"], ["reports.id"], name="fk_report_notes_report_id_reports", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_report_notes"),
        sa.CheckConstraint("kind IN ('note', 'question', 'answer')", name="ck_report_notes_kind_known"),
    )
    op.create_index("ix_report_notes_report_id", "report_notes", ["report_id"])
    op.create_table(
        "audit_log",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("at", UtcTimestamp, nullable=False),
        sa.Column("actor", sa.String(64), nullable=False),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("target", sa.String(64), nullable=True),
        sa.Column("outcome", sa.String(8), nullable=False),
        sa.Column("detail", sa.Text, nullable=True),
        sa.Column("prev_hash", sa.String(64), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_audit_log"),
        sa.CheckConstraint("outcome IN ('ok', 'refused')", name="ck_audit_log_outcome_known"),
    )


def downgrade() -> None:
    op.drop_table("audit_log")
    op.drop_index("ix_report_notes_report_id", "report_notes")
    op.drop_table("report_notes")
    op.drop_table("team")
    op.drop_table("invites")
    for name in ("ix_reports_status_id", "ix_reports_created_at", "ix_reports_assignee", "ix_reports_region", "ix_reports_category"):
        op.drop_index(name, "reports")
    with op.batch_alter_table("reports") as batch:
        batch.drop_constraint("ck_reports_status_known", type_="check")
        for column in (
            "alert_message_id", "alert_chat", "revision", "closed_at", "duplicate_of", "reason",
            "acknowledged_at", "acknowledged_by", "assignee",
        ):  # fmt: skip
            batch.drop_column(column)
