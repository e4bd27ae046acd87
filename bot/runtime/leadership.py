"""Hold a named lease (storage.leases) so that one instance at a time does a duty: polling, sending.

The holder renews the lease every `renew_s`; an instance that stops renewing (kill -9, a lost database)
loses it once `lease_s` has passed, and a standby takes it over at its next try. The holder counts itself
leader only until shortly before its lease could have expired (measured on its own monotonic clock from the
moment it asked), so an old leader has stepped back before anyone else can have taken over.

On SQLite there is one instance by construction (one writer, one data directory), so a Leadership built
with `always=True` is the leader from the start and never touches the table.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import timedelta

from bot.runtime.clock import Clock
from storage.database import Database
from storage.leases import LeaseRepository

log = logging.getLogger(__name__)

LEASE_S = 15.0
RENEW_S = 5.0
# The sender's lease is shorter: while nobody holds it nothing is sent, and a broadcast at the cap loses a
# lease's worth of sends to a kill -9 (measured with 15 s: 13.7 s without a send). Renewing every 2 s is
# still one small write per 2 s.
SENDER_LEASE_S = 6.0
SENDER_RENEW_S = 2.0
# Counted off our own validity: a leader stops this much before its lease can expire in the database, so
# a clock difference between hosts smaller than this never lets two leaders overlap.
SKEW_MARGIN_S = 2.0


class Leadership:
    """One named lease, held while this instance is up; `is_leader` and events tell the duty's loop."""

    def __init__(
        self,
        *,
        db: Database,
        repo: LeaseRepository,
        clock: Clock,
        name: str,
        holder: str,
        lease_s: float = LEASE_S,
        renew_s: float = RENEW_S,
        always: bool = False,
    ) -> None:
        if renew_s >= lease_s:
            raise ValueError("a lease must be renewed more often than it lasts")
        self.name = name
        self.holder = holder
        self._db = db
        self._repo = repo
        self._clock = clock
        self._lease_s = lease_s
        self._renew_s = renew_s
        self._margin = min(SKEW_MARGIN_S, (lease_s - renew_s) / 2)
        self._always = always
        self._valid_until = float("inf") if always else float("-inf")
        self._paused_until = float("-inf")
        self._gained = asyncio.Event()
        self._lost = asyncio.Event()
        self._stopping = asyncio.Event()
        if always:
            self._gained.set()
        else:
            self._lost.set()

    @property
    def is_leader(self) -> bool:
        """Tell whether this instance holds the lease right now."""
        if self._always:
            return True
        leader = self._clock.monotonic() < self._valid_until
        if not leader and self._gained.is_set():
            self._set(False)
        return leader

    async def wait_leader(self) -> None:
        """Return once this instance holds the lease."""
        while not self.is_leader:
            self._gained.clear()
            await self._gained.wait()

    async def wait_lost(self) -> None:
        """Return once this instance no longer holds the lease (at once if it does not)."""
        while self.is_leader:
            remaining = self._valid_until - self._clock.monotonic()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._lost.wait(), timeout=max(0.01, remaining))

    async def step(self) -> bool:
        """Take or renew the lease once; return whether this instance holds it."""
        if self._always:
            return True
        if self._clock.monotonic() < self._paused_until:
            return self.is_leader
        asked = self._clock.monotonic()
        now = self._clock.now()
        try:
            async with self._db.write() as conn:
                held = await self._repo.acquire(
                    conn, self.name, self.holder, now, now + timedelta(seconds=self._lease_s)
                )
        except Exception:
            log.warning("could not renew the %s lease; it lapses unless the next try succeeds", self.name)
            return self.is_leader
        was = self.is_leader
        if held:
            self._valid_until = asked + self._lease_s - self._margin
            if not was:
                log.info("this instance (%s) took the %s lease", self.holder, self.name)
        else:
            self._valid_until = float("-inf")
            if was:
                log.warning("this instance (%s) lost the %s lease", self.holder, self.name)
        self._set(held)
        return held

    async def step_down(self, pause_s: float | None = None) -> None:
        """Give the lease up now and do not ask for it again for `pause_s` (a lease, by default)."""
        if self._always:
            return
        self._paused_until = self._clock.monotonic() + (self._lease_s if pause_s is None else pause_s)
        await self.release()

    async def release(self) -> None:
        """Let go of the lease if held, so a standby takes over at its next try rather than after expiry."""
        if self._always:
            return
        held = self.is_leader
        self._valid_until = float("-inf")
        self._set(False)
        if not held:
            return
        try:
            async with self._db.write() as conn:
                await self._repo.release(conn, self.name, self.holder)
        except Exception:
            log.warning("could not release the %s lease; it expires within %.0f s", self.name, self._lease_s)

    def stop(self) -> None:
        """Ask `run` to release the lease and return."""
        self._stopping.set()

    async def run(self) -> None:
        """Take and renew the lease until stopped; release it on the way out."""
        if self._always:
            await self._stopping.wait()
            return
        try:
            while not self._stopping.is_set():
                try:
                    await asyncio.wait_for(self.step(), timeout=self._renew_s)
                except TimeoutError:
                    log.warning("renewing the %s lease took over %.0f s", self.name, self._renew_s)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), timeout=self._renew_s)
        finally:
            await self.release()

    def _set(self, leader: bool) -> None:
        if leader:
            self._lost.clear()
            self._gained.set()
        else:
            self._gained.clear()
            self._lost.set()
