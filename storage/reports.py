"""Reports and what coordinators did with them (their evidence: storage/evidence.py)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Row, bindparam, delete, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from bot.domain.errors import NotFound
from storage.dialect import new_id
from storage.evidence import Evidence as Evidence  # re-exported: alerts and report bodies use it
from storage.evidence import EvidenceRepository
from storage.schema import report_events, report_notes, reports, user_actions

# Built once: every Submit runs them (storage.dialect.Prebuilt explains why).
_CREATE = insert(reports)
_CODE_TAKEN = select(reports.c.id).where(reports.c.code == bindparam("of_code"))


class ReportNotFound(NotFound, LookupError):
    """No report has that code."""

    def __init__(self, code: str) -> None:
        super().__init__("desk.not_found", code=code)
        self.code = code


@dataclass(frozen=True)
class NewReport:
    """A report to insert; `body` and `contact_chat` are already encrypted."""

    code: str
    kind: str
    category: str
    occurred_at: datetime | None
    occurred_precision: str | None
    region: str | None
    body: bytes
    contactable: bool
    reporter: str | None
    contact_chat: bytes | None
    submit_key: str


@dataclass(frozen=True)
class Report:
    """A stored report."""

    id: int
    code: str
    kind: str
    category: str
    occurred_at: datetime | None
    occurred_precision: str | None
    region: str | None
    body: bytes
    contactable: bool
    reporter: str | None
    contact_chat: bytes | None
    status: str
    created_at: datetime
    assignee: str | None = None
    acknowledged_by: str | None = None
    acknowledged_at: datetime | None = None
    reason: str | None = None
    duplicate_of: str | None = None
    closed_at: datetime | None = None
    revision: int = 0
    alert_chat: int | None = None
    alert_message_id: int | None = None
    escalate_at: datetime | None = None
    escalations: int = 0


@dataclass(frozen=True)
class Note:
    """An internal note, a question to the reporter, or their answer; `body` is encrypted."""

    id: int
    kind: str
    author: str | None
    body: bytes
    at: datetime


class ReportRepository:
    """SQL for reports and report events; `evidence` holds the SQL for their evidence files."""

    def __init__(self) -> None:
        self.evidence = EvidenceRepository()

    async def create(self, conn: AsyncConnection, report: NewReport, now: datetime) -> int:
        """Insert a report; return its id."""
        result = await conn.execute(
            _CREATE,
            {
                "code": report.code,
                "kind": report.kind,
                "category": report.category,
                "occurred_at": report.occurred_at,
                "occurred_precision": report.occurred_precision,
                "region": report.region,
                "body": report.body,
                "contactable": report.contactable,
                "reporter": report.reporter,
                "contact_chat": report.contact_chat,
                "status": "new",
                "submit_key": report.submit_key,
                "created_at": now,
                "updated_at": now,
            },
        )
        return new_id(result)

    async def by_code(self, conn: AsyncConnection, code: str) -> Report:
        """Return the report with this code, or raise ReportNotFound."""
        row = (await conn.execute(select(reports).where(reports.c.code == code))).first()
        if row is None:
            raise ReportNotFound(code)
        return _report(row)

    async def by_ids(self, conn: AsyncConnection, ids: Sequence[int]) -> list[Report]:
        """Return the reports with these ids (any order)."""
        if not ids:
            return []
        return [_report(r) for r in await conn.execute(select(reports).where(reports.c.id.in_(ids)))]

    async def by_submit_key(self, conn: AsyncConnection, submit_key: str) -> Report | None:
        """Return the report a draft already became, if any."""
        row = (await conn.execute(select(reports).where(reports.c.submit_key == submit_key))).first()
        return _report(row) if row is not None else None

    async def code_exists(self, conn: AsyncConnection, code: str) -> bool:
        """Tell whether a reference code is taken."""
        return (await conn.execute(_CODE_TAKEN, {"of_code": code})).first() is not None

    async def for_reporter(self, conn: AsyncConnection, pseudonym: str, limit: int = 20) -> list[Report]:
        """Return a contactable reporter's reports, newest first."""
        rows = await conn.execute(
            select(reports).where(reports.c.reporter == pseudonym).order_by(reports.c.id.desc()).limit(limit)
        )
        return [_report(r) for r in rows]

    async def set_status(self, conn: AsyncConnection, report_id: int, status: str, now: datetime) -> None:
        """Change a report's status."""
        await conn.execute(
            update(reports).where(reports.c.id == report_id).values(status=status, updated_at=now)
        )

    async def change(
        self, conn: AsyncConnection, report_id: int, revision: int, now: datetime, **values: Any
    ) -> bool:
        """Apply a triage change if the report is still at `revision`; False if someone changed it first."""
        result = await conn.execute(
            update(reports)
            .where(reports.c.id == report_id, reports.c.revision == revision)
            .values(**values, revision=reports.c.revision + 1, updated_at=now)
        )
        return bool(result.rowcount)

    async def unassign(self, conn: AsyncConnection, assignee: str, now: datetime) -> int:
        """Free the open reports someone had taken (their role was revoked); return how many."""
        result = await conn.execute(
            update(reports)
            .where(reports.c.assignee == assignee, reports.c.status.in_(("in_progress", "verified")))
            .values(assignee=None, revision=reports.c.revision + 1, updated_at=now)
        )
        return result.rowcount or 0

    async def record_alert_cards(self, conn: AsyncConnection, cards: Mapping[str, tuple[int, int]]) -> None:
        """Remember where reports' alert cards were sent (code: chat and message id), in one statement."""
        if not cards:
            return
        await conn.execute(
            update(reports)
            .where(reports.c.code == bindparam("card_code"))
            .values(alert_chat=bindparam("card_chat"), alert_message_id=bindparam("card_message")),
            [{"card_code": c, "card_chat": chat, "card_message": m} for c, (chat, m) in cards.items()],
        )

    async def set_body(self, conn: AsyncConnection, report_id: int, body: bytes, now: datetime) -> None:
        """Replace a report's encrypted body (an SOS's follow-up lines) and raise its revision, so a card
        not sent yet is brought up to date once it is."""
        await conn.execute(
            update(reports)
            .where(reports.c.id == report_id)
            .values(body=body, revision=reports.c.revision + 1, updated_at=now)
        )

    async def after(self, conn: AsyncConnection, after_id: int, limit: int = 500) -> list[Report]:
        """Return reports by id, from just after `after_id` (a pass over all of them, in pages)."""
        rows = await conn.execute(
            select(reports).where(reports.c.id > after_id).order_by(reports.c.id).limit(limit)
        )
        return [_report(r) for r in rows]

    async def reseal_body(self, conn: AsyncConnection, report_id: int, body: bytes) -> None:
        """Replace a body with the same content sealed another way (nothing else changes)."""
        await conn.execute(update(reports).where(reports.c.id == report_id).values(body=body))

    async def by_codes(self, conn: AsyncConnection, codes: Sequence[str]) -> list[Report]:
        """Return the reports with these codes (any order; unknown codes are skipped)."""
        if not codes:
            return []
        rows = await conn.execute(select(reports).where(reports.c.code.in_(list(codes))))
        return [_report(r) for r in rows]

    async def schedule_escalation(
        self, conn: AsyncConnection, report_id: int, at: datetime | None, *, count: int | None = None
    ) -> None:
        """Set when an SOS is escalated next (None: never again), and how often it has been."""
        values: dict[str, Any] = {"escalate_at": at}
        if count is not None:
            values["escalations"] = count
        await conn.execute(update(reports).where(reports.c.id == report_id).values(**values))

    async def due_escalations(self, conn: AsyncConnection, now: datetime, limit: int = 100) -> list[Report]:
        """Return SOS reports nobody has acknowledged whose escalation is due, oldest first."""
        rows = await conn.execute(
            select(reports)
            .where(
                reports.c.escalate_at.is_not(None),
                reports.c.escalate_at <= now,
                reports.c.status == "new",
                reports.c.acknowledged_by.is_(None),
            )
            .order_by(reports.c.escalate_at)
            .limit(limit)
        )
        return [_report(r) for r in rows]

    async def add_note(
        self, conn: AsyncConnection, report_id: int, kind: str, author: str | None, body: bytes, now: datetime
    ) -> int:
        """Append a note, question or answer (body already encrypted); return its id."""
        result = await conn.execute(
            insert(report_notes).values(report_id=report_id, kind=kind, author=author, body=body, at=now)
        )
        return new_id(result)

    async def questions_by(
        self, conn: AsyncConnection, author: str, since: datetime
    ) -> list[tuple[str, int]]:
        """Return (report code, note id) of the questions `author` asked since a time."""
        result = await conn.execute(
            select(reports.c.code, report_notes.c.id)
            .join(reports, reports.c.id == report_notes.c.report_id)
            .where(
                report_notes.c.author == author,
                report_notes.c.kind == "question",
                report_notes.c.at >= since,
            )
        )
        return [(row.code, row.id) for row in result]

    async def record_question_message(self, conn: AsyncConnection, note_id: int, message_id: int) -> None:
        """Remember which message in the reporter's chat carries a question (only replies to it count)."""
        await conn.execute(
            update(report_notes).where(report_notes.c.id == note_id).values(message_id=message_id)
        )

    async def question_by_message(self, conn: AsyncConnection, report_id: int, message_id: int) -> bool:
        """Tell whether this message in the reporter's chat is one of the report's questions."""
        stmt = select(report_notes.c.id).where(
            report_notes.c.report_id == report_id,
            report_notes.c.kind == "question",
            report_notes.c.message_id == message_id,
        )
        return (await conn.execute(stmt)).first() is not None

    async def notes(self, conn: AsyncConnection, report_id: int) -> list[Note]:
        """Return a report's notes and conversation, oldest first."""
        rows = await conn.execute(
            select(report_notes).where(report_notes.c.report_id == report_id).order_by(report_notes.c.id)
        )
        return [Note(r.id, r.kind, r.author, r.body, r.at) for r in rows]

    async def forget_reporter(self, conn: AsyncConnection, pseudonym: str, now: datetime) -> int:
        """Cut every link from reports to this person: they become anonymous."""
        result = await conn.execute(
            update(reports)
            .where(reports.c.reporter == pseudonym)
            .values(reporter=None, contact_chat=None, contactable=False, updated_at=now)
        )
        return result.rowcount or 0

    async def add_event(
        self, conn: AsyncConnection, report_id: int, actor: str, action: str, now: datetime
    ) -> None:
        """Record who did what to a report."""
        await conn.execute(
            insert(report_events).values(report_id=report_id, actor=actor, action=action, at=now)
        )

    async def events(self, conn: AsyncConnection, report_id: int) -> list[tuple[str, str, datetime]]:
        """Return (actor, action, at) for a report, oldest first."""
        rows = await conn.execute(
            select(report_events.c.actor, report_events.c.action, report_events.c.at)
            .where(report_events.c.report_id == report_id)
            .order_by(report_events.c.id)
        )
        return [(r.actor, r.action, r.at) for r in rows]


