"""Opening a stored report: its encrypted body and contact, and its reference code's shape."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from bot.domain.errors import BadInput, Refused, Tampered
from bot.security import Cipher, DecryptionError
from bot.security.bindings import body_binding, contact_chat_binding, file_ref_binding
from bot.services.triage.alerts import AlertInput
from storage.reports import Evidence, Report

# Unambiguous letters and digits (no 0/O, 1/I/L): a code read aloud over a bad line still works.
CODE_ALPHABET = "23456789ABCDEFGHJKMNPQRSTUVWXYZ"
CODE_PATTERN = re.compile(rf"\bR-[{CODE_ALPHABET}]{{5}}\b")
_LOOSE_CODE = re.compile(rf"^R-?([{CODE_ALPHABET}]{{5}})$")


class MalformedCode(BadInput):
    """Text that cannot be a report's reference code."""

    def __init__(self) -> None:
        super().__init__("desk.code_malformed")


@dataclass(frozen=True)
class ReportBody:
    """The decrypted fields of a report, held in memory only."""

    text: str | None
    place: str | None
    location: list[float] | None
    people: str | None


def parse_code(raw: str) -> str:
    """Return the canonical code for 'R-7K3QX', 'r-7k3qx' or 'R7K3QX'; raise MalformedCode otherwise."""
    match = _LOOSE_CODE.match(raw.strip().upper())
    if match is None:
        raise MalformedCode
    return f"R-{match.group(1)}"


def safe_code(raw: str) -> str | None:
    """Return the canonical code if `raw` is one, else None (what the audit log records as a target:
    never text someone typed)."""
    try:
        return parse_code(raw)
    except MalformedCode:
        return None


def find_code(text: str | None) -> str | None:
    """Return the first report code in a message (an alert card, a forwarded answer), if any."""
    if not text:
        return None
    match = CODE_PATTERN.search(text)
    return match.group(0) if match else None


class ReportTampered(Refused, Tampered):
    """A report whose clear columns (category, region, times…) no longer match its sealed body."""

    def __init__(self, code: str) -> None:
        super().__init__("desk.tampered", code=code)


def open_raw_body(cipher: Cipher, report: Report) -> dict[str, Any]:
    """Decrypt a report's body as stored; raise ReportTampered if it does not match its clear columns."""
    try:
        body: dict[str, Any] = cipher.decrypt_json(report.body, binding=body_binding(report))
    except DecryptionError:
        raise ReportTampered(report.code) from None
    return body


def open_body(cipher: Cipher, report: Report) -> ReportBody:
    """Decrypt a report's body."""
    body = open_raw_body(cipher, report)
    return ReportBody(
        text=body.get("text"),
        place=body.get("place"),
        location=body.get("location"),
        people=body.get("people"),
    )


def contact_chat(cipher: Cipher, report: Report) -> int | None:
    """Return the chat a contactable report's author can be reached in, or None."""
    if report.contact_chat is None or report.reporter is None:
        return None
    return int(cipher.decrypt_text(report.contact_chat, binding=contact_chat_binding(report.code)))


def alert_input(
    cipher: Cipher, report: Report, evidence: Sequence[Evidence], *, with_files: bool = False
) -> AlertInput:
    """Rebuild what the alert card shows from a stored report (file ids only when the evidence is to be
    sent again: an opened card)."""
    raw = open_raw_body(cipher, report)
    file_ids = (
        [cipher.decrypt_text(e.file_ref, binding=file_ref_binding(e.uid)) for e in evidence]
        if with_files
        else []
    )
    return AlertInput(
        code=report.code,
        kind=report.kind,
        category=report.category,
        occurred_at=report.occurred_at,
        precision=report.occurred_precision,
        region=report.region,
        place=raw.get("place"),
        location=raw.get("location"),
        text=raw.get("text"),
        people=raw.get("people"),
        contactable=report.contactable,
        evidence=evidence,
        evidence_file_ids=file_ids,
        updates=[str(line) for line in raw.get("updates") or []],
    )
