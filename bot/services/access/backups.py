"""Backup bots: who can be reached by which bot, the invitations to press Start in a backup, and the switch.

A bot cannot write to anyone who has not pressed Start in it (Telegram answers 403), so the move to a
backup is prepared before it is needed: people are invited, once per place, to start the backup too, and
the bot records, sealed per person, which of its bots they started and the Telegram id a backup may
write to. The main bot reaches everyone who uses it; a backup only those recorded.

The record is bound to the person's pseudonym, never to a report, and its time is the day only: after
an anonymous report nothing is written here (no invitation is recorded), so the record cannot place its
author beside it.

A switch makes a backup the bot in use (bot_state, so it survives restarts and reaches every instance),
queues a "we moved" notice to every person the new bot can write to and to every registered channel, and
tells the admins how many people no working bot can reach.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncConnection

from bot.runtime.fleet import ACTIVE_BOT, Fleet, FleetBot
from bot.runtime.outbox import PRIORITY_PERSONAL, OutgoingMessage
from bot.runtime.telegram_api import NotSent, OutcomeUnknown, TelegramApi
from bot.security import DecryptionError
from bot.security.bindings import reach_binding, subscriber_chat_binding
from bot.services.core import Core
from bot.services.triage.alerts import AlertService
from storage.campaigns import CampaignRepository
from storage.channels import ChannelRepository
from storage.outbox import ClaimedRow, OutboxRepository
from storage.reach import ReachRepository
from storage.state import StateRepository
from storage.users import UserRepository

log = logging.getLogger(__name__)

MOVED_KIND = "bot_moved"
INVITE_KIND = "backup_invite"
# Where an invitation to start a backup is shown, at most once each.
PLACES = ("start", "settings", "report")


@dataclass(frozen=True)
class Record:
    """One person's reach: the bots they started, the id those may write to, the invitations shown."""

    bots: frozenset[int] = frozenset()
    chat: int | None = None
    asked: frozenset[str] = frozenset()

    def to_json(self) -> dict[str, object]:
        """Return the sealed form."""
        return {"bots": sorted(self.bots), "chat": self.chat, "asked": sorted(self.asked)}


@dataclass(frozen=True)
class BotReach:
    """One bot in the census: whether it answers, whether it is in use, how many people it reaches."""

    bot: FleetBot
    username: str | None
    working: bool
    in_use: bool
    reaches: int
    in_group: bool | None = None  # in the coordinators' group (None: not asked, or no answer)


@dataclass(frozen=True)
class Census:
    """Who can be reached by which bot, and how many by none that works."""

    bots: tuple[BotReach, ...]
    people: int
    unreachable: int


@dataclass(frozen=True)
class SwitchResult:
    """What a switch did: False when the bot was in use already."""

    changed: bool
    census: Census | None = None
    told_people: int = 0
    told_channels: int = 0
    to: FleetBot | None = None


class UnknownBot(Exception):
    """The id names none of the configured bots, or one whose token Telegram refuses."""


