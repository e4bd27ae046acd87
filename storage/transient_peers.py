"""SQL for the transient keys instances lend each other (bot.runtime.key_exchange)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import and_, delete, func, or_, select, tuple_
from sqlalchemy.ext.asyncio import AsyncConnection

from storage.dialect import insert_or
from storage.schema import transient_peers, transient_shares


@dataclass(frozen=True)
class Announced:
    """One instance's live epoch, as it announced it."""

    instance: str
    epoch: int
    public_key: bytes  # sealed under the data key
    seen_at: datetime


@dataclass(frozen=True)
class Share:
    """One instance's epoch key sealed to another's epoch."""

    holder: str
    holder_epoch: int
    owner: str
    epoch: int
    sealed: bytes


class PeerKeyRepository:
    """Announcements and shares."""

    async def announced(self, conn: AsyncConnection) -> list[Announced]:
        """Every instance's announced epochs."""
        rows = await conn.execute(select(transient_peers))
        return [Announced(r.instance, r.epoch, r.public_key, r.seen_at) for r in rows]

    async def highest_epoch(self, conn: AsyncConnection) -> int:
        """The highest epoch any instance announced (0 if none)."""
        return int((await conn.execute(select(func.max(transient_peers.c.epoch)))).scalar() or 0)

    async def announce(
        self, conn: AsyncConnection, instance: str, epochs: dict[int, bytes], at: datetime
    ) -> None:
        """Make `epochs` (epoch -> sealed public key) exactly what `instance` announces, seen at `at`.

        What it no longer announces goes, with every share of those epochs, given or received: a share
        addressed to a retired epoch can no longer be opened, and one of a retired key must not be used.
        """
        gone = transient_peers.c.instance == instance
        if epochs:
            gone = and_(gone, transient_peers.c.epoch.not_in(list(epochs)))
        retired = [
            int(e) for e in (await conn.execute(select(transient_peers.c.epoch).where(gone))).scalars()
        ]
        if retired:
            await conn.execute(delete(transient_peers).where(gone))
            await conn.execute(
                delete(transient_shares).where(
                    or_(
                        and_(transient_shares.c.owner == instance, transient_shares.c.epoch.in_(retired)),
                        and_(
                            transient_shares.c.holder == instance,
                            transient_shares.c.holder_epoch.in_(retired),
                        ),
                    )
                )
            )
        for epoch, public_key in epochs.items():
            stmt = insert_or(conn, transient_peers).values(
                instance=instance, epoch=epoch, public_key=public_key, seen_at=at
            )
            await conn.execute(
                stmt.on_conflict_do_update(
                    # The public key too: after a key rotation the old announcement no longer authenticates.
                    index_elements=[transient_peers.c.instance, transient_peers.c.epoch],
                    set_={"seen_at": at, "public_key": public_key},
                )
            )

    async def forget(self, conn: AsyncConnection, instance: str) -> None:
        """Remove an instance that stopped long ago: its announcements and the shares addressed to it."""
        await conn.execute(delete(transient_peers).where(transient_peers.c.instance == instance))
        await conn.execute(delete(transient_shares).where(transient_shares.c.holder == instance))

    async def shares_for(self, conn: AsyncConnection, holder: str) -> list[Share]:
        """Every share addressed to `holder`."""
        rows = await conn.execute(select(transient_shares).where(transient_shares.c.holder == holder))
        return [Share(r.holder, r.holder_epoch, r.owner, r.epoch, r.sealed) for r in rows]

    async def given_by(self, conn: AsyncConnection, owner: str) -> set[tuple[str, int, int]]:
        """(holder, holder epoch, epoch) of every share `owner` gave."""
        rows = await conn.execute(
            select(
                transient_shares.c.holder, transient_shares.c.holder_epoch, transient_shares.c.epoch
            ).where(transient_shares.c.owner == owner)
        )
        return {(r.holder, int(r.holder_epoch), int(r.epoch)) for r in rows}

    async def give(self, conn: AsyncConnection, shares: Iterable[Share]) -> None:
        """Store shares (one already there is left as it is)."""
        for share in shares:
            stmt = insert_or(conn, transient_shares).values(
                holder=share.holder,
                holder_epoch=share.holder_epoch,
                owner=share.owner,
                epoch=share.epoch,
                sealed=share.sealed,
            )
            await conn.execute(stmt.on_conflict_do_nothing())

    async def drop_shares(self, conn: AsyncConnection, shares: Iterable[Share]) -> None:
        """Delete shares that could not be opened, so their owner seals them again."""
        keys = [(s.holder, s.holder_epoch, s.owner, s.epoch) for s in shares]
        if keys:
            columns = tuple_(
                transient_shares.c.holder,
                transient_shares.c.holder_epoch,
                transient_shares.c.owner,
                transient_shares.c.epoch,
            )
            await conn.execute(delete(transient_shares).where(columns.in_(keys)))
