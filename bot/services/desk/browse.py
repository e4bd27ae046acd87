"""The coordinators' desk: filtered lists of reports, the full view of one, internal notes and search."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field, replace
from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo

from bot.domain.errors import Refused
from bot.domain.report_form import CATEGORIES, REGIONS, clean_text, telegram_length
from bot.security.bindings import note_binding
from bot.services.access.team import MEMBER_REF_LENGTH, TeamService, member_label
from bot.services.core import Core
from bot.services.reports.body import ReportBody, open_body, parse_code, safe_code
from bot.services.reports.evidence import EvidenceStore
from storage.report_queries import UNASSIGNED, ListedReport, ReportQueries, ReportQuery
from storage.reports import Evidence, Report, ReportRepository
from storage.team import TeamRepository

PAGE_SIZE = 10
NOTE_LIMIT = 2000
FIND_LIMIT = 20
FIND_BATCH = 500
STATUSES = ("new", "in_progress", "verified", "closed", "rejected")
STATUS_FILTERS = ("open", *STATUSES)
_DAYS = re.compile(r"^(\d{1,4})d$")
# Paging buttons carry "since" in minutes after this moment (64 bytes of callback data are all there is).
_EPOCH = datetime(2000, 1, 1, tzinfo=ZoneInfo("UTC"))


@dataclass(frozen=True)
class ListLine:
    """One report in a list, with its assignee's display label."""

    report: ListedReport
    assignee: str | None


@dataclass(frozen=True)
class Page:
    """A page of a filtered list; `next_before` continues it, None at the end."""

    lines: list[ListLine]
    next_before: int | None
    token: str


@dataclass(frozen=True)
class NoteView:
    """A note or a message of the conversation with the reporter, decrypted."""

    kind: str
    author: str | None
    text: str
    at: datetime


@dataclass(frozen=True)
class ReportView:
    """Everything about one report, decrypted in memory for one coordinator."""

    report: Report
    body: ReportBody
    assignee: str | None
    acknowledged_by: str | None
    evidence: list[Evidence]
    notes: list[NoteView]
    events: list[tuple[str, str, datetime]]
    # Per file: BOUND, or MOVED / UNSEALED when its record does not match this report (not to be sent).
    evidence_checks: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Found:
    """A search hit: the report and a short excerpt around the first match."""

    report: ListedReport
    excerpt: str


