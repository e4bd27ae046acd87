"""Alerts to the coordinators' chat: composed from a report, queued in the same transaction, held until
there is a chat to send them to. Coordinators see what happened, never who reported it."""

from __future__ import annotations

import html
import json
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from bot.domain import dates
from bot.domain.callbacks import TriageAction, TriagePress
from bot.domain.errors import Refused
from bot.runtime.audit import AuditLog
from bot.runtime.outbox import NOTICE_KIND, PRIORITY_ALERT, PRIORITY_SOS, OutgoingMessage
from bot.security.bindings import duty_chat_binding
from bot.services.core import Core
from messages import Safe
from storage.alert_copies import DutyRepository
from storage.outbox import ClaimedRow
from storage.reports import Evidence, ReportRepository
from storage.state import COORDINATOR_CHAT, StateRepository
from storage.users import UserRepository

# The card (summary with the triage buttons) is a kind of its own: delivery reports its message id.
CARD_KIND = "alert_card"
# One message listing many waiting reports, when the group's budget cannot take a card for each.
DIGEST_KIND = "alert_digest"
# What the coordinators' chat must see: never final until it has (held, followed to a migrated chat).
ALERT_KINDS = ("alert", CARD_KIND, DIGEST_KIND)
EDIT_KIND = "alert_edit"
# Priorities within the coordinators' chat, highest first: a first SOS is never behind anything.
# Escalations and admin notices: urgent, but never ahead of a first SOS card (anyone can cause them).
PRIORITY_NOTICE = 99
PRIORITY_DIGEST = 95
PRIORITY_SOS_UPDATE = 90  # an SOS card's edit with a follow-up line or its waiting time
PRIORITY_EXTRA = 70  # a long text, a location or evidence after its card
PRIORITY_EDIT = 60  # triage edits: only the latest state is sent, after every new alert
# From this many alerts within a minute the group's window keeps its full reserves for SOS and digests.
PRESSURE_ALERTS = 3
TRIAGE_ACTIONS = ("ack", "take", "verify", "close", "spam", "reopen")
FINAL_STATUSES = ("closed", "rejected")
TELEGRAM_TEXT_LIMIT = 4096
# Room kept on the card for its status lines, so later edits never outgrow the first version.
_STATUS_RESERVE = 400
_EVIDENCE_METHODS = {
    "photo": ("sendPhoto", "photo"),
    "video": ("sendVideo", "video"),
    "voice": ("sendVoice", "voice"),
    "audio": ("sendAudio", "audio"),
    "document": ("sendDocument", "document"),
    "video_note": ("sendVideoNote", "video_note"),
}
# Round video notes take no caption: theirs goes in a message of its own.
_NO_CAPTION = frozenset({"video_note"})


_UNREAD = object()
_BOUND_TTL_S = 10.0
# A move of the alerts to another chat, asked for by one admin, waiting for a second (bot_state).
BIND_REQUEST = "coordinator_chat_request"
BIND_REQUEST_TTL = timedelta(hours=24)
# Where Telegram moved the configured chat (a group that became a supergroup): "old:new" (bot_state).
PINNED_MIGRATION = "coordinator_chat_pin_migrated"
# What the chat alerts no longer go to is told; to whom it may concern there, not to one person.
MOVED_KIND = "alerts_moved"


@dataclass(frozen=True)
class Binding:
    """What a /bind did: `key` names the text that answers it in the group."""

    key: str
    params: dict[str, object] = field(default_factory=dict)


@dataclass(frozen=True)
class _Request:
    chat: int
    by: str
    expires_at: datetime


@dataclass(frozen=True)
class AlertInput:
    """What an alert shows: the report's fields, decrypted in memory only."""

    code: str
    kind: str
    category: str
    occurred_at: datetime | None
    precision: str | None
    region: str | None
    place: str | None
    location: list[float] | None
    text: str | None
    people: str | None
    contactable: bool
    evidence: Sequence[Evidence]
    evidence_file_ids: Sequence[str]
    updates: Sequence[str] = ()  # an SOS's follow-up lines, oldest first


@dataclass(frozen=True)
class CardState:
    """Where a report stands, as its alert card shows it; names are display labels."""

    status: str = "new"
    assignee: str | None = None
    acknowledged_by: str | None = None
    acknowledged_at: datetime | None = None
    reason: str | None = None
    duplicate_of: str | None = None
    waiting_min: int | None = None  # an SOS nobody has acknowledged, for this many minutes


