"""Incident reports: drafts, reports, evidence, report events, per-user action log; held outbox rows.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from storage.types import UtcTimestamp

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_OLD_STATUSES = "'pending', 'sending', 'sent', 'unknown', 'dead', 'blocked', 'cancelled'"
_NEW_STATUSES = _OLD_STATUSES + ", 'held'"


def upgrade() -> None:
    op.create_table(
        "drafts",
        sa.Column("pseudonym", sa.String(64), nullable=False),
        sa.Column("nonce", sa.String(16), nullable=False),
        sa.Column("kind", sa.String(8), nullable=False),
        sa.Column("payload", sa.LargeBinary, nullable=False),
        sa.Column("created_at", UtcTimestamp, nullable=False),
        sa.Column("updated_at", UtcTimestamp, nullable=False),
        sa.Column("expires_at", UtcTimestamp, nullable=False),
        sa.PrimaryKeyConstraint("pseudonym", "kind", name="pk_drafts"),
    )
    op.create_index("ix_drafts_expires_at", "drafts", ["expires_at"])
    op.create_table(
        "reports",
        sa.Column("id", sa.Integer, autoincrement=True, nullable=False),
        sa.Column("code", sa.String(16), nullable=False),
        sa.Column("kind", sa.String(8), nullable=False),
        sa.Column("category", sa.String(32), nullable=False),
        sa.Column("occurred_at", UtcTimestamp, nullable=True),
        sa.Column("occurred_precision", sa.String(8), nullable=True),
        sa.Column("region", sa.String(32), nullable=True),
        sa.Column("body", sa.LargeBinary, nullable=False),
        sa.Column("contactable", sa.Boolean, nullable=False),
        sa.Column("reporter", sa.String(64), nullable=True),
        sa.Column("contact_chat", sa.LargeBinary, nullable=True),
        sa.Column("status", sa.String(16), nullable=False, server_default="new"),
        sa.Column("submit_key", sa.String(32), nullable=False),
        sa.Column("created_at", UtcTimestamp, nullable=False),
        sa.Column("updated_at", UtcTimestamp, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_reports"),
        sa.UniqueConstraint("code", name="uq_reports_code"),
        sa.UniqueConstraint("submit_key", name="uq_reports_submit_key"),
        sa.CheckConstraint("kind IN ('report', 'sos')", name="ck_reports_kind_known"),
    )
    op.create_index("ix_reports_reporter", "reports", ["reporter"])
    op.create_index("ix_reports_status", "reports", ["status", "created_at"])
    op.create_table(
        "evidence",
        sa.Column("id", sa.Integer, autoincrement=True, nullable=False),
        sa.Column("uid", sa.String(32), nullable=False),
        sa.Column("report_id", sa.Integer, nullable=True),
        sa.Column("owner", sa.String(64), nullable=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("size", sa.Integer, nullable=False),
        sa.Column("received_at", UtcTimestamp, nullable=False),
        sa.Column("file_ref", sa.LargeBinary, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_evidence"),
        sa.UniqueConstraint("uid", name="uq_evidence_uid"),
        sa.ForeignKeyConstraint(
            ["report_id"], ["reports.id"], ondelete="CASCADE", name="fk_evidence_report_id_reports"
        ),
    )
    op.create_index("ix_evidence_report_id", "evidence", ["report_id"])
    op.create_index("ix_evidence_owner", "evidence", ["owner"])
    op.create_table(
        "report_events",
        sa.Column("id", sa.Integer, autoincrement=True, nullable=False),
        sa.Column("report_id", sa.Integer, nullable=False),
        sa.Column("actor", sa.String(64), nullable=False),
        sa.Column("action", sa.String(16), nullable=False),
        sa.Column("at", UtcTimestamp, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_report_events"),
        sa.ForeignKeyConstraint(
            ["report_id"], ["reports.id"], ondelete="CASCADE", name="fk_report_events_report_id_reports"
        ),
    )
    op.create_index("ix_report_events_report_id", "report_events", ["report_id"])
    op.create_table(
        "user_actions",
        sa.Column("id", sa.Integer, autoincrement=True, nullable=False),
        sa.Column("pseudonym", sa.String(64), nullable=False),
        sa.Column("action", sa.String(16), nullable=False),
        sa.Column("at", UtcTimestamp, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_user_actions"),
    )
    op.create_index("ix_user_actions_lookup", "user_actions", ["pseudonym", "action", "at"])
    with op.batch_alter_table("outbox") as batch:
        batch.drop_constraint("ck_outbox_status_known", type_="check")
        batch.create_check_constraint("ck_outbox_status_known", f"status IN ({_NEW_STATUSES})")


def downgrade() -> None:
    op.execute("DELETE FROM outbox WHERE status = 'held'")
    with op.batch_alter_table("outbox") as batch:
        batch.drop_constraint("ck_outbox_status_known", type_="check")
        batch.create_check_constraint("ck_outbox_status_known", f"status IN ({_OLD_STATUSES})")
    op.drop_table("user_actions")
    op.drop_table("report_events")
    op.drop_table("evidence")
    op.drop_table("reports")
    op.drop_table("drafts")
