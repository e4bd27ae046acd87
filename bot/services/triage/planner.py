"""Plan the coordinators' group's budget instead of only obeying it: digests when a card per report
cannot keep up, SOS first.

Telegram lets a bot post about 20 messages a minute into one group, edits included. On a calm day each
report gets its own card. When more report cards wait than the window can take within about half a
minute, the waiting ones are folded into digests: one message listing up to DIGEST_SIZE reports (SOS first,
then oldest first: code, category, region, time, anonymous or contactable), with a button per report that
sends its full card to the presser in private. The slots are tiered (see AlertService.headroom): report
cards never take the last `sos_reserve + digest_reserve` slots of a window, SOS cards never the last
`digest_reserve`, digests may take any. An SOS card that finds no slot within a second is listed at
the top of the next digest too (and it has already gone to the coordinators on duty in private), and so is,
in any digest that goes, every SOS card beyond what its tier can send within that second; its own card
still follows as soon as a slot frees.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy.ext.asyncio import AsyncConnection

from bot.domain import dates
from bot.domain.callbacks import OpenCard
from bot.runtime.outbox import PRIORITY_SOS, OutgoingMessage
from bot.runtime.ratelimit import SendLimiter
from bot.services.core import Core
from bot.services.triage.alerts import (
    CARD_KIND,
    DIGEST_KIND,
    PRIORITY_DIGEST,
    AlertService,
)
from storage.outbox import OutboxRepository, WaitingRow
from storage.reports import Report, ReportRepository

log = logging.getLogger(__name__)

WINDOW_S = 60.0
# Telegram shows at most 100 buttons under a message and 4,096 characters in it: at most 60 lines, fewer
# when long category and region names make the text too long.
DIGEST_SIZE = 60
TEXT_LIMIT = 4096
DIGEST_ROW = 5
MIN_GAP_S = 0.2


@dataclass(frozen=True)
class PlannerConfig:
    """When to fold reports into digests."""

    # Report cards that would not all go out individually within this long are digested.
    horizon_s: float = 30.0
    # An SOS card waiting this long for a slot is listed in the next digest too.
    sos_grace_s: float = 1.0
    # How long a few waiting reports may wait for more to join them, by how many slots are left (1, 2,
    # 3, 4 or more): a digest slot is precious when few remain ("digest harder").
    gather_s: tuple[float, ...] = (25.0, 12.0, 6.0, 2.0)
    # Slots a digest of reports alone leaves for SOS that may come next, until its oldest report has
    # waited `deadline_s` (then every slot may serve it: every report is visible within a minute).
    keep_for_sos: int = 2
    deadline_s: float = 30.0
    # Every report is to be visible within a minute of its submit; this leaves a margin for the send.
    visible_s: float = 50.0
    # SOS keep arriving one by one in a burst: with few slots left, list them at most this often, so
    # each digest carries several instead of one slot going per SOS.
    sos_fold_gap_s: float = 1.0


class AlertPlanner:
    """One pass at a time: look at what waits for the coordinators' chat and fold it into digests."""

    def __init__(
        self,
        core: Core,
        *,
        alerts: AlertService,
        outbox_repo: OutboxRepository,
        reports: ReportRepository,
        limiter: SendLimiter,
        sos_reserve: int,
        digest_reserve: int,
        config: PlannerConfig | None = None,
    ) -> None:
        self._core = core
        self._alerts = alerts
        self._outbox_repo = outbox_repo
        self._reports = reports
        self._limiter = limiter
        self._sos_reserve = sos_reserve
        self._digest_reserve = digest_reserve
        self._config = config or PlannerConfig()
        # SOS already listed in a digest (their own cards still follow): listed once per run.
        self._listed: set[str] = set()
        self._wake = asyncio.Event()
        self._stopping = False
        self._last_sos_fold = -1e9

    def wake(self) -> None:
        """Look at the queue now (something was enqueued)."""
        self._wake.set()

    def stop(self) -> None:
        """End run()."""
        self._stopping = True
        self._wake.set()

    async def run(self, interval_s: float = 0.5, when: Callable[[], bool] | None = None) -> None:
        """Plan every `interval_s`, and at once when woken, until stopped; a failed pass is logged and
        the next one tries again (the queue is the truth, nothing is lost meanwhile). `when`: plan only
        while it holds (several instances: the elected sender plans, its limiter knows the window)."""
        while not self._stopping:
            self._wake.clear()
            try:
                if when is None or when():
                    await self.plan()
            except Exception:
                log.exception("planning the coordinators' chat's budget failed; trying again")
            # At most a few passes a second, however many alerts are being queued.
            await asyncio.sleep(MIN_GAP_S)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=max(0.0, interval_s - MIN_GAP_S))

    async def plan(self) -> int:
        """Fold what cannot go out card by card into digests; return how many digests were queued."""
        limit = self._limiter.group_limit
        if limit <= 0:
            return 0  # no group limit: every report gets its card at once
        async with self._core.db.read() as conn:
            chat = await self._alerts.coordinator_chat(conn)
            key = self._alerts.chat_key
            if chat is None or key is None:
                return 0
            # With the SOS cards a worker holds: one waiting there for a slot of a spent tier is still to be
            # listed (only queued rows count for the rest of the plan).
            rows = await self._outbox_repo.waiting(conn, key, ("alert", CARD_KIND, DIGEST_KIND), claimed=True)
        held_sos = [
            row for row in rows if row.claimed and row.kind == CARD_KIND and row.priority >= PRIORITY_SOS
        ]
        waiting = [row for row in rows if not row.claimed]
        fold = self._decide(key, limit, waiting, held_sos)
        if fold is None:
            return 0
        async with self._core.unit_of_work() as uow:
            conn = uow.conn
            digests = await self._fold(conn, chat, waiting, *fold)
            if digests:
                uow.wake_delivery()
            await uow.commit()
        return digests

    def _decide(
        self, key: str, limit: int, waiting: Sequence[WaitingRow], held_sos: Sequence[WaitingRow] = ()
    ) -> tuple[list[WaitingRow], list[str], int] | None:
        """Return the report cards to fold, the SOS to list and how many digests may go, or None."""
        now, mono = self._core.clock.now(), self._limiter.now()
        cards = [row for row in waiting if row.kind == CARD_KIND and row.ref is not None]
        report_cards = sorted((row for row in cards if row.priority < PRIORITY_SOS), key=lambda r: r.id)
        sos_cards = sorted((row for row in cards if row.priority >= PRIORITY_SOS), key=lambda r: r.id)
        late_sos = [
            row.ref
            for row in sos_cards
            if row.ref is not None
            and row.ref not in self._listed
            and (now - row.created_at).total_seconds() >= self._config.sos_grace_s
        ]
        if not report_cards and not late_sos:
            return None
        used = self._limiter.chat_used(key, mono)
        calm = not self._alerts.under_pressure()
        individual = limit - (self._sos_reserve // 2 if calm else self._sos_reserve + self._digest_reserve)
        extras = sum(1 for row in waiting if row.kind == "alert" and row.priority < PRIORITY_SOS)
        oldest = (now - report_cards[0].created_at).total_seconds() if report_cards else 0.0
        # Cards go one by one only if the oldest can still be shown well within the minute.
        horizon = max(0.0, min(self._config.horizon_s, self._config.visible_s - oldest))
        if not late_sos and len(report_cards) + extras <= _capacity(individual, used, mono, horizon):
            return None  # every card goes out on its own soon enough
        # Slots already promised: digests queued and not yet sent, and the SOS cards that will take their
        # tier's slots before any digest of reports.
        queued_digests = sum(1 for row in waiting if row.kind == DIGEST_KIND)
        sos_tier = _capacity(limit - self._digest_reserve, used, mono, 0.0)
        queued_sos = min(sos_tier, len(sos_cards))
        free = _capacity(limit, used, mono, 0.0) - queued_digests - queued_sos
        if oldest < self._config.deadline_s:
            # Reports still coming in this burst need a slot too: the last one serves them at the deadline.
            free -= self._config.keep_for_sos if not late_sos else 1
        if not late_sos and free > 0 and len(report_cards) < DIGEST_SIZE:
            # A partial digest: with few slots left, let more reports join it first.
            gather = self._config.gather_s[min(free, len(self._config.gather_s)) - 1]
            if oldest < gather:
                return None
        if free <= 0:
            return None  # not even a digest fits now; the next pass looks again
        if late_sos and free < 4 and mono - self._last_sos_fold < self._config.sos_fold_gap_s:
            return None  # they are with the coordinators on duty already; let a few more join
        # The SOS tier's slots go to the oldest SOS cards (the worker sends by priority, then in order). An
        # SOS beyond what the tier can send within the grace will find no slot in it: the digest going now
        # lists it too, instead of one going seconds later for it alone (or with a few more).
        # Those a worker holds are among them: they wait for the same slots (some may be on their way,
        # which lists them once more than needed, never less).
        every_sos = sorted(
            [*sos_cards, *(row for row in held_sos if row.ref is not None)], key=lambda r: r.id
        )
        within_grace = _capacity(limit - self._digest_reserve, used, mono, self._config.sos_grace_s)
        beyond = {row.ref for row in every_sos[within_grace:]}
        sos = [
            row.ref
            for row in every_sos
            if row.ref is not None
            and row.ref not in self._listed
            and (row.ref in beyond or (now - row.created_at).total_seconds() >= self._config.sos_grace_s)
        ]
        if sos:
            self._last_sos_fold = mono
        room = max(0, free * DIGEST_SIZE - len(sos))
        return report_cards[:room], sos, free

    async def _fold(
        self,
        conn: AsyncConnection,
        chat: int,
        waiting: Sequence[WaitingRow],
        report_cards: Sequence[WaitingRow],
        sos_codes: Sequence[str],
        free: int,
    ) -> int:
        taken = await self._outbox_repo.take(conn, [row.id for row in report_cards], "shown in a digest")
        taken_codes = [row.ref for row in taken if row.ref is not None]
        if taken_codes:
            # What would have followed those cards is in the card a coordinator opens from the digest.
            folded = set(taken_codes)
            follow = [row.id for row in waiting if row.kind == "alert" and row.ref in folded]
            await self._outbox_repo.take(conn, follow, "shown in a digest")
        codes = [*sos_codes, *taken_codes]
        if not codes:
            return 0
        reports = {r.code: r for r in await self._reports.by_codes(conn, codes)}
        ordered = [reports[code] for code in codes if code in reports]
        # Every folded report is in a digest, even if that makes one digest more than slots are free
        # now: it waits in the queue like any alert, held and never dropped.
        messages = [self._digest(chat, part, waiting=len(ordered)) for part in self._parts(ordered)]
        await self._core.outbox.enqueue(conn, messages)
        self._listed.update(sos_codes)
        log.info("folded %d waiting alerts into %d digest(s)", len(ordered), len(messages))
        return len(messages)

    def _parts(self, reports: Sequence[Report]) -> list[list[Report]]:
        """Split reports into digests that fit Telegram's limits (counting tags too: on the safe side)."""
        frame = _units(
            self._core.texts.text(self._core.language, "digest.heading", count=DIGEST_SIZE, waiting=9999)
        )
        frame += _units(self._core.texts.text(self._core.language, "digest.footer")) + 2
        parts: list[list[Report]] = []
        current: list[Report] = []
        length = frame
        for report in reports:
            line = _units(self._line(report)) + 1
            if current and (len(current) >= DIGEST_SIZE or length + line > TEXT_LIMIT):
                parts.append(current)
                current, length = [], frame
            current.append(report)
            length += line
        if current:
            parts.append(current)
        return parts

    def _digest(self, chat: int, reports: Sequence[Report], waiting: int) -> OutgoingMessage:
        lang = self._core.language
        lines = [self._core.texts.text(lang, "digest.heading", count=len(reports), waiting=waiting)]
        lines += [self._line(report) for report in reports]
        lines.append(self._core.texts.text(lang, "digest.footer"))
        buttons = [
            {
                "text": ("🆘 " if report.kind == "sos" else "") + report.code,
                "callback_data": OpenCard(report.code).pack(),
            }
            for report in reports
        ]
        keyboard: dict[str, Any] = {"inline_keyboard": list(_chunks(buttons, DIGEST_ROW))}
        sos = any(report.kind == "sos" for report in reports)
        return OutgoingMessage(
            "sendMessage",
            {"chat_id": chat, "text": "\n".join(lines), "reply_markup": keyboard},
            kind=DIGEST_KIND,
            priority=PRIORITY_SOS if sos else PRIORITY_DIGEST,
        )

    def _line(self, report: Report) -> str:
        lang = self._core.language
        when = _local(report.occurred_at or report.created_at, self._core.clock.now(), self._core.zone)
        if report.kind == "sos":
            return self._core.texts.text(lang, "digest.sos_line", code=report.code, when=when)
        return self._core.texts.text(
            lang,
            "digest.line",
            code=report.code,
            category=self._core.texts.text(lang, f"category.{report.category}"),
            region=self._core.texts.text(lang, f"region.{report.region}") if report.region else "—",
            when=when,
            contact=self._core.texts.text(
                lang, "digest.contactable" if report.contactable else "digest.anonymous"
            ),
        )


def _capacity(limit: int, used: Sequence[float], now: float, horizon: float) -> int:
    """Return how many sends a window of `limit` per minute allows between now and now + horizon."""
    if limit <= 0:
        return 0
    freeing = sum(1 for at in used if at + WINDOW_S <= now + horizon)
    return max(0, limit - len(used)) + freeing


def _units(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


def _local(moment: datetime, now: datetime, zone: ZoneInfo) -> str:
    # A digest is about now: today's time alone keeps its lines short.
    return dates.since(moment, now, zone)


def _chunks(items: Sequence[Any], size: int) -> list[list[Any]]:
    return [list(items[i : i + size]) for i in range(0, len(items), size)]
