"""Court cases, hearings, followers, attendance and reminder preferences.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from storage.types import UtcTimestamp

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "cases",
        sa.Column("id", sa.Integer, autoincrement=True, nullable=False),
        sa.Column("title", sa.String(300), nullable=False),
        sa.Column("description", sa.Text, nullable=False),
        sa.Column("charges", sa.Text, nullable=False),
        sa.Column("public", sa.Boolean, nullable=False),
        sa.Column("status", sa.String(8), nullable=False, server_default="open"),
        sa.Column("created_at", UtcTimestamp, nullable=False),
        sa.Column("updated_at", UtcTimestamp, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_cases"),
        sa.CheckConstraint("status IN ('open', 'closed')", name="ck_cases_status_known"),
    )
    op.create_table(
        "hearings",
        sa.Column("id", sa.Integer, autoincrement=True, nullable=False),
        sa.Column("case_id", sa.Integer, nullable=False),
        sa.Column("starts_at", UtcTimestamp, nullable=False),
        sa.Column("court", sa.String(200), nullable=False),
        sa.Column("address", sa.String(300), nullable=False),
        sa.Column("details", sa.String(300), nullable=True),
        sa.Column("note", sa.Text, nullable=True),
        sa.Column("status", sa.String(12), nullable=False, server_default="scheduled"),
        sa.Column("sequence", sa.Integer, nullable=False, server_default=sa.text("0")),
        sa.Column("outcome", sa.Text, nullable=True),
        sa.Column("created_at", UtcTimestamp, nullable=False),
        sa.Column("updated_at", UtcTimestamp, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_hearings"),
        sa.ForeignKeyConstraint(["case_id"], ["cases.id"], ondelete="CASCADE", name="fk_hearings_case_id_cases"),
        sa.UniqueConstraint("case_id", "starts_at", name="uq_hearings_case_id"),
        sa.CheckConstraint("status IN ('scheduled', 'cancelled', 'held')", name="ck_hearings_status_known"),
    )
    op.create_index("ix_hearings_upcoming", "hearings", ["status", "starts_at"])
    op.create_table(
        "follows",
        sa.Column("case_id", sa.Integer, nullable=False),
        sa.Column("follower", sa.String(64), nullable=False),
        sa.Column("chat", sa.LargeBinary, nullable=False),
        sa.Column("created_at", UtcTimestamp, nullable=False),
        sa.PrimaryKeyConstraint("case_id", "follower", name="pk_follows"),
        sa.ForeignKeyConstraint(["case_id"], ["cases.id"], ondelete="CASCADE", name="fk_follows_case_id_cases"),
    )
    op.create_index("ix_follows_follower", "follows", ["follower"])
    op.create_table(
        "attendance",
        sa.Column("hearing_id", sa.Integer, nullable=False),
        sa.Column("attendee", sa.String(64), nullable=False),
        sa.Column("at", UtcTimestamp, nullable=False),
        sa.PrimaryKeyConstraint("hearing_id", "attendee", name="pk_attendance"),
        sa.ForeignKeyConstraint(
            ["hearing_id"], ["hearings.id"], ondelete="CASCADE", name="fk_attendance_hearing_id_hearings"
        ),
    )
    op.create_table(
        "reminder_prefs",
        sa.Column("pseudonym", sa.String(64), nullable=False),
        sa.Column("offsets", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("pseudonym", name="pk_reminder_prefs"),
    )


def downgrade() -> None:
    op.drop_table("reminder_prefs")
    op.drop_table("attendance")
    op.drop_table("follows")
    op.drop_index("ix_hearings_upcoming", table_name="hearings")
    op.drop_table("hearings")
    op.drop_table("cases")
