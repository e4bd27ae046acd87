"""Triage on the alert card: acknowledge, take, verify, close, reject as spam or duplicate, reopen.

Every press is decided inside one write transaction against the report's current state, and applied only
to the revision it read: two coordinators pressing at once get one winner and one explanation, never a
forked state. Each change is audited, re-renders the card in place, and may tell the reporter.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

from sqlalchemy.ext.asyncio import AsyncConnection

from bot.domain.errors import Refused
from bot.runtime.delivery import Receipt
from bot.security.bindings import copy_chat_binding
from bot.services.access.roles import COORDINATING
from bot.services.access.team import TeamService, member_label
from bot.services.contact import ContactService
from bot.services.core import Core
from bot.services.reports.body import alert_input, parse_code, safe_code
from bot.services.reports.evidence import BOUND, EvidenceStore
from bot.services.triage.alerts import (
    CARD_KIND,
    EDIT_KIND,
    FINAL_STATUSES,
    PRIORITY_DIGEST,
    PRIORITY_EDIT,
    TRIAGE_ACTIONS,
    AlertService,
    CardState,
)
from storage.alert_copies import AlertCopyRepository, CardCopy
from storage.reports import Report, ReportRepository
from storage.users import UserRepository

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Answer:
    """What to tell the presser: a text key and its parameters; `changed` if the state moved."""

    key: str
    params: dict[str, object]
    changed: bool


class TriageService:
    """Applies triage actions to reports and keeps their alert cards current."""

    def __init__(
        self,
        core: Core,
        *,
        reports: ReportRepository,
        users: UserRepository,
        team: TeamService,
        alerts: AlertService,
        contact: ContactService,
        reporter_updates: frozenset[str],
        copies: AlertCopyRepository,
        evidence: EvidenceStore | None = None,
    ) -> None:
        self._core = core
        self._reports = reports
        self._users = users
        self._team = team
        self._alerts = alerts
        self._contact = contact
        self._reporter_updates = reporter_updates
        self._copies = copies
        self._evidence = evidence

    async def press(
        self,
        user_id: int,
        raw_code: str,
        action: str,
        *,
        chat_id: int | None = None,
        message_id: int | None = None,
    ) -> Answer:
        """Apply one triage button press (coordinators and admins only); the pressed message, if it is a
        copy of the card nobody recorded (sent just before a crash), is edited with the others from now on."""
        name = f"triage.{action}" if action in TRIAGE_ACTIONS else "triage.unknown"
        async with self._core.gate.acting(user_id, name, safe_code(raw_code)) as act:
            code = parse_code(raw_code)
            if action not in TRIAGE_ACTIONS:
                raise Refused("callback.stale")
            report = await self._reports.by_code(act.conn, code)
            if chat_id is not None and message_id is not None:
                await self._adopt(act.conn, report, user_id, act.actor, chat_id, message_id)
            answer = await self._decide(act.conn, report, act.actor, action)
            if answer.changed:
                act.uow.wake_delivery()
        return answer

    async def mark_duplicate(self, user_id: int, raw_code: str, raw_original: str) -> Answer:
        """Reject a report as a duplicate of another (coordinators and admins only)."""
        async with self._core.gate.acting(user_id, "triage.duplicate", safe_code(raw_code)) as act:
            code, original = parse_code(raw_code), parse_code(raw_original)
            if code == original:
                raise Refused("triage.duplicate_self")
            report = await self._reports.by_code(act.conn, code)
            if (await self._reports.by_code(act.conn, original)).status == "rejected":
                raise Refused("triage.duplicate_of_rejected", original=original)
            if report.status in FINAL_STATUSES:
                return Answer("triage.already_final", {"code": code}, changed=False)
            values = {
                "status": "rejected",
                "reason": "duplicate",
                "duplicate_of": original,
                "closed_at": self._core.clock.now(),
            }
            answer = await self._apply(act.conn, report, act.actor, "duplicate", values, "closed")
            act.uow.wake_delivery()
        return answer

    async def is_card(self, code: str, chat_id: int, message_id: int) -> bool:
        """Tell whether a message is one of the report's alert cards."""
        async with self._core.db.read() as conn:
            try:
                report = await self._reports.by_code(conn, code)
            except LookupError:
                return False
            if report.alert_chat == chat_id and report.alert_message_id == message_id:
                return True
            return await self._copies.is_copy(conn, report.id, self._chat_key(chat_id), message_id)

    async def card_sent(self, conn: AsyncConnection, receipts: Sequence[Receipt]) -> None:
        """Remember where each card went; bring a card up to date if triage began before it was sent.

        A burst's cards arrive in one flush: the reports are read in one query, and the cards of reports
        nobody has changed yet (most of them) are recorded in one statement each for reports and copies.
        """
        reports = {r.code: r for r in await self._reports.by_codes(conn, [r.ref for r in receipts if r.ref])}
        cards: dict[str, tuple[int, int]] = {}
        fresh: list[tuple[int, CardCopy]] = []
        now = self._core.clock.now()
        for receipt in receipts:
            if receipt.ref is None:
                continue
            report = reports.get(receipt.ref)
            if report is None:
                log.warning("a card was sent for a report that is gone; not recorded")
                continue
            in_group = receipt.chat_id < 0
            if in_group and report.alert_chat is None and receipt.ref not in cards:
                cards[receipt.ref] = (receipt.chat_id, receipt.message_id)
            holder = (
                None
                if in_group or self._core.pseudonyms is None
                else self._core.pseudonyms.of_user(receipt.chat_id)
            )
            if holder is not None and not await self._still_on_team(conn, holder):
                continue  # their role was taken while the copy was on its way: not kept current
            copy = self._seal_copy(receipt.chat_id, receipt.message_id, holder, receipt.via_bot)
            if report.revision == 0:
                fresh.append((report.id, copy))  # nothing to bring up to date: no need to know if it is new
            elif await self._copies.add(conn, report.id, copy, now):
                await self._queue_edit(conn, report, only=copy)
        await self._reports.record_alert_cards(conn, cards)
        await self._copies.add_many(conn, fresh, now)

    async def _decide(self, conn: AsyncConnection, report: Report, actor: str, action: str) -> Answer:
        code, status = report.code, report.status
        final = status in FINAL_STATUSES
        if action == "reopen":
            if not final:
                return Answer("triage.not_final", {"code": code}, changed=False)
            reopening = {"status": "in_progress", "assignee": actor, "reason": None, "duplicate_of": None}
            return await self._apply(conn, report, actor, action, {**reopening, "closed_at": None}, None)
        if final:
            return Answer("triage.already_final", {"code": code}, changed=False)
        if action == "ack":
            if report.acknowledged_by is not None:
                who = await self._label(conn, report.acknowledged_by)
                return Answer("triage.already_acknowledged", {"code": code, "who": who}, changed=False)
            seen = {"acknowledged_by": actor, "acknowledged_at": self._core.clock.now()}
            return await self._apply(conn, report, actor, action, seen, None)
        if action == "take":
            if report.assignee == actor:
                return Answer("triage.already_yours", {"code": code}, changed=False)
            if report.assignee is not None and await self._still_on_team(conn, report.assignee):
                who = await self._label(conn, report.assignee)
                return Answer("triage.taken_by", {"code": code, "who": who}, changed=False)
            taking: dict[str, object] = {"assignee": actor}
            if status == "new":
                taking["status"] = "in_progress"
            if report.acknowledged_by is None:
                taking |= {"acknowledged_by": actor, "acknowledged_at": self._core.clock.now()}
            update = "taken" if status == "new" else None
            return await self._apply(conn, report, actor, action, taking, update)
        if action == "verify":
            if status == "new":
                return Answer("triage.take_first", {"code": code}, changed=False)
            if status == "verified":
                return Answer("triage.already_verified", {"code": code}, changed=False)
            return await self._apply(conn, report, actor, action, {"status": "verified"}, None)
        if action == "close":
            closing = {"status": "closed", "closed_at": self._core.clock.now()}
            return await self._apply(conn, report, actor, action, closing, "closed")
        # spam
        spam = {"status": "rejected", "reason": "spam", "closed_at": self._core.clock.now()}
        return await self._apply(conn, report, actor, action, spam, None)

    async def _apply(
        self,
        conn: AsyncConnection,
        report: Report,
        actor: str,
        action: str,
        values: Mapping[str, object],
        reporter_update: str | None,
    ) -> Answer:
        now = self._core.clock.now()
        if not await self._reports.change(conn, report.id, report.revision, now, **values):
            # Another instance changed it between our read and write (PostgreSQL): say so, apply nothing.
            return Answer("triage.changed_meanwhile", {"code": report.code}, changed=False)
        await self._reports.add_event(conn, report.id, actor, action, now)
        changed = await self._reports.by_code(conn, report.code)
        await self._core.audit.record(conn, actor, f"triage.{action}", report.code, detail=changed.status)
        if changed.escalate_at is not None and (changed.acknowledged_by or changed.status != "new"):
            # Someone answered the SOS: stop escalating it.
            await self._reports.schedule_escalation(conn, changed.id, None)
            changed = await self._reports.by_code(conn, report.code)
        await self._queue_edit(conn, changed)
        if reporter_update is not None and reporter_update in self._reporter_updates:
            await self._contact.queue_update(conn, changed, reporter_update)
        return Answer(f"triage.done_{action}", {"code": report.code}, changed=True)

    async def refresh_card(
        self, conn: AsyncConnection, report: Report, priority: int = PRIORITY_EDIT
    ) -> None:
        """Bring every copy of a report's card up to date (an SOS's follow-up, its waiting time)."""
        await self._queue_edit(conn, report, priority=priority)

    async def _queue_edit(
        self,
        conn: AsyncConnection,
        report: Report,
        *,
        priority: int = PRIORITY_EDIT,
        only: CardCopy | None = None,
    ) -> None:
        """Queue the card's new look on every copy, dropping older edits not yet sent (they would only
        flicker): only the latest state is ever sent."""
        targets = await self._targets(conn, report) if only is None else [self._open_copy(only)]
        if not targets:
            return  # not sent yet: card_sent brings it up to date when it is
        if only is None:
            await self._core.outbox.cancel_ref(conn, report.code, kinds=(EDIT_KIND,))
        evidence = await self._reports.evidence.for_report(conn, report.id)
        state = await self.card_state(conn, report)
        shown = alert_input(self._core.cipher, report, evidence)
        # A copy sent before any backup existed is the main bot's (None without backup bots at all).
        main = self._core.outbox.main_bot_id
        edits = [
            # A private copy's edit names its holder, so revoking them withdraws it.
            replace(
                edit, recipient_user_id=chat if chat > 0 else None, via_bot=bot if bot is not None else main
            )
            for chat, message_id, bot in targets
            for edit in [self._alerts.card_edit(shown, state, chat, message_id, priority)]
        ]
        await self._core.outbox.enqueue(conn, edits)

    async def _targets(self, conn: AsyncConnection, report: Report) -> list[tuple[int, int, int | None]]:
        targets = [self._open_copy(copy) for copy in await self._copies.for_report(conn, report.id)]
        legacy = (report.alert_chat, report.alert_message_id)
        if legacy[0] is not None and legacy[1] is not None and legacy not in [t[:2] for t in targets]:
            targets.insert(0, (legacy[0], legacy[1], None))
        return targets

    async def _adopt(
        self, conn: AsyncConnection, report: Report, user_id: int, actor: str, chat_id: int, message_id: int
    ) -> None:
        """Record a pressed card nobody knew of (its send was cut off by a crash) as a live copy. Only a
        message of the bot's own carries its buttons, so a press proves the message is the card."""
        if chat_id > 0 and chat_id != user_id:
            return
        if chat_id < 0 and chat_id != await self._alerts.coordinator_chat(conn):
            return
        if report.alert_chat == chat_id and report.alert_message_id == message_id:
            return
        if await self._copies.is_copy(conn, report.id, self._chat_key(chat_id), message_id):
            return
        holder = actor if chat_id > 0 else None
        await self._copies.add(
            conn,
            report.id,
            # Pressed through the bot in use: the card is in its chat.
            self._seal_copy(chat_id, message_id, holder, self._core.outbox.bot_id),
            self._core.clock.now(),
        )

    def _seal_copy(
        self, chat_id: int, message_id: int, holder: str | None, bot: int | None = None
    ) -> CardCopy:
        uid = secrets.token_hex(16)
        # With backup bots the copy names the bot that sent it ("chat@bot"): only that bot can edit it.
        where = f"{chat_id}@{bot}" if bot is not None else str(chat_id)
        chat = self._core.cipher.encrypt_text(where, binding=copy_chat_binding(uid))
        return CardCopy(uid, self._chat_key(chat_id), chat, message_id, holder)

    def _open_copy(self, copy: CardCopy) -> tuple[int, int, int | None]:
        where = self._core.cipher.decrypt_text(copy.chat, binding=copy_chat_binding(copy.uid))
        chat, _, bot = where.partition("@")
        return int(chat), copy.message_id, int(bot) if bot else None

    def _holder(self, chat_id: int) -> str:
        # A private chat's id is its person's id.
        return self._core.pseudonyms.of_user(chat_id)

    def _chat_key(self, chat_id: int) -> str:
        return self._core.pseudonyms.of_chat(chat_id)

    async def open_card(self, user_id: int, raw_code: str) -> str:
        """Send a report's full card, text, location and evidence to the presser in private (a digest's
        button); the card is a live copy. Coordinators and admins only; audited as a view."""
        async with self._core.gate.acting(user_id, "alerts.open", safe_code(raw_code)) as act:
            code = parse_code(raw_code)
            report = await self._reports.by_code(act.conn, code)
            evidence = await self._reports.evidence.for_report(act.conn, report.id)
            if self._evidence is not None:
                # A file whose record was moved here from another report, or edited, is not re-sent as
                # this report's (/r says which, and why).
                check = self._evidence.check_row
                evidence = [item for item in evidence if check(report.id, code, item) == BOUND]
            shown = alert_input(self._core.cipher, report, evidence, with_files=True)
            state = await self.card_state(act.conn, report)
            card = self._alerts.card_copy(shown, state, user_id, PRIORITY_DIGEST)
            extras = self._alerts.extras(shown, user_id, PRIORITY_DIGEST)
            await self._core.outbox.enqueue(act.conn, [card, *extras])
            await self._core.audit.record(act.conn, act.actor, "alerts.open", code)
            act.uow.wake_delivery()
        return code

    async def card_state(self, conn: AsyncConnection, report: Report) -> CardState:
        """Return what the card shows for a report, with members' display names."""
        names = await self._team.names(conn, [report.assignee, report.acknowledged_by])
        waiting = None
        if report.kind == "sos" and report.status == "new" and report.acknowledged_by is None:
            minutes = int((self._core.clock.now() - report.created_at).total_seconds() // 60)
            waiting = minutes if minutes >= 1 else None
        return CardState(
            status=report.status,
            assignee=member_label(names.get(report.assignee or ""), report.assignee),
            acknowledged_by=(
                member_label(names.get(report.acknowledged_by), report.acknowledged_by)
                if report.acknowledged_by
                else None
            ),
            acknowledged_at=report.acknowledged_at,
            reason=report.reason,
            duplicate_of=report.duplicate_of,
            waiting_min=waiting,
        )

    async def _label(self, conn: AsyncConnection, pseudonym: str) -> str:
        names = await self._team.names(conn, [pseudonym])
        return member_label(names.get(pseudonym), pseudonym)

    async def _still_on_team(self, conn: AsyncConnection, pseudonym: str) -> bool:
        user = await self._users.get(conn, pseudonym)
        return user is not None and bool(user.roles.intersection(COORDINATING))


__all__ = ["CARD_KIND", "EDIT_KIND", "Answer", "TriageService"]
