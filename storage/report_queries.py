"""Reading reports in bulk for coordinators: filtered pages, streamed exports, searches, weekly counts."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import BigInteger, Select, func, literal, select, type_coerce
from sqlalchemy.ext.asyncio import AsyncConnection

from storage.reports import Note, Report, _report
from storage.schema import evidence, report_notes, reports
from storage.types import to_micros

OPEN_STATUSES = ("new", "in_progress", "verified")
UNASSIGNED = "-"  # an assignee filter meaning "nobody has it"
_WEEK_MICROS = 7 * 24 * 3600 * 1_000_000


@dataclass(frozen=True)
class ReportQuery:
    """Filters for lists and exports; None means any. `status` may also be "open"."""

    status: str | None = None
    category: str | None = None
    region: str | None = None
    assignee: str | None = None  # a pseudonym, or UNASSIGNED
    since: datetime | None = None


@dataclass(frozen=True)
class ListedReport:
    """What a list line shows: nothing encrypted, so a page needs no decryption."""

    id: int
    code: str
    kind: str
    category: str
    region: str | None
    status: str
    assignee: str | None
    created_at: datetime


class ReportQueries:
    """Bulk reads over reports; never loads more than one batch at a time."""

    async def page(
        self, conn: AsyncConnection, query: ReportQuery, before_id: int | None, limit: int
    ) -> list[ListedReport]:
        """Return up to `limit` reports matching `query`, newest first, older than `before_id`."""
        stmt = _filtered(
            select(
                reports.c.id,
                reports.c.code,
                reports.c.kind,
                reports.c.category,
                reports.c.region,
                reports.c.status,
                reports.c.assignee,
                reports.c.created_at,
            ),
            query,
        )
        if before_id is not None:
            stmt = stmt.where(reports.c.id < before_id)
        rows = await conn.execute(stmt.order_by(reports.c.id.desc()).limit(limit))
        return [
            ListedReport(r.id, r.code, r.kind, r.category, r.region, r.status, r.assignee, r.created_at)
            for r in rows
        ]

    async def batches(
        self, conn: AsyncConnection, query: ReportQuery, batch: int = 500
    ) -> AsyncIterator[list[Report]]:
        """Yield matching reports oldest first, `batch` at a time (keyset paging: flat memory)."""
        after = 0
        while True:
            stmt = _filtered(select(reports), query).where(reports.c.id > after)
            rows = (await conn.execute(stmt.order_by(reports.c.id).limit(batch))).all()
            if not rows:
                return
            yield [_report(row) for row in rows]
            if len(rows) < batch:
                return
            after = rows[-1].id

    async def evidence_hashes(self, conn: AsyncConnection, report_ids: Sequence[int]) -> dict[int, list[str]]:
        """Return each report's evidence SHA-256 digests, in the order received."""
        found: dict[int, list[str]] = defaultdict(list)
        if report_ids:
            rows = await conn.execute(
                select(evidence.c.report_id, evidence.c.sha256)
                .where(evidence.c.report_id.in_(report_ids))
                .order_by(evidence.c.id)
            )
            for report_id, digest in rows:
                found[report_id].append(digest)
        return found

    async def notes_for(self, conn: AsyncConnection, report_ids: Sequence[int]) -> dict[int, list[Note]]:
        """Return each report's notes and conversation, oldest first."""
        found: dict[int, list[Note]] = defaultdict(list)
        if report_ids:
            rows = await conn.execute(
                select(report_notes)
                .where(report_notes.c.report_id.in_(report_ids))
                .order_by(report_notes.c.id)
            )
            for r in rows:
                found[r.report_id].append(Note(r.id, r.kind, r.author, r.body, r.at))
        return found

    async def weekly(self, conn: AsyncConnection, since: datetime) -> list[tuple[int, str, str, int]]:
        """Count reports created since `since` by (whole weeks after it, category, status)."""
        created = type_coerce(reports.c.created_at, BigInteger)
        # Floor division: `/` is true division in SQLAlchemy 2, and PostgreSQL's CAST(numeric AS INTEGER)
        # rounds (3.6 weeks became week 4) where SQLite's truncates. `//` is integer division on both, and
        # the difference is never negative here (created >= since), so it truncates and floors alike.
        week = (created - literal(to_micros(since), BigInteger)) // _WEEK_MICROS
        stmt = (
            select(week.label("week"), reports.c.category, reports.c.status, func.count().label("n"))
            .where(reports.c.created_at >= since)
            .group_by(week, reports.c.category, reports.c.status)
        )
        return [(int(r.week), r.category, r.status, int(r.n)) for r in await conn.execute(stmt)]


def _filtered(stmt: Select[tuple[object, ...]], query: ReportQuery) -> Select[tuple[object, ...]]:
    if query.status == "open":
        stmt = stmt.where(reports.c.status.in_(OPEN_STATUSES))
    elif query.status is not None:
        stmt = stmt.where(reports.c.status == query.status)
    if query.category is not None:
        stmt = stmt.where(reports.c.category == query.category)
    if query.region is not None:
        stmt = stmt.where(reports.c.region == query.region)
    if query.assignee == UNASSIGNED:
        stmt = stmt.where(reports.c.assignee.is_(None))
    elif query.assignee is not None:
        stmt = stmt.where(reports.c.assignee == query.assignee)
    if query.since is not None:
        stmt = stmt.where(reports.c.created_at >= query.since)
    return stmt
