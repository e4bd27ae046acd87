"""The anonymous channel between coordinators and a contactable reporter.

A coordinator's question reaches the reporter from the bot, never from the person who asked; the answer
returns to the coordinators' chat threaded to the report's alert. Neither side learns who the other is.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import timedelta

from sqlalchemy.ext.asyncio import AsyncConnection

from bot.domain.errors import Refused
from bot.domain.report_form import clean_text, telegram_length
from bot.runtime.delivery import Receipt
from bot.runtime.outbox import PRIORITY_PERSONAL, OutgoingMessage
from bot.security.bindings import note_binding
from bot.services.access.identity import SafewordService
from bot.services.core import Core
from bot.services.reports.body import contact_chat, find_code, parse_code, safe_code
from bot.services.reports.intake import ReporterCodes, find_reporter_code, phone_cleanup
from bot.services.triage.alerts import PRIORITY_SOS_UPDATE, AlertService
from storage.reports import ActionRepository, Report, ReportRepository
from storage.users import UserRepository

# Room for the framing text and HTML escaping within Telegram's 4,096.
MESSAGE_LIMIT = 3000
QUESTION_KIND = "contact_question"
# A private message is retried for about two hours at most (outbox attempts): older questions went out or
# died long ago.
QUESTIONS_QUEUED_FOR = timedelta(days=1)
UPDATE_KIND = "contact"  # a status update to a reporter
ANSWERS_PER_HOUR = 20
# A reporter's code is looked for among this many of their newest reports.
OWN_REPORTS_SEARCHED = 500


@dataclass(frozen=True)
class Answered:
    """A reporter's answer passed on to the coordinators."""

    code: str