class ActionRepository:
    """A short log of what each person did, for abuse limits."""

    async def record(self, conn: AsyncConnection, pseudonym: str, action: str, now: datetime) -> None:
        """Log one action."""
        await conn.execute(insert(user_actions).values(pseudonym=pseudonym, action=action, at=now))

    async def count_since(self, conn: AsyncConnection, pseudonym: str, action: str, since: datetime) -> int:
        """Count a person's actions of one kind since a time."""
        stmt = select(func.count()).where(
            user_actions.c.pseudonym == pseudonym, user_actions.c.action == action, user_actions.c.at > since
        )
        return int((await conn.execute(stmt)).scalar() or 0)

    async def purge_before(self, conn: AsyncConnection, before: datetime) -> int:
        """Delete old entries."""
        return (await conn.execute(delete(user_actions).where(user_actions.c.at < before))).rowcount or 0

    async def forget(self, conn: AsyncConnection, pseudonym: str) -> None:
        """Delete a person's entries."""
        await conn.execute(delete(user_actions).where(user_actions.c.pseudonym == pseudonym))


def _report(row: Row[Any]) -> Report:
    return Report(
        id=row.id,
        code=row.code,
        kind=row.kind,
        category=row.category,
        occurred_at=row.occurred_at,
        occurred_precision=row.occurred_precision,
        region=row.region,
        body=row.body,
        contactable=bool(row.contactable),
        reporter=row.reporter,
        contact_chat=row.contact_chat,
        status=row.status,
        created_at=row.created_at,
        assignee=row.assignee,
        acknowledged_by=row.acknowledged_by,
        acknowledged_at=row.acknowledged_at,
        reason=row.reason,
        duplicate_of=row.duplicate_of,
        closed_at=row.closed_at,
        revision=row.revision,
        alert_chat=row.alert_chat,
        alert_message_id=row.alert_message_id,
        escalate_at=row.escalate_at,
        escalations=row.escalations,
    )
