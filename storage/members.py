"""The coordinators' group: role holders' sealed Telegram ids, and removals from the group under way."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from storage.dialect import insert_or
from storage.schema import audit_log, coordinator_ids, member_removals, outbox, user_roles


@dataclass(frozen=True)
class StoredId:
    """One person's sealed Telegram id, and whether they hold a role now."""

    pseudonym: str
    sealed: bytes
    holds_role: bool


@dataclass(frozen=True)
class Removal:
    """A removal from the coordinators' group under way."""

    ref: str
    pseudonym: str
    reason: str  # "revoked" (a role ended) or "stranger" (joined without one)
    created_at: datetime


@dataclass(frozen=True)
class RowOutcome:
    """Where one of a removal's outbox rows stands."""

    kind: str
    status: str
    error: str | None


class MemberRepository:
    """SQL for the sealed ids and the removals; a removal's two outbox rows are read and moved by `ref`."""

    async def lost_a_role(self, conn: AsyncConnection, pseudonym: str) -> bool:
        """Tell whether the person's role was ever taken away (revoked, or dropped from the settings)."""
        found = await conn.execute(
            select(audit_log.c.id)
            .where(
                audit_log.c.action.in_(("team.revoke", "team.admin_removed")),
                audit_log.c.target == pseudonym,
                audit_log.c.outcome == "ok",
            )
            .limit(1)
        )
        return found.first() is not None

    async def has(self, conn: AsyncConnection, pseudonym: str) -> bool:
        """Tell whether a person's id is stored."""
        found = await conn.execute(
            select(coordinator_ids.c.pseudonym).where(coordinator_ids.c.pseudonym == pseudonym)
        )
        return found.first() is not None

    async def stored(self, conn: AsyncConnection, pseudonyms: Sequence[str]) -> set[str]:
        """Return which of these people have their id stored."""
        if not pseudonyms:
            return set()
        rows = await conn.execute(
            select(coordinator_ids.c.pseudonym).where(coordinator_ids.c.pseudonym.in_(list(pseudonyms)))
        )
        return set(rows.scalars())

    async def put(self, conn: AsyncConnection, pseudonym: str, sealed: bytes, day: datetime) -> None:
        """Store (or replace) a person's sealed id; their users row must exist."""
        stmt = insert_or(conn, coordinator_ids).values(
            pseudonym=pseudonym, telegram_id=sealed, captured_at=day
        )
        await conn.execute(
            stmt.on_conflict_do_update(
                index_elements=[coordinator_ids.c.pseudonym], set_={"telegram_id": sealed, "captured_at": day}
            )
        )

    async def get(self, conn: AsyncConnection, pseudonym: str) -> bytes | None:
        """Return a person's sealed id, or None."""
        return (
            await conn.execute(
                select(coordinator_ids.c.telegram_id).where(coordinator_ids.c.pseudonym == pseudonym)
            )
        ).scalar()

    async def all(self, conn: AsyncConnection) -> list[StoredId]:
        """Return every stored id, with whether its person holds a role now."""
        holding = select(user_roles.c.pseudonym).where(user_roles.c.pseudonym == coordinator_ids.c.pseudonym)
        rows = await conn.execute(
            select(coordinator_ids.c.pseudonym, coordinator_ids.c.telegram_id, holding.exists()).order_by(
                coordinator_ids.c.pseudonym
            )
        )
        return [StoredId(r[0], r[1], bool(r[2])) for r in rows]

    async def delete(self, conn: AsyncConnection, pseudonym: str) -> bool:
        """Forget a person's id; False if none was stored."""
        result = await conn.execute(delete(coordinator_ids).where(coordinator_ids.c.pseudonym == pseudonym))
        return bool(result.rowcount)

    async def delete_if_roleless(self, conn: AsyncConnection, pseudonym: str) -> bool:
        """Forget a person's id unless they hold a role again (re-invited meanwhile)."""
        holding = select(user_roles.c.pseudonym).where(user_roles.c.pseudonym == pseudonym).exists()
        result = await conn.execute(
            delete(coordinator_ids).where(coordinator_ids.c.pseudonym == pseudonym, ~holding)
        )
        return bool(result.rowcount)

    # ------------------------------------------------------------------ removals

    async def add_removal(
        self, conn: AsyncConnection, ref: str, pseudonym: str, reason: str, now: datetime
    ) -> bool:
        """Record a removal just queued; False if it was recorded already (a retried update)."""
        stmt = insert_or(conn, member_removals).values(
            ref=ref, pseudonym=pseudonym, reason=reason, created_at=now
        )
        result = await conn.execute(stmt.on_conflict_do_nothing())
        return bool(result.rowcount)

    async def removals(self, conn: AsyncConnection) -> list[Removal]:
        """Return the removals under way, oldest first."""
        rows = await conn.execute(select(member_removals).order_by(member_removals.c.created_at))
        return [Removal(r.ref, r.pseudonym, r.reason, r.created_at) for r in rows]

    async def finish_removal(self, conn: AsyncConnection, ref: str) -> None:
        """Forget a removal whose rows reached their end."""
        await conn.execute(delete(member_removals).where(member_removals.c.ref == ref))

    # The outbox rows of a removal: read and moved here, by the ref only this module gives out.

    async def outcomes(self, conn: AsyncConnection, ref: str) -> dict[str, RowOutcome]:
        """Return the state of a removal's outbox rows, by kind."""
        rows = await conn.execute(
            select(outbox.c.kind, outbox.c.status, outbox.c.last_error).where(outbox.c.ref == ref)
        )
        return {r.kind: RowOutcome(r.kind, r.status, r.last_error) for r in rows}

    async def release(self, conn: AsyncConnection, ref: str, kind: str, now: datetime) -> int:
        """Make a removal's held row of `kind` due now (the step before it is done)."""
        result = await conn.execute(
            update(outbox)
            .where(outbox.c.ref == ref, outbox.c.kind == kind, outbox.c.status == "held")
            .values(status="pending", due_at=now)
        )
        return result.rowcount or 0

    async def drop_held(self, conn: AsyncConnection, ref: str, reason: str) -> int:
        """Cancel a removal's held rows (the step before them failed); their payloads go with them."""
        result = await conn.execute(
            update(outbox)
            .where(outbox.c.ref == ref, outbox.c.status == "held")
            .values(status="cancelled", payload=None, last_error=reason)
        )
        return result.rowcount or 0
