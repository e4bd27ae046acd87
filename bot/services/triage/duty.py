"""On duty and escalation: who gets every SOS in private, and what happens when nobody answers one.

Coordinators mark themselves on or off duty (/duty, or its button); every SOS then also goes to their
private chats as a live copy of its card. An SOS nobody acknowledges within `escalate_after` is sent again,
in private, to everyone on duty and to every admin, with how long it has waited; then again at a doubling
interval capped at `escalate_cap`, until someone acknowledges or takes it. The schedule is a column of the
report, so a restart loses nothing and a pass that runs twice escalates once.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncConnection

from bot.security.bindings import duty_chat_binding
from bot.services.core import Core
from bot.services.reports.body import alert_input
from bot.services.triage.actions import TriageService
from bot.services.triage.alerts import PRIORITY_NOTICE, PRIORITY_SOS_UPDATE, AlertService
from storage.alert_copies import DutyRepository
from storage.reports import Report, ReportRepository

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DutyState:
    """Whether the person is on duty now, and how many are."""

    on_duty: bool
    on_duty_count: int


class DutyService:
    """Marks coordinators on and off duty and escalates unanswered SOS."""

    def __init__(
        self,
        core: Core,
        *,
        duty: DutyRepository,
        reports: ReportRepository,
        alerts: AlertService,
        triage: TriageService,
        admin_ids: frozenset[int],
        escalate_after: timedelta,
        escalate_cap: timedelta,
    ) -> None:
        self._core = core
        self._duty = duty
        self._reports = reports
        self._alerts = alerts
        self._triage = triage
        self._admin_ids = admin_ids
        self._after = escalate_after
        self._cap = escalate_cap

    async def status(self, user_id: int) -> DutyState:
        """Return whether the person is on duty (coordinators and admins only)."""
        async with self._core.gate.acting(user_id, "team.duty_status") as act:
            mine = await self._duty.get(act.conn, act.actor)
            everyone = await self._duty.on_duty(act.conn)
        return DutyState(mine is not None, len(everyone))

    async def set(self, user_id: int, on: bool) -> DutyState:
        """Go on or off duty (coordinators and admins only, from their private chat: SOS go there)."""
        action = "team.duty_on" if on else "team.duty_off"
        async with self._core.gate.acting(user_id, action) as act:
            if on:
                chat = self._core.cipher.encrypt_text(str(user_id), binding=duty_chat_binding(act.actor))
                changed = await self._duty.start(act.conn, act.actor, chat, self._core.clock.now())
            else:
                changed = await self._duty.stop(act.conn, act.actor)
            if changed:
                await self._core.audit.record(act.conn, act.actor, action)
            everyone = await self._duty.on_duty(act.conn)
        return DutyState(on, len(everyone))

    async def escalate(self) -> int:
        """Escalate every SOS whose time has come; return how many were."""
        now = self._core.clock.now()
        escalated = 0
        async with self._core.unit_of_work() as uow:
            conn = uow.conn
            for report in await self._reports.due_escalations(conn, now):
                try:
                    async with conn.begin_nested():
                        await self._escalate_one(conn, report, now)
                except Exception:
                    # One report that cannot be escalated must not hold back every other SOS.
                    log.exception("SOS %s could not be escalated; trying again next pass", report.code)
                    continue
                escalated += 1
            if escalated:
                uow.wake_delivery()
            await uow.commit()
        return escalated

    async def _escalate_one(self, conn: AsyncConnection, report: Report, now: datetime) -> None:
        waited = max(1, int((now - report.created_at).total_seconds() // 60))
        recipients = dict.fromkeys([*await self._alerts.duty_chats(conn), *sorted(self._admin_ids)])
        evidence = await self._reports.evidence.for_report(conn, report.id)
        shown = alert_input(self._core.cipher, report, evidence)
        state = await self._triage.card_state(conn, report)
        heading = self._core.texts.text(
            self._core.language, "alert.escalated", code=report.code, minutes=waited
        )
        copies = [
            self._alerts.card_copy(shown, state, chat, PRIORITY_NOTICE, heading=heading)
            for chat in recipients
        ]
        await self._core.outbox.enqueue(conn, copies)
        # The card itself says how long it has waited.
        await self._triage.refresh_card(conn, report, PRIORITY_SOS_UPDATE)
        count = report.escalations + 1
        interval = min(self._cap, self._after * 2**count)
        await self._reports.schedule_escalation(conn, report.id, now + interval, count=count)
        await self._core.audit.record(conn, "system", "alerts.escalated", report.code, detail=str(count))
