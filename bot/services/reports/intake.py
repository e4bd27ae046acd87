"""Incident reports: the guided draft, the SOS, submitting exactly once, and the reporter's side after."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from sqlalchemy.ext.asyncio import AsyncConnection

from bot.domain import dates
from bot.domain import report_form as form
from bot.domain.errors import Conflict, LimitReached
from bot.domain.report_form import Draft, FormError
from bot.runtime.allowance import Allowance
from bot.runtime.outbox import OutgoingMessage
from bot.security import DataKey
from bot.security.bindings import (
    body_binding,
    contact_chat_binding,
    draft_binding,
    file_ref_binding,
    sealed_body_binding,
)
from bot.services.core import Core
from bot.services.reports.body import CODE_ALPHABET, open_raw_body
from bot.services.reports.evidence import DownloadFailed, EvidenceRefused, EvidenceStore
from bot.services.triage.alerts import PRIORITY_SOS_UPDATE, AlertInput, AlertService
from storage.drafts import DraftRepository, StoredDraft
from storage.reports import ActionRepository, NewReport, Report, ReportRepository
from storage.types import to_micros
from storage.users import UserRepository

SOS_FOLLOWUP = timedelta(minutes=30)
# An SOS card keeps this many follow-up lines (the newest that fit are shown).
MAX_SOS_UPDATES = 50
_CLEANUP_PRIORITY = 40
_DELETE_BATCH = 100
# A submitted report's conversation leaves the phone this long after the Submit: in a burst of reports the
# alerts go first (each deletion is a send the delivery worker would otherwise make between two alerts).
CONVERSATION_CLEANUP_DELAY = timedelta(seconds=3)
# What a reporter is shown instead of the report's code (see ReporterCodes).
REPORTER_CODE_PATTERN = re.compile(rf"\bK-[{CODE_ALPHABET}]{{5}}\b")
# Telegram lets a bot delete a message within 48 hours of sending it; later, a deletion is not even tried.
TELEGRAM_DELETE_WINDOW = timedelta(hours=48)


class ReporterCodes:
    """The code a reporter knows a report by, which coordinators never see: K- and a keyed hash of its code.

    A seized phone plus one infiltrated coordinator must not link the person to the report: the phone shows
    only K- codes, coordinators only R- codes, and telling which is which takes the data key. Derived, not
    stored: no column ties the two. A K- code the reporter sends back is looked for among that person's own
    linked reports only, so nobody can resolve an arbitrary one, and after /forget it resolves to nothing.
    """

    def __init__(self, key: DataKey) -> None:
        self._key = key.derive("reporter-code")

    def of(self, code: str) -> str:
        """Return the reporter's code of the report `code`."""
        digest = hmac.new(self._key, code.encode(), hashlib.sha256).digest()
        value = int.from_bytes(digest[:8], "big")  # 64 bits onto 31**5 codes: no visible bias
        letters = []
        for _ in range(5):
            value, index = divmod(value, len(CODE_ALPHABET))
            letters.append(CODE_ALPHABET[index])
        return "K-" + "".join(letters)

    def resolve(self, shown: str, codes: Iterable[str]) -> str | None:
        """Return which of `codes` (one person's reports) `shown` is the reporter's code of, if any."""
        wanted = shown.strip().upper()
        return next((code for code in codes if hmac.compare_digest(self.of(code), wanted)), None)


def find_reporter_code(text: str | None) -> str | None:
    """Return the first reporter's code in a message (the bot's question the reporter replies to), if any."""
    match = REPORTER_CODE_PATTERN.search(text or "")
    return match.group(0) if match else None


def phone_cleanup(
    chat_id: int, message_ids: Sequence[int], shown_at: datetime, keep: timedelta
) -> list[OutgoingMessage]:
    """Return the deletions of messages a reporter's phone keeps for `keep` after `shown_at`.

    Unlinked (a random chat key) and without recipient, ref or dedupe key: a row that waits a day must not
    be joinable to the person's other rows or to the report, an anonymous one's receipt above all. It
    expires, payload and all, once Telegram would refuse the deletion anyway.
    """
    return _deletions(
        chat_id,
        message_ids,
        unlinked=True,
        due_at=shown_at + keep,
        expires_at=shown_at + TELEGRAM_DELETE_WINDOW,
    )