class DeskService:
    """Lists, views, notes and searches; all for coordinators and admins, views and notes audited."""

    def __init__(
        self,
        core: Core,
        *,
        reports: ReportRepository,
        queries: ReportQueries,
        team: TeamService,
        team_repo: TeamRepository,
        evidence: EvidenceStore,
    ) -> None:
        self._core = core
        self._reports = reports
        self._queries = queries
        self._team = team
        self._team_repo = team_repo
        self._evidence = evidence

    async def parse_query(self, user_id: int, args: Sequence[str]) -> ReportQuery:
        """Read filters like `status=new region=osh_city assignee=me since=7d` (bare values work too)."""
        async with self._core.gate.acting(user_id, "desk.filter", once=False) as act:
            members = await self._team_repo.members(act.conn)
            known = await self._team.names(act.conn, [m.pseudonym for m in members])
            names = {m.pseudonym: known.get(m.pseudonym) for m in members}
            return self._parse(args, act.actor, names)

    def parse_filters(self, args: Sequence[str]) -> ReportQuery:
        """Read filters without a person behind them (the command line): no "me", no names."""
        return self._parse(args, "", {})

    async def page(self, user_id: int, query: ReportQuery, before: int | None = None) -> Page:
        """Return one page of reports matching `query`, newest first."""
        async with self._core.gate.acting(user_id, "desk.list", once=False) as act:
            if query.assignee not in (None, UNASSIGNED) and len(query.assignee or "") == MEMBER_REF_LENGTH:
                # A paging button names the assignee by member ref: find whose it is.
                refs = {
                    m.pseudonym[:MEMBER_REF_LENGTH]: m.pseudonym
                    for m in await self._team_repo.members(act.conn)
                }
                query = replace(query, assignee=refs.get(query.assignee or "", query.assignee))
            rows = await self._queries.page(act.conn, query, before, PAGE_SIZE + 1)
            names = await self._team.names(act.conn, [r.assignee for r in rows])
        more = len(rows) > PAGE_SIZE
        rows = rows[:PAGE_SIZE]
        lines = [
            ListLine(r, member_label(names.get(r.assignee), r.assignee) if r.assignee else None) for r in rows
        ]
        return Page(lines, rows[-1].id if more and rows else None, encode_query(query))

    async def view(self, user_id: int, raw_code: str) -> ReportView:
        """Return a report in full (audited: a full view shows what the reporter wrote)."""
        async with self._core.gate.acting(user_id, "desk.view", safe_code(raw_code)) as act:
            code = parse_code(raw_code)
            report = await self._reports.by_code(act.conn, code)
            items = await self._reports.evidence.for_report(act.conn, report.id)
            notes = await self._reports.notes(act.conn, report.id)
            events = await self._reports.events(act.conn, report.id)
            people = [
                report.assignee,
                report.acknowledged_by,
                *(n.author for n in notes),
                *(e[0] for e in events),
            ]
            names = await self._team.names(act.conn, people)
            await self._core.audit.record(act.conn, act.actor, "desk.view", code)

        def label(pseudonym: str | None) -> str | None:
            return member_label(names.get(pseudonym), pseudonym) if pseudonym else None

        return ReportView(
            report=report,
            body=open_body(self._core.cipher, report),
            assignee=label(report.assignee),
            acknowledged_by=label(report.acknowledged_by),
            evidence=items,
            evidence_checks=[self._evidence.check_row(report.id, code, item) for item in items],
            notes=[
                NoteView(
                    n.kind,
                    label(n.author),
                    self._core.cipher.decrypt_text(n.body, binding=note_binding(code, n.kind)),
                    n.at,
                )
                for n in notes
            ],
            events=[(label(actor) or "—", action, at) for actor, action, at in events],
        )

    def open_evidence(self, item: Evidence) -> AbstractAsyncContextManager[bytes]:
        """Hold an evidence file's original bytes, checked against its digest, while it is sent (after
        `view` allowed it); raises EvidenceDamaged. Only a few are held at once, whoever asks."""
        return self._evidence.opened(item)

    async def note(self, user_id: int, raw_code: str, raw_text: str) -> str:
        """Add an internal note to a report; return its code."""
        async with self._core.gate.acting(user_id, "desk.note", safe_code(raw_code)) as act:
            code = parse_code(raw_code)
            text = clean_text(raw_text)
            if not text:
                raise Refused("desk.note_usage")
            if telegram_length(text) > NOTE_LIMIT:
                raise Refused("desk.note_too_long", limit=NOTE_LIMIT)
            report = await self._reports.by_code(act.conn, code)
            sealed = self._core.cipher.encrypt_text(text, binding=note_binding(code, "note"))
            await self._reports.add_note(
                act.conn, report.id, "note", act.actor, sealed, self._core.clock.now()
            )
            await self._core.audit.record(act.conn, act.actor, "desk.note", code)
        return code

    async def find(self, user_id: int, raw_words: str) -> tuple[list[Found], int]:
        """Search report texts for all the words (case-insensitive); return up to 20 hits and how many
        reports were read.

        Bodies are encrypted, so this decrypts each report in memory, newest first: linear in the number
        of reports (bench/triage.py measures it), yielding to other work between batches.
        """
        words = [w.casefold() for w in clean_text(raw_words).split() if w]
        if not words:
            raise Refused("desk.find_usage")
        async with self._core.gate.acting(user_id, "desk.find") as act:
            await self._core.audit.record(act.conn, act.actor, "desk.find", detail=f"{len(words)} word(s)")
        hits: list[Found] = []
        scanned = 0
        before: int | None = None
        while len(hits) < FIND_LIMIT:
            async with self._core.db.read() as conn:
                batch = await self._queries.page(conn, ReportQuery(), before, FIND_BATCH)
                full = {r.id: r for r in await self._reports.by_ids(conn, [b.id for b in batch])}
            for listed in batch:
                scanned += 1
                excerpt = _match(open_body(self._core.cipher, full[listed.id]), words)
                if excerpt is not None:
                    hits.append(Found(listed, excerpt))
                    if len(hits) >= FIND_LIMIT:
                        break
            if len(batch) < FIND_BATCH:
                break
            before = batch[-1].id
            await asyncio.sleep(0)  # decryption is CPU work: let updates through between batches
        return hits, scanned

    def _parse(self, args: Sequence[str], actor: str, names: dict[str, str | None]) -> ReportQuery:
        values: dict[str, object] = {}
        for raw in args:
            key, sep, value = raw.partition("=")
            key, value = (key.strip().lower(), value.strip()) if sep else ("", raw.strip())
            if not value:
                continue
            lowered = value.lower()
            if key in ("", "status") and lowered in STATUS_FILTERS:
                values["status"] = lowered
            elif key in ("", "category") and lowered in CATEGORIES:
                values["category"] = lowered
            elif key in ("", "region") and lowered in REGIONS:
                values["region"] = lowered
            elif key == "assignee":
                values["assignee"] = self._assignee(value, actor, names)
            elif key == "since":
                values["since"] = self._since(value)
            else:
                raise Refused("desk.filter_invalid", part=raw[:40])
        return ReportQuery(**values)  # type: ignore[arg-type]

    def _assignee(self, value: str, actor: str, names: dict[str, str | None]) -> str:
        lowered = value.casefold()
        if lowered in ("me", "я", "мен", "men"):
            return actor
        if lowered in ("none", "nobody", "-"):
            return UNASSIGNED
        matches = [
            p
            for p, name in names.items()
            if p[:MEMBER_REF_LENGTH] == value or (name is not None and name.casefold() == lowered)
        ]
        if len(matches) != 1:
            raise Refused("desk.filter_invalid", part=f"assignee={value[:30]}")
        return matches[0]

    def _since(self, value: str) -> datetime:
        days = _DAYS.match(value.lower())
        if days:
            return self._core.clock.now() - timedelta(days=int(days.group(1)))
        for pattern in ("%Y-%m-%d", "%d.%m.%Y"):
            try:
                day = datetime.strptime(value, pattern).date()  # noqa: DTZ007 (a date, zoned below)
            except ValueError:
                continue
            return datetime.combine(day, time(), self._core.zone)
        raise Refused("desk.filter_invalid", part=f"since={value[:20]}")


