"""Campaigns and broadcasts: subscriptions, campaigns, their templates, actions and compose state.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from storage.types import UtcTimestamp

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "subscriptions",
        sa.Column("pseudonym", sa.String(64), nullable=False),
        sa.Column("chat", sa.LargeBinary, nullable=False),
        sa.Column("topics", sa.String(64), nullable=False),
        sa.Column("created_at", UtcTimestamp, nullable=False),
        sa.Column("updated_at", UtcTimestamp, nullable=False),
        sa.ForeignKeyConstraint(
            ["pseudonym"], ["users.pseudonym"], name="fk_subscriptions_pseudonym_users", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("pseudonym", name="pk_subscriptions"),
    )
    op.create_table(
        "campaigns",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("title", sa.String(200), nullable=False),
        sa.Column("body", sa.Text, nullable=True),
        sa.Column("image_file_id", sa.String(256), nullable=True),
        sa.Column("link", sa.String(512), nullable=True),
        sa.Column("deadline", UtcTimestamp, nullable=True),
        sa.Column("audience", sa.String(16), nullable=False, server_default="all"),
        sa.Column("audience_value", sa.String(32), nullable=True),
        sa.Column("include_channels", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("status", sa.String(20), nullable=False, server_default="draft"),
        sa.Column("created_by", sa.String(64), nullable=False),
        sa.Column("creator_chat", sa.LargeBinary, nullable=False),
        sa.Column("approved_by", sa.String(64), nullable=True),
        sa.Column("send_at", UtcTimestamp, nullable=True),
        sa.Column("cursor", sa.String(64), nullable=True),
        sa.Column("channels_done", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("enqueued", sa.Integer, nullable=False, server_default=sa.text("0")),
        sa.Column("progress_message_id", sa.Integer, nullable=True),
        sa.Column("progress_text", sa.Text, nullable=True),
        sa.Column("reminders_done", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("created_at", UtcTimestamp, nullable=False),
        sa.Column("updated_at", UtcTimestamp, nullable=False),
        sa.Column("finished_at", UtcTimestamp, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_campaigns"),
        sa.CheckConstraint(
            "status IN ('draft', 'awaiting_approval', 'scheduled', 'sending', 'sent', 'done', 'cancelled')",
            name="ck_campaigns_status_known",
        ),
    )
    op.create_index("ix_campaigns_status", "campaigns", ["status", "send_at"])
    op.create_table(
        "campaign_templates",
        sa.Column("campaign_id", sa.Integer, nullable=False),
        sa.Column("language", sa.String(8), nullable=False),
        sa.Column("body", sa.Text, nullable=False),
        sa.ForeignKeyConstraint(
            ["campaign_id"], ["campaigns.id"], name="fk_campaign_templates_campaign_id_campaigns", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("campaign_id", "language", name="pk_campaign_templates"),
    )
    op.create_table(
        "campaign_actions",
        sa.Column("campaign_id", sa.Integer, nullable=False),
        sa.Column("pseudonym", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(8), nullable=False),
        sa.Column("chat", sa.LargeBinary, nullable=True),
        sa.Column("at", UtcTimestamp, nullable=False),
        sa.Column("done_at", UtcTimestamp, nullable=True),
        sa.ForeignKeyConstraint(
            ["campaign_id"], ["campaigns.id"], name="fk_campaign_actions_campaign_id_campaigns", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("campaign_id", "pseudonym", "kind", name="pk_campaign_actions"),
        sa.CheckConstraint("kind IN ('acted', 'template', 'remind')", name="ck_campaign_actions_kind_known"),
    )
    op.create_table(
        "campaign_inputs",
        sa.Column("pseudonym", sa.String(64), nullable=False),
        sa.Column("campaign_id", sa.Integer, nullable=False),
        sa.Column("field", sa.String(16), nullable=False),
        sa.Column("language", sa.String(8), nullable=True),
        sa.Column("expires_at", UtcTimestamp, nullable=False),
        sa.ForeignKeyConstraint(
            ["campaign_id"], ["campaigns.id"], name="fk_campaign_inputs_campaign_id_campaigns", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("pseudonym", name="pk_campaign_inputs"),
    )


def downgrade() -> None:
    op.drop_table("campaign_inputs")
    op.drop_table("campaign_actions")
    op.drop_table("campaign_templates")
    op.drop_index("ix_campaigns_status", "campaigns")
    op.drop_table("campaigns")
    op.drop_table("subscriptions")
