"""The team: invites that make coordinators, the names colleagues see, and revoking a role."""

from __future__ import annotations

import hashlib
import secrets
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from sqlalchemy.ext.asyncio import AsyncConnection

from bot.domain.errors import Refused
from bot.security import Cipher
from bot.security.bindings import team_name_binding
from bot.services.core import Core
from storage.alert_copies import AlertCopyRepository, DutyRepository
from storage.audit import AuditEntry, AuditRepository
from storage.reports import ReportRepository
from storage.team import TeamRepository
from storage.users import UserRepository

if TYPE_CHECKING:
    from bot.services.access.members import MemberService
    from bot.services.campaigns.compose import CampaignService
    from bot.services.contact import ContactService

INVITE_PREFIX = "inv_"
NAME_MAX = 32
MEMBER_REF_LENGTH = 10  # of a pseudonym: enough to tell members apart, too short to be one


class TeamError(Refused):
    """An invite, name or revocation the bot refuses; `key` names the text that explains it."""


@dataclass(frozen=True)
class NewInvite:
    """A fresh invite: the token goes into the link once and is never stored."""

    id: int
    token: str
    expires_at: datetime


# What a coordinator receives in private because of the role (cards, their edits, alerts, escalations).
COORDINATOR_KINDS = ("alert_card", "alert_edit", "alert")


@dataclass(frozen=True)
class MemberView:
    """A team member as /team shows them."""

    ref: str
    name: str | None
    roles: frozenset[str]
    since: datetime
    on_duty: bool = False