class BackupService:
    """Reach records, invitations, the census and the switch."""

    def __init__(
        self,
        core: Core,
        *,
        fleet: Fleet,
        repo: ReachRepository,
        users: UserRepository,
        state: StateRepository,
        channels: ChannelRepository,
        outbox_repo: OutboxRepository,
        alerts: AlertService,
        campaigns: CampaignRepository,
        on_reached: Callable[[str], None] = lambda chat_key: None,
    ) -> None:
        """`on_reached(chat_key)`: a person became reachable by another bot (the delivery worker retries
        what it found unreachable a moment ago)."""
        self._core = core
        self.fleet = fleet
        self._repo = repo
        self._users = users
        self._state = state
        self._channels = channels
        self._outbox_repo = outbox_repo
        self._alerts = alerts
        self._campaigns = campaigns
        self._on_reached = on_reached
        # (bot, pseudonym) known to be recorded: the per-update check after a switch, and a flood of
        # messages to a standby bot, read the database once per person and never take the write lock.
        self._recorded: set[tuple[int, str]] = set()

    # ------------------------------------------------------------------ records

    def _open(self, pseudonym: str, sealed: bytes | None) -> Record:
        if sealed is None:
            return Record()
        try:
            data = self._core.cipher.decrypt_json(sealed, binding=reach_binding(pseudonym))
        except DecryptionError:
            # Unreadable: as if unknown. The person is invited again and recorded afresh when they start.
            return Record()
        chat = data.get("chat")
        return Record(
            bots=frozenset(int(b) for b in data.get("bots", ()) if isinstance(b, int)),
            chat=chat if isinstance(chat, int) else None,
            asked=frozenset(str(p) for p in data.get("asked", ()) if p in PLACES),
        )

    async def _write(self, conn: AsyncConnection, telegram_id: int, record: Record) -> None:
        pseudonym = self._core.pseudonyms.of_user(telegram_id)
        await self._users.ensure_exists(conn, pseudonym, self._core.clock.now())
        await self._put(conn, pseudonym, self._core.pseudonyms.of_chat(telegram_id), record)

    async def _put(self, conn: AsyncConnection, pseudonym: str, chat_key: str, record: Record) -> None:
        sealed = self._core.cipher.encrypt_json(record.to_json(), binding=reach_binding(pseudonym))
        await self._repo.put(conn, pseudonym, chat_key, sealed, self._core.clock.now())

    async def blocked(self, bot_id: int, chat_key: str) -> None:
        """A bot was refused by the person behind a private chat (403: they blocked it): it no longer
        counts as reaching them, so their rows go through another working bot, or wait."""
        async with self._core.unit_of_work() as uow:
            found = await self._repo.by_chat_keys(uow.conn, [chat_key])
            if chat_key in found:
                pseudonym, sealed = found[chat_key]
                record = self._open(pseudonym, sealed)
                if bot_id in record.bots:
                    bots = record.bots - {bot_id}
                    chat = record.chat if bots else None
                    await self._put(uow.conn, pseudonym, chat_key, Record(bots, chat, record.asked))
                    self._recorded.discard((bot_id, pseudonym))
            await uow.commit()

    async def record_of(self, conn: AsyncConnection, telegram_id: int) -> Record:
        """Return a person's reach record (empty when none)."""
        pseudonym = self._core.pseudonyms.of_user(telegram_id)
        return self._open(pseudonym, await self._repo.get(conn, pseudonym))

    async def started(self, bot_id: int, telegram_id: int, telegram_language: str | None) -> bool:
        """Record that a person pressed Start in (or wrote to) one of the bots; return True if new.

        Rows waiting because no bot could reach them come forward at once.
        """
        pseudonym = self._core.pseudonyms.of_user(telegram_id)
        if (bot_id, pseudonym) in self._recorded:
            return False
        async with self._core.db.read() as conn:
            known = await self._users.get(conn, pseudonym) is not None
            record = await self.record_of(conn, telegram_id)
        if known and bot_id in record.bots and record.chat == telegram_id:
            self._recorded.add((bot_id, pseudonym))
            return False
        async with self._core.unit_of_work() as uow:
            if await self._users.get(uow.conn, pseudonym) is None:
                await self._users.touch(uow.conn, pseudonym, telegram_language, self._core.clock.now())
            record = await self.record_of(uow.conn, telegram_id)
            new = bot_id not in record.bots or record.chat != telegram_id
            if new:
                bots = record.bots | {bot_id}
                await self._write(uow.conn, telegram_id, Record(bots, telegram_id, record.asked))
                chat_key = self._core.pseudonyms.of_chat(telegram_id)
                # Told before the rows are brought forward: what the sender records after this moment
                # is due at once too (DeliveryWorker.reached).
                self._on_reached(chat_key)
                await self._outbox_repo.due_now_for_chat(uow.conn, chat_key, self._core.clock.now())
                uow.wake_delivery()
            await uow.commit()
        self._recorded.add((bot_id, pseudonym))
        return new

    async def standby_started(
        self, bot_id: int, telegram_id: int, telegram_language: str | None
    ) -> str | None:
        """Record a person writing to a bot not in use; return the answer: where to write instead."""
        await self.started(bot_id, telegram_id, telegram_language)
        active = self.fleet.usernames.get(self.fleet.active.bot_id)
        if active is None:
            return None
        async with self._core.db.read() as conn:
            language = await self._language_of(conn, self._core.pseudonyms.of_user(telegram_id))
        return self._core.texts.text(language, "fleet.standby_hello", active=active)

    async def left(self, bot_id: int, telegram_id: int) -> None:
        """Record that a person blocked one of the bots."""
        async with self._core.unit_of_work() as uow:
            record = await self.record_of(uow.conn, telegram_id)
            if bot_id in record.bots:
                bots = record.bots - {bot_id}
                chat = record.chat if bots else None
                await self._write(uow.conn, telegram_id, Record(bots, chat, record.asked))
            await uow.commit()
        self._recorded.discard((bot_id, self._core.pseudonyms.of_user(telegram_id)))

    async def seen(self, telegram_id: int, telegram_language: str | None) -> None:
        """Note that a person wrote to the bot in use; only a backup in use needs the record."""
        active = self.fleet.active
        if active.main or not self.fleet.enabled:
            return
        if (active.bot_id, self._core.pseudonyms.of_user(telegram_id)) in self._recorded:
            return
        await self.started(active.bot_id, telegram_id, telegram_language)

    async def private_status(self, telegram_id: int, status: str) -> None:
        """The person blocked ("kicked") or unblocked ("member") the bot in use, when it is a backup."""
        active = self.fleet.active
        if active.main or not self.fleet.enabled:
            return
        if status == "kicked":
            await self.left(active.bot_id, telegram_id)
        elif status == "member":
            await self.started(active.bot_id, telegram_id, None)

    async def reach_of(self, conn: AsyncConnection, chat_keys: Sequence[str]) -> dict[str, frozenset[int]]:
        """Return the bots each private chat's person started (the main bot is implied for everyone)."""
        found = await self._repo.by_chat_keys(conn, chat_keys)
        return {key: self._open(pseudonym, sealed).bots for key, (pseudonym, sealed) in found.items()}

    async def route(self, rows: Sequence[ClaimedRow]) -> dict[int, TelegramApi | None]:
        """Choose the bot that sends each row to a person: the one in use if it can write to them, else
        another working bot that can, else None (the row waits). Rows not named go the usual way."""
        fleet = self.fleet
        if not fleet.enabled:
            return {}
        plan: dict[int, TelegramApi | None] = {}
        for row in rows:
            # An edit or a deletion goes through the bot whose chat holds the message, or waits for it
            # (sent through another bot it would act on the wrong message, or on none, and pass as done).
            # "We moved" goes out from the bot moved to, whichever bot this run still holds.
            owner = row.via_bot if row.via_bot is not None else _moved_to(row)
            if owner is None or owner == fleet.active.bot_id:
                continue
            if fleet.by_id(owner) is None:
                plan[row.id] = None  # a bot no longer configured: nothing may act for it
            else:
                plan[row.id] = fleet.api(owner) if fleet.working(owner) or row.via_bot is None else None
        if fleet.active.main:
            return plan  # the main bot reaches everyone who ever wrote to it
        private = [row for row in rows if row.chat_kind == "private" and row.id not in plan]
        if not private:
            return plan
        async with self._core.db.read() as conn:
            reach = await self.reach_of(conn, [row.chat_key for row in private])
        order = (fleet.active, *fleet.standby())
        for row in private:
            bots = reach.get(row.chat_key, frozenset())
            choice = next(
                (b for b in order if (b.main or b.bot_id in bots) and fleet.working(b.bot_id)), None
            )
            if choice is None:
                plan[row.id] = None
            elif choice.bot_id != fleet.active.bot_id:
                plan[row.id] = fleet.api(choice.bot_id)
        return plan

    # ------------------------------------------------------------------ invitations

    def invited_bot(self) -> str | None:
        """Return the username of the backup people are invited to start (one that answers), or None."""
        for bot in self.fleet.standby():
            username = self.fleet.usernames.get(bot.bot_id)
            if username and self.fleet.working(bot.bot_id):
                return username
        return None

    async def invitation(self, telegram_id: int, place: str, language: str) -> str:
        """Return the line inviting a person to start the backup, once per place ("" when not due).

        Not for a screen after an anonymous report: recording the invitation then would write the
        person's record at the time of that report.
        """
        username = self.invited_bot()
        if username is None or place not in PLACES:
            return ""

        def due(record: Record) -> bool:
            return place not in record.asked and not record.bots - {self.fleet.active.bot_id}

        # Read first: /start and /settings take the write lock only the one time the line is shown.
        async with self._core.db.read() as conn:
            if not due(await self.record_of(conn, telegram_id)):
                return ""
        async with self._core.unit_of_work() as uow:
            record = await self.record_of(uow.conn, telegram_id)
            if not due(record):
                await uow.commit()
                return ""
            await self._write(uow.conn, telegram_id, Record(record.bots, record.chat, record.asked | {place}))
            await uow.commit()
        return self._core.texts.text(language, "fleet.invite", backup=username)

    async def invite_everyone(self, actor: str) -> int:
        """Queue an invitation to every person the bot in use can write to and who started no backup.

        Only people whose Telegram id the bot holds can be written to: subscribers and those recorded
        here (a case's followers are not asked: their ids are sealed per case, for its reminders only).
        Return how many were queued (each person once per backup).
        """
        username = self.invited_bot()
        if username is None:
            return 0
        backup = self.fleet.find(username)
        async with self._core.unit_of_work() as uow:
            targets = await self._subscribed_chats(uow.conn)
            messages: list[OutgoingMessage] = []
            for chat_id, language in targets:
                record = await self.record_of(uow.conn, chat_id)
                if record.bots - {self.fleet.active.bot_id}:
                    continue
                text = self._core.texts.text(language, "fleet.invite_all", backup=username)
                messages.append(
                    OutgoingMessage(
                        "sendMessage",
                        {"chat_id": chat_id, "text": text},
                        kind=INVITE_KIND,
                        recipient_user_id=chat_id,
                        priority=PRIORITY_PERSONAL - 20,
                        dedupe_key=f"invite:{backup.bot_id if backup else username}:"
                        f"{self._core.pseudonyms.of_user(chat_id)}",
                    )
                )
            queued = await self._core.outbox.enqueue(uow.conn, messages)
            await uow.audit.record(uow.conn, actor, "bot.invite", detail=f"queued={queued}")
            uow.wake_delivery()
            await uow.commit()
        return queued

    async def _subscribed_chats(self, conn: AsyncConnection) -> list[tuple[int, str]]:
        """Return (Telegram id, language) of everyone the bot may write to first: the subscribers it holds
        ids of, and the people recorded with an id."""
        ids: dict[int, str] = {}
        for chat_id, pseudonym in await self._subscriber_ids(conn):
            ids.setdefault(chat_id, await self._language_of(conn, pseudonym))
        for pseudonym, sealed in await self._repo.records(conn):
            record = self._open(pseudonym, sealed)
            if record.chat is not None:
                ids.setdefault(record.chat, await self._language_of(conn, pseudonym))
        return sorted(ids.items())

    async def _subscriber_ids(self, conn: AsyncConnection) -> list[tuple[int, str]]:
        # Subscriptions keep their chat ids sealed; one that does not open is left out.
        found: list[tuple[int, str]] = []
        after: str | None = None
        while True:
            batch = await self._campaigns.subscribers(conn, after=after, limit=500)
            if not batch:
                return found
            for person in batch:
                try:
                    chat = self._core.cipher.decrypt_text(
                        person.chat, binding=subscriber_chat_binding(person.pseudonym)
                    )
                except DecryptionError:
                    continue
                found.append((int(chat), person.pseudonym))
            after = batch[-1].pseudonym

    async def _language_of(self, conn: AsyncConnection, pseudonym: str) -> str:
        user = await self._users.get(conn, pseudonym)
        return (user.spoken if user is not None else None) or self._core.language

    # ------------------------------------------------------------------ census and switch

    async def census(self, conn: AsyncConnection | None = None, *, in_use: FleetBot | None = None) -> Census:
        """Count, per bot, the people it can write to, and the people no working bot can (`in_use`: as
        if that bot were in use, for the figures of a switch)."""
        if conn is None:
            async with self._core.db.read() as read:
                return await self.census(read, in_use=in_use)
        active = in_use or self.fleet.active
        rows = await self._repo.everyone(conn)
        working = {b.bot_id for b in self.fleet.bots if self.fleet.working(b.bot_id)}
        counts = {b.bot_id: 0 for b in self.fleet.bots}
        unreachable = 0
        main = self.fleet.main.bot_id
        for row in rows:
            reach = set(self._open(row.pseudonym, row.sealed).bots)
            if row.active:
                reach.add(main)
            for bot_id in reach & counts.keys():
                counts[bot_id] += 1
            if not reach & working:
                unreachable += 1
        return Census(
            bots=tuple(
                BotReach(
                    bot=b,
                    username=self.fleet.usernames.get(b.bot_id),
                    working=b.bot_id in working,
                    in_use=b.bot_id == active.bot_id,
                    reaches=counts[b.bot_id],
                )
                for b in self.fleet.bots
            ),
            people=len(rows),
            unreachable=unreachable,
        )

    def name_of(self, bot_id: int) -> str:
        """Return how a bot is named to people: @username once getMe told it, else its id."""
        username = self.fleet.usernames.get(bot_id)
        return f"@{username}" if username else str(bot_id)

    async def census_for(self, admin_id: int) -> Census:
        """Return the census for an admin (NotAllowed for anyone else, audited), with whether each bot
        is in the coordinators' group (asked of Telegram: a backup that is not cannot post alerts)."""
        await self._core.gate.require(admin_id, "bot.census", roles=("admin",))
        census = await self.census()
        async with self._core.db.read() as conn:
            chat = await self._alerts.coordinator_chat(conn)
        if chat is None:
            return census
        lines = [
            dataclasses.replace(line, in_group=await self._in_group(line.bot, chat)) for line in census.bots
        ]
        return dataclasses.replace(census, bots=tuple(lines))

    async def _in_group(self, bot: FleetBot, chat_id: int) -> bool | None:
        """Whether the bot may post in the coordinators' group; None when Telegram did not say."""
        if not self.fleet.working(bot.bot_id):
            return None
        try:
            answer = await self.fleet.api(bot.bot_id).call(
                "getChatMember", {"chat_id": chat_id, "user_id": bot.bot_id}, read_timeout=10.0
            )
        except (NotSent, OutcomeUnknown):
            return None
        if answer.ok and isinstance(answer.result, dict):
            return answer.result.get("status") in ("creator", "administrator", "member")
        return False if answer.error_code in (400, 403) else None

    async def invite_by(self, admin_id: int) -> int:
        """Invite everyone to the backup at an admin's request; return how many were queued."""
        actor = await self._core.gate.require(admin_id, "bot.invite", roles=("admin",))
        return await self.invite_everyone(actor)

    async def switch_by(self, admin_id: int, bot_id: int) -> SwitchResult:
        """Switch to one of the bots at an admin's request (NotAllowed for anyone else; UnknownBot for an
        id that is none of ours or a bot whose token is refused)."""
        actor = await self._core.gate.require(admin_id, "bot.switch", str(bot_id), roles=("admin",))
        bot = self.fleet.by_id(bot_id)
        if bot is None or not self.fleet.working(bot_id):
            raise UnknownBot(bot_id)
        return await self.switch(bot, actor=actor, reason="admin")

    async def in_use(self, conn: AsyncConnection) -> int:
        """Return the id of the bot in use as the database says now (another instance may have switched)."""
        raw = await self._state.get(conn, ACTIVE_BOT)
        named = int(raw) if raw is not None and raw.isdigit() else None
        # A bot taken out of the settings is not in use, whatever the database says (as at start:
        # bot.runtime.fleet.read_active_bot), or every instance would restart to follow it forever.
        return named if named is not None and self.fleet.by_id(named) else self.fleet.main.bot_id

    async def switch(self, to: FleetBot, *, actor: str, reason: str) -> SwitchResult:
        """Make `to` the bot in use, tell everyone it can reach and the channels, and the admins."""
        async with self._core.unit_of_work() as uow:
            conn = uow.conn
            current = await self.in_use(conn)
            if current == to.bot_id:
                await uow.commit()
                return SwitchResult(changed=False, to=to)
            await self._state.put(conn, ACTIVE_BOT, str(to.bot_id))
            new_name, old_name = self.name_of(to.bot_id), self.name_of(current)
            people: list[OutgoingMessage] = []
            for pseudonym, sealed in await self._repo.records(conn):
                record = self._open(pseudonym, sealed)
                if to.bot_id not in record.bots or record.chat is None:
                    continue
                language = await self._language_of(conn, pseudonym)
                text = self._core.texts.text(language, "fleet.moved_person", new=new_name, old=old_name)
                people.append(self._moved(record.chat, text, to, pseudonym, person=True))
            channels = [
                self._moved(
                    chat,
                    self._core.texts.text(self._core.language, "fleet.moved_channel", new=new_name),
                    to,
                    str(chat),
                    person=False,
                )
                for chat in await self._channels.all(conn)
            ]
            # What waited for the refused bot, or for a bot able to reach its person, is tried at once.
            await self._outbox_repo.due_now_after_switch(conn, self._core.clock.now())
            told_people = await self._core.outbox.enqueue(conn, people)
            told_channels = await self._core.outbox.enqueue(conn, channels)
            # Counted with the new bot in use: who it, or another working bot, can reach now.
            census = await self.census(conn, in_use=to)
            await uow.audit.record(
                conn,
                actor,
                "bot.switch",
                str(to.bot_id),
                detail=f"from={current} reason={reason} people={told_people} channels={told_channels} "
                f"unreachable={census.unreachable}",
            )
            await self._alerts.notify_admins(
                conn,
                "fleet.switched_admin",
                new=new_name,
                old=old_name,
                reason=self._core.texts.text(self._core.language, f"fleet.reason_{reason}"),
                people=told_people,
                channels=told_channels,
                unreachable=census.unreachable,
                total=census.people,
            )
            uow.wake_delivery()
            await uow.commit()
        log.warning("switched to %s (%s)", to.label, reason)
        return SwitchResult(True, census, told_people, told_channels, to)

    def _moved(self, chat_id: int, text: str, to: FleetBot, key: str, *, person: bool) -> OutgoingMessage:
        return OutgoingMessage(
            "sendMessage",
            {"chat_id": chat_id, "text": text},
            kind=MOVED_KIND,
            recipient_user_id=chat_id if person else None,
            priority=PRIORITY_PERSONAL,
            ref=f"{MOVED_KIND}:{to.bot_id}",
            dedupe_key=f"moved:{to.bot_id}:{key}",
        )


def _moved_to(row: ClaimedRow) -> int | None:
    if row.kind != MOVED_KIND or row.ref is None:
        return None
    head, _, bot_id = row.ref.partition(":")
    return int(bot_id) if head == MOVED_KIND and bot_id.isdigit() else None
