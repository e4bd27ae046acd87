"""Only coordinators are in the coordinators' group: everyone in it reads every alert, report and file.

The bot keeps the Telegram id of each role holder, sealed, because Telegram answers about people by id
only: whether someone is in the group (getChatMember), and removing them (banChatMember, then
unbanChatMember with only_if_banned, so they may be invited again one day). It learns the id when someone
joins the team, from the settings for admins, and otherwise the next time a role holder writes to it.

Three things keep the group to the team:
- a role that ends queues the person's removal, in the transaction that ends it;
- someone without a role joining (or being made an administrator) is reported to every admin at once,
  and removed too when JARCHY_REMOVE_STRANGERS is on;
- a periodic check, since the Bot API cannot list a group's members: the member count against the role
  holders known to be in the group, and any former role holder still in it, told to the admins only when
  the figure changes.

A removal is two outbox rows under one ref; the unban is held until the ban went through, so it can
never overtake it. `follow_removals` moves them on and tells the admins what to do when Telegram refuses:
a refused ban is never retried (it would fail the same way), and the person's id is kept until Telegram
has them out of the group, so the periodic check can name them and remove them once the bot may.
"""

from __future__ import annotations

import json
import logging
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from bot.runtime.outbox import OutgoingMessage
from bot.runtime.telegram_api import NotSent, OutcomeUnknown, TelegramApi
from bot.security import DecryptionError
from bot.security.bindings import telegram_id_binding
from bot.services.access.team import MEMBER_REF_LENGTH, member_label, open_display_name
from bot.services.core import Core
from bot.services.triage.alerts import PRIORITY_NOTICE, AlertService
from messages import Safe
from storage.members import MemberRepository, Removal, RowOutcome, StoredId
from storage.state import StateRepository
from storage.team import TeamRepository
from storage.users import UserRepository

log = logging.getLogger(__name__)

BAN_KIND = "member_ban"
UNBAN_KIND = "member_unban"
REMOVAL_KINDS = (BAN_KIND, UNBAN_KIND)
# The last figure the admins were told (bot_state): a pass tells them again only when it changes.
CHECK_STATE = "members_check"
IN_GROUP = frozenset({"creator", "administrator", "member"})
_ADMINISTRATORS = frozenset({"creator", "administrator"})
_UNDER_WAY = ("pending", "sending", "held")
# Telegram's words for "that person is not there": nothing to remove.
_ABSENT = ("user_not_participant", "participant_id_invalid", "user not found", "member not found")
# The bot may not remove people there: not an administrator, without "Ban users", or not in the group.
_NO_RIGHTS = (
    "not enough rights",
    "chat_admin_required",
    "need to be inviter",
    "have no rights",
    "not in the chat",
)
_ADMIN = ("user is an administrator", "user_admin_invalid", "can kick group administrators")
# A basic group has no list of removed users: its removals leave nothing to lift.
_NOTHING_TO_LIFT = ("available for supergroup", "available only for supergroups")


@dataclass(frozen=True)
class MemberCheck:
    """What one pass of the periodic check found."""

    members: int
    holders: int  # role holders known to be in the group
    excess: int  # members beyond the bot and those role holders
    lingering: int  # former role holders still in it
    queued: int  # removals queued by this pass


def ban_verdict(status: str, error: str | None) -> str:
    """Say how a ban ended: "done", "absent" (they were not there), or why it failed ("rights", "admin",
    "owner", "other")."""
    if status in ("sent", "unknown"):
        return "done"  # an unknown outcome was most likely applied; the unban after it is harmless
    text = (error or "").lower()
    if any(phrase in text for phrase in _ABSENT):
        return "absent"
    if "chat owner" in text:
        return "owner"
    if any(phrase in text for phrase in _ADMIN):
        return "admin"
    if status == "blocked" or text.startswith("403") or any(phrase in text for phrase in _NO_RIGHTS):
        return "rights"
    return "other"


