"""Instances on one database lend each other their transient keys, so any of them can read any row.

Raw updates, drafts, staged evidence and phone clean-ups are sealed under the epoch keys of whichever
instance wrote them (bot.security.transient). With several instances, the one that handles a chat's next
update, or takes over a dead instance's claimed work, must read what another sealed. Every instance
announces its live epochs and a public key for each; every instance seals its own live keys to each live
peer's newest epoch (bot.security.peer_keys) and opens the shares addressed to it, holding what it gets in
memory only. A key its owner retires is forgotten here too, after the same grace.

A scrub on one instance ends history only for the keys that instance owns, so a requested scrub bumps a
generation the others follow with a scrub of their own within a sync interval. A peer that stops
announcing (killed) is scrubbed after: its rows move under this instance's keys while they can still be
read, and later its announcements are removed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import timedelta

from sqlalchemy.ext.asyncio import AsyncConnection

from bot.runtime.clock import Clock
from bot.security import Cipher
from bot.security.peer_keys import PeerKeys
from bot.security.transient import TransientKeys
from storage.database import Database
from storage.state import StateRepository
from storage.transient_peers import Announced, PeerKeyRepository, Share

log = logging.getLogger(__name__)

SYNC_INTERVAL_S = 1.0
# Announcements are renewed this often; a peer silent for STALE_AFTER is taken for dead.
ANNOUNCE_EVERY = timedelta(seconds=10)
STALE_AFTER = timedelta(seconds=60)
FORGET_AFTER = timedelta(minutes=10)
SCRUB_GENERATION = "transient_scrub_generation"


@dataclass
class Synced:
    """What one sync changed."""

    announced: bool = False
    given: int = 0
    dropped: int = 0
    forgotten: list[str] = field(default_factory=list)
    lent: dict[str, list[int]] = field(default_factory=dict)  # instance -> epochs held


class KeyExchange:
    """Keeps this instance's keys lent to its live peers and theirs held here."""

    def __init__(
        self,
        *,
        db: Database,
        cipher: Cipher,
        instance: str,
        clock: Clock,
        repo: PeerKeyRepository | None = None,
        state: StateRepository | None = None,
        interval_s: float = SYNC_INTERVAL_S,
    ) -> None:
        keys = cipher.transient_keys
        if keys is None:
            raise ValueError("the key exchange needs transient keys")
        self._db, self._keys, self._instance, self._clock = db, keys, instance, clock
        self._peer_keys = PeerKeys(cipher, instance)
        self._repo = repo or PeerKeyRepository()
        self._state = state or StateRepository()
        self._interval_s = interval_s
        self._follow: Callable[[], None] | None = None
        self._generation: int | None = None
        self._followed_stale: set[str] = set()
        self._wake = asyncio.Event()
        self._stopping = False

    @property
    def keys(self) -> TransientKeys:
        """The keys this exchange lends and fills."""
        return self._keys

    def on_scrub_elsewhere(self, follow: Callable[[], None]) -> None:
        """Call `follow` when another instance ran a requested scrub, or a peer died holding keys."""
        self._follow = follow

    async def run(self) -> None:
        """Sync until stopped; a failed sync is logged and tried again (peers keep the keys they hold)."""
        while not self._stopping:
            try:
                await self.sync()
            except Exception:
                log.warning("could not exchange transient keys with the other instances", exc_info=True)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._interval_s)
            self._wake.clear()

    def wake(self) -> None:
        """Sync now (a scrub changed the epochs)."""
        self._wake.set()

    def stop(self) -> None:
        """End `run` after the sync under way."""
        self._stopping = True
        self._wake.set()

    async def sync(self) -> Synced:
        """Announce, lend, take what peers lent, and follow their scrubs."""
        now = self._clock.now()
        async with self._db.read() as conn:
            announced = await self._repo.announced(conn)
            received = await self._repo.shares_for(conn, self._instance)
            given = await self._repo.given_by(conn, self._instance)
            generation = int(await self._state.get(conn, SCRUB_GENERATION) or 0)
        done = Synced()
        own = self._keys.own_keys()
        mine = [a for a in announced if a.instance == self._instance]
        done.announced = {a.epoch for a in mine} != set(own) or any(
            now - a.seen_at >= ANNOUNCE_EVERY for a in mine
        )
        peers = _by_instance(a for a in announced if a.instance != self._instance)
        live = {i: rows for i, rows in peers.items() if now - max(a.seen_at for a in rows) < STALE_AFTER}
        forget = [i for i, rows in peers.items() if now - max(a.seen_at for a in rows) >= FORGET_AFTER]
        gifts = self._gifts(live, given, own)
        lent, drop = self._open(received, peers)
        if done.announced or gifts or drop or forget:
            async with self._db.write() as conn:
                if done.announced:
                    await self._announce(conn)
                await self._repo.give(conn, gifts)
                await self._repo.drop_shares(conn, drop)
                for instance in forget:
                    await self._repo.forget(conn, instance)
        done.given, done.dropped, done.forgotten = len(gifts), len(drop), forget
        for instance in set(lent) | set(self._keys.peer_keys()):
            self._keys.set_peer_keys(instance, {} if instance in forget else lent.get(instance, {}))
        done.lent = {i: sorted(keys) for i, keys in self._keys.peer_keys().items()}
        self._follow_scrubs(generation, peers, live)
        return done

    async def epoch_floor(self, conn: AsyncConnection) -> int:
        """The lowest number a new epoch may take: above every epoch any instance announced.

        Read inside the scrub's write transaction, which PostgreSQL serialises across instances.
        """
        return await self._repo.highest_epoch(conn) + 1

    async def after_new_epoch(self, conn: AsyncConnection, *, requested: bool) -> None:
        """Inside the scrub's write transaction: announce the new epoch, lend its key to the live peers at
        once (they read the rewritten rows within a sync), and tell them to follow a requested scrub."""
        await self._announce(conn)
        now = self._clock.now()
        peers = _by_instance(a for a in await self._repo.announced(conn) if a.instance != self._instance)
        live = {i: rows for i, rows in peers.items() if now - max(a.seen_at for a in rows) < STALE_AFTER}
        given = await self._repo.given_by(conn, self._instance)
        await self._repo.give(conn, self._gifts(live, given, self._keys.own_keys()))
        if requested:
            generation = int(await self._state.get(conn, SCRUB_GENERATION) or 0) + 1
            await self._state.put(conn, SCRUB_GENERATION, str(generation))
            self._generation = generation  # this instance's own scrub is not one to follow

    async def _announce(self, conn: AsyncConnection) -> None:
        own = self._keys.own_keys()
        sealed = {epoch: self._peer_keys.announce(epoch, key) for epoch, key in own.items()}
        await self._repo.announce(conn, self._instance, sealed, self._clock.now())

    def _gifts(
        self, live: dict[str, list[Announced]], given: set[tuple[str, int, int]], own: dict[int, bytes]
    ) -> list[Share]:
        gifts: list[Share] = []
        for instance, rows in live.items():
            newest = max(rows, key=lambda a: a.epoch)
            public = self._peer_keys.public_key(instance, newest.epoch, newest.public_key)
            if public is None:
                # Not sealed under our data key: a forgery, or a peer mid-rotation. Lend it nothing.
                log.warning(
                    "instance %s announced a key that does not authenticate; lending it nothing", instance
                )
                continue
            for epoch, key in own.items():
                if (instance, newest.epoch, epoch) in given:
                    continue
                sealed = self._peer_keys.share(
                    epoch, key, holder=instance, holder_epoch=newest.epoch, public=public
                )
                gifts.append(Share(instance, newest.epoch, self._instance, epoch, sealed))
        return gifts

    def _open(
        self, received: list[Share], peers: dict[str, list[Announced]]
    ) -> tuple[dict[str, dict[int, bytes]], list[Share]]:
        lent: dict[str, dict[int, bytes]] = {}
        drop: list[Share] = []
        own = self._keys.own_keys()
        for share in received:
            still = any(a.epoch == share.epoch for a in peers.get(share.owner, []))
            holder_key = own.get(share.holder_epoch)
            if not still or holder_key is None:
                drop.append(share)  # a key its owner retired, or addressed to an epoch of ours that is gone
                continue
            key = self._peer_keys.open(
                share.sealed,
                owner=share.owner,
                epoch=share.epoch,
                holder_epoch=share.holder_epoch,
                holder_key=holder_key,
            )
            if key is None:
                log.warning("a transient key share from %s does not open; asking for it again", share.owner)
                drop.append(share)
                continue
            lent.setdefault(share.owner, {})[share.epoch] = key
        return lent, drop

    def _follow_scrubs(
        self, generation: int, peers: dict[str, list[Announced]], live: dict[str, list[Announced]]
    ) -> None:
        follow = False
        if self._generation is None:
            self._generation = generation  # scrubs before this start are not ours to follow
        elif generation > self._generation:
            self._generation, follow = generation, True
        held = self._keys.peer_keys()
        for instance in peers:
            if instance in live:
                self._followed_stale.discard(instance)
            elif instance in held and instance not in self._followed_stale:
                # A dead peer's rows are readable only while its lent keys are held: move them under ours.
                self._followed_stale.add(instance)
                follow = True
        if follow and self._follow is not None:
            self._follow()


def _by_instance(rows: Iterable[Announced]) -> dict[str, list[Announced]]:
    found: dict[str, list[Announced]] = {}
    for row in rows:
        found.setdefault(row.instance, []).append(row)
    return found
