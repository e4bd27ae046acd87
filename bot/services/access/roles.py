"""Role checks, made in the database at the moment of use: nothing cached."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncConnection

from bot.domain import errors
from bot.domain.errors import Refused
from bot.runtime.audit import AuditLog
from bot.runtime.clock import Clock
from bot.runtime.outbox import Outbox
from bot.runtime.unit_of_work import UnitOfWork
from bot.runtime.update_run import AlreadyActed, current_run
from bot.security import Pseudonymizer
from storage.acted import ActedRepository
from storage.database import Database
from storage.reports import ReportNotFound
from storage.users import UserRepository

COORDINATING = ("admin", "coordinator")
# The actor of a refusal audited without naming the person.
UNNAMED = "someone"


class NotAllowed(errors.NotAllowed):
    """The person lacks the role the action needs."""

    def __init__(self, pseudonym: str, roles: Sequence[str] = COORDINATING) -> None:
        self.roles = tuple(roles)
        super().__init__("coord.admin_only" if self.admins_only else "coord.refused")
        self.pseudonym = pseudonym

    @property
    def admins_only(self) -> bool:
        """Tell whether only admins may take the action."""
        return "coordinator" not in self.roles


@dataclass(frozen=True)
class Acting:
    """An allowed action in progress: its unit of work (and that work's connection) and the actor."""

    conn: AsyncConnection
    actor: str
    uow: UnitOfWork


class Gate:
    """Opens a unit of work for an action only after the database says the person may take it.

    The one place a role is checked: `acting` for an action, `require` for a check made before Telegram
    is asked anything. A refusal rolls back whatever the action began, then is written to the audit log
    on its own. Inside
    an update, each action also records that update in its own transaction: a retried update finds its
    earlier actions there and raises AlreadyActed instead of adding a second note, view or campaign.
    """

    def __init__(
        self,
        db: Database,
        users: UserRepository,
        pseudonyms: Pseudonymizer,
        audit: AuditLog,
        clock: Clock,
        outbox: Outbox,
        acted: ActedRepository | None = None,
    ) -> None:
        self._db = db
        self._outbox = outbox
        self._users = users
        self._pseudonyms = pseudonyms
        self._audit = audit
        self._clock = clock
        self._acted = acted or ActedRepository()

    @asynccontextmanager
    async def acting(
        self,
        user_id: int,
        action: str,
        target: str | None = None,
        roles: Sequence[str] = COORDINATING,
        *,
        once: bool = True,
    ) -> AsyncIterator[Acting]:
        """Yield the transaction if the person holds one of `roles` now; else audit and raise NotAllowed.

        `once=False` for a plain read that writes and audits nothing (a list's page): it is not recorded,
        so running the update again shows it again, and a later step of the same update that fails is
        still retried."""
        pseudonym = self._pseudonyms.of_user(user_id)
        run = current_run() if once else None
        if run is not None:
            run.actions += 1
            seq = run.actions
        try:
            # Built here rather than by core.unit_of_work(): the gate is one of the Core's parts, made
            # before it (the same three collaborators, so the same unit of work).
            async with UnitOfWork(self._db, self._outbox, self._audit) as uow:
                conn = uow.conn
                await self._require_role(conn, pseudonym, roles)
                if run is not None and not await self._acted.claim(
                    conn, run.update_id, seq, action, self._clock.now()
                ):
                    raise AlreadyActed(action)
                yield Acting(conn, pseudonym, uow)
                await uow.commit()
            if run is not None:
                run.committed = True
        except errors.NotAllowed:
            await self._refused(pseudonym, action, target, "role")
            raise
        except ReportNotFound:
            # Its audited name predates the error tree; the log keeps one name for one refusal.
            await self._refused(pseudonym, action, target, "report.not_found")
            raise
        except Refused as refusal:
            await self._refused(pseudonym, action, target, refusal.key)
            raise

    async def require(
        self, user_id: int, action: str, target: str | None = None, roles: Sequence[str] = COORDINATING
    ) -> str:
        """Return the person's pseudonym if they hold one of `roles` now; else audit and raise NotAllowed.

        For a check before the bot asks Telegram anything on the person's behalf (whether it can reach a
        chat would tell a stranger whether it is there); the action itself still goes through `acting`,
        which checks again in its own transaction."""
        pseudonym = self._pseudonyms.of_user(user_id)
        try:
            async with self._db.read() as conn:
                return await self._require_role(conn, pseudonym, roles)
        except NotAllowed:
            await self._refused(pseudonym, action, target, "role")
            raise

    async def _require_role(self, conn: AsyncConnection, pseudonym: str, roles: Sequence[str]) -> str:
        user = await self._users.get(conn, pseudonym)
        if user is None or not user.roles.intersection(roles):
            raise NotAllowed(pseudonym, roles)
        return pseudonym

    async def refuse(
        self,
        user_id: int,
        action: str,
        target: str | None = None,
        detail: str | None = None,
        *,
        name_actor: bool = True,
    ) -> None:
        """Audit an attempt refused before it reached the database (a coordinator command in a wrong chat).

        `name_actor=False` for what followers and subscribers do (a stale attendance button): the audit log
        outlives /forget, so it must not keep tying them to a case."""
        actor = self._pseudonyms.of_user(user_id) if name_actor else UNNAMED
        await self._refused(actor, action, target, detail)

    async def _refused(self, actor: str, action: str, target: str | None, detail: str | None) -> None:
        await self._audit.refused(actor, action, target, detail=detail)
        run = current_run()
        if run is not None:
            # The refusal is in the log: a reply timing out after it must not run the update (and audit
            # the refusal) again.
            run.committed = True

    async def holds(self, user_id: int, roles: Sequence[str] = COORDINATING) -> bool:
        """Tell whether the person holds a role now (to shape menus; never to allow an action)."""
        async with self._db.read() as conn:
            user = await self._users.get(conn, self._pseudonyms.of_user(user_id))
        return user is not None and bool(user.roles.intersection(roles))
