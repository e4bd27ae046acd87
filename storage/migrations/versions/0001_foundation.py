"""Foundation: users, roles, the durable inbox and outbox, bot state.

Revision ID: 0001
Revises:
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from storage.types import UtcTimestamp

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "users",
        sa.Column("pseudonym", sa.String(64), primary_key=True),
        sa.Column("language", sa.String(8), nullable=True),
        sa.Column("telegram_language", sa.String(8), nullable=True),
        sa.Column("active", sa.Boolean, nullable=False, server_default=sa.true()),
        sa.Column("created_at", UtcTimestamp, nullable=False),
        sa.Column("updated_at", UtcTimestamp, nullable=False),
        sa.PrimaryKeyConstraint("pseudonym", name="pk_users"),
    )
    op.create_table(
        "user_roles",
        sa.Column("pseudonym", sa.String(64), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("granted_at", UtcTimestamp, nullable=False),
        sa.Column("granted_by", sa.String(64), nullable=True),
        sa.PrimaryKeyConstraint("pseudonym", "role", name="pk_user_roles"),
        sa.ForeignKeyConstraint(
            ["pseudonym"], ["users.pseudonym"], ondelete="CASCADE", name="fk_user_roles_pseudonym_users"
        ),
        sa.CheckConstraint("role IN ('admin', 'coordinator')", name="ck_user_roles_role_known"),
    )
    op.create_table(
        "inbox",
        sa.Column("update_id", sa.Integer, autoincrement=False, nullable=False),
        sa.Column("payload", sa.LargeBinary, nullable=True),
        sa.Column("status", sa.String(12), nullable=False, server_default="pending"),
        sa.Column("attempts", sa.Integer, nullable=False, server_default=sa.text("0")),
        sa.Column("received_at", UtcTimestamp, nullable=False),
        sa.Column("next_attempt_at", UtcTimestamp, nullable=False),
        sa.Column("done_at", UtcTimestamp, nullable=True),
        sa.Column("last_error", sa.Text, nullable=True),
        sa.PrimaryKeyConstraint("update_id", name="pk_inbox"),
        sa.CheckConstraint("status IN ('pending', 'done', 'failed')", name="ck_inbox_status_known"),
    )
    op.create_index("ix_inbox_pending", "inbox", ["status", "next_attempt_at", "update_id"])
    op.create_table(
        "bot_state",
        sa.Column("key", sa.String(64), nullable=False),
        sa.Column("value", sa.Text, nullable=False),
        sa.PrimaryKeyConstraint("key", name="pk_bot_state"),
    )
    op.create_table(
        "outbox",
        sa.Column("id", sa.Integer, autoincrement=True, nullable=False),
        sa.Column("uid", sa.String(32), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("method", sa.String(40), nullable=False),
        sa.Column("payload", sa.LargeBinary, nullable=True),
        sa.Column("chat_key", sa.String(64), nullable=False),
        sa.Column("chat_kind", sa.String(8), nullable=False),
        sa.Column("recipient", sa.String(64), nullable=True),
        sa.Column("priority", sa.Integer, nullable=False, server_default=sa.text("0")),
        sa.Column("status", sa.String(12), nullable=False, server_default="pending"),
        sa.Column("attempts", sa.Integer, nullable=False, server_default=sa.text("0")),
        sa.Column("unknown_outcomes", sa.Integer, nullable=False, server_default=sa.text("0")),
        sa.Column("due_at", UtcTimestamp, nullable=False),
        sa.Column("lease_owner", sa.String(32), nullable=True),
        sa.Column("lease_until", UtcTimestamp, nullable=True),
        sa.Column("created_at", UtcTimestamp, nullable=False),
        sa.Column("sent_at", UtcTimestamp, nullable=True),
        sa.Column("message_id", sa.Integer, nullable=True),
        sa.Column("last_error", sa.Text, nullable=True),
        sa.Column("dedupe_key", sa.String(128), nullable=True),
        sa.Column("ref", sa.String(64), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_outbox"),
        sa.UniqueConstraint("uid", name="uq_outbox_uid"),
        sa.UniqueConstraint("dedupe_key", name="uq_outbox_dedupe_key"),
        sa.CheckConstraint(
            "status IN ('pending', 'sending', 'sent', 'unknown', 'dead', 'blocked', 'cancelled')",
            name="ck_outbox_status_known",
        ),
        sa.CheckConstraint("chat_kind IN ('private', 'group')", name="ck_outbox_chat_kind_known"),
    )
    op.create_index("ix_outbox_due", "outbox", ["status", sa.text("priority DESC"), "due_at", "id"])
    op.create_index("ix_outbox_lease", "outbox", ["status", "lease_until"])
    op.create_index("ix_outbox_recipient", "outbox", ["recipient", "status"])
    op.create_index("ix_outbox_ref", "outbox", ["ref", "status"])


def downgrade() -> None:
    op.drop_table("outbox")
    op.drop_table("bot_state")
    op.drop_table("inbox")
    op.drop_table("user_roles")
    op.drop_table("users")