class ContactService:
    """Questions to reporters, their answers, and the short status updates they get."""

    def __init__(
        self,
        core: Core,
        *,
        reports: ReportRepository,
        actions: ActionRepository,
        users: UserRepository,
        alerts: AlertService,
        codes: ReporterCodes,
        phone_keep: timedelta,
        safewords: SafewordService,
    ) -> None:
        self._core = core
        self._reports = reports
        self._actions = actions
        self._users = users
        self._alerts = alerts
        self._codes = codes
        self._phone_keep = phone_keep
        self._safewords = safewords

    async def ask(self, user_id: int, raw_code: str, raw_question: str) -> str:
        """Send a coordinator's question to a report's author; return the report code."""
        async with self._core.gate.acting(user_id, "contact.ask", safe_code(raw_code)) as act:
            code = parse_code(raw_code)
            question = _bounded(raw_question, "contact.ask_usage")
            report = await self._reports.by_code(act.conn, code)
            chat = contact_chat(self._core.cipher, report)
            reporter = await self._users.get(act.conn, report.reporter) if report.reporter else None
            if chat is None or reporter is None or not reporter.active:
                # Anonymous, erased with /forget, or the bot was blocked: nothing would arrive.
                raise Refused("contact.unreachable", code=code)
            now = self._core.clock.now()
            sealed = self._core.cipher.encrypt_text(question, binding=note_binding(code, "question"))
            note_id = await self._reports.add_note(act.conn, report.id, "question", act.actor, sealed, now)
            language = await self._language_of(act.conn, report)
            text = self._core.texts.text(
                language, "contact.question", code=self._codes.of(code), question=question
            )
            placeholder = self._core.texts.plain(language, "contact.answer_placeholder")
            params = {
                "text": text,
                "reply_markup": {"force_reply": True, "input_field_placeholder": placeholder},
            }
            # The reporter's safety word on top: a clone asking questions in our name cannot show it.
            params = await self._safewords.headed_for(act.conn, report.reporter, language, params)
            message = self._to_reporter(chat, params, f"{code}:q{note_id}", kind=QUESTION_KIND)
            await self._core.outbox.enqueue(act.conn, [message])
            await self._core.audit.record(act.conn, act.actor, "contact.ask", code)
            act.uow.wake_delivery()
        return code

    async def withdraw_questions(self, conn: AsyncConnection, author: str) -> int:
        """Withdraw the questions someone asked that are still queued for reporters (they lost their role:
        a question from a revoked infiltrator must not reach anyone). Return how many."""
        since = self._core.clock.now() - QUESTIONS_QUEUED_FOR
        withdrawn = 0
        for code, note_id in await self._reports.questions_by(conn, author, since):
            withdrawn += await self._core.outbox.cancel_ref(
                conn, f"{code}:q{note_id}", kinds=(QUESTION_KIND,)
            )
        return withdrawn

    async def question_sent(self, conn: AsyncConnection, receipts: Sequence[Receipt]) -> None:
        """Remember which message carries each question: only replies to those are answers. Unanswered,
        it leaves the phone after the keep time (an answer takes it away at once)."""
        for receipt in receipts:
            note = (receipt.ref or "").rpartition(":q")[2]
            if note.isdigit():
                await self._reports.record_question_message(conn, int(note), receipt.message_id)
        await self.update_sent(conn, receipts)

    async def update_sent(self, conn: AsyncConnection, receipts: Sequence[Receipt]) -> None:
        """Queue the deletion of messages sent to reporters once their phones have kept them for the keep
        time (the delivery worker's receipt: only now is the message id known)."""
        now = self._core.clock.now()
        for receipt in receipts:
            deletions = phone_cleanup(receipt.chat_id, [receipt.message_id], now, self._phone_keep)
            # Through the bot that sent it (backup bots): another one would delete a message of its own.
            await self._core.outbox.enqueue(conn, [replace(d, via_bot=receipt.via_bot) for d in deletions])

    async def answer(
        self,
        user_id: int,
        chat_id: int,
        replied_id: int,
        replied_text: str | None,
        message_id: int,
        raw_answer: str,
    ) -> Answered | None:
        """Pass a reporter's reply to one of the bot's questions on to the coordinators.

        Return None when the reply is not to a question about one of this person's reports (another
        handler may want the message; after /forget their reporter's codes name nothing); raise Refused
        for an empty, overlong or too frequent answer, or when a question naming the report by its own
        code (sent before reporters had codes of their own) is about a report no longer linked to them.
        """
        if find_code(replied_text) is None and find_reporter_code(replied_text) is None:
            return None
        pseudonym = self._core.pseudonyms.of_user(user_id)
        async with self._core.unit_of_work() as uow:
            conn = uow.conn
            code = await self._replied_code(conn, pseudonym, replied_text)
            if code is None:
                return None  # a reporter's code of none of their reports: not theirs, or /forget
            try:
                report = await self._reports.by_code(conn, code)
            except LookupError:
                return None
            if not await self._reports.question_by_message(conn, report.id, replied_id):
                return None
            if report.reporter != pseudonym:
                raise Refused("contact.answer_unlinked")
            now = self._core.clock.now()
            if (
                await self._actions.count_since(conn, pseudonym, "answer", now - timedelta(hours=1))
                >= ANSWERS_PER_HOUR
            ):
                raise Refused("contact.answer_limit")
            answer = _bounded(raw_answer, "contact.answer_empty")
            await self._actions.record(conn, pseudonym, "answer", now)
            sealed = self._core.cipher.encrypt_text(answer, binding=note_binding(code, "answer"))
            await self._reports.add_note(conn, report.id, "answer", None, sealed, now)
            await self._to_coordinators(conn, report, "contact.answer", text=answer)
            # The question and the answer leave the phone once passed on, like the report itself.
            cleanup = OutgoingMessage(
                "deleteMessages",
                {"chat_id": chat_id, "message_ids": sorted({replied_id, message_id})},
                kind="cleanup",
                priority=PRIORITY_PERSONAL,
            )
            await self._core.outbox.enqueue(conn, [cleanup])
            uow.wake_delivery()
            await uow.commit()
        return Answered(code)

    async def _replied_code(
        self, conn: AsyncConnection, pseudonym: str, replied_text: str | None
    ) -> str | None:
        """Return the code of the report a replied-to message is about. Questions show the reporter's own
        code, which can only be one of this person's linked reports; older ones show the code itself."""
        code = find_code(replied_text)
        if code is not None:
            return code
        shown = find_reporter_code(replied_text)
        if shown is None:
            return None
        own = await self._reports.for_reporter(conn, pseudonym, limit=OWN_REPORTS_SEARCHED)
        return self._codes.resolve(shown, [r.code for r in own])

    async def queue_update(self, conn: AsyncConnection, report: Report, event: str) -> None:
        """Queue a short, neutral status update for a contactable report's author (in the caller's txn)."""
        chat = contact_chat(self._core.cipher, report)
        if chat is None:
            return
        language = await self._language_of(conn, report)
        text = self._core.texts.text(language, f"contact.update_{event}", code=self._codes.of(report.code))
        params = await self._safewords.headed_for(conn, report.reporter, language, {"text": text})
        message = self._to_reporter(chat, params, report.code, UPDATE_KIND)
        await self._core.outbox.enqueue(conn, [message])

    async def _to_coordinators(
        self, conn: AsyncConnection, report: Report, key: str, **params: object
    ) -> None:
        chat = await self._alerts.coordinator_chat(conn)
        text = self._core.texts.text(self._core.language, key, code=report.code, **params)
        payload: dict[str, object] = {"chat_id": chat or 0, "text": text}
        if report.alert_message_id is not None and report.alert_chat == chat:
            payload["reply_parameters"] = {
                "message_id": report.alert_message_id,
                "allow_sending_without_reply": True,
            }
        message = OutgoingMessage(
            # A reporter's answer matters as much as a follow-up of an SOS: ahead of new report cards.
            "sendMessage",
            payload,
            kind="alert",
            priority=PRIORITY_SOS_UPDATE,
            ref=report.code,
            held=chat is None,
        )
        await self._core.outbox.enqueue(conn, [message])

    def _to_reporter(self, chat: int, params: Mapping[str, object], code: str, kind: str) -> OutgoingMessage:
        return OutgoingMessage(
            "sendMessage",
            {"chat_id": chat, **params},
            kind=kind,
            recipient_user_id=chat,
            priority=PRIORITY_PERSONAL,
            ref=code,
        )

    async def _language_of(self, conn: AsyncConnection, report: Report) -> str:
        user = await self._users.get(conn, report.reporter) if report.reporter else None
        if user is None:
            return self._core.language
        return user.spoken or self._core.language


def _bounded(raw: str, empty_key: str) -> str:
    text = clean_text(raw)
    if not text:
        raise Refused(empty_key)
    if telegram_length(text) > MESSAGE_LIMIT:
        raise Refused("contact.too_long", limit=MESSAGE_LIMIT)
    return text
