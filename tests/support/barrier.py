"""Wait until the bot has nothing left to do, instead of sleeping for as long as it probably takes.

The bot is quiet when, in this order:
(a) the fake Bot API holds no unconfirmed update: every update a test added was fetched, and a later
    getUpdates moved the offset past it, which the bot does only after the update is stored in its inbox;
(b) the inbox holds no update that is pending and due: an update being handled stays pending until its
    handler has returned and its done-mark is committed (one retried later is reported, but not waited for);
(c) the outbox holds no row that is due and unsent, and none leased to a sender (in flight).
(b) and (c) are read in one transaction, so a handler that queued a message and then finished is seen
either still pending or with its message due. Work the bot starts on its own (a periodic job, a broadcast
task between batches) is not covered: wait for its effect with `fake.wait_for`.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from sqlalchemy import and_, func, or_, select

from bot.wiring import Services
from storage.schema import inbox, outbox
from tests.fakebot import FakeBotApi

POLL_INTERVAL_S = 0.015


@dataclass(frozen=True)
class Pending:
    """What keeps the bot from being quiet; empty when it is."""

    unconfirmed_updates: list[int] = field(default_factory=list)
    inbox_due: int = 0
    inbox_later: int = 0
    outbox_due: int = 0
    outbox_leased: int = 0

    @property
    def busy(self) -> bool:
        """Tell whether anything is still to be done now."""
        return bool(self.unconfirmed_updates or self.inbox_due or self.outbox_due or self.outbox_leased)

    def describe(self) -> str:
        """Say what is pending, for a failed wait."""
        return (
            f"updates not confirmed to the fake: {self.unconfirmed_updates}; inbox: {self.inbox_due} due "
            f"({self.inbox_later} retried later); outbox: {self.outbox_due} due, {self.outbox_leased} leased"
        )


class NotQuiet(AssertionError):
    """The bot still had work when the barrier's time ran out."""


async def pending_work(fake: FakeBotApi, services: Services) -> Pending:
    """Read what the fake and the bot's database still hold to be done."""
    unconfirmed = [
        int(update["update_id"])
        for update in fake.pending_updates
        if int(update["update_id"]) >= fake.acknowledged_offset
    ]
    now = services.clock.now()
    inbox_pending = inbox.c.status == "pending"
    async with services.db.read() as conn:
        inbox_row = (
            await conn.execute(
                select(
                    func.count().filter(and_(inbox_pending, inbox.c.next_attempt_at <= now)),
                    func.count().filter(and_(inbox_pending, inbox.c.next_attempt_at > now)),
                )
            )
        ).one()
        outbox_row = (
            await conn.execute(
                select(
                    func.count().filter(and_(outbox.c.status == "pending", outbox.c.due_at <= now)),
                    func.count().filter(outbox.c.status == "sending"),
                ).where(or_(outbox.c.status == "pending", outbox.c.status == "sending"))
            )
        ).one()
    return Pending(unconfirmed, int(inbox_row[0]), int(inbox_row[1]), int(outbox_row[0]), int(outbox_row[1]))


async def quiet(fake: FakeBotApi, services: Services, *, timeout: float = 15.0) -> Pending:
    """Wait until the bot has handled every update and sent everything due; raise NotQuiet if it does not.

    Return the final reading (its `inbox_later` counts updates kept for a later retry).
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        state = await pending_work(fake, services)
        if not state.busy:
            return state
        if loop.time() >= deadline:
            raise NotQuiet(f"the bot was still busy after {timeout} s: {state.describe()}")
        await asyncio.sleep(POLL_INTERVAL_S)
