"""The schema as SQLAlchemy Core tables; migrations under storage/migrations create it."""

from __future__ import annotations

from sqlalchemy import (
    Boolean,
    CheckConstraint,
    Column,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    text,
)

from storage.types import UtcTimestamp

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(column_0_label)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

users = Table(
    "users",
    metadata,
    # HMAC of the Telegram id (bot.security.pseudonyms); the id itself is never stored in the clear.
    Column("pseudonym", String(64), primary_key=True),
    Column("language", String(8), nullable=True),  # chosen with /language; wins over Telegram's
    Column("telegram_language", String(8), nullable=True),
    Column("active", Boolean, nullable=False, server_default=text("1")),
    Column("created_at", UtcTimestamp, nullable=False),
    Column("updated_at", UtcTimestamp, nullable=False),
)

user_roles = Table(
    "user_roles",
    metadata,
    Column("pseudonym", String(64), ForeignKey("users.pseudonym", ondelete="CASCADE"), primary_key=True),
    Column("role", String(16), primary_key=True),
    Column("granted_at", UtcTimestamp, nullable=False),
    Column("granted_by", String(64), nullable=True),
    CheckConstraint("role IN ('admin', 'coordinator')", name="role_known"),
)

inbox = Table(
    "inbox",
    metadata,
    Column("update_id", Integer, primary_key=True, autoincrement=False),
    # Encrypted raw update; set to NULL as soon as the update is handled.
    Column("payload", LargeBinary, nullable=True),
    Column("status", String(12), nullable=False, server_default="pending"),
    Column("attempts", Integer, nullable=False, server_default=text("0")),
    Column("received_at", UtcTimestamp, nullable=False),
    Column("next_attempt_at", UtcTimestamp, nullable=False),
    Column("done_at", UtcTimestamp, nullable=True),
    Column("last_error", Text, nullable=True),
    CheckConstraint("status IN ('pending', 'done', 'failed')", name="status_known"),
)
Index("ix_inbox_pending", inbox.c.status, inbox.c.next_attempt_at, inbox.c.update_id)

bot_state = Table(
    "bot_state",
    metadata,
    Column("key", String(64), primary_key=True),
    Column("value", Text, nullable=False),
)

outbox = Table(
    "outbox",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    # Random id the payload's encryption is bound to; known before the row is inserted.
    Column("uid", String(32), nullable=False, unique=True),
    Column("kind", String(32), nullable=False),  # what caused it: "alert", "reminder", "campaign", …
    Column("method", String(40), nullable=False),  # Bot API method, e.g. sendMessage
    Column("payload", LargeBinary, nullable=True),  # encrypted JSON parameters, chat_id included
    Column("chat_key", String(64), nullable=False),  # pseudonym of the chat, to pace sends per chat
    Column("chat_kind", String(8), nullable=False),  # "private" or "group" (groups and channels)
    Column("recipient", String(64), nullable=True),  # user pseudonym, marked inactive on 403
    Column("priority", Integer, nullable=False, server_default=text("0")),
    Column("status", String(12), nullable=False, server_default="pending"),
    Column("attempts", Integer, nullable=False, server_default=text("0")),
    Column("unknown_outcomes", Integer, nullable=False, server_default=text("0")),
    Column("due_at", UtcTimestamp, nullable=False),
    Column("lease_owner", String(32), nullable=True),
    Column("lease_until", UtcTimestamp, nullable=True),
    Column("created_at", UtcTimestamp, nullable=False),
    Column("sent_at", UtcTimestamp, nullable=True),
    Column("message_id", Integer, nullable=True),
    Column("last_error", Text, nullable=True),
    # Makes enqueueing idempotent: a re-run of whatever caused the row creates it once.
    Column("dedupe_key", String(128), nullable=True, unique=True),
    Column("ref", String(64), nullable=True),  # the aggregate it belongs to, e.g. a campaign id
    CheckConstraint(
        "status IN ('pending', 'sending', 'sent', 'unknown', 'dead', 'blocked', 'cancelled')",
        name="status_known",
    ),
    CheckConstraint("chat_kind IN ('private', 'group')", name="chat_kind_known"),
)
Index("ix_outbox_due", outbox.c.status, outbox.c.priority.desc(), outbox.c.due_at, outbox.c.id)
Index("ix_outbox_lease", outbox.c.status, outbox.c.lease_until)
Index("ix_outbox_recipient", outbox.c.recipient, outbox.c.status)
Index("ix_outbox_ref", outbox.c.ref, outbox.c.status)