class CardRefresher(Protocol):
    """Brings every copy of a report's card up to date (triage does)."""

    async def refresh_card(self, conn: AsyncConnection, report: Report, priority: int = ...) -> None:
        """Queue the card's current look on every copy."""


class Stale(Conflict):
    """A button of an old or expired draft: nothing changes."""

    def __init__(self) -> None:
        super().__init__("report.expired")


@dataclass(frozen=True)
class Screen:
    """What to show next: the draft's current step, with an error from the last input if any."""

    draft: Draft
    error: FormError | None = None
    resumed: bool = False


@dataclass(frozen=True)
class Submitted:
    """A report that exists now (or already existed for this draft)."""

    code: str
    contactable: bool
    already: bool = False


# A double tap comes within seconds; a few thousand cover the busiest hour.
_RECENT_SUBMITS = 4096


@dataclass(frozen=True)
class OwnReport:
    """One of the person's reports as they see it: under their own code, never the coordinators'."""

    code: str
    category: str
    status: str
    created_at: datetime


@dataclass(frozen=True)
class FileInput:
    """A file the person sent at the evidence step."""

    kind: str
    unique_id: str
    file_id: str
    size: int | None


@dataclass(frozen=True)
class Limits:
    """Per-person limits and lifetimes."""

    draft_ttl: timedelta = timedelta(hours=24)
    reports_per_hour: int = 5
    sos_per_minute: int = 1
    sos_escalate_after: timedelta = timedelta(minutes=5)
    # The receipt, status updates, SOS screens and /myreports answers leave the phone after this.
    phone_keep: timedelta = timedelta(hours=24)


