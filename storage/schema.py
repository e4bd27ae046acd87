"""The schema as SQLAlchemy Core tables; migrations under storage/migrations create it."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
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
    UniqueConstraint,
    false,
    text,
    true,
)

from storage.types import UtcTimestamp

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(column_0_label)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
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
    Column("timezone", String(40), nullable=True),  # chosen with /timezone; else the organisation's
    # Set with /safeword, sealed under the data key and bound to the pseudonym; shown on sensitive screens.
    Column("safeword", LargeBinary, nullable=True),
    Column("active", Boolean, nullable=False, server_default=true()),
    Column("created_at", UtcTimestamp, nullable=False),
    Column("updated_at", UtcTimestamp, nullable=False),
)

# Which of the organisation's bots can write to a person (the main one reaches everyone who uses it;
# backups only those who pressed Start there), the Telegram id a backup may write to, and which invitations
# to a backup they were shown: one sealed record, bound to the pseudonym. chat_key is the pseudonym of
# their private chat, the key outbox rows carry, so the sender can look the record up per row.
reach = Table(
    "reach",
    metadata,
    Column("pseudonym", String(64), ForeignKey("users.pseudonym", ondelete="CASCADE"), primary_key=True),
    Column("chat_key", String(64), nullable=False),
    Column("sealed", LargeBinary, nullable=False),
    Column("updated_at", UtcTimestamp, nullable=False),
    Index("ix_reach_chat_key", "chat_key", unique=True),
)

user_roles = Table(
    "user_roles",
    metadata,
    Column("pseudonym", String(64), ForeignKey("users.pseudonym", ondelete="CASCADE"), primary_key=True),
    Column("role", String(16), primary_key=True),
    Column("granted_at", UtcTimestamp, nullable=False),
    Column("granted_by", String(64), nullable=True),
    CheckConstraint("role IN ('admin', 'coordinator')", name="ck_user_roles_role_known"),
)

inbox = Table(
    "inbox",
    metadata,
    # 64-bit: Telegram promises no bound on update ids. SQLite's INTEGER is 64-bit and the rowid already.
    Column("update_id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=False),
    # Encrypted raw update; set to NULL as soon as the update is handled.
    Column("payload", LargeBinary, nullable=True),
    Column("status", String(12), nullable=False, server_default="pending"),
    Column("attempts", Integer, nullable=False, server_default=text("0")),
    Column("received_at", UtcTimestamp, nullable=False),
    Column("next_attempt_at", UtcTimestamp, nullable=False),
    Column("done_at", UtcTimestamp, nullable=True),
    Column("last_error", Text, nullable=True),
    # The instance run handling the row now, until when (several instances: one chat's rows go to one
    # instance at a time; a row whose owner stopped renewing is taken over).
    Column("owner", String(64), nullable=True),
    Column("lease_until", UtcTimestamp, nullable=True),
    CheckConstraint("status IN ('pending', 'done', 'failed')", name="ck_inbox_status_known"),
)
Index("ix_inbox_pending", inbox.c.status, inbox.c.next_attempt_at, inbox.c.update_id)

acted_updates = Table(
    "acted_updates",
    metadata,
    # Which gated actions an update already committed (its n-th one is `seq`): a retried update skips
    # them. No actor and no target: the audit log has those. Purged with the inbox's done rows.
    Column("update_id", BigInteger, primary_key=True, autoincrement=False),
    Column("seq", Integer, primary_key=True, autoincrement=False),
    Column("action", String(48), nullable=False),
    Column("at", UtcTimestamp, nullable=False),
)
Index("ix_acted_updates_at", acted_updates.c.at)

leases = Table(
    "leases",
    metadata,
    # One named duty (polling Telegram, sending the outbox) held by one instance until `expires_at`.
    Column("name", String(32), primary_key=True),
    Column("holder", String(64), nullable=False),
    Column("expires_at", UtcTimestamp, nullable=False),
    Column("acquired_at", UtcTimestamp, nullable=False),
)

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
    # Backup bots: the bot an edit or a deletion must go through (the one whose chat holds the message);
    # NULL for everything else, which goes through the bot in use.
    Column("via_bot", BigInteger, nullable=True),
    Column("ref", String(64), nullable=True),  # the aggregate it belongs to, e.g. a campaign id
    Column(
        "expires_at", UtcTimestamp, nullable=True
    ),  # not sent after this (a reminder once the hearing began)
    CheckConstraint(
        "status IN ('pending', 'sending', 'sent', 'unknown', 'dead', 'blocked', 'cancelled', 'held')",
        name="ck_outbox_status_known",
    ),
    CheckConstraint("chat_kind IN ('private', 'group')", name="ck_outbox_chat_kind_known"),
)
Index("ix_outbox_due", outbox.c.status, outbox.c.priority.desc(), outbox.c.due_at, outbox.c.id)
Index("ix_outbox_lease", outbox.c.status, outbox.c.lease_until)
Index("ix_outbox_recipient", outbox.c.recipient, outbox.c.status)
Index("ix_outbox_ref", outbox.c.ref, outbox.c.status)

drafts = Table(
    "drafts",
    metadata,
    # One unfinished report and one SOS follow-up per person; the state is one encrypted JSON.
    Column("pseudonym", String(64), primary_key=True),
    Column("kind", String(8), primary_key=True),
    Column("nonce", String(16), nullable=False),  # changes with every new draft; buttons carry it
    Column("payload", LargeBinary, nullable=False),
    Column("created_at", UtcTimestamp, nullable=False),
    Column("updated_at", UtcTimestamp, nullable=False),
    Column("expires_at", UtcTimestamp, nullable=False),
    # The owner's pseudonym, sealed under the transient key; the `pseudonym` column holds a keyed tag of it
    # (bot.security.owner_tags). NULL only in rows from before tags, whose `pseudonym` is the pseudonym.
    Column("owner", LargeBinary, nullable=True),
)
Index("ix_drafts_expires_at", drafts.c.expires_at)

reports = Table(
    "reports",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("code", String(16), nullable=False, unique=True),
    Column("kind", String(8), nullable=False),
    # Category, time and region stay clear for triage filters; they do not identify the reporter.
    Column("category", String(32), nullable=False),
    Column("occurred_at", UtcTimestamp, nullable=True),
    Column("occurred_precision", String(8), nullable=True),
    Column("region", String(32), nullable=True),
    Column("body", LargeBinary, nullable=False),  # encrypted: text, place, location, people affected
    Column("contactable", Boolean, nullable=False),
    # Only for contactable reports: anonymous ones are unlinkable to their author by design.
    Column("reporter", String(64), nullable=True),
    Column("contact_chat", LargeBinary, nullable=True),  # encrypted chat id
    Column("status", String(16), nullable=False, server_default="new"),
    Column("submit_key", String(32), nullable=False, unique=True),  # the draft's nonce: submit once
    Column("created_at", UtcTimestamp, nullable=False),
    Column("updated_at", UtcTimestamp, nullable=False),
    # Triage: who has it, who saw it first, and why it was rejected (spam, duplicate).
    Column("assignee", String(64), nullable=True),
    Column("acknowledged_by", String(64), nullable=True),
    Column("acknowledged_at", UtcTimestamp, nullable=True),
    Column("reason", String(16), nullable=True),
    Column("duplicate_of", String(16), nullable=True),
    Column("closed_at", UtcTimestamp, nullable=True),
    # Raised by every triage change: a change applies only to the revision its presser saw.
    Column("revision", Integer, nullable=False, server_default=text("0")),
    # Where the alert card went, so every change can edit it in place.
    Column("alert_chat", BigInteger, nullable=True),
    Column("alert_message_id", Integer, nullable=True),
    # An unacknowledged SOS is escalated at this time, then again at a growing, capped interval.
    Column("escalate_at", UtcTimestamp, nullable=True),
    Column("escalations", Integer, nullable=False, server_default=text("0")),
    CheckConstraint("kind IN ('report', 'sos')", name="ck_reports_kind_known"),
    CheckConstraint(
        "status IN ('new', 'in_progress', 'verified', 'closed', 'rejected')", name="ck_reports_status_known"
    ),
)
Index("ix_reports_reporter", reports.c.reporter)
Index("ix_reports_status", reports.c.status, reports.c.created_at)
Index("ix_reports_category", reports.c.category, reports.c.id)
Index("ix_reports_region", reports.c.region, reports.c.id)
Index("ix_reports_assignee", reports.c.assignee, reports.c.id)
Index("ix_reports_created_at", reports.c.created_at)
Index("ix_reports_status_id", reports.c.status, reports.c.id)
Index("ix_reports_escalate_at", reports.c.escalate_at)

alert_copies = Table(
    "alert_copies",
    metadata,
    # Every message that shows a report's card (the group's, a resend after a crash, an on-duty or an
    # opened private copy): triage edits all of them, so no copy goes stale.
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("report_id", Integer, ForeignKey("reports.id", ondelete="CASCADE"), nullable=False),
    Column("uid", String(32), nullable=False, unique=True),  # what the chat's encryption is bound to
    Column("chat_key", String(64), nullable=False),  # pseudonym of the chat, to find a copy again
    Column("chat", LargeBinary, nullable=False),  # encrypted chat id, to edit the copy
    Column("message_id", Integer, nullable=False),
    # The coordinator a private copy was sent to: revoking them forgets it, so it is no longer edited.
    Column("holder", String(64), nullable=True),
    Column("created_at", UtcTimestamp, nullable=False),
    UniqueConstraint("report_id", "chat_key", "message_id", name="uq_alert_copies_report_id"),
)
Index("ix_alert_copies_report_id", alert_copies.c.report_id)

duty = Table(
    "duty",
    metadata,
    # Coordinators on duty: every SOS also reaches them in private, and escalations do.
    Column("pseudonym", String(64), ForeignKey("users.pseudonym", ondelete="CASCADE"), primary_key=True),
    Column("chat", LargeBinary, nullable=False),  # encrypted private chat id
    Column("since", UtcTimestamp, nullable=False),
)

evidence = Table(
    "evidence",
    metadata,
    # Only submitted evidence: rows are inserted at submission and never held the reporter's pseudonym.
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("uid", String(32), nullable=False, unique=True),  # the encrypted file's name and binding
    Column("report_id", Integer, ForeignKey("reports.id", ondelete="CASCADE"), nullable=False),
    Column("kind", String(16), nullable=False),  # photo, video, voice, audio, document
    Column("sha256", String(64), nullable=False),
    Column("size", Integer, nullable=False),
    Column("received_at", UtcTimestamp, nullable=False),
    Column("file_ref", LargeBinary, nullable=False),  # encrypted Telegram file_id, to re-send without upload
    # Keyed MAC over (report, uid, kind, sha256, size, time): a row moved or edited no longer matches.
    # NULL only for rows kept before revision 0010, until the bot binds them at its next start.
    Column("mac", LargeBinary, nullable=True),
)
Index("ix_evidence_report_id", evidence.c.report_id)

evidence_staged = Table(
    "evidence_staged",
    metadata,
    # Files received for a draft. Everything but the owner is one ciphertext, so neither a deleted row
    # nor an old page in the WAL can be joined to the kept `evidence` row by uid, digest, size or time.
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("owner", String(64), nullable=False),  # a keyed tag of the draft owner's pseudonym (see drafts)
    Column("details", LargeBinary, nullable=False),
    Column("owner_seal", LargeBinary, nullable=True),  # the pseudonym, sealed transiently; NULL before tags
)
Index("ix_evidence_staged_owner", evidence_staged.c.owner)

report_events = Table(
    "report_events",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("report_id", Integer, ForeignKey("reports.id", ondelete="CASCADE"), nullable=False),
    Column("actor", String(64), nullable=False),
    Column("action", String(16), nullable=False),
    Column("at", UtcTimestamp, nullable=False),
)
Index("ix_report_events_report_id", report_events.c.report_id)

user_actions = Table(
    "user_actions",
    metadata,
    # Short-lived: counts reports and SOS per person for abuse limits; purged after a day.
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("pseudonym", String(64), nullable=False),
    Column("action", String(16), nullable=False),
    Column("at", UtcTimestamp, nullable=False),
)
Index("ix_user_actions_lookup", user_actions.c.pseudonym, user_actions.c.action, user_actions.c.at)

cases = Table(
    "cases",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    # Published information (defendants as they may be named, charges): not personal data to hide.
    Column("title", String(300), nullable=False),
    Column("description", Text, nullable=False),
    Column("charges", Text, nullable=False),
    Column("public", Boolean, nullable=False),
    Column("status", String(8), nullable=False, server_default="open"),
    Column("created_at", UtcTimestamp, nullable=False),
    Column("updated_at", UtcTimestamp, nullable=False),
    CheckConstraint("status IN ('open', 'closed')", name="ck_cases_status_known"),
)

hearings = Table(
    "hearings",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("case_id", Integer, ForeignKey("cases.id", ondelete="CASCADE"), nullable=False),
    Column("starts_at", UtcTimestamp, nullable=False),
    Column("court", String(200), nullable=False),
    Column("address", String(300), nullable=False),
    Column("details", String(300), nullable=True),  # room, judge
    Column("note", Text, nullable=True),
    Column("status", String(12), nullable=False, server_default="scheduled"),
    # Raised by every change of time or place: calendar SEQUENCE, and reminders of older versions die.
    Column("sequence", Integer, nullable=False, server_default=text("0")),
    Column("outcome", Text, nullable=True),
    Column("created_at", UtcTimestamp, nullable=False),
    Column("updated_at", UtcTimestamp, nullable=False),
    UniqueConstraint("case_id", "starts_at", name="uq_hearings_case_id"),
    CheckConstraint("status IN ('scheduled', 'cancelled', 'held')", name="ck_hearings_status_known"),
)
Index("ix_hearings_upcoming", hearings.c.status, hearings.c.starts_at)

follows = Table(
    "follows",
    metadata,
    Column("case_id", Integer, ForeignKey("cases.id", ondelete="CASCADE"), primary_key=True),
    Column("follower", String(64), primary_key=True),
    Column("chat", LargeBinary, nullable=False),  # encrypted chat id, to send reminders
    Column("created_at", UtcTimestamp, nullable=False),
)
Index("ix_follows_follower", follows.c.follower)

attendance = Table(
    "attendance",
    metadata,
    Column("hearing_id", Integer, ForeignKey("hearings.id", ondelete="CASCADE"), primary_key=True),
    Column("attendee", String(64), primary_key=True),
    Column("at", UtcTimestamp, nullable=False),
)

reminder_prefs = Table(
    "reminder_prefs",
    metadata,
    Column("pseudonym", String(64), primary_key=True),
    Column("offsets", String(64), nullable=False),  # minutes before a hearing, comma-separated
)

channels = Table(
    "channels",
    metadata,
    # The organisation's own public channels and groups: their ids are not personal data.
    Column("chat_id", BigInteger, primary_key=True, autoincrement=False),
    Column("added_at", UtcTimestamp, nullable=False),
)

invites = Table(
    "invites",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    # SHA-256 of the token: a copy of the database cannot be turned into working invite links.
    Column("token_hash", String(64), nullable=False, unique=True),
    Column("created_by", String(64), nullable=False),
    Column("created_at", UtcTimestamp, nullable=False),
    Column("expires_at", UtcTimestamp, nullable=False),
    Column("used_by", String(64), nullable=True),
    Column("used_at", UtcTimestamp, nullable=True),
    Column("withdrawn_at", UtcTimestamp, nullable=True),
)

team = Table(
    "team",
    metadata,
    Column("pseudonym", String(64), ForeignKey("users.pseudonym", ondelete="CASCADE"), primary_key=True),
    Column("display_name", LargeBinary, nullable=True),  # encrypted; the name colleagues see
    Column("joined_at", UtcTimestamp, nullable=False),
)

transient_peers = Table(
    "transient_peers",
    metadata,
    # Each instance's live transient epochs, with the public key (sealed under the data key) peers lend
    # their own epoch keys to; `seen_at` tells the others the instance is alive.
    Column("instance", String(16), primary_key=True),
    Column("epoch", BigInteger, primary_key=True),
    Column("public_key", LargeBinary, nullable=False),
    Column("seen_at", UtcTimestamp, nullable=False),
)

transient_shares = Table(
    "transient_shares",
    metadata,
    # One instance's epoch key, sealed to another instance's epoch (bot.security.peer_keys).
    Column("holder", String(16), primary_key=True),
    Column("holder_epoch", BigInteger, primary_key=True),
    Column("owner", String(16), primary_key=True),
    Column("epoch", BigInteger, primary_key=True),
    Column("sealed", LargeBinary, nullable=False),
)

coordinator_ids = Table(
    "coordinator_ids",
    metadata,
    # The Telegram id of each role holder, sealed to its pseudonym: Telegram is asked by id whether someone
    # is in the coordinators' group, and removes by id. Kept while the role is held; after it ends, only
    # until Telegram has them out of the group.
    Column("pseudonym", String(64), ForeignKey("users.pseudonym", ondelete="CASCADE"), primary_key=True),
    Column("telegram_id", LargeBinary, nullable=False),
    Column("captured_at", UtcTimestamp, nullable=False),
)

member_removals = Table(
    "member_removals",
    metadata,
    # Removals from the coordinators' group under way: a ban and an unban in the outbox under this `ref`,
    # the unban held until the ban went through. Deleted once both are done, or the ban failed.
    Column("ref", String(40), primary_key=True),
    Column("pseudonym", String(64), nullable=False),  # a former role holder, or a stranger who joined
    Column("reason", String(8), nullable=False),
    Column("created_at", UtcTimestamp, nullable=False),
    CheckConstraint("reason IN ('revoked', 'stranger')", name="ck_member_removals_reason_known"),
)

report_notes = Table(
    "report_notes",
    metadata,
    # Internal notes, and the questions to and answers from a reporter; bodies encrypted.
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("report_id", Integer, ForeignKey("reports.id", ondelete="CASCADE"), nullable=False),
    Column("author", String(64), nullable=True),  # a coordinator; NULL for the reporter's answers
    Column("kind", String(12), nullable=False),
    Column("body", LargeBinary, nullable=False),
    Column("at", UtcTimestamp, nullable=False),
    Column("message_id", Integer, nullable=True),  # a question's message in the reporter's chat
    CheckConstraint("kind IN ('note', 'question', 'answer')", name="ck_report_notes_kind_known"),
)
Index("ix_report_notes_report_id", report_notes.c.report_id)

audit_log = Table(
    "audit_log",
    metadata,
    # Append-only; each row's hash covers the previous row's, keyed, so edits and deletions show.
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("at", UtcTimestamp, nullable=False),
    Column("actor", String(64), nullable=False),  # a pseudonym, or "cli"
    Column("action", String(32), nullable=False),
    Column("target", String(64), nullable=True),  # a report code, a pseudonym, an invite id
    Column("outcome", String(8), nullable=False),
    Column("detail", Text, nullable=True),  # never user-written text: filters, a new status, a reason
    Column("prev_hash", String(64), nullable=False),
    Column("hash", String(64), nullable=False),
    CheckConstraint("outcome IN ('ok', 'refused')", name="ck_audit_log_outcome_known"),
)

subscriptions = Table(
    "subscriptions",
    metadata,
    Column("pseudonym", String(64), ForeignKey("users.pseudonym", ondelete="CASCADE"), primary_key=True),
    Column("chat", LargeBinary, nullable=False),  # encrypted chat id
    Column("topics", String(64), nullable=False),  # comma-separated: campaigns, hearings, urgent
    Column("created_at", UtcTimestamp, nullable=False),
    Column("updated_at", UtcTimestamp, nullable=False),
)

campaigns = Table(
    "campaigns",
    metadata,
    # Public calls to action: their texts are meant to be read by many, so they are not encrypted.
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("title", String(200), nullable=False),
    Column("body", Text, nullable=True),  # Telegram HTML, validated when saved
    Column("image_file_id", String(256), nullable=True),
    Column("link", String(512), nullable=True),
    Column("deadline", UtcTimestamp, nullable=True),
    Column("audience", String(16), nullable=False, server_default="all"),  # all, language, topic, case
    Column("audience_value", String(32), nullable=True),
    Column("include_channels", Boolean, nullable=False, server_default=false()),
    Column("status", String(20), nullable=False, server_default="draft"),
    Column("created_by", String(64), nullable=False),
    Column("creator_chat", LargeBinary, nullable=False),  # encrypted: where progress goes
    Column("approved_by", String(64), nullable=True),
    Column("send_at", UtcTimestamp, nullable=True),
    # Where enqueueing got to (the last recipient's pseudonym): batches resume after a restart.
    Column("cursor", String(64), nullable=True),
    Column("channels_done", Boolean, nullable=False, server_default=false()),
    Column("enqueued", Integer, nullable=False, server_default=text("0")),
    Column("progress_message_id", Integer, nullable=True),
    Column("progress_text", Text, nullable=True),  # what the progress message shows now
    Column("reminders_done", Boolean, nullable=False, server_default=false()),
    Column("created_at", UtcTimestamp, nullable=False),
    Column("updated_at", UtcTimestamp, nullable=False),
    Column("finished_at", UtcTimestamp, nullable=True),
    CheckConstraint(
        "status IN ('draft', 'awaiting_approval', 'scheduled', 'sending', 'sent', 'done', 'cancelled')",
        name="ck_campaigns_status_known",
    ),
)
Index("ix_campaigns_status", campaigns.c.status, campaigns.c.send_at)

campaign_templates = Table(
    "campaign_templates",
    metadata,
    Column("campaign_id", Integer, ForeignKey("campaigns.id", ondelete="CASCADE"), primary_key=True),
    Column("language", String(8), primary_key=True),
    Column("body", Text, nullable=False),
)

campaign_actions = Table(
    "campaign_actions",
    metadata,
    # Once per person and kind: "acted" counts, "template" was sent, "remind" asks for the deadline reminder.
    Column("campaign_id", Integer, ForeignKey("campaigns.id", ondelete="CASCADE"), primary_key=True),
    Column("pseudonym", String(64), primary_key=True),
    Column("kind", String(8), primary_key=True),
    Column("chat", LargeBinary, nullable=True),  # encrypted, for "remind" only
    Column("at", UtcTimestamp, nullable=False),
    Column("done_at", UtcTimestamp, nullable=True),  # when the reminder was queued
    CheckConstraint("kind IN ('acted', 'template', 'remind')", name="ck_campaign_actions_kind_known"),
)

campaign_inputs = Table(
    "campaign_inputs",
    metadata,
    # Which field of which draft a coordinator's next message fills in.
    Column("pseudonym", String(64), primary_key=True),
    Column("campaign_id", Integer, ForeignKey("campaigns.id", ondelete="CASCADE"), nullable=False),
    Column("field", String(16), nullable=False),
    Column("language", String(8), nullable=True),
    Column("expires_at", UtcTimestamp, nullable=False),
)