class TeamService:
    """Invites, display names, the team list and revocation; every change is audited."""

    def __init__(
        self,
        core: Core,
        *,
        repo: TeamRepository,
        users: UserRepository,
        audit_repo: AuditRepository,
        reports: ReportRepository,
        invite_ttl: timedelta,
        settings_admins: frozenset[int],
        duty: DutyRepository | None = None,
        copies: AlertCopyRepository | None = None,
        members: MemberService | None = None,
        campaigns: CampaignService,
        contact: ContactService,
    ) -> None:
        # Revoking someone withdraws their campaigns and the questions they asked.
        self.campaigns = campaigns
        self.contact = contact
        self._members = members
        self._duty = duty
        self._copies = copies
        self._core = core
        self._repo = repo
        self._users = users
        self._audit_repo = audit_repo
        self._reports = reports
        self._invite_ttl = invite_ttl
        self._settings_admins = frozenset(core.pseudonyms.of_user(i) for i in settings_admins)

    async def invite(self, user_id: int) -> NewInvite:
        """Create a single-use invite that makes its user a coordinator (admins only)."""
        token = secrets.token_urlsafe(24)
        now = self._core.clock.now()
        expires = now + self._invite_ttl
        async with self._core.gate.acting(user_id, "team.invite", roles=("admin",)) as act:
            invite_id = await self._repo.create_invite(act.conn, _hash(token), act.actor, now, expires)
            await self._core.audit.record(act.conn, act.actor, "team.invite", f"invite:{invite_id}")
        return NewInvite(invite_id, token, expires)

    async def withdraw(self, user_id: int, invite_id: int) -> bool:
        """Withdraw an unused invite (admins only); False if it was used or withdrawn already."""
        target = f"invite:{invite_id}"
        async with self._core.gate.acting(user_id, "team.withdraw", target, roles=("admin",)) as act:
            done = await self._repo.withdraw_invite(act.conn, invite_id, self._core.clock.now())
            if done:
                await self._core.audit.record(act.conn, act.actor, "team.withdraw", target)
        return done

    async def join(self, user_id: int, token: str) -> None:
        """Use an invite: grant the coordinator role once, or raise TeamError saying why not."""
        pseudonym = self._core.pseudonyms.of_user(user_id)
        now = self._core.clock.now()
        async with self._core.unit_of_work() as uow:
            conn = uow.conn
            invite = await self._repo.invite_by_hash(conn, _hash(token)) if _plausible(token) else None
            refusal = None
            if invite is None:
                refusal = "team.invite_unknown"
            elif invite.used_by is not None or invite.withdrawn_at is not None:
                refusal = "team.invite_used"
            elif invite.expires_at <= now:
                refusal = "team.invite_expired"
            else:
                user = await self._users.get(conn, pseudonym)
                if user is not None and user.roles:
                    refusal = "team.already_member"
            target = f"invite:{invite.id}" if invite is not None else None
            if refusal is not None or invite is None:
                await self._core.audit.record(
                    conn, pseudonym, "team.join", target, outcome="refused", detail=refusal
                )
            elif await self._repo.use_invite(conn, invite.id, pseudonym, now):
                await self._users.ensure_exists(conn, pseudonym, now)
                await self._users.grant(conn, pseudonym, "coordinator", now, granted_by=invite.created_by)
                await self._repo.join(conn, pseudonym, now)
                if self._members is not None:
                    # Telegram knows them by this id: whether they are in the coordinators' group, and
                    # removing them from it once the role ends, both need it.
                    await self._members.capture(conn, pseudonym, user_id)
                await self._core.audit.record(conn, pseudonym, "team.join", target, detail="coordinator")
                await self._core.audit.anchor(conn)  # a role change: every admin gets the new head
            else:
                refusal = "team.invite_used"
            await uow.commit()  # a refusal too: its audit entry stays
        if refusal is not None:
            raise TeamError(refusal)

    async def set_name(self, user_id: int, raw: str) -> str:
        """Set the name colleagues see (coordinators and admins); return it as stored."""
        name = clean_name(raw)
        async with self._core.gate.acting(user_id, "team.name") as act:
            # Names must tell people apart: "taken by Aida" has to mean one person.
            for member in await self._repo.members(act.conn):
                taken = self._open_name(member.pseudonym, member.display_name)
                if member.pseudonym != act.actor and taken is not None and _fold(taken) == _fold(name):
                    raise TeamError("team.name_taken")
            sealed = self._core.cipher.encrypt_text(name, binding=team_name_binding(act.actor))
            await self._repo.set_name(act.conn, act.actor, sealed, self._core.clock.now())
            await self._core.audit.record(act.conn, act.actor, "team.name", act.actor)
        return name

    async def members(self, user_id: int) -> list[MemberView]:
        """List everyone with a role (coordinators and admins may look)."""
        async with self._core.gate.acting(user_id, "team.list") as act:
            members = await self._repo.members(act.conn)
            on_duty = (
                {d.pseudonym for d in await self._duty.on_duty(act.conn)} if self._duty is not None else set()
            )
        return [
            MemberView(
                ref=m.pseudonym[:MEMBER_REF_LENGTH],
                name=self._open_name(m.pseudonym, m.display_name),
                roles=m.roles,
                since=m.since,
                on_duty=m.pseudonym in on_duty,
            )
            for m in members
        ]

    async def revoke(self, user_id: int, who: str) -> tuple[str | None, int]:
        """Take the coordinator role from a member named by ref or display name (admins only), and free
        the open reports they had taken.

        Return the member's name (None if they never chose one) and how many reports were freed; raise
        TeamError if `who` matches nobody, several people, or an admin (admins come from settings).
        """
        # The target is the person found, not what was typed: a typed name is not for the clear-text log.
        async with self._core.gate.acting(user_id, "team.revoke", roles=("admin",)) as act:
            members = await self._repo.members(act.conn)
            wanted = _fold(who)
            matches = [
                m
                for m in members
                if m.pseudonym[:MEMBER_REF_LENGTH] == who.strip()
                or (
                    m.display_name is not None
                    and _fold(self._open_name(m.pseudonym, m.display_name) or "") == wanted
                )
            ]
            if not matches:
                raise TeamError("team.revoke_unknown")
            if len(matches) > 1:
                raise TeamError("team.revoke_ambiguous")
            member = matches[0]
            if "admin" in member.roles:
                raise TeamError("team.revoke_admin")
            await self._users.revoke(act.conn, member.pseudonym, "coordinator")
            freed = await self._reports.unassign(act.conn, member.pseudonym, self._core.clock.now())
            # No more SOS in their private chat, and the cards they hold there are no longer kept current.
            await self.retire(act.conn, member.pseudonym)
            # What they composed, sent or approved and what is still queued of it never goes out.
            withdrawn = await self.campaigns.withdraw_author(act.conn, member.pseudonym, act.actor)
            questions = await self.contact.withdraw_questions(act.conn, member.pseudonym)
            await self._core.audit.record(
                act.conn,
                act.actor,
                "team.revoke",
                member.pseudonym,
                detail=f"freed {freed}, campaigns {withdrawn}, questions {questions}",
            )
            await self._core.audit.anchor(act.conn)  # a role change: every admin gets the new head
        return self._open_name(member.pseudonym, member.display_name), freed

    async def retire(self, conn: AsyncConnection, pseudonym: str) -> None:
        """Someone lost their role: off duty, their private card copies no longer kept current, cards,
        alerts and edits still queued for them withdrawn, and their removal from the coordinators' group
        queued (the group's alerts and evidence would reach them otherwise)."""
        if self._members is not None:
            await self._members.role_ended(conn, pseudonym)
        if self._duty is not None:
            await self._duty.stop(conn, pseudonym)
        if self._copies is not None:
            await self._copies.forget_holder(conn, pseudonym)
        if self._core.outbox is not None:
            await self._core.outbox.cancel_for(conn, pseudonym, kinds=COORDINATOR_KINDS)

    async def admin_removed(self, conn: AsyncConnection, pseudonym: str) -> None:
        """An admin left JARCHY_ADMIN_IDS (found at start, in the transaction that took the role): audit
        it, and unless they hold another role, retire them and withdraw their campaigns."""
        await self._core.audit.record(
            conn, "system", "team.admin_removed", pseudonym, detail="not in JARCHY_ADMIN_IDS"
        )
        holder = await self._users.get(conn, pseudonym)
        if holder is None or not holder.roles:
            await self.retire(conn, pseudonym)
            await self.campaigns.withdraw_author(conn, pseudonym, "system")

    async def names(self, conn: AsyncConnection, pseudonyms: Sequence[str | None]) -> dict[str, str]:
        """Return the display names of these people, for those who chose one."""
        wanted = sorted({p for p in pseudonyms if p})
        sealed = await self._repo.names(conn, wanted)
        found: dict[str, str] = {}
        for pseudonym, value in sealed.items():
            name = self._open_name(pseudonym, value)
            if name is not None:
                found[pseudonym] = name
        return found

    async def recent_audit(self, user_id: int, limit: int = 30) -> tuple[list[AuditEntry], dict[str, str]]:
        """Return the newest audit entries and their actors' display names (admins only; audited)."""
        async with self._core.gate.acting(user_id, "audit.view", roles=("admin",)) as act:
            await self._core.audit.record(act.conn, act.actor, "audit.view")
            entries = await self._audit_repo.latest(act.conn, limit)
            names = await self.names(act.conn, [e.actor for e in entries])
        return entries, names

    async def purge_invites(self) -> int:
        """Delete invites expired a day ago or more: they grant nothing, and their trail is in the audit."""
        async with self._core.unit_of_work() as uow:
            purged = await self._repo.purge_invites(uow.conn, self._core.clock.now() - timedelta(days=1))
            await uow.commit()
        return purged

    def _open_name(self, pseudonym: str, sealed: bytes | None) -> str | None:
        return open_display_name(self._core.cipher, pseudonym, sealed)