class AlertService:
    """Composes alerts, resolves the coordinators' chat, binds it, and records triage presses."""

    def __init__(
        self,
        core: Core,
        *,
        state: StateRepository,
        reports: ReportRepository,
        users: UserRepository,
        configured_chat: int | None,
        admin_ids: frozenset[int] = frozenset(),
        duty: DutyRepository | None = None,
        sos_reserve: int = 0,
        digest_reserve: int = 0,
    ) -> None:
        self._core = core
        self._state = state
        self._reports = reports
        self._users = users
        self._configured_chat = configured_chat
        self._admin_ids = admin_ids
        self._duty = duty
        self._sos_reserve = sos_reserve
        self._digest_reserve = digest_reserve
        self._bound: int | object | None = _UNREAD
        self._bound_read_at = 0.0
        self._chat_key: str | None = None
        self._chat_key_of: int | None = None
        self._recent: deque[float] = deque()  # when alerts were queued, for the last minute

    async def coordinator_chat(self, conn: AsyncConnection) -> int | None:
        """Return the chat alerts go to: the configured one if there is one (followed where Telegram moved
        it), else the one bound with /bind."""
        # Re-read every few seconds: another instance may have bound a chat meanwhile.
        if self._bound is _UNREAD or self._core.clock.monotonic() - self._bound_read_at > _BOUND_TTL_S:
            self._bound = await self._read_chat(conn)
            self._bound_read_at = self._core.clock.monotonic()
        chat = self._bound if isinstance(self._bound, int) else None
        if chat != self._chat_key_of:
            self._chat_key_of = chat
            self._chat_key = self._core.pseudonyms.of_chat(chat) if chat is not None else None
        return chat

    async def _read_chat(self, conn: AsyncConnection) -> int | None:
        if self._configured_chat is None:
            value = await self._state.get(conn, COORDINATOR_CHAT)
            return int(value) if value is not None else None
        # The configuration pins the chat: whatever /bind stored once is ignored. Only Telegram itself can
        # move it (a migration to a supergroup), and only from the configured id.
        moved = await self._state.get(conn, PINNED_MIGRATION)
        if moved is not None:
            old, new = (int(part) for part in moved.split(":"))
            if old == self._configured_chat:
                return new
        return self._configured_chat

    async def follow_migration(self, conn: AsyncConnection, new_chat: int) -> None:
        """Store the id Telegram moved the coordinators' chat to (a group that became a supergroup)."""
        if self._configured_chat is not None:
            await self._state.put(conn, PINNED_MIGRATION, f"{self._configured_chat}:{new_chat}")
        else:
            await self._state.put(conn, COORDINATOR_CHAT, str(new_chat))
        self.remember_chat(new_chat)

    @property
    def chat_key(self) -> str | None:
        """Return the pseudonym of the coordinators' chat as last read (None before the first read)."""
        return self._chat_key

    def remember_chat(self, chat_id: int) -> None:
        """Use `chat_id` as the coordinators' chat from now on (after it was stored)."""
        self._bound = chat_id
        self._bound_read_at = self._core.clock.monotonic()
        self._chat_key_of = chat_id
        self._chat_key = self._core.pseudonyms.of_chat(chat_id)

    def headroom(self, row: ClaimedRow) -> int:
        """Slots of the coordinators' chat's window a row must leave free: a report card leaves room for
        SOS cards and digests, an SOS card for digests, a digest for nothing."""
        if row.chat_kind != "group" or row.chat_key != self._chat_key:
            return 0
        if row.kind == DIGEST_KIND:
            return 0
        if row.priority >= PRIORITY_SOS:
            return self._digest_reserve
        if row.priority >= PRIORITY_SOS_UPDATE:
            return self._digest_reserve + self._sos_reserve // 2
        if not self.under_pressure():
            # A calm minute: a report with its evidence and its triage edits need not queue for a window
            # kept for a burst that is not coming; a little room stays for an SOS.
            return self._sos_reserve // 2
        return self._digest_reserve + self._sos_reserve

    def under_pressure(self) -> bool:
        """Tell whether alerts are coming in a burst (several in the last minute)."""
        horizon = self._core.clock.monotonic() - 60.0
        while self._recent and self._recent[0] < horizon:
            self._recent.popleft()
        return len(self._recent) >= PRESSURE_ALERTS

    def protects(self, row: ClaimedRow) -> bool:
        """Tell the delivery worker which rows are alerts to the coordinators' chat (never final)."""
        return row.kind in ALERT_KINDS and row.recipient is None

    def mark_repeat(self, params: dict[str, Any]) -> dict[str, Any]:
        """Say on a card sent again after a crash that it may be a repeat (both copies stay live)."""
        note = self._core.texts.text(self._core.language, "alert.maybe_repeat")
        text = str(params.get("text", ""))
        if note not in text:
            params = {**params, "text": f"{text}\n\n{note}"}
        return params

    async def release_held(self, conn: AsyncConnection | None = None) -> int:
        """Send alerts that waited for a destination, if there is one now (at every start)."""
        if conn is None:
            async with self._core.unit_of_work() as uow:
                released = await self.release_held(uow.conn)
                if released:
                    uow.wake_delivery()
                await uow.commit()
            return released
        chat = await self.coordinator_chat(conn)
        return 0 if chat is None else await self._core.outbox.release_held(conn, ALERT_KINDS, chat)

    async def redirect(self, conn: AsyncConnection, chat_id: int) -> int:
        """Point every alert still waiting or queued (for whichever chat) at `chat_id`."""
        return await self._core.outbox.release_held(conn, ALERT_KINDS, chat_id, statuses=("held", "pending"))

    async def is_coordinator_chat(self, chat_id: int) -> bool:
        """Tell whether a chat is where alerts go."""
        async with self._core.db.read() as conn:
            return await self.coordinator_chat(conn) == chat_id

    async def has_destination(self) -> bool:
        """Tell whether alerts have somewhere to go."""
        async with self._core.db.read() as conn:
            return await self.coordinator_chat(conn) is not None

    async def queue(
        self, conn: AsyncConnection, alert: AlertInput, also: Sequence[OutgoingMessage] = ()
    ) -> None:
        """Queue a report's alert (and its evidence, and `also`) in the caller's transaction; an SOS goes
        to the coordinators on duty in private too."""
        chat = await self.coordinator_chat(conn)
        self._recent.append(self._core.clock.monotonic())
        copies: list[OutgoingMessage] = []
        if alert.kind == "sos":
            for duty_chat in await self.duty_chats(conn):
                copies.append(self.card_copy(alert, CardState(), duty_chat, PRIORITY_SOS))
        await self._core.outbox.enqueue(conn, [*self.compose(alert, chat), *copies, *also])

    async def duty_chats(self, conn: AsyncConnection) -> list[int]:
        """Return the private chats of the coordinators on duty."""
        if self._duty is None or self._core.cipher is None:
            return []
        return [
            int(self._core.cipher.decrypt_text(person.chat, binding=duty_chat_binding(person.pseudonym)))
            for person in await self._duty.on_duty(conn)
        ]

    def card_copy(
        self,
        alert: AlertInput,
        state: CardState,
        chat_id: int,
        priority: int,
        *,
        heading: str | None = None,
    ) -> OutgoingMessage:
        """Return a copy of the card for one coordinator's private chat (it is edited with the others)."""
        card, markup, _ = self._card(alert, state)
        if heading is not None:
            card = f"{heading}\n\n{card}"
        return OutgoingMessage(
            "sendMessage",
            {"chat_id": chat_id, "text": card, "reply_markup": markup},
            kind=CARD_KIND,
            recipient_user_id=chat_id,
            priority=priority,
            ref=alert.code,
        )

    def extras(self, alert: AlertInput, chat_id: int, priority: int) -> list[OutgoingMessage]:
        """Return what follows a card for one person (an opened card): long texts, location, evidence."""
        return [
            replace(message, recipient_user_id=chat_id)
            for message in self.compose(alert, chat_id, priority=priority)[1:]
        ]

    def compose(
        self, alert: AlertInput, chat: int | None, *, priority: int | None = None
    ) -> list[OutgoingMessage]:
        """Return the alert's messages: the card with triage buttons, long text, location, evidence."""
        card_priority = priority or (PRIORITY_SOS if alert.kind == "sos" else PRIORITY_ALERT)
        lang = self._core.language
        card, markup, separate = self._card(alert, CardState())
        fields = [(key, value) for key, value in (("text", alert.text), ("people", alert.people)) if value]
        messages = [
            self._message(
                "sendMessage",
                {"text": card, "reply_markup": markup},
                chat,
                card_priority,
                alert.code,
                kind=CARD_KIND,
            )
        ]
        # What follows the card waits behind every other card: the card alone says what happened.
        priority = min(card_priority, PRIORITY_EXTRA)
        if separate:
            # Long texts go as plain text of their own: escaping could push them past Telegram's limit.
            for key, value in fields:
                heading = self._core.texts.plain(lang, f"alert.{key}_heading", code=alert.code)
                plain = {"text": f"{heading}\n{value}", "parse_mode": None}
                messages.append(self._message("sendMessage", plain, chat, priority, alert.code))
        if alert.location is not None:
            where: dict[str, Any] = {"latitude": alert.location[0], "longitude": alert.location[1]}
            messages.append(self._message("sendLocation", where, chat, priority, alert.code))
        total = len(alert.evidence)
        for index, (item, file_id) in enumerate(zip(alert.evidence, alert.evidence_file_ids, strict=True), 1):
            method, field = _EVIDENCE_METHODS.get(item.kind, _EVIDENCE_METHODS["document"])
            caption = self._core.texts.text(
                lang, "alert.evidence_caption", code=alert.code, index=index, total=total, sha256=item.sha256
            )
            # Re-sent by file id: never forwarded, which would show the author.
            if item.kind in _NO_CAPTION:
                messages.append(self._message(method, {field: file_id}, chat, priority, alert.code))
                note = {"text": caption}
                messages.append(self._message("sendMessage", note, chat, priority, alert.code))
                continue
            media: dict[str, Any] = {field: file_id, "caption": caption}
            messages.append(self._message(method, media, chat, priority, alert.code))
        return messages

    def card_edit(
        self,
        alert: AlertInput,
        state: CardState,
        chat_id: int,
        message_id: int,
        priority: int = PRIORITY_EDIT,
    ) -> OutgoingMessage:
        """Return the edit that makes a sent card show `state`."""
        card, markup, _ = self._card(alert, state)
        params = {"message_id": message_id, "text": card, "reply_markup": markup}
        return self._message("editMessageText", params, chat_id, priority, alert.code, kind=EDIT_KIND)

    def _card(self, alert: AlertInput, state: CardState) -> tuple[str, dict[str, Any], bool]:
        """Return the card's text, its keyboard, and whether the long fields go in messages of their own."""
        lang = self._core.language
        summary = self._summary(alert)
        fields = [(key, value) for key, value in (("text", alert.text), ("people", alert.people)) if value]
        body = "\n\n".join(self._core.texts.text(lang, f"alert.{key}", value=value) for key, value in fields)
        # Telegram counts UTF-16 units (an emoji is two); counting tags too errs on the safe side.
        separate = _units(summary) + 2 + _units(body) + _STATUS_RESERVE > TELEGRAM_TEXT_LIMIT
        if body and not separate:
            summary = f"{summary}\n\n{body}"
        if alert.updates:
            summary = f"{summary}\n\n{self._updates(alert.updates, TELEGRAM_TEXT_LIMIT - _units(summary))}"
        return f"{summary}\n\n{self._status(state)}", self._keyboard(alert.code, state), separate

    def _updates(self, lines: Sequence[str], room: int) -> str:
        """Return an SOS's follow-up lines under their heading, the newest that fit in `room`."""
        heading = self._core.texts.text(self._core.language, "alert.sos_updates")
        kept: list[str] = []
        used = _units(heading) + _STATUS_RESERVE + 4
        for line in reversed(lines):
            escaped = _escape(line)
            if used + _units(escaped) + 1 > room:
                break
            kept.append(escaped)
            used += _units(escaped) + 1
        return "\n".join([heading, *reversed(kept)])

    def _status(self, state: CardState) -> str:
        lang = self._core.language
        if state.status == "rejected":
            if state.reason == "duplicate":
                line = self._core.texts.text(
                    lang, "triage.state_duplicate", original=state.duplicate_of or "—"
                )
            else:
                line = self._core.texts.text(lang, "triage.state_spam")
        else:
            line = self._core.texts.text(lang, f"triage.state_{state.status}", who=state.assignee or "—")
        if state.acknowledged_by is not None and state.acknowledged_at is not None:
            when = dates.recent(state.acknowledged_at, self._core.zone)
            seen = self._core.texts.text(lang, "triage.acknowledged", who=state.acknowledged_by, when=when)
            line = f"{line}\n{seen}"
        elif state.waiting_min is not None:
            line = f"{line}\n{self._core.texts.text(lang, 'alert.sos_waiting', minutes=state.waiting_min)}"
        return line

    def _keyboard(self, code: str, state: CardState) -> dict[str, Any]:
        rows: list[list[TriageAction]]
        if state.status in FINAL_STATUSES:
            rows = [["reopen"]]
        elif state.status == "verified":
            rows = [["close"]]
        elif state.status == "in_progress":
            rows = [["verify", "close"], ["spam"]]
        else:
            first: list[TriageAction] = (
                ["take", "close"] if state.acknowledged_by else ["ack", "take", "close"]
            )
            rows = [first, ["spam"]]
        lang = self._core.language
        return {
            "inline_keyboard": [
                [
                    {
                        "text": self._core.texts.plain(lang, f"triage.{action}"),
                        "callback_data": TriagePress(code, action).pack(),
                    }
                    for action in row
                ]
                for row in rows
            ]
        }

    async def bind(self, user_id: int, chat_id: int, title: str | None = None) -> Binding:
        """Make `chat_id` the coordinators' chat (admins only), or ask for it.

        The configured chat cannot be changed from Telegram. The first chat is bound at once; moving the
        alerts elsewhere needs a second admin once there are two: the first /bind in the new chat asks, a
        different admin's /bind there within BIND_REQUEST_TTL completes it. Every admin is told in private
        of each request and each change, and the chat the alerts leave is told they left. Whatever waited
        or was queued for the old chat goes to the new one.
        """
        target = str(chat_id)
        where = title or target
        async with self._core.gate.acting(user_id, "alerts.bind", target, roles=("admin",)) as act:
            if self._configured_chat is not None:
                raise Refused("bind.pinned")
            conn, audit = act.conn, act.uow.audit
            old = await self._read_chat(conn)  # not the cached value: another instance may have bound one
            if old == chat_id:
                released = await self.redirect(conn, chat_id)
                await audit.record(conn, act.actor, "alerts.bind", target, detail="same")
                answer = Binding("bind.already", {"released": released})
            elif old is None:
                answer = await self._move(conn, audit, act.actor, None, chat_id, where, "first")
            elif len(admins := await self._users.holders(conn, "admin")) < 2:
                answer = await self._move(conn, audit, act.actor, old, chat_id, where, "changed")
            else:
                request = await self._request(conn)
                # A request of someone no longer an admin is nobody's: this /bind asks anew.
                if request is None or request.chat != chat_id or request.by not in admins:
                    answer = await self._ask(conn, audit, act.actor, chat_id, where)
                elif request.by == act.actor:
                    raise Refused("bind.second_admin", hours=_hours(BIND_REQUEST_TTL))
                else:
                    answer = await self._move(conn, audit, act.actor, old, chat_id, where, "approved")
            act.uow.wake_delivery()
        if answer.key != "bind.requested":
            self.remember_chat(chat_id)
        return answer

    async def _ask(
        self, conn: AsyncConnection, audit: AuditLog, actor: str, chat_id: int, where: str
    ) -> Binding:
        expires = self._core.clock.now() + BIND_REQUEST_TTL
        value = {"chat": chat_id, "by": actor, "expires": expires.isoformat()}
        await self._state.put(conn, BIND_REQUEST, json.dumps(value))
        await audit.record(conn, actor, "alerts.bind_request", str(chat_id))
        hours = _hours(BIND_REQUEST_TTL)
        await self.notify_admins(conn, "bind.request_notice", chat=where, chat_id=chat_id, hours=hours)
        return Binding("bind.requested", {"hours": hours})

    async def _move(
        self,
        conn: AsyncConnection,
        audit: AuditLog,
        actor: str,
        old: int | None,
        chat_id: int,
        where: str,
        how: str,
    ) -> Binding:
        await self._state.put(conn, COORDINATOR_CHAT, str(chat_id))
        await self._state.delete(conn, BIND_REQUEST)
        await audit.record(conn, actor, "alerts.bind", str(chat_id), detail=how)
        # What waited, and what was queued for the old chat, goes to the new one.
        released = await self.redirect(conn, chat_id)
        if old is not None:
            # Queued, not sent now: the old chat may be out of reach, and the news must not be lost. It
            # does not say where the alerts went: the old chat may be why they moved.
            text = self._core.texts.text(self._core.language, "bind.moved_away")
            await self._core.outbox.enqueue(
                conn,
                [
                    OutgoingMessage(
                        "sendMessage",
                        {"chat_id": old, "text": text},
                        kind=MOVED_KIND,
                        priority=PRIORITY_NOTICE,
                    )
                ],
            )
        await self.notify_admins(conn, "bind.changed_notice", chat=where, chat_id=chat_id, count=released)
        return Binding("bind.done", {"released": released})

    async def _request(self, conn: AsyncConnection) -> _Request | None:
        """Return the move waiting for a second admin, unless there is none or it expired."""
        raw = await self._state.get(conn, BIND_REQUEST)
        if raw is None:
            return None
        data = json.loads(raw)
        request = _Request(int(data["chat"]), str(data["by"]), datetime.fromisoformat(data["expires"]))
        return request if request.expires_at > self._core.clock.now() else None

    async def notify_admins(self, conn: AsyncConnection, key: str, **params: object) -> int:
        """Queue a notice to every admin in private, in the caller's transaction; return how many."""
        return await self.notify_admins_text(conn, self._core.texts.text(self._core.language, key, **params))

    async def notify_admins_text(self, conn: AsyncConnection, text: str, dedupe: str | None = None) -> int:
        """Queue a composed notice to every admin in private; with `dedupe`, once per admin and key.
        Return how many were new."""
        return await self._core.outbox.enqueue(
            conn,
            [
                OutgoingMessage(
                    "sendMessage",
                    {"chat_id": admin, "text": text},
                    kind=NOTICE_KIND,
                    recipient_user_id=admin,
                    priority=PRIORITY_NOTICE,
                    dedupe_key=None if dedupe is None else f"{dedupe}:{admin}",
                )
                for admin in sorted(self._admin_ids)
            ],
        )

    def _summary(self, alert: AlertInput) -> str:
        lang = self._core.language
        if alert.kind == "sos":
            sos = self._core.texts.text(lang, "alert.sos", code=alert.code, when=self._when(alert))
            if alert.location:
                where = self._core.texts.text(
                    lang, "alert.location", latitude=alert.location[0], longitude=alert.location[1]
                )
                sos = f"{sos}\n{where.rstrip()}"
            return sos
        where = self._core.texts.text(lang, f"region.{alert.region}") if alert.region else "—"
        if alert.place:
            where = Safe(f"{where} — {_escape(alert.place)}")  # the label is HTML already
        location = (
            self._core.texts.text(
                lang, "alert.location", latitude=alert.location[0], longitude=alert.location[1]
            )
            if alert.location
            else ""
        )
        return self._core.texts.text(
            lang,
            "alert.report",
            code=alert.code,
            category=self._core.texts.text(lang, f"category.{alert.category}"),
            when=self._when(alert),
            where=where,
            location=Safe(location),
            contact=self._core.texts.text(
                lang, "alert.contactable" if alert.contactable else "alert.anonymous"
            ),
            evidence=len(alert.evidence),
        )

    def _when(self, alert: AlertInput) -> str:
        if alert.occurred_at is None:
            return "—"
        return dates.occurred(alert.occurred_at, self._core.zone, alert.precision)

    def _message(
        self,
        method: str,
        params: dict[str, Any],
        chat: int | None,
        priority: int,
        code: str,
        kind: str = "alert",
    ) -> OutgoingMessage:
        return OutgoingMessage(
            method,
            {"chat_id": chat if chat is not None else 0, **params},
            kind=kind,
            priority=priority,
            held=chat is None,
            ref=code,
        )


def _hours(span: timedelta) -> int:
    return int(span.total_seconds() // 3600)


def _units(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


def _escape(value: str) -> str:
    return html.escape(value)
