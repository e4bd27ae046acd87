"""A picture of the week for coordinators: reports per week by category, and open vs closed."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta

from bot.domain.report_form import CATEGORIES
from bot.services.core import Core
from bot.services.desk.chart import WeeklyPicture, render_png
from storage.report_queries import OPEN_STATUSES, ReportQueries

WEEKS = 12


@dataclass(frozen=True)
class WeekCounts:
    """Counts per week (oldest first) by category, and open/closed by week of creation."""

    weeks: list[date]
    by_category: dict[str, list[int]]
    opened: list[int]
    closed: list[int]

    @property
    def total(self) -> int:
        """Return all reports counted."""
        return sum(self.opened) + sum(self.closed)


@dataclass(frozen=True)
class Picture:
    """The chart and what its caption says."""

    png: bytes
    counts: WeekCounts


class StatsService:
    """Counts reports by week and draws them (one drawing at a time: it is CPU work)."""

    def __init__(
        self,
        core: Core,
        *,
        queries: ReportQueries,
    ) -> None:
        self._core = core
        self._queries = queries
        self._drawing = asyncio.Lock()

    async def picture(self, user_id: int, language: str) -> Picture:
        """Return the last 12 weeks as a PNG chart, with the counts."""
        first = self._first_monday()
        since = datetime.combine(first, time(), self._core.zone)
        async with self._core.gate.acting(user_id, "stats") as act:
            rows = await self._queries.weekly(act.conn, since)
            await self._core.audit.record(act.conn, act.actor, "stats")
        counts = tally(rows, first)
        labels = {c: self._core.texts.plain(language, f"category.{c}") for c in CATEGORIES}
        picture = WeeklyPicture(
            title=self._core.texts.plain(language, "stats.title", weeks=WEEKS),
            weeks=counts.weeks,
            by_category={labels[c]: counts.by_category[c] for c in CATEGORIES},
            opened=counts.opened,
            closed=counts.closed,
            reports_axis=self._core.texts.plain(language, "stats.axis"),
            open_label=self._core.texts.plain(language, "stats.open"),
            closed_label=self._core.texts.plain(language, "stats.closed"),
            by_category_title=self._core.texts.plain(language, "stats.by_category"),
            open_closed_title=self._core.texts.plain(language, "stats.open_closed"),
        )
        async with self._drawing:
            png = await asyncio.to_thread(render_png, picture)
        return Picture(png, counts)

    def _first_monday(self) -> date:
        today = self._core.clock.now().astimezone(self._core.zone).date()
        return today - timedelta(days=today.weekday()) - timedelta(weeks=WEEKS - 1)


def tally(rows: list[tuple[int, str, str, int]], first: date) -> WeekCounts:
    """Arrange (week, category, status, count) rows into per-week series (unknown weeks dropped)."""
    by_category = {c: [0] * WEEKS for c in CATEGORIES}
    opened, closed = [0] * WEEKS, [0] * WEEKS
    for week, category, status, count in rows:
        if not 0 <= week < WEEKS:
            continue
        by_category.setdefault(category, [0] * WEEKS)[week] += count
        (opened if status in OPEN_STATUSES else closed)[week] += count
    return WeekCounts([first + timedelta(weeks=i) for i in range(WEEKS)], by_category, opened, closed)