class ReportService:
    """Drafts in, reports and alerts out; every step is one transaction on an encrypted draft."""

    def __init__(
        self,
        core: Core,
        *,
        drafts: DraftRepository,
        reports: ReportRepository,
        actions: ActionRepository,
        users: UserRepository,
        alerts: AlertService,
        evidence: EvidenceStore,
        limits: Limits,
        codes: ReporterCodes,
        cards: CardRefresher | None = None,
        on_anonymous: Callable[[], None] | None = None,
    ) -> None:
        self._core = core
        self._drafts = drafts
        self._reports = reports
        self._actions = actions
        self._users = users
        self._alerts = alerts
        self._evidence = evidence
        self._limits = limits
        self._codes = codes
        self._cards = cards
        self._on_anonymous = on_anonymous
        self._submits = Allowance(core.clock, limits.reports_per_hour)
        # Anonymous submissions by draft nonce, for double taps only; never stored (see `_new_report`).
        self._recent: OrderedDict[str, str] = OrderedDict()

    # ------------------------------------------------------------------ the guided report

    async def begin(self, user_id: int) -> Screen:
        """Resume the person's unfinished report, or start a new one."""
        pseudonym = self._core.pseudonyms.of_user(user_id)
        async with self._core.unit_of_work() as uow:
            conn = uow.conn
            existing = await self._load(conn, pseudonym, "report")
            if existing is not None:
                return Screen(existing, resumed=True)
            dropped = await self._clear_expired(conn, pseudonym, "report")
            # An SOS still open for follow-ups would otherwise take the report's typed text.
            sos = await self._load(conn, pseudonym, "sos")
            if sos is not None and sos.step == "followup":
                await self._discard(conn, pseudonym, sos)
            screen = Screen(await self._create(conn, pseudonym, "report", user_id))
            # The files go only once no row names them: a rollback keeps both.
            uow.after_commit(lambda: self._evidence.delete(dropped))
            await uow.commit()
        return screen

    async def restart(self, user_id: int, nonce: str) -> Screen:
        """Throw the old draft away (with its staged evidence) and start a new one."""
        pseudonym = self._core.pseudonyms.of_user(user_id)
        async with self._core.unit_of_work() as uow:
            conn = uow.conn
            old = await self._load(conn, pseudonym, "report")
            if old is None or old.nonce != nonce:
                raise Stale
            dropped = await self._evidence.drop_staged(conn, pseudonym)
            draft = await self._create(conn, pseudonym, "report", user_id)
            draft.track(*old.messages)
            await self._store(conn, pseudonym, draft)
            # The files go only once no row names them: a rollback keeps both.
            uow.after_commit(lambda: self._evidence.delete(dropped))
            await uow.commit()
        return Screen(draft)

    async def press(
        self, user_id: int, nonce: str, step: str, action: str, arg: str, message_id: int | None
    ) -> Screen:
        """Apply a button of the current step; an old button raises Stale and changes nothing."""
        pseudonym = self._core.pseudonyms.of_user(user_id)
        async with self._core.unit_of_work() as uow:
            draft = await self._load(uow.conn, pseudonym, "report")
            if draft is None or draft.nonce != nonce:
                raise Stale
            if draft.step != step and action != "resume":
                # A button of an earlier step of this draft (a double tap, or a retried update whose
                # answer was lost): change nothing and show where the person is now.
                return Screen(draft)
            draft.track(message_id)
            error: FormError | None = None
            try:
                self._apply(draft, action, arg)
            except FormError as refused:
                error = refused
            await self._store(uow.conn, pseudonym, draft)
            await uow.commit()
        return Screen(draft, error)

    async def input_text(self, user_id: int, text: str, message_id: int) -> Screen | None:
        """Take typed text for the step that waits for it; None when no draft is waiting."""
        return await self._input(user_id, message_id, lambda draft: self._type(draft, text))

    async def input_location(
        self, user_id: int, latitude: float, longitude: float, message_id: int
    ) -> Screen | None:
        """Take a shared location."""

        def apply(draft: Draft) -> None:
            if draft.step != "location":
                raise FormError(_expects(draft.step))
            form.set_location(draft, latitude, longitude)

        return await self._input(user_id, message_id, apply)

    async def input_other(self, user_id: int, message_id: int) -> Screen | None:
        """A sticker, contact, poll or other thing no step accepts: say what the step wants."""

        def refuse(draft: Draft) -> None:
            raise FormError(_expects(draft.step))

        return await self._input(user_id, message_id, refuse)

    async def input_file(
        self, user_id: int, item: FileInput, message_id: int, download: Callable[[], AsyncIterator[bytes]]
    ) -> Screen | None:
        """Stream, hash and store a file sent at the evidence step (each file once), within the quotas."""
        pseudonym = self._core.pseudonyms.of_user(user_id)
        async with self._core.db.read() as conn:
            draft = await self._load(conn, pseudonym, "report")
        if draft is None:
            return None
        if draft.step != "evidence":
            return await self._input(user_id, message_id, lambda d: _raise(FormError(_expects(d.step))))
        if any(e["unique"] == item.unique_id for e in draft.evidence):
            return await self._input(user_id, message_id, lambda d: None)
        if len(draft.evidence) >= form.MAX_EVIDENCE:
            return await self._input(
                user_id,
                message_id,
                lambda d: _raise(FormError("report.evidence_full", limit=form.MAX_EVIDENCE)),
            )
        refusal: FormError
        try:
            # Quotas and the free-space floor are checked before the download (Telegram told the size)
            # and again as it streams; a refused or failed file leaves nothing on disk.
            async with self._evidence.receiving(self._core.db, pseudonym, item.size) as upload:
                saved = await upload.save(download())
                now = self._core.clock.now()
                async with self._core.unit_of_work() as uow:
                    conn = uow.conn
                    draft = await self._load(conn, pseudonym, "report")
                    if draft is None or draft.step != "evidence":
                        return None if draft is None else Screen(draft)
                    await self._evidence.stage(
                        conn, pseudonym, saved, kind=item.kind, file_id=item.file_id, now=now
                    )
                    draft.evidence.append(
                        {
                            "uid": saved.uid,
                            "kind": item.kind,
                            "sha256": saved.sha256,
                            "size": saved.size,
                            "unique": item.unique_id,
                            "file_id": item.file_id,
                            "received_at": to_micros(now),
                        }
                    )
                    draft.track(message_id)
                    await self._store(conn, pseudonym, draft)
                    await uow.commit()
                upload.keep()
            return Screen(draft)
        except EvidenceRefused as refused:
            refusal = FormError(refused.key, **refused.params)
        except DownloadFailed:
            refusal = FormError("evidence.download_failed")
        return await self._input(user_id, message_id, lambda d: _raise(refusal))

    async def track(self, user_id: int, kind: str, nonce: str, message_ids: Sequence[int]) -> None:
        """Remember the bot's own prompts, so they are deleted with the conversation."""
        pseudonym = self._core.pseudonyms.of_user(user_id)
        async with self._core.unit_of_work() as uow:
            draft = await self._load(uow.conn, pseudonym, kind)
            if draft is not None and draft.nonce == nonce:
                draft.track(*message_ids)
                await self._store(uow.conn, pseudonym, draft)
            await uow.commit()

    async def cancel(self, user_id: int, chat_id: int, nonce: str, message_id: int | None) -> None:
        """Drop the draft, its staged evidence and the conversation on the phone."""
        pseudonym = self._core.pseudonyms.of_user(user_id)
        async with self._core.unit_of_work() as uow:
            conn = uow.conn
            draft = await self._load(conn, pseudonym, "report")
            if draft is None or draft.nonce != nonce:
                raise Stale
            draft.track(message_id)
            dropped = await self._evidence.drop_staged(conn, pseudonym)
            await self._discard(conn, pseudonym, draft, chat_id)
            # The files go only once no row names them: a rollback keeps both.
            uow.after_commit(lambda: self._evidence.delete(dropped))
            uow.wake_delivery()
            await uow.commit()

    async def submit(self, user_id: int, chat_id: int, nonce: str, message_id: int | None) -> Submitted:
        """Turn the draft into a report and its alert in one transaction, exactly once."""
        pseudonym = self._core.pseudonyms.of_user(user_id)
        now = self._core.clock.now()
        async with self._core.unit_of_work() as uow:
            conn = uow.conn
            draft = await self._load(conn, pseudonym, "report")
            if draft is None or draft.nonce != nonce:
                # A double tap or a retried update: the first one already made the report.
                done = await self._reports.by_submit_key(conn, self._core.pseudonyms.of_submission(nonce))
                if done is not None:
                    return Submitted(done.code, done.contactable, already=True)
                code = self._recent.get(nonce)
                if code is None:
                    raise Stale
                return Submitted(code, False, already=True)
            if draft.step != "review" or form.missing(draft):
                raise Stale
            # Counted in memory: a stored count would put the author's pseudonym beside the exact time of
            # an anonymous report.
            if self._submits.left(pseudonym) <= 0:
                raise LimitReached("report.limit", limit=self._limits.reports_per_hour)
            # The pressed review message becomes the receipt (an edit: a double tap gives one receipt),
            # so it stays; the rest of the conversation is deleted.
            if message_id is not None and message_id in draft.messages:
                draft.messages.remove(message_id)
            code = await self._new_code(conn)
            contactable = bool(draft.contactable)
            report_id = await self._reports.create(
                conn, self._new_report(draft, code, pseudonym, chat_id, now), now
            )
            # Fresh rows bound to the report; the staged ones (which name the owner) are deleted.
            await self._evidence.attach(conn, pseudonym, draft.evidence, report_id, code)
            alert = await self._alert_input(conn, draft, code, contactable, report_id)
            cleanup = _deletions(
                chat_id, draft.messages, unlinked=not contactable, due_at=now + CONVERSATION_CLEANUP_DELAY
            )
            if message_id is not None:
                # The receipt leaves the phone after the keep time; queued with the report, so never lost.
                cleanup += phone_cleanup(chat_id, [message_id], now, self._limits.phone_keep)
            await self._alerts.queue(conn, alert, also=cleanup)
            await self._drafts.delete(conn, pseudonym, nonce)
            uow.wake_delivery()
            await uow.commit()
        self._submits.spend(pseudonym)
        if not contactable:
            self._remember(nonce, code)
        if not contactable and self._on_anonymous is not None:
            self._on_anonymous()  # end the draft's history soon (bot.services.upkeep.history)
        return Submitted(code, contactable)

    def _remember(self, nonce: str, code: str) -> None:
        self._recent[nonce] = code
        while len(self._recent) > _RECENT_SUBMITS:
            self._recent.popitem(last=False)

    async def delete_later(self, chat_id: int, message_ids: Sequence[int]) -> None:
        """Queue the deletion of messages from a person's chat (retried until done)."""
        async with self._core.unit_of_work() as uow:
            conn = uow.conn
            await self._core.outbox.enqueue(conn, _deletions(chat_id, message_ids))
            uow.wake_delivery()
            await uow.commit()

    async def delete_after_keep(self, chat_id: int, message_ids: Sequence[int]) -> None:
        """Queue the deletion of messages that name a report (a receipt, a /myreports answer) from the
        person's chat once the phone has kept them for the keep time."""
        async with self._core.unit_of_work() as uow:
            await uow.outbox.enqueue(
                uow.conn, phone_cleanup(chat_id, message_ids, self._core.clock.now(), self._limits.phone_keep)
            )
            # No wake: they are due only after the keep time, and the worker's poll finds them then.
            await uow.commit()

    def reporter_code(self, code: str) -> str:
        """Return the code the reporter is shown for a report (coordinators see `code`)."""
        return self._codes.of(code)

    # ------------------------------------------------------------------ SOS

    async def sos_begin(self, user_id: int) -> Draft:
        """Open the SOS confirmation (the second tap sends it)."""
        pseudonym = self._core.pseudonyms.of_user(user_id)
        async with self._core.unit_of_work() as uow:
            existing = await self._load(uow.conn, pseudonym, "sos")
            if existing is not None:
                return existing  # a second /sos shows the same confirmation, or the open follow-up
            await self._clear_expired(uow.conn, pseudonym, "sos")
            draft = Draft(
                nonce=secrets.token_hex(8), kind="sos", step="confirm", category="sos", chat_id=user_id
            )
            await self._store(uow.conn, pseudonym, draft, ttl=SOS_FOLLOWUP, create=True)
            await uow.commit()
        return draft

    async def sos_send(self, user_id: int, chat_id: int, nonce: str, message_id: int | None) -> Submitted:
        """Send the SOS alert at once, exactly once, with the highest priority."""
        pseudonym = self._core.pseudonyms.of_user(user_id)
        now = self._core.clock.now()
        async with self._core.unit_of_work() as uow:
            conn = uow.conn
            done = await self._reports.by_submit_key(conn, self._core.pseudonyms.of_submission(nonce))
            if done is not None:
                return Submitted(done.code, done.contactable, already=True)
            draft = await self._load(conn, pseudonym, "sos")
            if draft is None or draft.nonce != nonce or draft.step != "confirm":
                raise Stale
            recent = await self._actions.count_since(conn, pseudonym, "sos", now - timedelta(minutes=1))
            if recent >= self._limits.sos_per_minute:
                raise LimitReached("sos.limit")
            draft.track(message_id)
            code = await self._new_code(conn)
            draft.occurred_at, draft.precision = now.isoformat(), "exact"
            # An SOS is only useful if coordinators can answer: it is contactable through the bot.
            draft.contactable = True
            report_id = await self._reports.create(
                conn, self._new_report(draft, code, pseudonym, chat_id, now), now
            )
            await self._actions.record(conn, pseudonym, "sos", now)
            await self._reports.schedule_escalation(conn, report_id, now + self._limits.sos_escalate_after)
            await self._alerts.queue(conn, await self._alert_input(conn, draft, code, True, report_id))
            if message_id is not None:
                # The screen that says "sent" with the code: Done or the follow-up's end deletes it sooner.
                await self._core.outbox.enqueue(
                    conn, phone_cleanup(chat_id, [message_id], now, self._limits.phone_keep)
                )
            draft.step, draft.report_code = "followup", code
            await self._store(conn, pseudonym, draft, ttl=SOS_FOLLOWUP)
            uow.wake_delivery()
            await uow.commit()
        return Submitted(code, True)

    async def sos_followup(
        self,
        user_id: int,
        message_id: int,
        *,
        text: str | None = None,
        location: tuple[float, float] | None = None,
    ) -> Screen | None:
        """Pass one line or a location on to the coordinators as an update of the SOS."""
        pseudonym = self._core.pseudonyms.of_user(user_id)
        async with self._core.unit_of_work() as uow:
            conn = uow.conn
            draft = await self._load(conn, pseudonym, "sos")
            if draft is None or draft.step != "followup" or draft.report_code is None:
                return None
            if message_id in draft.messages:
                return Screen(draft)  # already passed on; its update was retried
            draft.track(message_id)
            error: FormError | None = None
            try:
                line = form.clean_text(text or "")
                if text is not None and not line:
                    raise FormError("report.expects_text")
                if len(line) > form.MAX_SOS_LINE:
                    raise FormError("report.too_long", limit=form.MAX_SOS_LINE, length=len(line))
                rounded = (
                    [round(location[0], form.LOCATION_DECIMALS), round(location[1], form.LOCATION_DECIMALS)]
                    if location is not None
                    else None
                )
                if text is None and rounded is None:
                    raise FormError("sos.expects_line")
                await self._merge_followup(conn, draft.report_code, line or None, rounded)
            except FormError as refused:
                error = refused
            await self._store(conn, pseudonym, draft, ttl=SOS_FOLLOWUP)
            uow.wake_delivery()
            await uow.commit()
        return Screen(draft, error)

    async def sos_finish(self, user_id: int, chat_id: int, nonce: str, message_id: int | None) -> None:
        """Close the SOS conversation and delete it from the phone."""
        pseudonym = self._core.pseudonyms.of_user(user_id)
        async with self._core.unit_of_work() as uow:
            conn = uow.conn
            draft = await self._load(conn, pseudonym, "sos")
            if draft is None or draft.nonce != nonce:
                raise Stale
            draft.track(message_id)
            await self._discard(conn, pseudonym, draft, chat_id)
            uow.wake_delivery()
            await uow.commit()

    async def sos_cancel(self, user_id: int, nonce: str) -> None:
        """Drop an SOS that was not sent."""
        pseudonym = self._core.pseudonyms.of_user(user_id)
        async with self._core.unit_of_work() as uow:
            draft = await self._load(uow.conn, pseudonym, "sos")
            if draft is None or draft.nonce != nonce or draft.step != "confirm":
                raise Stale
            await self._drafts.delete(uow.conn, pseudonym, nonce)
            await uow.commit()

    # ------------------------------------------------------------------ afterwards

    async def my_reports(self, user_id: int) -> list[OwnReport]:
        """Return the person's contactable reports under their own codes (anonymous ones are not linked
        to anyone)."""
        async with self._core.db.read() as conn:
            reports = await self._reports.for_reporter(conn, self._core.pseudonyms.of_user(user_id))
        return [OwnReport(self._codes.of(r.code), r.category, r.status, r.created_at) for r in reports]

    async def forget(self, user_id: int) -> None:
        """Delete everything that links to the person; their reports stay, fully anonymous."""
        pseudonym = self._core.pseudonyms.of_user(user_id)
        now = self._core.clock.now()
        async with self._core.unit_of_work() as uow:
            conn = uow.conn
            dropped = await self._evidence.drop_staged(conn, pseudonym)
            for stored in await self._drafts.all_for(conn, pseudonym):
                # What the person was in the middle of still leaves the phone.
                await self._discard(conn, pseudonym, self._decode(pseudonym, stored))
            await self._reports.forget_reporter(conn, pseudonym, now)
            await self._actions.forget(conn, pseudonym)
            await self._core.outbox.cancel_for(conn, pseudonym)
            await self._users.delete(conn, pseudonym)
            # The files go only once no row names them: a rollback keeps both.
            uow.after_commit(lambda: self._evidence.delete(dropped))
            await uow.commit()

    async def purge_expired(self) -> int:
        """Delete expired drafts and their staged evidence; delete their conversations from the phones."""
        now = self._core.clock.now()
        async with self._core.unit_of_work() as uow:
            conn = uow.conn
            expired = await self._drafts.expired(conn, now)
            dropped: list[str] = []
            for stored in expired:
                dropped += await self._evidence.drop_staged(conn, stored.pseudonym)
                await self._discard(conn, stored.pseudonym, self._decode(stored.pseudonym, stored))
            # Counters only matter within their window (an hour at most); older ones are traces.
            await self._actions.purge_before(conn, now - timedelta(hours=1))
            # The files go only once no row names them: a rollback keeps both.
            uow.after_commit(lambda: self._evidence.delete(dropped))
            await uow.commit()
        return len(expired)

    async def _merge_followup(
        self, conn: AsyncConnection, code: str, line: str | None, location: list[float] | None
    ) -> None:
        """Put a follow-up into the SOS itself and edit its card: one person's many lines cost one
        coalesced edit, never a message of their own ahead of someone else's first SOS."""
        report = await self._reports.by_code(conn, code)
        body = open_raw_body(self._core.cipher, report)
        if line is not None:
            at = dates.clock(self._core.clock.now(), self._core.zone)
            updates = [*(body.get("updates") or []), f"{at} {line}"]
            body["updates"] = updates[-MAX_SOS_UPDATES:]
        if location is not None:
            body["location"] = location
        sealed = self._core.cipher.encrypt_json(body, binding=body_binding(report))
        await self._reports.set_body(conn, report.id, sealed, self._core.clock.now())
        if report.status in ("closed", "rejected"):
            return  # kept with the report, but a closed or spam SOS's card no longer spends the group's slots
        if self._cards is not None:
            await self._cards.refresh_card(conn, await self._reports.by_code(conn, code), PRIORITY_SOS_UPDATE)

    # ------------------------------------------------------------------ internals

    def _apply(self, draft: Draft, action: str, arg: str) -> None:
        now = self._core.clock.now()
        if action == "resume":
            return
        if action == "back":
            draft.back()
        elif action == "cat":
            form.choose_category(draft, arg)
        elif action == "when":
            form.choose_when(draft, arg, now, self._core.zone)
        elif action == "region":
            form.choose_region(draft, arg)
        elif action == "skip":
            form.skip(draft)
        elif action == "keep":
            form.keep(draft)
        elif action == "done" and draft.step == "evidence":
            draft.advance()
        elif action == "contact" and arg in ("yes", "no"):
            form.choose_contact(draft, arg == "yes")
        elif action == "edit" and draft.step == "review":
            draft.edit(arg)
        else:
            raise Stale

    def _type(self, draft: Draft, text: str) -> None:
        now = self._core.clock.now()
        if draft.step == "when_typed":
            form.type_when(draft, text, now, self._core.zone)
        elif draft.step == "place":
            form.type_place(draft, text)
        elif draft.step == "text":
            form.type_text(draft, text)
        elif draft.step == "people":
            form.type_people(draft, text)
        else:
            raise FormError(_expects(draft.step))

    async def _input(self, user_id: int, message_id: int, apply: Callable[[Draft], None]) -> Screen | None:
        pseudonym = self._core.pseudonyms.of_user(user_id)
        async with self._core.unit_of_work() as uow:
            draft = await self._load(uow.conn, pseudonym, "report")
            if draft is None:
                return None
            if message_id in draft.messages:
                # The same message again (its update was retried after the reply failed): already taken.
                return Screen(draft)
            draft.track(message_id)
            error: FormError | None = None
            try:
                apply(draft)
            except FormError as refused:
                error = refused
            await self._store(uow.conn, pseudonym, draft)
            await uow.commit()
        return Screen(draft, error)

    async def _create(self, conn: AsyncConnection, pseudonym: str, kind: str, chat_id: int) -> Draft:
        draft = Draft(nonce=secrets.token_hex(8), kind=kind, chat_id=chat_id)
        await self._store(conn, pseudonym, draft, create=True)
        return draft

    async def _load(self, conn: AsyncConnection, pseudonym: str, kind: str) -> Draft | None:
        stored = await self._drafts.get(conn, pseudonym, kind, self._core.clock.now())
        return self._decode(pseudonym, stored) if stored is not None else None

    def _decode(self, pseudonym: str, stored: StoredDraft) -> Draft:
        data = self._core.cipher.decrypt_json(
            stored.payload, binding=draft_binding(pseudonym, stored.kind, stored.nonce)
        )
        return Draft.from_json(data)

    async def _clear_expired(self, conn: AsyncConnection, pseudonym: str, kind: str) -> list[str]:
        """Clean up the person's expired draft before the purge job does: it would be overwritten."""
        stored = await self._drafts.get_expired(conn, pseudonym, kind, self._core.clock.now())
        if stored is None:
            return []
        await self._discard(conn, pseudonym, self._decode(pseudonym, stored))
        return await self._evidence.drop_staged(conn, pseudonym) if kind == "report" else []

    async def _discard(
        self, conn: AsyncConnection, pseudonym: str, draft: Draft, chat_id: int | None = None
    ) -> None:
        """Delete a draft and queue the deletion of its conversation from the phone."""
        await self._drafts.delete(conn, pseudonym, draft.nonce)
        chat = chat_id if chat_id is not None else draft.chat_id
        if chat is not None:
            await self._core.outbox.enqueue(conn, _deletions(chat, draft.messages))

    async def _store(
        self,
        conn: AsyncConnection,
        pseudonym: str,
        draft: Draft,
        *,
        ttl: timedelta | None = None,
        create: bool = False,
    ) -> None:
        now = self._core.clock.now()
        expires = now + (ttl or self._limits.draft_ttl)
        # Transient: once submitted or dropped, a draft's old copies must not decrypt
        # (bot.services.upkeep.history).
        payload = self._core.cipher.encrypt_json(
            draft.to_json(), binding=draft_binding(pseudonym, draft.kind, draft.nonce), transient=True
        )
        if create:
            await self._drafts.put(
                conn, StoredDraft(pseudonym, draft.nonce, draft.kind, payload, expires), now
            )
        elif not await self._drafts.save(
            conn, pseudonym, draft.nonce, payload, now, expires, kind=draft.kind
        ):
            raise Stale

    async def _new_code(self, conn: AsyncConnection) -> str:
        while True:
            code = "R-" + "".join(secrets.choice(CODE_ALPHABET) for _ in range(5))
            if not await self._reports.code_exists(conn, code):
                return code

    def _new_report(self, draft: Draft, code: str, pseudonym: str, chat_id: int, now: datetime) -> NewReport:
        body = {"text": draft.text, "place": draft.place, "location": draft.location, "people": draft.people}
        contactable = bool(draft.contactable)
        category = draft.category or "other"
        occurred_at = datetime.fromisoformat(draft.occurred_at) if draft.occurred_at else None
        binding = sealed_body_binding(
            code, draft.kind, category, occurred_at, draft.precision, draft.region, contactable, now
        )
        return NewReport(
            code=code,
            kind=draft.kind,
            category=category,
            occurred_at=occurred_at,
            occurred_precision=draft.precision,
            region=draft.region,
            body=self._core.cipher.encrypt_json(body, binding=binding),
            contactable=contactable,
            reporter=pseudonym if contactable else None,
            contact_chat=(
                self._core.cipher.encrypt_text(str(chat_id), binding=contact_chat_binding(code))
                if contactable
                else None
            ),
            # The draft's nonce sits in clear beside its owner's pseudonym until submission, and old copies of
            # that row outlive it in the WAL: an anonymous report keeps nothing derived from it (a double tap
            # is recognised in memory instead, see `_recent`).
            submit_key=(
                self._core.pseudonyms.of_submission(draft.nonce) if contactable else secrets.token_hex(16)
            ),
        )

    async def _alert_input(
        self, conn: AsyncConnection, draft: Draft, code: str, contactable: bool, report_id: int
    ) -> AlertInput:
        items = await self._reports.evidence.for_report(conn, report_id) if draft.evidence else []
        file_ids = [
            self._core.cipher.decrypt_text(e.file_ref, binding=file_ref_binding(e.uid)) for e in items
        ]
        return AlertInput(
            code=code,
            kind=draft.kind,
            category=draft.category or "other",
            occurred_at=datetime.fromisoformat(draft.occurred_at) if draft.occurred_at else None,
            precision=draft.precision,
            region=draft.region,
            place=draft.place,
            location=draft.location,
            text=draft.text,
            people=draft.people,
            contactable=contactable,
            evidence=items,
            evidence_file_ids=file_ids,
        )


def _expects(step: str) -> str:
    if step == "location":
        return "report.expects_location"
    if step == "evidence":
        return "report.expects_file"
    if step in form.INPUT_STEPS:
        return "report.expects_text"
    return "report.use_buttons"


def _raise(error: Exception) -> None:
    raise error


def _deletions(
    chat_id: int,
    message_ids: Sequence[int],
    *,
    unlinked: bool = False,
    due_at: datetime | None = None,
    expires_at: datetime | None = None,
) -> list[OutgoingMessage]:
    # No recipient and no dedupe key: either would let a seized database join this row to the report it
    # cleans up after (the row is created in the same transaction, so it is exactly-once anyway).
    ids = sorted(set(message_ids))
    return [
        OutgoingMessage(
            "deleteMessages",
            {"chat_id": chat_id, "message_ids": ids[i : i + _DELETE_BATCH]},
            kind="cleanup",
            priority=_CLEANUP_PRIORITY,
            unlinked=unlinked,
            due_at=due_at,
            expires_at=expires_at,
        )
        for i in range(0, len(ids), _DELETE_BATCH)
    ]
