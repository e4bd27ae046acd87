"""Court cases and hearings: coordinators keep them, followers are reminded before every hearing and told
at once when one moves. Reminders are data: each pass derives what falls due from the database."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from icalendar import Calendar, Event
from sqlalchemy.ext.asyncio import AsyncConnection

from bot.domain.callbacks import AttendPress, CalendarPress
from bot.domain.commands import FieldError, local_time
from bot.domain.errors import BadInput
from bot.domain.report_form import clean_text, telegram_length
from bot.runtime.outbox import PRIORITY_REMINDER, OutgoingMessage
from bot.security.bindings import follow_chat_binding
from bot.services.access.identity import SafewordService, headed
from bot.services.access.roles import COORDINATING, Acting, NotAllowed
from bot.services.core import Core
from messages import LANGUAGES
from storage.cases import Case, CaseRepository, Follower, HearingExists
from storage.cases import CaseNotFound as CaseNotFound  # handlers catch it from here
from storage.cases import Hearing as Hearing  # and render it
from storage.channels import ChannelRepository
from storage.state import StateRepository
from storage.users import UserRepository

log = logging.getLogger(__name__)

# Minutes before a hearing: 7 days, 3 days, 1 day, 2 hours, 30 minutes.
OFFSET_CHOICES: tuple[int, ...] = (10080, 4320, 1440, 120, 30)
DEFAULT_OFFSETS: tuple[int, ...] = (10080, 1440, 120)
CHANNEL_OFFSET = 1440  # channels get the day-before reminder
PRIORITY_NOTICE = 60  # a moved hearing must reach everyone before the old time empties the courtroom
LATE_AFTER = timedelta(minutes=1)
HEARING_LENGTH = timedelta(hours=2)
STATE_KEY = "reminders_until"
_MAX_FIELD = 300


class HearingInputError(BadInput):
    """Input a coordinator must correct, or a button that no longer counts; `key` names the text that says
    how. A refusal like any other: raised inside the gate, it is audited by the gate."""


@dataclass(frozen=True)
class PassResult:
    """What one reminder pass did."""

    queued: int
    late: int


class HearingService:
    """Cases, hearings, following, attendance, reminders and calendar files."""

    def __init__(
        self,
        core: Core,
        *,
        cases: CaseRepository,
        state: StateRepository,
        users: UserRepository,
        interval: timedelta,
        safewords: SafewordService,
    ) -> None:
        self._core = core
        self._safewords = safewords
        self._cases = cases
        self._state = state
        self._users = users
        self.interval = interval
        self._channels = ChannelRepository()

    # ------------------------------------------------------------------ coordinators

    async def create_case(
        self, user_id: int, title: str, description: str, charges: str, public: bool
    ) -> int:
        """Open a case (coordinators)."""
        usage = "cases.usage_new"
        async with self._acting(user_id, "case.new", None) as act:
            title, description = _field(title, usage, 300), _field(description, usage, 1000)
            charges = _field(charges, usage, 500)
            return await self._cases.create_case(
                act.conn, title, description, charges, public, self._core.clock.now()
            )

    async def edit_case(
        self, user_id: int, case_id: int, title: str, description: str, charges: str, public: bool
    ) -> None:
        """Replace a case's published fields (coordinators)."""
        usage = "cases.usage_edit"
        async with self._acting(user_id, "case.edit", f"#{case_id}") as act:
            title, description = _field(title, usage, 300), _field(description, usage, 1000)
            charges = _field(charges, usage, 500)
            await self._cases.update_case(
                act.conn, case_id, title, description, charges, public, self._core.clock.now()
            )

    async def register_channel(self, user_id: int, chat_id: int) -> bool:
        """Post public case announcements and day-before reminders in this channel or group (admins)."""
        async with self._acting(user_id, "channel.bind", str(chat_id), roles=("admin",)) as act:
            return await self._channels.add(act.conn, chat_id, self._core.clock.now())

    async def close_case(self, user_id: int, case_id: int) -> None:
        """Close a case (coordinators); it leaves /cases."""
        async with self._acting(user_id, "case.close", f"#{case_id}") as act:
            await self._cases.set_case_status(act.conn, case_id, "closed", self._core.clock.now())

    async def add_hearing(
        self,
        user_id: int,
        case_id: int,
        when: str,
        court: str,
        address: str,
        details: str | None,
        note: str | None,
    ) -> Hearing:
        """Schedule a hearing and tell the case's followers."""
        async with self._acting(user_id, "hearing.add", f"#{case_id}") as act:
            conn = act.conn
            starts_at = self.parse_time(when)
            if (await self._cases.case(conn, case_id)).status != "open":
                raise CaseNotFound(case_id)
            hearing_id = await self._add(
                conn,
                case_id,
                starts_at,
                _field(court, "hearings.usage_add", 200),
                _field(address, "hearings.usage_add", 300),
                _optional(details),
                _optional(note),
                self._core.clock.now(),
            )
            hearing = await self._cases.hearing(conn, hearing_id)
            await self._notify(conn, hearing, "notice.new")
            await self._catch_up(conn, [hearing])
            act.uow.wake_delivery()
        return hearing

    async def postpone(self, user_id: int, hearing_id: int, when: str) -> Hearing:
        """Move a hearing to a new time; reminders for the old time die, followers are told now."""
        return await self._change(
            user_id, hearing_id, "notice.postponed", lambda _: {"starts_at": self.parse_time(when)}
        )

    async def move(self, user_id: int, hearing_id: int, court: str, address: str) -> Hearing:
        """Move a hearing to a new place."""
        return await self._change(
            user_id,
            hearing_id,
            "notice.moved",
            lambda _: {
                "court": _field(court, "hearings.usage_move", 200),
                "address": _field(address, "hearings.usage_move", 300),
            },
        )

    async def cancel(self, user_id: int, hearing_id: int) -> Hearing:
        """Cancel a hearing."""
        return await self._change(user_id, hearing_id, "notice.cancelled", lambda _: {"status": "cancelled"})

    async def record_outcome(self, user_id: int, hearing_id: int, outcome: str) -> Hearing:
        """Record what happened (adjourned, verdict, detention extended, released) and tell followers."""

        def values(before: Hearing) -> dict[str, Any]:
            text = clean_text(outcome)
            if not text or telegram_length(text) > 1000:
                raise HearingInputError("hearings.usage_outcome")
            if before.starts_at > self._core.clock.now():
                raise HearingInputError("hearings.not_yet")
            return {"status": "held", "outcome": text}

        return await self._change(user_id, hearing_id, "notice.outcome", values)

    async def refuse(self, user_id: int, action: str, key: str, target: str | None = None) -> None:
        """Refuse a command whose arguments could not even be read, as the service refuses its own: through
        the gate, the role first (a stranger learns nothing of the syntax), then the usage. Either way one
        refusal is audited (under `target` when the case or hearing was read), and NotAllowed or
        HearingInputError is raised."""
        async with self._core.gate.acting(user_id, action, target):
            raise HearingInputError(key)

    async def coordinator_view(self, user_id: int, case_id: int) -> tuple[Case, list[tuple[Hearing, int]]]:
        """Return a case with every hearing and how many said they will attend (coordinators)."""
        async with self._acting(user_id, "hearing.list", f"#{case_id}") as act:  # the view is audited
            case = await self._cases.case(act.conn, case_id)
            rows = [
                (h, await self._cases.attendance_count(act.conn, h.id))
                for h in await self._cases.hearings_of(act.conn, case_id)
            ]
        return case, rows

    # ------------------------------------------------------------------ everyone

    async def public_cases(self) -> list[Case]:
        """Return the open public cases."""
        async with self._core.db.read() as conn:
            return await self._cases.public_cases(conn)

    async def case_view(self, case_id: int) -> tuple[Case, list[Hearing]]:
        """Return a public case and its upcoming hearings."""
        async with self._core.db.read() as conn:
            case = await self._cases.case(conn, case_id)
            if not case.public:
                raise LookupError(case_id)
            return case, await self._cases.upcoming_for(conn, [case_id], self._core.clock.now())

    async def follow(self, user_id: int, chat_id: int, case_id: int) -> bool:
        """Follow a public, open case; return False if already following."""
        pseudonym = self._core.pseudonyms.of_user(user_id)
        async with self._core.unit_of_work() as uow:
            conn = uow.conn
            case = await self._cases.case(conn, case_id)
            if not case.public or case.status != "open":
                raise LookupError(case_id)
            chat = self._core.cipher.encrypt_text(
                str(chat_id), binding=follow_chat_binding(pseudonym, case_id)
            )
            added = await self._cases.follow(conn, case_id, pseudonym, chat, self._core.clock.now())
            if added:
                upcoming = await self._cases.upcoming_for(conn, [case_id], self._core.clock.now())
                await self._catch_up(conn, upcoming, follower=pseudonym)
            uow.wake_delivery()
            await uow.commit()
        return added

    async def unfollow(self, user_id: int, case_id: int) -> bool:
        """Stop following; nothing more about the case is queued for the person."""
        pseudonym = self._core.pseudonyms.of_user(user_id)
        async with self._core.unit_of_work() as uow:
            removed = await self._cases.unfollow(uow.conn, case_id, pseudonym)
            # Nothing more about the case: not even what is already queued.
            for hearing in await self._cases.hearings_of(uow.conn, case_id):
                await uow.outbox.cancel_for_ref(uow.conn, pseudonym, _ref(hearing.id))
            await uow.commit()
        return removed

    async def following(self, user_id: int) -> list[tuple[Case, list[Hearing]]]:
        """Return the cases a person follows, each with its upcoming hearings."""
        pseudonym = self._core.pseudonyms.of_user(user_id)
        async with self._core.db.read() as conn:
            followed = await self._cases.followed(conn, pseudonym)
            now = self._core.clock.now()
            return [(case, await self._cases.upcoming_for(conn, [case.id], now)) for case in followed]

    async def attend(self, user_id: int, hearing_id: int, sequence: int) -> Hearing:
        """Record "I will attend" for the hearing as it is now, on a public case or one the person follows.

        A button of an older version is refused; so are a hearing that does not exist and one of a private
        case the person does not follow, with the same answer (it must not tell which hearings exist). Each
        refusal is audited and changes nothing.
        """
        pseudonym = self._core.pseudonyms.of_user(user_id)
        target = f"#{hearing_id}"
        try:
            async with self._core.unit_of_work() as uow:
                hearing = await self._cases.hearing(uow.conn, hearing_id)
                if not await self._visible(uow.conn, pseudonym, hearing):
                    raise CaseNotFound(hearing_id)
                if hearing.sequence != sequence or hearing.status != "scheduled":
                    raise HearingInputError("attend.stale")
                await self._cases.attend(uow.conn, hearing_id, pseudonym, self._core.clock.now())
                await uow.commit()
        except CaseNotFound:
            # Not for this person (or not there at all): answered as a stale button, told apart only here.
            await self._core.gate.refuse(
                user_id, "hearing.attend", target, detail="hearings.not_found", name_actor=False
            )
            raise HearingInputError("attend.stale") from None
        except HearingInputError as refused:
            await self._core.gate.refuse(
                user_id, "hearing.attend", target, detail=refused.key, name_actor=False
            )
            raise
        return hearing

    async def offsets(self, user_id: int) -> tuple[int, ...]:
        """Return the person's reminder offsets (minutes before)."""
        async with self._core.db.read() as conn:
            return _offsets(await self._cases.offsets(conn, self._core.pseudonyms.of_user(user_id)))

    async def toggle_offset(self, user_id: int, minutes: int) -> tuple[int, ...]:
        """Turn one reminder offset on or off; at least one stays on."""
        if minutes not in OFFSET_CHOICES:
            raise HearingInputError("settings.stale")
        pseudonym = self._core.pseudonyms.of_user(user_id)
        async with self._core.unit_of_work() as uow:
            current = set(_offsets(await self._cases.offsets(uow.conn, pseudonym)))
            current ^= {minutes}
            if not current:
                raise HearingInputError("settings.one_needed")
            chosen = tuple(m for m in OFFSET_CHOICES if m in current)
            await self._cases.set_offsets(uow.conn, pseudonym, ",".join(map(str, chosen)))
            await uow.commit()
        return chosen

    async def calendar(self, user_id: int, hearing_id: int | None) -> bytes:
        """Return an .ics file: one hearing, or every upcoming hearing of the followed cases."""
        pseudonym = self._core.pseudonyms.of_user(user_id)
        if hearing_id is not None:
            return self.ics([await self._hearing_for(user_id, pseudonym, hearing_id)])
        async with self._core.db.read() as conn:
            followed = await self._cases.followed(conn, pseudonym)
            # Cancelled ones stay in (STATUS:CANCELLED), so a re-import removes them from calendars.
            items = await self._cases.upcoming_for(
                conn, [c.id for c in followed], self._core.clock.now(), with_cancelled=True
            )
        return self.ics(items)

    async def _hearing_for(self, user_id: int, pseudonym: str, hearing_id: int) -> Hearing:
        """Return a hearing of a public case or a followed one; any other only to coordinators, through the
        gate. To everyone else a hidden hearing and a missing one look alike: CaseNotFound."""
        async with self._core.db.read() as conn:
            try:
                hearing = await self._cases.hearing(conn, hearing_id)
                if await self._visible(conn, pseudonym, hearing):
                    return hearing
            except CaseNotFound:
                pass
        if not await self._core.gate.holds(user_id):
            # A follower asking for a hearing they cannot see: audited without naming them, like a stale
            # attendance button (the audit log outlives /forget).
            await self._core.gate.refuse(
                user_id, "hearing.calendar", f"#{hearing_id}", detail="hearings.not_found", name_actor=False
            )
            raise CaseNotFound(hearing_id)
        try:
            async with self._core.gate.acting(user_id, "hearing.calendar", f"#{hearing_id}") as act:
                try:
                    return await self._cases.hearing(act.conn, hearing_id)
                except CaseNotFound:
                    raise HearingInputError("hearings.not_found") from None
        except (NotAllowed, HearingInputError):
            raise CaseNotFound(hearing_id) from None

    def ics(self, items: Sequence[Hearing]) -> bytes:
        """Render hearings as RFC 5545; a changed hearing keeps its UID and raises SEQUENCE."""
        calendar = Calendar()
        calendar.add("prodid", "-//jarchy//court hearings//EN")
        calendar.add("version", "2.0")
        calendar.add("calscale", "GREGORIAN")
        for hearing in items:
            event = Event()
            event.add("uid", f"hearing-{hearing.id}@jarchy")
            event.add("sequence", hearing.sequence)
            event.add("dtstamp", self._core.clock.now().astimezone(UTC))
            start = hearing.starts_at.astimezone(self._core.zone)
            event.add("dtstart", start)
            event.add("dtend", start + HEARING_LENGTH)
            event.add(
                "summary", self._core.texts.plain(self._core.language, "ics.summary", case=hearing.case_title)
            )
            event.add("location", f"{hearing.court}, {hearing.address}")
            description = "\n".join(part for part in (hearing.details, hearing.note) if part)
            if description:
                event.add("description", description)
            event.add("status", "CANCELLED" if hearing.status == "cancelled" else "CONFIRMED")
            calendar.add_component(event)
        calendar.add_missing_timezones()
        result: bytes = calendar.to_ical()
        return result

    async def purge(self) -> int:
        """Delete attendance pledges of hearings that are over (a day after they began)."""
        async with self._core.unit_of_work() as uow:
            purged = await self._cases.purge_attendance(uow.conn, self._core.clock.now() - timedelta(days=1))
            await uow.commit()
        return purged

    async def forget(self, user_id: int) -> None:
        """Delete the person's follows, attendance and reminder preferences (/forget)."""
        async with self._core.unit_of_work() as uow:
            await self._cases.forget_follower(uow.conn, self._core.pseudonyms.of_user(user_id))
            await uow.commit()

    # ------------------------------------------------------------------ the reminder pass

    async def materialise(self) -> PassResult:
        """Queue every reminder falling due before the next pass; each at most once, ever."""
        now = self._core.clock.now()
        window_end = now + self.interval
        queued = late = 0
        async with self._core.unit_of_work() as uow:
            conn = uow.conn
            stored = await self._state.get(conn, STATE_KEY)
            since = datetime.fromisoformat(stored) if stored else now
            if since > window_end + self.interval:
                # The clock went back (it had run ahead): start again from now rather than wait it out.
                log.warning("reminder watermark is ahead of the clock; restarting from now")
                since = now
            if since >= window_end:
                return PassResult(0, 0)
            # A hearing can have a reminder in (since, window_end] only if it starts in one of these.
            windows = [
                (since + timedelta(minutes=m), window_end + timedelta(minutes=m)) for m in OFFSET_CHOICES
            ]
            async for chunk in self._cases.due_candidates(conn, windows, now):
                messages: list[OutgoingMessage] = []
                words = await self._safewords.of_many(conn, [c.follower.pseudonym for c in chunk])
                for candidate in chunk:
                    hearing, follower = candidate.hearing, candidate.follower
                    times = [
                        (hearing.starts_at - timedelta(minutes=m), m)
                        for m in _offsets(follower.offsets)
                        if since < hearing.starts_at - timedelta(minutes=m) <= window_end
                    ]
                    if not times:
                        continue
                    # After downtime several may have passed: only the one nearest the hearing is sent.
                    due, minutes = max(times)
                    is_late = due < now - LATE_AFTER
                    late += is_late
                    word = words.get(follower.pseudonym)
                    messages.append(self._reminder(hearing, follower, minutes, max(due, now), is_late, word))
                queued += await self._core.outbox.enqueue(conn, messages)
            queued += await self._core.outbox.enqueue(
                conn, await self._channel_reminders(conn, since, window_end, now)
            )
            await self._state.put(conn, STATE_KEY, window_end.isoformat())
            if queued:
                uow.wake_delivery()
            await uow.commit()
        return PassResult(queued, late)

    def parse_time(self, text: str) -> datetime:
        """Parse a hearing time in the organisation's zone; refuse the past and impossible dates."""
        try:
            parsed = local_time(text)
        except FieldError as error:
            raise HearingInputError(error.key) from None
        moment = parsed.replace(tzinfo=self._core.zone)
        if moment <= self._core.clock.now():
            raise HearingInputError("hearings.past")
        return moment.astimezone(UTC)

    # ------------------------------------------------------------------ internals

    async def _add(self, conn: AsyncConnection, *args: Any) -> int:
        try:
            return int(await self._cases.add_hearing(conn, *args))
        except HearingExists:
            raise HearingInputError("hearings.exists") from None

    async def _change(
        self, user_id: int, hearing_id: int, notice: str, change: Callable[[Hearing], dict[str, Any]]
    ) -> Hearing:
        target = f"#{hearing_id}"
        async with self._acting(user_id, "hearing.change", target, missing="hearings.not_found") as act:
            conn = act.conn
            before = await self._cases.hearing(conn, hearing_id)
            values = change(before)  # checks the input, after the role: a stranger learns nothing of it
            if before.status != "scheduled":
                raise HearingInputError("hearings.not_scheduled")
            if all(getattr(before, name) == value for name, value in values.items()):
                return before  # the same change again (a retried or repeated command): nothing to tell
            try:
                hearing = await self._cases.change_hearing(conn, hearing_id, self._core.clock.now(), **values)
            except HearingExists:
                raise HearingInputError("hearings.exists") from None
            if "starts_at" in values or values.get("status") == "cancelled":
                await self._cases.clear_attendance(conn, hearing_id)  # pledges were for the old time
            # Reminders and notices queued for the old version must not go out...
            await self._core.outbox.cancel_ref(conn, _ref(hearing_id))
            await self._notify(conn, hearing, notice)
            # ...and those the last pass had already queued ahead are queued again for the new version.
            await self._catch_up(conn, [hearing])
            act.uow.wake_delivery()
        return hearing

    async def _catch_up(
        self, conn: AsyncConnection, hearings: Sequence[Hearing], follower: str | None = None
    ) -> None:
        """Queue reminders due between now and the last pass's horizon, which that pass could not know of."""
        stored = await self._state.get(conn, STATE_KEY)
        now = self._core.clock.now()
        if stored is None or datetime.fromisoformat(stored) <= now:
            return
        until = datetime.fromisoformat(stored)
        messages = []
        for hearing in hearings:
            if hearing.status != "scheduled" or hearing.starts_at <= now:
                continue
            people = await self._cases.followers(conn, hearing.case_id)
            words = await self._safewords.of_many(conn, [p.pseudonym for p in people])
            for person in people:
                if follower is not None and person.pseudonym != follower:
                    continue
                times = [
                    (hearing.starts_at - timedelta(minutes=m), m)
                    for m in _offsets(person.offsets)
                    if now < hearing.starts_at - timedelta(minutes=m) <= until
                ]
                if times:
                    due, minutes = max(times)
                    word = words.get(person.pseudonym)
                    messages.append(self._reminder(hearing, person, minutes, due, False, word))
        await self._core.outbox.enqueue(conn, messages)

    async def _channel_reminders(
        self, conn: AsyncConnection, since: datetime, window_end: datetime, now: datetime
    ) -> list[OutgoingMessage]:
        channels = await self._channels.all(conn)
        if not channels:
            return []
        offset = timedelta(minutes=CHANNEL_OFFSET)
        upcoming = await self._cases.public_hearings_between(conn, since + offset, window_end + offset, now)
        lang = self._core.language
        return [
            self._channel_message(
                hearing,
                chat,
                self._core.texts.text(
                    lang, "reminder.text", offset=self._core.texts.plain(lang, f"offset.{CHANNEL_OFFSET}"),
                    **self._fields(hearing, lang),
                ),
                f"channel-reminder:{hearing.id}:{hearing.sequence}:{chat}",
                due=max(hearing.starts_at - offset, now),
            )
            for hearing in upcoming
            for chat in channels
        ]  # fmt: skip

    def _channel_message(
        self, hearing: Hearing, chat: int, text: str, dedupe: str, due: datetime
    ) -> OutgoingMessage:
        return OutgoingMessage(
            "sendMessage",
            {"chat_id": chat, "text": text},
            kind="announcement",
            priority=PRIORITY_REMINDER,
            due_at=due,
            dedupe_key=dedupe,
            ref=_ref(hearing.id),
        )

    async def _notify(self, conn: AsyncConnection, hearing: Hearing, key: str) -> None:
        if (await self._cases.case(conn, hearing.case_id)).public:
            # Public cases are announced in the organisation's channels too, without personal buttons.
            text = self._core.texts.text(
                self._core.language, key, **self._fields(hearing, self._core.language)
            )
            version = f"{hearing.id}:{hearing.sequence}:{hearing.status}"
            posts = [
                self._channel_message(
                    hearing, chat, text, f"channel:{version}:{chat}", due=self._core.clock.now()
                )
                for chat in await self._channels.all(conn)
            ]
            await self._core.outbox.enqueue(conn, posts)
        followers = await self._cases.followers(conn, hearing.case_id)
        words = await self._safewords.of_many(conn, [f.pseudonym for f in followers])
        messages = [
            self._message(
                hearing,
                follower,
                self._core.texts.text(
                    self._lang(follower),
                    key,
                    **self._fields(hearing, self._lang(follower), follower.timezone),
                ),
                priority=PRIORITY_NOTICE,
                dedupe=f"notice:{hearing.id}:{hearing.sequence}:{hearing.status}:{follower.pseudonym}",
                due=self._core.clock.now(),
                buttons=hearing.status == "scheduled",
                word=words.get(follower.pseudonym),
            )
            for follower in followers
        ]
        await self._core.outbox.enqueue(conn, messages)

    def _reminder(
        self,
        hearing: Hearing,
        follower: Follower,
        minutes: int,
        due: datetime,
        late: bool,
        word: str | None = None,
    ) -> OutgoingMessage:
        lang = self._lang(follower)
        if late:
            # After downtime the offset no longer says when it is: give the time and say it is late.
            text = self._core.texts.text(
                lang, "reminder.text_late", **self._fields(hearing, lang, follower.timezone)
            )
            text += "\n" + self._core.texts.text(lang, "reminder.late")
        else:
            offset = self._core.texts.plain(lang, f"offset.{minutes}")
            text = self._core.texts.text(
                lang, "reminder.text", offset=offset, **self._fields(hearing, lang, follower.timezone)
            )
        return self._message(
            hearing,
            follower,
            text,
            priority=PRIORITY_REMINDER,
            dedupe=f"reminder:{hearing.id}:{hearing.sequence}:{minutes}:{follower.pseudonym}",
            due=due,
            buttons=True,
            word=word,
        )

    def _message(
        self,
        hearing: Hearing,
        follower: Follower,
        text: str,
        *,
        priority: int,
        dedupe: str,
        due: datetime,
        buttons: bool,
        word: str | None = None,
    ) -> OutgoingMessage:
        """Build a reminder or notice for one follower, their safety word (`word`) on top."""
        chat_id = int(
            self._core.cipher.decrypt_text(
                follower.chat, binding=follow_chat_binding(follower.pseudonym, hearing.case_id)
            )
        )
        params: dict[str, Any] = headed(
            self._core, self._lang(follower), word, {"chat_id": chat_id, "text": text}
        )
        if buttons:
            lang = self._lang(follower)
            params["reply_markup"] = {
                "inline_keyboard": [
                    [
                        {
                            "text": self._core.texts.plain(lang, "button.attend"),
                            "callback_data": AttendPress(hearing.id, hearing.sequence).pack(),
                        },
                        {
                            "text": self._core.texts.plain(lang, "button.calendar"),
                            "callback_data": CalendarPress(hearing.id).pack(),
                        },
                    ]
                ]
            }
        return OutgoingMessage(
            "sendMessage",
            params,
            kind="reminder",
            recipient_user_id=chat_id,
            priority=priority,
            due_at=due,
            dedupe_key=dedupe,
            ref=_ref(hearing.id),
            # A reminder or notice is useless, even harmful, once the hearing has begun.
            expires_at=hearing.starts_at if hearing.status == "scheduled" else None,
        )

    def _fields(self, hearing: Hearing, lang: str, zone_name: str | None = None) -> dict[str, object]:
        # Shown in the person's own zone if they chose one, else the organisation's.
        zone = ZoneInfo(zone_name) if zone_name else self._core.zone
        local = hearing.starts_at.astimezone(zone)
        details = f", {hearing.details}" if hearing.details else ""
        return {
            "case": hearing.case_title,
            "date": f"{local:%d.%m.%Y %H:%M} ({zone})",
            "court": hearing.court,
            "address": hearing.address + details,
            "outcome": hearing.outcome or "",
        }

    def _lang(self, follower: Follower) -> str:
        return follower.language if follower.language in LANGUAGES else self._core.language

    async def _visible(self, conn: AsyncConnection, pseudonym: str, hearing: Hearing) -> bool:
        """Tell whether a person may see a hearing without a role: a public case's, or a followed one's."""
        if (await self._cases.case(conn, hearing.case_id)).public:
            return True
        return hearing.case_id in {case.id for case in await self._cases.followed(conn, pseudonym)}

    @asynccontextmanager
    async def _acting(
        self,
        user_id: int,
        action: str,
        target: str | None,
        *,
        missing: str = "cases.not_found",
        roles: Sequence[str] = COORDINATING,
    ) -> AsyncIterator[Acting]:
        """Open the gate for a coordinators' action and record it in the audit log, to commit with it or not
        at all. A refusal (bad input, a case or hearing that does not exist: `missing` names its text) rolls
        both back and is audited by the gate, once."""
        async with self._core.gate.acting(user_id, action, target, roles) as act:
            await self._core.audit.record(act.conn, act.actor, action, target)
            try:
                yield act
            except CaseNotFound:
                raise HearingInputError(missing) from None


def _offsets(stored: str | None) -> tuple[int, ...]:
    if not stored:
        return DEFAULT_OFFSETS
    chosen = {int(part) for part in stored.split(",") if part.strip().isdigit()}
    return tuple(m for m in OFFSET_CHOICES if m in chosen) or DEFAULT_OFFSETS


def _ref(hearing_id: int) -> str:
    return f"hearing:{hearing_id}"


def _field(value: str, usage: str, limit: int) -> str:
    cleaned = clean_text(value)
    if not cleaned or len(cleaned) > limit:
        raise HearingInputError(usage)
    return cleaned


def _optional(value: str | None) -> str | None:
    cleaned = clean_text(value or "")
    return cleaned[:_MAX_FIELD] or None