def open_display_name(cipher: Cipher, pseudonym: str, sealed: bytes | None) -> str | None:
    """Decrypt a display name stored for this person (None if they never chose one)."""
    if sealed is None:
        return None
    return cipher.decrypt_text(sealed, binding=team_name_binding(pseudonym))


def clean_name(raw: str) -> str:
    """Normalise a display name, or raise TeamError: printable, one line, 1–32 characters."""
    name = " ".join(unicodedata.normalize("NFC", raw).split())
    if not name:
        raise TeamError("team.name_usage")
    if len(name) > NAME_MAX:
        raise TeamError("team.name_too_long", limit=NAME_MAX)
    if any(unicodedata.category(ch) in ("Cc", "Cf", "Co", "Cs", "Cn") for ch in name):
        raise TeamError("team.name_invalid")
    return name


def member_label(name: str | None, pseudonym: str | None) -> str:
    """Return how to show a member: their chosen name, else a short neutral reference."""
    if name:
        return name
    return f"#{pseudonym[:4]}" if pseudonym else "—"


def _fold(text: str) -> str:
    return " ".join(unicodedata.normalize("NFC", text).split()).casefold()


def _plausible(token: str) -> bool:
    return 16 <= len(token) <= 64 and all(ch.isalnum() or ch in "-_" for ch in token)


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()
