"""Watch the organisation's bots: which answer, when the one in use has been refused long enough to switch,
and whether another instance (or `jarchy bot switch`) switched, so that this one restarts on the new bot.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta

from bot.runtime.clock import Clock
from bot.runtime.fleet import REFUSED_PREFIX, SWITCH_REQUEST, Fleet, FleetBot
from storage.database import Database
from storage.state import StateRepository

log = logging.getLogger(__name__)

CHECK_EVERY_S = 30.0
FOLLOW_EVERY_S = 3.0

Switch = Callable[[FleetBot, str], Awaitable[bool]]
InUse = Callable[[], Awaitable[int]]


class FleetWatch:
    """Asks every bot getMe now and then; switches after `switch_after`; notices a switch made elsewhere."""

    def __init__(
        self,
        *,
        fleet: Fleet,
        db: Database,
        state: StateRepository,
        clock: Clock,
        switch_after: timedelta | None,
        switch: Switch,
        in_use: InUse,
        check_every_s: float = CHECK_EVERY_S,
        follow_every_s: float = FOLLOW_EVERY_S,
    ) -> None:
        """`switch_after` None: never switch by itself. `switch(bot, reason)` makes `bot` the one in use
        and returns whether it did; `in_use()` reads which bot the database says is in use."""
        self._fleet = fleet
        self._db = db
        self._state = state
        self._clock = clock
        self._switch_after = switch_after
        self._switch = switch
        self._in_use = in_use
        self._check_every_s = check_every_s
        self._follow_every_s = follow_every_s
        self._stopping = asyncio.Event()
        self._poke = asyncio.Event()
        # Set once the bot in use is not this run's any more: the runner stops and starts on the new one.
        self.switched = asyncio.Event()

    def stop(self) -> None:
        """Return soon."""
        self._stopping.set()
        self._poke.set()

    def refused(self) -> None:
        """The bot in use was just refused (polling or a send heard 401/404): check now, not later."""
        self._poke.set()

    async def run(self, when: Callable[[], bool] = lambda: True) -> None:
        """Follow the database and check the bots until stopped or switched; `when()`: may this instance
        switch by itself (one instance of a cluster decides)."""
        next_check = 0.0
        while not self._stopping.is_set() and not self.switched.is_set():
            try:
                if await self.follow():
                    return
                if self._poke.is_set() or self._clock.monotonic() >= next_check:
                    self._poke.clear()
                    await self.check(may_switch=when())
                    next_check = self._clock.monotonic() + self._check_every_s
            except Exception:
                log.exception("watching the bots failed; trying again")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._poke.wait(), timeout=self._follow_every_s)

    async def follow(self) -> bool:
        """Make a switch `jarchy bot switch` asked for; tell (and mark `switched`) whether the database
        names another bot in use than this run's."""
        async with self._db.read() as conn:
            raw = await self._state.get(conn, SWITCH_REQUEST)
        if raw is not None:
            try:
                wanted = self._fleet.by_id(int(json.loads(raw)["to"]))
            except (ValueError, KeyError, TypeError):
                wanted = None
            if wanted is None:
                log.error("a switch was asked for a bot that is not configured; ignored")
            else:
                await self._switch(wanted, "cli")
            # Only once made (a failed switch leaves the request for the next look): a second switch to
            # the same bot changes nothing.
            async with self._db.write() as conn:
                if await self._state.get(conn, SWITCH_REQUEST) == raw:
                    await self._state.delete(conn, SWITCH_REQUEST)
        if await self._in_use() != self._fleet.active.bot_id:
            log.warning("another bot is in use now; restarting on it")
            self.switched.set()
            return True
        return False

    async def check(self, *, may_switch: bool = True) -> FleetBot | None:
        """Ask every bot getMe and record what answers; switch if the one in use has been refused for
        `switch_after` and a backup answers. Return the bot switched to, if any."""
        answering: list[FleetBot] = []
        for bot in self._fleet.bots:
            answer = await self._fleet.ask_me(bot.bot_id)
            if answer is True:
                answering.append(bot)
                await self._answered(bot)
            elif answer is False:
                await self._refused(bot)
        active = self._fleet.active
        since = self._fleet.refused.get(active.bot_id)
        if since is None or self._switch_after is None or not may_switch:
            return None
        if self._clock.now() - since < self._switch_after:
            log.error(
                "Telegram refuses the token of the %s since %s UTC; switching to a backup at %s UTC",
                active.label,
                since.strftime("%H:%M:%S"),
                (since + self._switch_after).strftime("%H:%M:%S"),
            )
            return None
        target = next((b for b in answering if b.bot_id != active.bot_id), None)
        if target is None:
            log.error("the %s is refused and no backup bot answers; nothing to switch to", active.label)
            return None
        if await self._switch(target, "refused"):
            self.switched.set()
            return target
        return None

    async def _answered(self, bot: FleetBot) -> None:
        if self._fleet.refused.pop(bot.bot_id, None) is not None:
            log.warning("the %s answers again", bot.label)
            async with self._db.write() as conn:
                await self._state.delete(conn, REFUSED_PREFIX + str(bot.bot_id))

    async def _refused(self, bot: FleetBot) -> None:
        # The first refusal's time is kept in the database: "refused for N minutes" outlasts a restart.
        async with self._db.write() as conn:
            stored = await self._state.put_if_absent(
                conn, REFUSED_PREFIX + str(bot.bot_id), self._clock.now().isoformat()
            )
        try:
            since = datetime.fromisoformat(stored)
        except ValueError:
            since = self._clock.now()
        if bot.bot_id not in self._fleet.refused:
            log.error("Telegram refuses the token of the %s (401/404)", bot.label)
        self._fleet.refused[bot.bot_id] = since