def unban_done(outcome: RowOutcome) -> bool:
    """Tell whether an unban left the person free to be invited again."""
    text = (outcome.error or "").lower()
    return outcome.status in ("sent", "unknown") or any(p in text for p in (*_ABSENT, *_NOTHING_TO_LIFT))


class MemberService:
    """Keeps the coordinators' group to the people who hold a role."""

    def __init__(
        self,
        core: Core,
        *,
        repo: MemberRepository,
        users: UserRepository,
        team: TeamRepository,
        alerts: AlertService,
        state: StateRepository,
        api: TelegramApi,
        admin_ids: frozenset[int],
        bot_id: int,
        remove_strangers: bool,
    ) -> None:
        self._core = core
        self._repo = repo
        self._users = users
        self._team = team
        self._alerts = alerts
        self._state = state
        self._api = api
        self._admin_ids = admin_ids
        self._bot_id = bot_id
        self._remove_strangers = remove_strangers
        # Role holders whose id this process saw stored: their updates cost no query at all.
        self._known: set[str] = set()

    # ------------------------------------------------------------------ learning ids

    async def capture(self, conn: AsyncConnection, pseudonym: str, user_id: int) -> None:
        """Store a role holder's id in the caller's transaction (someone just joined the team)."""
        sealed = self._core.cipher.encrypt_text(str(user_id), binding=telegram_id_binding(pseudonym))
        await self._repo.put(conn, pseudonym, sealed, self._day())

    async def seen(self, user_id: int, pseudonym: str) -> None:
        """A role holder wrote: store their id if it is missing (coordinators from before the bot kept
        them). One read per role holder and process; a write only when it is missing."""
        if pseudonym in self._known:
            return
        async with self._core.db.read() as conn:
            present = await self._repo.has(conn, pseudonym)
        if not present:
            async with self._core.unit_of_work() as uow:
                user = await self._users.get(uow.conn, pseudonym)
                if user is None or not user.roles:
                    return  # the role ended meanwhile: nothing was written, nothing to commit
                await self.capture(uow.conn, pseudonym, user_id)
                await uow.commit()
        self._known.add(pseudonym)

    async def capture_admins(self, admin_ids: frozenset[int]) -> int:
        """Store the ids of the admins from settings that are missing (at every start); return how many."""
        wanted = {self._core.pseudonyms.of_user(admin): admin for admin in admin_ids}
        async with self._core.db.read() as conn:
            missing = sorted(set(wanted) - await self._repo.stored(conn, sorted(wanted)))
        if missing:
            async with self._core.unit_of_work() as uow:
                for pseudonym in missing:
                    await self.capture(uow.conn, pseudonym, wanted[pseudonym])
                await uow.commit()
        self._known |= set(wanted)
        return len(missing)

    # ------------------------------------------------------------------ a role ended

    async def role_ended(self, conn: AsyncConnection, pseudonym: str) -> None:
        """Queue the person's removal from the coordinators' group, in the transaction that ended the
        role; their id is forgotten once Telegram has them out (or at once when there is no group)."""
        self._known.discard(pseudonym)
        sealed = await self._repo.get(conn, pseudonym)
        chat = await self._alerts.coordinator_chat(conn)
        if chat is None:
            if sealed is not None:
                await self._repo.delete(conn, pseudonym)
            return
        user_id = self._open(pseudonym, sealed) if sealed is not None else None
        if user_id is None:
            # They have not written to the bot since it began keeping ids: only a person can remove them.
            await self._repo.delete(conn, pseudonym)
            await self._notify(conn, "members.unknown_id", name=await self._name(conn, pseudonym))
            await self._core.audit.record(
                conn, "system", "members.remove", pseudonym, outcome="refused", detail="id unknown"
            )
            return
        # Audited when Telegram answers (follow_removals): the role's end is in the log already.
        await self._queue_removal(conn, chat, user_id, pseudonym, "revoked")

    # ------------------------------------------------------------------ someone joined

    async def arrived(self, chat_id: int, user_id: int, who: str, update_id: int) -> bool:
        """Someone joined the coordinators' group or was made an administrator in it (a chat_member
        update). A role holder's id is stored if missing; anyone else is reported to every admin, and
        removed when the settings say so. Return True when they hold no role.

        `who` is how Telegram named them; it goes into the admins' notice and nowhere else.
        """
        if user_id == self._bot_id or not await self._alerts.is_coordinator_chat(chat_id):
            return False
        pseudonym = self._core.pseudonyms.of_user(user_id)
        async with self._core.unit_of_work() as uow:
            conn = uow.conn
            if await self._alerts.coordinator_chat(conn) != chat_id:
                return False
            user = await self._users.get(conn, pseudonym)
            if user is not None and user.roles:
                if not await self._repo.has(conn, pseudonym):
                    await self.capture(conn, pseudonym, user_id)
                await uow.commit()
                return False
            # Someone whose role was taken away coming back (an old invite link) is always removed: the
            # setting is about people nobody has judged yet.
            remove = self._remove_strangers or await self._repo.lost_a_role(conn, pseudonym)
            # Keyed by the update: a retried update queues nothing twice.
            once = f"stranger:{update_id}"
            if remove:
                await self._queue_removal(
                    conn, chat_id, user_id, pseudonym, "stranger", ref=f"removal:u{update_id}"
                )
            key = "members.stranger_removed" if remove else "members.stranger_joined"
            if await self._notify(conn, key, dedupe=once, who=who) or not self._admin_ids:
                await self._core.audit.record(
                    conn, "system", "members.stranger", pseudonym, detail="removed" if remove else "reported"
                )
            uow.wake_delivery()
            await uow.commit()
        log.warning(
            "someone without a role is in the coordinators' group%s", "; removing them" if remove else ""
        )
        return True

    # ------------------------------------------------------------------ removals under way

    async def follow_removals(self) -> int:
        """Move removals on: release each unban once its ban went through; when Telegram refused the ban,
        drop the unban and tell the admins what to do. Return how many removals moved."""
        async with self._core.db.read() as conn:
            if not await self._repo.removals(conn):
                return 0
        moved = 0
        async with self._core.unit_of_work() as uow:
            conn = uow.conn
            for removal in await self._repo.removals(conn):
                moved += await self._follow(conn, removal)
            if moved:
                uow.wake_delivery()
            await uow.commit()
        return moved

    async def _follow(self, conn: AsyncConnection, removal: Removal) -> int:
        rows = await self._repo.outcomes(conn, removal.ref)
        ban, unban = rows.get(BAN_KIND), rows.get(UNBAN_KIND)
        if ban is None or unban is None:
            await self._repo.finish_removal(conn, removal.ref)  # its rows were purged or withdrawn
            return 1
        if unban.status == "held":
            if ban.status in _UNDER_WAY:
                return 0
            verdict = ban_verdict(ban.status, ban.error)
            if verdict in ("done", "absent"):
                await self._repo.release(conn, removal.ref, UNBAN_KIND, self._core.clock.now())
                if removal.reason == "revoked":
                    await self._repo.delete_if_roleless(conn, removal.pseudonym)
                detail = removal.reason if verdict == "done" else f"{removal.reason}, not in the group"
                await self._core.audit.record(
                    conn, "system", "members.removed", removal.pseudonym, detail=detail
                )
                return 1
            await self._repo.drop_held(conn, removal.ref, "the ban before it failed")
            await self._repo.finish_removal(conn, removal.ref)
            reason = self._core.texts.text(
                self._core.language, f"members.reason_{verdict}", error=ban.error or ban.status
            )
            name = await self._label(conn, removal)
            await self._notify(conn, "members.remove_failed", name=name, reason=Safe(reason))
            await self._core.audit.record(
                conn, "system", "members.removed", removal.pseudonym, outcome="refused", detail=verdict
            )
            log.warning("removing someone from the coordinators' group failed (%s): %s", verdict, ban.error)
            return 1
        if unban.status in _UNDER_WAY:
            return 0
        await self._repo.finish_removal(conn, removal.ref)
        if not unban_done(unban):
            name = await self._label(conn, removal)
            await self._notify(conn, "members.unban_failed", name=name)
            log.warning("a removed member stays banned from the coordinators' group: %s", unban.error)
        return 1

    async def _queue_removal(
        self,
        conn: AsyncConnection,
        chat_id: int,
        user_id: int,
        pseudonym: str,
        reason: str,
        ref: str | None = None,
    ) -> str:
        ref = ref or f"removal:{secrets.token_hex(8)}"
        who = {"chat_id": chat_id, "user_id": user_id}
        await self._core.outbox.enqueue(
            conn,
            [
                # revoke_messages: in a basic group, the history leaves their phone too (always so in a
                # supergroup).
                OutgoingMessage(
                    "banChatMember",
                    {**who, "revoke_messages": True},
                    kind=BAN_KIND,
                    priority=PRIORITY_NOTICE,
                    ref=ref,
                    dedupe_key=f"{ref}:ban",
                ),
                # Held until the ban went through (follow_removals): sent at once, it could overtake it.
                OutgoingMessage(
                    "unbanChatMember",
                    {**who, "only_if_banned": True},
                    kind=UNBAN_KIND,
                    priority=PRIORITY_NOTICE,
                    ref=ref,
                    held=True,
                    dedupe_key=f"{ref}:unban",
                ),
            ],
        )
        await self._repo.add_removal(conn, ref, pseudonym, reason, self._core.clock.now())
        return ref

    # ------------------------------------------------------------------ the periodic check

    async def check(self) -> MemberCheck | None:
        """Compare the coordinators' group with the role holders; tell the admins when the figure changes
        (not at every pass), and remove former role holders still in it when the bot may. None: no group,
        or Telegram did not answer (the next pass tries again)."""
        async with self._core.db.read() as conn:
            chat = await self._alerts.coordinator_chat(conn)
            if chat is None:
                return None
            stored = await self._repo.all(conn)
            busy = {removal.pseudonym for removal in await self._repo.removals(conn)}
        count = await self._ask("getChatMemberCount", {"chat_id": chat})
        me = await self._member(chat, self._bot_id)
        if not isinstance(count, int) or me is None:
            return None
        can_remove = me.get("status") == "creator" or (
            me.get("status") == "administrator" and bool(me.get("can_restrict_members"))
        )
        holders, lingering, gone = 0, [], []
        for row in stored:
            user_id = self._open(row.pseudonym, row.sealed)
            if user_id is None:
                continue
            member = await self._member(chat, user_id)
            if member is None:
                return None
            inside = _inside(member)
            if row.holds_role:
                holders += inside
            elif inside:
                lingering.append((row, user_id, str(member.get("status"))))
            else:
                gone.append(row.pseudonym)
        excess = max(0, count - 1 - holders)  # the bot itself is one of the members
        figure = json.dumps(
            {
                "excess": excess,
                "lingering": sorted(row.pseudonym[:MEMBER_REF_LENGTH] for row, _, _ in lingering),
            }
        )
        queued = 0
        async with self._core.unit_of_work() as uow:
            conn = uow.conn
            for pseudonym in gone:
                await self._repo.delete_if_roleless(conn, pseudonym)  # out of the group: nothing to keep
            previous = await self._state.get(conn, CHECK_STATE)
            if figure != previous:
                await self._state.put(conn, CHECK_STATE, figure)
                await self._tell_figure(conn, count, holders, excess, lingering, can_remove, previous)
                await self._core.audit.record(
                    conn,
                    "system",
                    "members.check",
                    detail=f"{count} members, {holders} with a role, {excess} more, {len(lingering)} former",
                )
            if can_remove:
                for row, user_id, status in lingering:
                    if status not in _ADMINISTRATORS and row.pseudonym not in busy:
                        await self._queue_removal(conn, chat, user_id, row.pseudonym, "revoked")
                        await self._core.audit.record(
                            conn, "system", "members.remove", row.pseudonym, detail="check"
                        )
                        queued += 1
            uow.wake_delivery()
            await uow.commit()
        return MemberCheck(count, holders, excess, len(lingering), queued)

    async def _tell_figure(
        self,
        conn: AsyncConnection,
        count: int,
        holders: int,
        excess: int,
        lingering: Sequence[tuple[StoredId, int, str]],
        can_remove: bool,
        previous: str | None,
    ) -> None:
        if not excess and not lingering:
            if _had_excess(previous):
                await self._notify(conn, "members.check_clear")
            return
        text = self._core.texts.text(
            self._core.language, "members.check_excess", count=count, holders=holders, excess=excess
        )
        if lingering:
            names = ", ".join([await self._name(conn, row.pseudonym) for row, _, _ in lingering])
            if not can_remove:
                hint = "members.check_cannot_remove"
            elif any(status in _ADMINISTRATORS for _, _, status in lingering):
                hint = "members.check_demote"
            else:
                hint = "members.check_removing"
            text += "\n\n" + self._core.texts.text(
                self._core.language, "members.check_lingering", names=names
            )
            text += " " + self._core.texts.text(self._core.language, hint)
        await self._notify_text(conn, text)

    # ------------------------------------------------------------------ internals

    async def _ask(self, method: str, params: dict[str, Any]) -> Any:
        """Call a reading method; None when Telegram did not answer or refused."""
        try:
            result = await self._api.call(method, params)
        except (NotSent, OutcomeUnknown) as error:
            log.warning(
                "%s did not reach Telegram (%s); the member check waits for its next pass", method, error
            )
            return None
        if not result.ok:
            if method == "getChatMember" and any(p in result.description.lower() for p in _ABSENT):
                return {"status": "left"}
            log.warning("%s refused (%s: %s)", method, result.error_code, result.description)
            return None
        return result.result

    async def _member(self, chat_id: int, user_id: int) -> dict[str, Any] | None:
        member = await self._ask("getChatMember", {"chat_id": chat_id, "user_id": user_id})
        return member if isinstance(member, dict) else None

    def _open(self, pseudonym: str, sealed: bytes) -> int | None:
        try:
            return int(self._core.cipher.decrypt_text(sealed, binding=telegram_id_binding(pseudonym)))
        except (DecryptionError, ValueError):
            log.error("a stored Telegram id does not decrypt for its row; it is ignored")
            return None

    async def _name(self, conn: AsyncConnection, pseudonym: str) -> str:
        sealed = (await self._team.names(conn, [pseudonym])).get(pseudonym)
        try:
            name = open_display_name(self._core.cipher, pseudonym, sealed)
        except DecryptionError:
            name = None
        return member_label(name, pseudonym)

    async def _label(self, conn: AsyncConnection, removal: Removal) -> str:
        if removal.reason == "stranger":
            return self._core.texts.plain(self._core.language, "members.someone")
        return await self._name(conn, removal.pseudonym)

    async def _notify(
        self, conn: AsyncConnection, key: str, dedupe: str | None = None, **params: object
    ) -> int:
        return await self._notify_text(
            conn, self._core.texts.text(self._core.language, key, **params), dedupe
        )

    async def _notify_text(self, conn: AsyncConnection, text: str, dedupe: str | None = None) -> int:
        """Queue a notice to every admin in private; return how many were new."""
        return await self._alerts.notify_admins_text(conn, text, dedupe)

    def _day(self) -> datetime:
        # When an id was stored, to the day: an exact time would date the person's first message.
        now = self._core.clock.now().astimezone(UTC)
        return now.replace(hour=0, minute=0, second=0, microsecond=0)


def _inside(member: dict[str, Any]) -> bool:
    status = member.get("status")
    if status == "restricted":
        return bool(member.get("is_member"))
    return status in IN_GROUP


def _had_excess(previous: str | None) -> bool:
    if previous is None:
        return False
    try:
        figure = json.loads(previous)
    except ValueError:
        return False
    return isinstance(figure, dict) and bool(figure.get("excess") or figure.get("lingering"))
