"""Ending history: short-lived rows move to a fresh epoch key, the old key is overwritten, the WAL cut.

After an anonymous report, the old versions of its draft and of the updates that built it survive in the
WAL and in free blocks of the disk. A scrub makes them unreadable even to someone who later holds the data
key: every live transient row is rewritten under a new epoch key and the previous key's slot is
overwritten (bot.security.transient), then the WAL is checkpointed and truncated (SQLite) or the transient
tables are vacuumed (PostgreSQL: old versions stay in dead tuples until VACUUM, and their bytes in the pages
and in pg_wal until overwritten; only the retired key makes them unreadable there).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from typing import Protocol

from sqlalchemy.ext.asyncio import AsyncConnection

from bot.security import Cipher, DecryptionError
from bot.security.bindings import draft_binding, payload_binding, staged_binding, update_binding
from bot.security.owner_tags import OwnerTags
from bot.security.transient import NoFreeSlot
from storage.database import Database
from storage.drafts import owner_binding
from storage.evidence import staged_owner_binding
from storage.sealed_rows import Rewrite, SealedRow, SealedRowRepository

log = logging.getLogger(__name__)

# Gathers the anonymous reports of a burst into one scrub, and comes after their conversations' deletions
# (due 3 s after Submit: bot.services.reports.intake.CONVERSATION_CLEANUP_DELAY) have gone: a deletion sent
# before the scrub has no payload left to re-seal, so the retired epoch takes every copy of it (which names
# the reporter's chat) along; one still pending is re-sealed under the epoch that stays.
SCRUB_DELAY_S = 4.0


@dataclass(frozen=True)
class Scrubbed:
    """What one scrub did."""

    rewritten: int
    retired: tuple[int, ...]
    unreadable: int
    checkpointed: bool


class EpochPeers(Protocol):
    """The other instances on the database (bot.runtime.key_exchange.KeyExchange), seen from a scrub."""

    async def epoch_floor(self, conn: AsyncConnection) -> int:
        """The lowest number the new epoch may take."""
        ...

    async def after_new_epoch(self, conn: AsyncConnection, *, requested: bool) -> None:
        """Announce and lend the new epoch, in the scrub's transaction."""
        ...

    def wake(self) -> None:
        """Sync soon: the old epochs were retired."""
        ...


