"""What every sealed value is bound to: the one place that names them.

A value is encrypted with associated data naming its column and its row, so a ciphertext copied into
another row, or another column, fails to open instead of passing as that row's data (an attacker with the
database can move bytes, not forge them). Every string here is part of the stored data's format: change
one and every row sealed under it stops decrypting. tests/bot/security/test_bindings.py pins each
exactly; a new format gets a new name (as `reports.body.v2`), and the old one stays here for the rows
still under it.

Pure functions, no I/O. The owners of drafts and staged evidence are sealed inside storage, which may not
import this layer; their two bindings live in storage and are re-exported here so this module lists all.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import TYPE_CHECKING

from storage.drafts import owner_binding
from storage.evidence import staged_owner_binding
from storage.types import to_micros

if TYPE_CHECKING:
    from storage.reports import Report

__all__ = [
    "body_binding",
    "contact_chat_binding",
    "copy_chat_binding",
    "creator_chat_binding",
    "draft_binding",
    "duty_chat_binding",
    "evidence_file_binding",
    "file_ref_binding",
    "follow_chat_binding",
    "note_binding",
    "owner_binding",
    "payload_binding",
    "reach_binding",
    "report_body_binding",
    "safeword_binding",
    "sealed_body_binding",
    "staged_binding",
    "staged_owner_binding",
    "subscriber_chat_binding",
    "team_name_binding",
    "telegram_id_binding",
    "update_binding",
]


# --- the durable machinery ---------------------------------------------------------------------------


def update_binding(update_id: int) -> str:
    """Bind a stored Telegram update (inbox.payload) to its update id."""
    return f"inbox.payload:{update_id}"


def payload_binding(uid: str) -> str:
    """Bind an outbox message's payload (chat, text, buttons) to its row's uid."""
    return f"outbox.payload:{uid}"


# --- reports ---------------------------------------------------------------------------------------------


def draft_binding(pseudonym: str, kind: str, nonce: str) -> str:
    """Bind a report draft to its owner, its kind and the nonce of this draft, so an old draft of the
    same person cannot be put back in place of the current one."""
    return f"drafts.payload:{pseudonym}:{kind}:{nonce}"


def report_body_binding(code: str) -> str:
    """Bind a report body to its code alone: the form before the clear columns were bound (legacy rows)."""
    return f"reports.body:{code}"


def sealed_body_binding(
    code: str,
    kind: str,
    category: str,
    occurred_at: datetime | None,
    precision: str | None,
    region: str | None,
    contactable: bool,
    created_at: datetime,
) -> str:
    """Bind a report body to its code and every clear column triage filters on, so an edited category,
    region, kind or time makes the body fail to open instead of passing unnoticed."""
    occurred = to_micros(occurred_at) if occurred_at is not None else ""
    parts = [
        code,
        kind,
        category,
        occurred,
        precision or "",
        region or "",
        int(contactable),
        to_micros(created_at),
    ]
    return "reports.body.v2:" + json.dumps(parts, separators=(",", ":"))


def body_binding(report: Report) -> str:
    """Bind a stored report's body to its row as it is now (see `sealed_body_binding`)."""
    return sealed_body_binding(
        report.code,
        report.kind,
        report.category,
        report.occurred_at,
        report.occurred_precision,
        report.region,
        report.contactable,
        report.created_at,
    )


def contact_chat_binding(code: str) -> str:
    """Bind the chat a contactable reporter is answered in to their report's code."""
    return f"reports.contact_chat:{code}"


def note_binding(code: str, kind: str) -> str:
    """Bind a report note (a coordinator's note, a message to or from the reporter) to its report and
    kind, so a note cannot be moved to another report or pass as another kind."""
    return f"report_notes.body:{code}:{kind}"


def file_ref_binding(uid: str) -> str:
    """Bind an evidence row's Telegram file_id to the evidence uid."""
    return f"evidence.file_ref:{uid}"


def evidence_file_binding(uid: str) -> str:
    """Bind an evidence file on disk to its evidence uid (the associated data of its chunks)."""
    return f"evidence.file:{uid}"


def staged_binding(owner: str) -> str:
    """Bind a staged (not yet submitted) evidence row's details to its owner's tag."""
    return f"evidence_staged.details:{owner}"


# --- triage ----------------------------------------------------------------------------------------------


def copy_chat_binding(uid: str) -> str:
    """Bind the chat a copy of an alert card was sent to, to that copy's uid."""
    return f"alert_copies.chat:{uid}"


def duty_chat_binding(pseudonym: str) -> str:
    """Bind an on-duty coordinator's chat to their pseudonym."""
    return f"duty.chat:{pseudonym}"


# --- the team --------------------------------------------------------------------------------------------


def telegram_id_binding(pseudonym: str) -> str:
    """Bind a coordinator's Telegram id (kept to remove them from groups) to their pseudonym."""
    return f"coordinator_ids.telegram_id:{pseudonym}"


def team_name_binding(pseudonym: str) -> str:
    """Bind a team member's display name to their pseudonym."""
    return f"team.display_name:{pseudonym}"


# --- cases and campaigns ---------------------------------------------------------------------------------


def follow_chat_binding(pseudonym: str, case_id: int) -> str:
    """Bind a case follower's chat to the case and the follower."""
    return f"follows.chat:{case_id}:{pseudonym}"


def subscriber_chat_binding(pseudonym: str) -> str:
    """Bind a subscriber's (or reminder-seeker's) chat to their pseudonym."""
    return f"subscriptions.chat:{pseudonym}"


def creator_chat_binding(author: str) -> str:
    """Bind the chat a campaign's author follows its progress in, to the author."""
    return f"campaigns.creator_chat:{author}"


def reach_binding(pseudonym: str) -> str:
    """Bind a person's reach record (which bots can write to them) to their pseudonym."""
    return f"reach.sealed:{pseudonym}"


def safeword_binding(pseudonym: str) -> str:
    """Bind a person's safety word to their pseudonym."""
    return f"users.safeword:{pseudonym}"
