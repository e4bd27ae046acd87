"""Invites that make coordinators, and the names the team knows each other by."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from storage.dialect import insert_or, new_id
from storage.schema import invites, team, user_roles


@dataclass(frozen=True)
class Invite:
    """One invite; the token itself is never stored, only its hash."""

    id: int
    created_by: str
    created_at: datetime
    expires_at: datetime
    used_by: str | None
    used_at: datetime | None
    withdrawn_at: datetime | None


@dataclass(frozen=True)
class Member:
    """A person holding a role, with their encrypted display name if they chose one."""

    pseudonym: str
    roles: frozenset[str]
    display_name: bytes | None
    since: datetime


class TeamRepository:
    """SQL for invites and team profiles."""

    async def create_invite(
        self, conn: AsyncConnection, token_hash: str, created_by: str, now: datetime, expires_at: datetime
    ) -> int:
        """Store a new invite; return its id."""
        result = await conn.execute(
            invites.insert().values(
                token_hash=token_hash, created_by=created_by, created_at=now, expires_at=expires_at
            )
        )
        return new_id(result)

    async def invite_by_hash(self, conn: AsyncConnection, token_hash: str) -> Invite | None:
        """Return the invite with this token hash, or None."""
        row = (await conn.execute(select(invites).where(invites.c.token_hash == token_hash))).first()
        if row is None:
            return None
        return Invite(
            row.id, row.created_by, row.created_at, row.expires_at, row.used_by, row.used_at, row.withdrawn_at
        )

    async def use_invite(self, conn: AsyncConnection, invite_id: int, used_by: str, now: datetime) -> bool:
        """Mark an invite used, once; False if it was used or withdrawn meanwhile."""
        result = await conn.execute(
            update(invites)
            .where(invites.c.id == invite_id, invites.c.used_by.is_(None), invites.c.withdrawn_at.is_(None))
            .values(used_by=used_by, used_at=now)
        )
        return bool(result.rowcount)

    async def withdraw_invite(self, conn: AsyncConnection, invite_id: int, now: datetime) -> bool:
        """Withdraw an unused invite; False if it was already used or withdrawn."""
        result = await conn.execute(
            update(invites)
            .where(invites.c.id == invite_id, invites.c.used_by.is_(None), invites.c.withdrawn_at.is_(None))
            .values(withdrawn_at=now)
        )
        return bool(result.rowcount)

    async def purge_invites(self, conn: AsyncConnection, before: datetime) -> int:
        """Delete invites that expired before a time (used or not): they grant nothing any more."""
        return (await conn.execute(delete(invites).where(invites.c.expires_at < before))).rowcount or 0

    async def join(self, conn: AsyncConnection, pseudonym: str, now: datetime) -> None:
        """Create the person's team profile if missing (keeps a name chosen earlier)."""
        stmt = insert_or(conn, team).values(pseudonym=pseudonym, joined_at=now).on_conflict_do_nothing()
        await conn.execute(stmt)

    async def set_name(self, conn: AsyncConnection, pseudonym: str, name: bytes, now: datetime) -> None:
        """Store a member's chosen display name (encrypted by the caller)."""
        stmt = insert_or(conn, team).values(pseudonym=pseudonym, display_name=name, joined_at=now)
        await conn.execute(
            stmt.on_conflict_do_update(index_elements=[team.c.pseudonym], set_={"display_name": name})
        )

    async def names(self, conn: AsyncConnection, pseudonyms: list[str]) -> dict[str, bytes]:
        """Return the encrypted display names of these people (those who chose one)."""
        if not pseudonyms:
            return {}
        rows = await conn.execute(
            select(team.c.pseudonym, team.c.display_name).where(
                team.c.pseudonym.in_(pseudonyms), team.c.display_name.is_not(None)
            )
        )
        return {r.pseudonym: r.display_name for r in rows}

    async def members(self, conn: AsyncConnection) -> list[Member]:
        """Return everyone holding a role, oldest grant first."""
        rows = await conn.execute(
            select(user_roles.c.pseudonym, user_roles.c.role, user_roles.c.granted_at, team.c.display_name)
            .outerjoin(team, team.c.pseudonym == user_roles.c.pseudonym)
            .order_by(user_roles.c.granted_at, user_roles.c.pseudonym)
        )
        found: dict[str, Member] = {}
        for row in rows:
            known = found.get(row.pseudonym)
            if known is None:
                found[row.pseudonym] = Member(
                    row.pseudonym, frozenset({row.role}), row.display_name, row.granted_at
                )
            else:
                found[row.pseudonym] = Member(
                    known.pseudonym, known.roles | {row.role}, known.display_name, known.since
                )
        return list(found.values())