class HistoryScrubber:
    """Rewrites transient rows under a new epoch, retires the old epochs and truncates the WAL."""

    def __init__(
        self,
        db: Database,
        cipher: Cipher,
        repo: SealedRowRepository | None = None,
        delay_s: float = SCRUB_DELAY_S,
        peers: EpochPeers | None = None,
    ) -> None:
        self._db = db
        self._peers = peers
        self._requested = False  # whether the pending scrub was asked for here (the others follow it)
        self._cipher = cipher
        self._repo = repo or SealedRowRepository()
        self._delay_s = delay_s
        self._pending: asyncio.Task[None] | None = None
        self._owners = OwnerTags(cipher)

    def request(self) -> None:
        """Scrub soon (once for a burst of requests); the other instances follow."""
        self._requested = True
        self._schedule()

    def follow(self) -> None:
        """Scrub soon because another instance did (or died): retire this instance's own old keys."""
        self._schedule()

    def _schedule(self) -> None:
        if self._pending is None or self._pending.done():
            self._pending = asyncio.create_task(self._later(), name="history-scrub")

    async def close(self) -> None:
        """Run a pending scrub now (a stop must not leave the last anonymous report's history behind)."""
        pending, self._pending = self._pending, None
        if pending is not None and not pending.done():
            pending.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pending
            await self.scrub_quietly()

    async def scrub_quietly(self, *, requested: bool = False) -> Scrubbed | None:
        """Scrub, logging instead of raising (the next scrub catches up); `requested` as for `scrub`, also
        when a pending request is taken up."""
        requested, self._requested = requested or self._requested, False
        try:
            return await self.scrub(requested=requested)
        except Exception:
            log.exception("could not scrub transient history; trying again later")
            return None

    async def scrub(self, *, requested: bool = True) -> Scrubbed:
        """Move every transient row to a new epoch, retire the others, checkpoint the WAL.

        `requested`: other instances follow with scrubs of their own (their keys sealed the rows they wrote).
        """
        keys = self._cipher.transient_keys
        if keys is None:
            checkpointed = await self._db.checkpoint()
            await self._vacuum()
            return Scrubbed(0, (), 0, checkpointed)
        rewritten: list[Rewrite] = []
        unreadable = 0
        # Under the write lock: every transient encryption happens inside a write transaction, so no row
        # can be sealed under the old epoch after this one has rewritten them all. A plain write: the scrub
        # only reseals rows, with nothing to queue, audit or run after the commit.
        async with self._db.write() as conn:
            floor = await self._peers.epoch_floor(conn) if self._peers is not None else 0
            with contextlib.suppress(NoFreeSlot):
                # A crash between writing a key and retiring the old ones can leave every slot full; then
                # this scrub moves rows to the newest key it has and frees the rest.
                await asyncio.to_thread(keys.begin_epoch, floor)
            current = keys.current
            for row in await self._repo.all(conn):
                if _current(row, current):
                    continue
                try:
                    rewritten.append(self._rewrite(row))
                except DecryptionError:
                    unreadable += 1  # already unreadable: leave it for its owner's error handling
            await self._repo.rewrite(conn, rewritten)
            if self._peers is not None:
                await self._peers.after_new_epoch(conn, requested=requested)
        retired = await asyncio.to_thread(keys.retire_all_but, current)
        if self._peers is not None:
            self._peers.wake()
        checkpointed = await self._db.checkpoint()
        await self._vacuum()
        return Scrubbed(len(rewritten), tuple(retired), unreadable, checkpointed)

    async def _vacuum(self) -> None:
        # After the retirement, which is what makes old versions unreadable: a VACUUM that cannot run now
        # (a lock, a restart) only leaves dead tuples for autovacuum, so it is logged, not raised.
        try:
            await self._db.vacuum(self._repo.tables)
        except Exception:
            log.warning("could not vacuum the transient tables; autovacuum will", exc_info=True)

    def _rewrite(self, row: SealedRow) -> Rewrite:
        if row.table not in _TAGGED:
            binding = _binding(row, "")
            plain = self._cipher.decrypt(row.payload, binding=binding)
            return Rewrite(row, self._cipher.encrypt(plain, binding=binding, transient=True))
        # A tagged row: find its owner, re-tag it under the current epoch, reseal owner and payload.
        old_tag = str(row.key[0] if row.table == "drafts" else row.key[1])
        owner = self._owners.open(row.owner_seal, old_tag, binding=_owner_binding(row, old_tag))
        plain = self._cipher.decrypt(row.payload, binding=_binding(row, owner))
        tag = self._owners.current(owner)
        return Rewrite(
            row,
            self._cipher.encrypt(plain, binding=_binding(row, owner), transient=True),
            tag=tag,
            owner_seal=self._owners.seal(owner, binding=_owner_binding(row, tag)),
        )

    async def _later(self) -> None:
        await asyncio.sleep(self._delay_s)
        await self.scrub_quietly()


_TAGGED = ("drafts", "evidence_staged")


def _current(row: SealedRow, epoch: int) -> bool:
    if Cipher.epoch_of(row.payload) != epoch:
        return False
    if row.table not in _TAGGED:
        return True
    # The tag follows the epoch of the sealed owner beside it; a row without one predates tags.
    return row.owner_seal is not None and Cipher.epoch_of(row.owner_seal) == epoch


def _owner_binding(row: SealedRow, tag: str) -> str:
    return owner_binding(tag, str(row.key[1])) if row.table == "drafts" else staged_owner_binding(tag)


def _binding(row: SealedRow, owner: str) -> str:
    if row.table == "inbox":
        return update_binding(int(row.key[0]))
    if row.table == "drafts":
        return draft_binding(owner, str(row.key[1]), str(row.key[2]))
    if row.table == "evidence_staged":
        return staged_binding(owner)
    return payload_binding(str(row.key[1]))
