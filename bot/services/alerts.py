"""Alerts to the coordinators' chat: composed from a report, queued in the same transaction, held until
there is a chat to send them to. Coordinators see what happened, never who reported it."""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy.ext.asyncio import AsyncConnection

from bot.clock import Clock
from bot.security import Pseudonymizer
from bot.services.audit import AuditLog
from bot.services.outbox import PRIORITY_ALERT, PRIORITY_SOS, Outbox, OutgoingMessage
from bot.services.roles import require_role
from messages import Catalogs, Safe
from storage.database import Database
from storage.reports import Evidence, ReportRepository
from storage.state import COORDINATOR_CHAT, StateRepository
from storage.users import UserRepository

# The card (summary with the triage buttons) is a kind of its own: delivery reports its message id.
CARD_KIND = "alert_card"
ALERT_KINDS = ("alert", CARD_KIND)
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


@dataclass(frozen=True)
class CardState:
    """Where a report stands, as its alert card shows it; names are display labels."""

    status: str = "new"
    assignee: str | None = None
    acknowledged_by: str | None = None
    acknowledged_at: datetime | None = None
    reason: str | None = None
    duplicate_of: str | None = None


class AlertService:
    """Composes alerts, resolves the coordinators' chat, binds it, and records triage presses."""

    def __init__(
        self,
        *,
        db: Database,
        outbox: Outbox,
        state: StateRepository,
        reports: ReportRepository,
        users: UserRepository,
        pseudonyms: Pseudonymizer,
        texts: Catalogs,
        clock: Clock,
        language: str,
        zone: ZoneInfo,
        configured_chat: int | None,
    ) -> None:
        self._db = db
        self._outbox = outbox
        self._state = state
        self._reports = reports
        self._users = users
        self._pseudonyms = pseudonyms
        self._texts = texts
        self._clock = clock
        self._language = language
        self._zone = zone
        self._configured_chat = configured_chat
        self.audit: AuditLog | None = None  # set once the audit log exists (it is built after alerts)
        self._bound: int | object | None = _UNREAD
        self._bound_read_at = 0.0

    async def coordinator_chat(self, conn: AsyncConnection) -> int | None:
        """Return the chat alerts go to: the one bound with /bind, else the configured one."""
        # Re-read every few seconds: another instance may have bound a chat meanwhile.
        if self._bound is _UNREAD or self._clock.monotonic() - self._bound_read_at > _BOUND_TTL_S:
            value = await self._state.get(conn, COORDINATOR_CHAT)
            self._bound = int(value) if value is not None else None
            self._bound_read_at = self._clock.monotonic()
        return self._bound if isinstance(self._bound, int) else self._configured_chat

    async def release_held(self) -> int:
        """Send alerts that waited for a destination, if there is one now (at every start)."""
        async with self._db.write() as conn:
            chat = await self.coordinator_chat(conn)
            released = 0 if chat is None else await self._outbox.release_held(conn, ALERT_KINDS, chat)
        if released:
            self._outbox.notify()
        return released

    async def is_coordinator_chat(self, chat_id: int) -> bool:
        """Tell whether a chat is where alerts go."""
        async with self._db.read() as conn:
            return await self.coordinator_chat(conn) == chat_id

    async def has_destination(self) -> bool:
        """Tell whether alerts have somewhere to go."""
        async with self._db.read() as conn:
            return await self.coordinator_chat(conn) is not None

    async def queue(
        self, conn: AsyncConnection, alert: AlertInput, also: Sequence[OutgoingMessage] = ()
    ) -> None:
        """Queue a report's alert (and its evidence, and `also`) in the caller's transaction."""
        chat = await self.coordinator_chat(conn)
        await self._outbox.enqueue(conn, [*self.compose(alert, chat), *also])

    async def queue_followup(
        self,
        conn: AsyncConnection,
        code: str,
        *,
        text: str | None = None,
        location: list[float] | None = None,
    ) -> None:
        """Queue an SOS follow-up (one line or a location) to the coordinators."""
        chat = await self.coordinator_chat(conn)
        messages: list[OutgoingMessage] = []
        if text is not None:
            body = self._texts.text(self._language, "alert.sos_update", code=code, text=text)
            messages.append(
                self._message("sendMessage", {"text": body, "parse_mode": "HTML"}, chat, PRIORITY_SOS, code)
            )
        if location is not None:
            params = {"latitude": location[0], "longitude": location[1]}
            messages.append(self._message("sendLocation", params, chat, PRIORITY_SOS, code))
        await self._outbox.enqueue(conn, messages)

    def compose(self, alert: AlertInput, chat: int | None) -> list[OutgoingMessage]:
        """Return the alert's messages: the card with triage buttons, long text, location, evidence."""
        priority = PRIORITY_SOS if alert.kind == "sos" else PRIORITY_ALERT
        lang = self._language
        card, markup, separate = self._card(alert, CardState())
        fields = [(key, value) for key, value in (("text", alert.text), ("people", alert.people)) if value]
        messages = [
            self._message(
                "sendMessage",
                {"text": card, "parse_mode": "HTML", "reply_markup": markup},
                chat,
                priority,
                alert.code,
                kind=CARD_KIND,
            )
        ]
        if separate:
            # Long texts go as plain text of their own: escaping could push them past Telegram's limit.
            for key, value in fields:
                heading = self._texts.plain(lang, f"alert.{key}_heading", code=alert.code)
                messages.append(
                    self._message("sendMessage", {"text": f"{heading}\n{value}"}, chat, priority, alert.code)
                )
        if alert.location is not None:
            where: dict[str, Any] = {"latitude": alert.location[0], "longitude": alert.location[1]}
            messages.append(self._message("sendLocation", where, chat, priority, alert.code))
        total = len(alert.evidence)
        for index, (item, file_id) in enumerate(zip(alert.evidence, alert.evidence_file_ids, strict=True), 1):
            method, field = _EVIDENCE_METHODS.get(item.kind, _EVIDENCE_METHODS["document"])
            caption = self._texts.text(
                lang, "alert.evidence_caption", code=alert.code, index=index, total=total, sha256=item.sha256
            )
            # Re-sent by file id: never forwarded, which would show the author.
            if item.kind in _NO_CAPTION:
                messages.append(self._message(method, {field: file_id}, chat, priority, alert.code))
                note = {"text": caption, "parse_mode": "HTML"}
                messages.append(self._message("sendMessage", note, chat, priority, alert.code))
                continue
            media: dict[str, Any] = {field: file_id, "caption": caption, "parse_mode": "HTML"}
            messages.append(self._message(method, media, chat, priority, alert.code))
        return messages

    def card_edit(
        self, alert: AlertInput, state: CardState, chat_id: int, message_id: int
    ) -> OutgoingMessage:
        """Return the edit that makes a sent card show `state`."""
        card, markup, _ = self._card(alert, state)
        params = {"message_id": message_id, "text": card, "parse_mode": "HTML", "reply_markup": markup}
        return self._message(
            "editMessageText", params, chat_id, PRIORITY_ALERT, alert.code, kind="alert_edit"
        )

    def _card(self, alert: AlertInput, state: CardState) -> tuple[str, dict[str, Any], bool]:
        """Return the card's text, its keyboard, and whether the long fields go in messages of their own."""
        lang = self._language
        summary = self._summary(alert)
        fields = [(key, value) for key, value in (("text", alert.text), ("people", alert.people)) if value]
        body = "\n\n".join(self._texts.text(lang, f"alert.{key}", value=value) for key, value in fields)
        # Telegram counts UTF-16 units (an emoji is two); counting tags too errs on the safe side.
        separate = _units(summary) + 2 + _units(body) + _STATUS_RESERVE > TELEGRAM_TEXT_LIMIT
        if body and not separate:
            summary = f"{summary}\n\n{body}"
        return f"{summary}\n\n{self._status(state)}", self._keyboard(alert.code, state), separate

    def _status(self, state: CardState) -> str:
        lang = self._language
        if state.status == "rejected":
            if state.reason == "duplicate":
                line = self._texts.text(lang, "triage.state_duplicate", original=state.duplicate_of or "—")
            else:
                line = self._texts.text(lang, "triage.state_spam")
        else:
            line = self._texts.text(lang, f"triage.state_{state.status}", who=state.assignee or "—")
        if state.acknowledged_by is not None and state.acknowledged_at is not None:
            when = state.acknowledged_at.astimezone(self._zone).strftime("%d.%m %H:%M")
            seen = self._texts.text(lang, "triage.acknowledged", who=state.acknowledged_by, when=when)
            line = f"{line}\n{seen}"
        return line

    def _keyboard(self, code: str, state: CardState) -> dict[str, Any]:
        if state.status in FINAL_STATUSES:
            rows = [["reopen"]]
        elif state.status == "verified":
            rows = [["close"]]
        elif state.status == "in_progress":
            rows = [["verify", "close"], ["spam"]]
        else:
            first = ["take", "close"] if state.acknowledged_by else ["ack", "take", "close"]
            rows = [first, ["spam"]]
        lang = self._language
        return {
            "inline_keyboard": [
                [
                    {
                        "text": self._texts.plain(lang, f"triage.{action}"),
                        "callback_data": f"t:{code}:{action}",
                    }
                    for action in row
                ]
                for row in rows
            ]
        }

    async def bind(self, user_id: int, chat_id: int) -> int:
        """Make `chat_id` the coordinators' chat (admins only); release held alerts; return how many."""
        async with self._db.write() as conn:
            actor = await self._require(conn, user_id, ("admin",))
            await self._state.put(conn, COORDINATOR_CHAT, str(chat_id))
            if self.audit is not None:
                await self.audit.record(conn, actor, "alerts.bind", str(chat_id))
            released = await self._outbox.release_held(conn, ALERT_KINDS, chat_id)
        self._bound = chat_id
        self._outbox.notify()
        return released

    async def _require(self, conn: AsyncConnection, user_id: int, roles: Sequence[str]) -> str:
        return await require_role(conn, self._users, self._pseudonyms.of_user(user_id), roles)

    def _summary(self, alert: AlertInput) -> str:
        lang = self._language
        if alert.kind == "sos":
            return self._texts.text(lang, "alert.sos", code=alert.code, when=self._when(alert))
        where = self._texts.text(lang, f"region.{alert.region}") if alert.region else "—"
        if alert.place:
            where = Safe(f"{_escape(where)} — {_escape(alert.place)}")
        location = (
            self._texts.text(lang, "alert.location", latitude=alert.location[0], longitude=alert.location[1])
            if alert.location
            else ""
        )
        return self._texts.text(
            lang,
            "alert.report",
            code=alert.code,
            category=self._texts.text(lang, f"category.{alert.category}"),
            when=self._when(alert),
            where=where,
            location=Safe(location),
            contact=self._texts.text(lang, "alert.contactable" if alert.contactable else "alert.anonymous"),
            evidence=len(alert.evidence),
        )

    def _when(self, alert: AlertInput) -> str:
        if alert.occurred_at is None:
            return "—"
        local = alert.occurred_at.astimezone(self._zone)
        return local.strftime("%d.%m.%Y") if alert.precision == "date" else local.strftime("%d.%m.%Y %H:%M")

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


def _units(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


def _escape(value: str) -> str:
    return html.escape(value)