def encode_query(query: ReportQuery) -> str:
    """Pack filters into a few characters, for the paging buttons' 64-byte callback data."""
    parts = [
        str(STATUS_FILTERS.index(query.status)) if query.status else "",
        str(CATEGORIES.index(query.category)) if query.category else "",
        str(REGIONS.index(query.region)) if query.region else "",
        query.assignee[:MEMBER_REF_LENGTH] if query.assignee else "",
        str(int((query.since - _EPOCH).total_seconds() // 60)) if query.since else "",
    ]
    return ".".join(parts)


def decode_query(token: str) -> ReportQuery:
    """Unpack `encode_query` (the assignee comes back as a member ref); raise Refused if garbled."""
    parts = token.split(".")
    try:
        if len(parts) != 5:
            raise ValueError(token)
        status, category, region, assignee, since = parts
        return ReportQuery(
            status=STATUS_FILTERS[int(status)] if status else None,
            category=CATEGORIES[int(category)] if category else None,
            region=REGIONS[int(region)] if region else None,
            assignee=assignee or None,
            since=_EPOCH + timedelta(minutes=int(since)) if since else None,
        )
    except (ValueError, IndexError, OverflowError):
        raise Refused("callback.stale") from None


def _match(body: ReportBody, words: list[str]) -> str | None:
    haystack = "\n".join(part for part in (body.text, body.place, body.people) if part)
    folded = haystack.casefold()
    if not all(word in folded for word in words):
        return None
    # casefold can change lengths (ß → ss); the excerpt is approximate, which is all it needs to be.
    at = max(folded.find(words[0]), 0)
    start = max(at - 40, 0)
    excerpt = " ".join(haystack[start : start + 120].split())
    return ("…" if start else "") + excerpt + ("…" if start + 120 < len(haystack) else "")
