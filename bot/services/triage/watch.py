"""Watch the way to the coordinators' chat: when it breaks, alerts are held (never dropped), every admin is
told at once in private with how many wait and what to do, and everything goes out when it works again.

It breaks in these ways: the bot is removed, demoted or restricted in the group (Telegram sends a
my_chat_member update, and sends answer 403 or 400), the group becomes a supergroup (a 400 carrying
`migrate_to_chat_id`, and a service message), the group is deleted (400 chat not found), or Telegram fails
for a long time (5xx). A migration is followed: the new chat is stored and every waiting alert is resent
there. The rest is an incident, kept in bot_state so a restart remembers it: held alerts are probed one at a
time, and the first alert that reaches the chat (or the bot being added back) releases the rest.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncConnection

from bot.runtime.delivery import Failure, Receipt
from bot.services.core import Core
from bot.services.triage.alerts import ALERT_KINDS, AlertService
from storage.outbox import OutboxRepository
from storage.state import StateRepository

log = logging.getLogger(__name__)

INCIDENT = "alerts_incident"
# Why alerts cannot reach the coordinators' chat; each has a text alerts.reason_* (why, and what to do).
# These four mean the chat itself is out of reach: the first alert that gets through ends them. The others:
# "refused" (one message Telegram would not take, such as a photo where photos are forbidden; another alert
# getting through says nothing about it, so it ends only when nothing is held any more) and "no_chat".
CHAT_REASONS = frozenset({"removed", "restricted", "missing", "failing"})


@dataclass(frozen=True)
class Held:
    """What admins see about alerts that wait: how many, and why (None: nothing is wrong)."""

    count: int
    reason: str | None
    since: datetime | None


class AlertWatch:
    """Holds, reports and releases alerts when the coordinators' chat is out of reach."""

    def __init__(
        self,
        core: Core,
        *,
        alerts: AlertService,
        outbox_repo: OutboxRepository,
        state: StateRepository,
    ) -> None:
        self._core = core
        self._alerts = alerts
        self._outbox_repo = outbox_repo
        self._state = state
        self._incident: str | None = None
        self._loaded = False

    # ------------------------------------------------------------------ what admins see

    async def held(self) -> Held:
        """Return how many alerts wait and why (for /start and `jarchy check`)."""
        async with self._core.db.read() as conn:
            count, _ = await self._outbox_repo.held_summary(conn, ALERT_KINDS)
            incident = await self._read_incident(conn)
            chat = await self._alerts.coordinator_chat(conn)
        reason = incident[0] if incident else ("no_chat" if chat is None and count else None)
        return Held(count, reason if count or incident else None, incident[1] if incident else None)

    # ------------------------------------------------------------------ hooks of the delivery worker

    async def failed(self, conn: AsyncConnection, failures: Sequence[Failure]) -> None:
        """A protected row was refused or keeps failing: follow a migration, or open an incident."""
        migrations = {(f.chat_key, f.migrate_to) for f in failures if f.migrate_to is not None}
        for old_key, new_chat in migrations:
            await self._migrate(conn, old_key, new_chat)
        current = await self._alerts.coordinator_chat(conn)
        refused = [f for f in failures if f.migrate_to is None]
        # Refused by a chat alerts no longer go to (sent just before a /bind): send them on.
        if current is not None and any(f.chat_key != self._alerts.chat_key for f in refused):
            await self._alerts.redirect(conn, current)
        reasons = {_reason(f) for f in refused if current is None or f.chat_key == self._alerts.chat_key}
        if reasons:
            # The chat's own state says more than one message's refusal.
            await self._open(conn, min(reasons, key=lambda r: r not in CHAT_REASONS))

    async def delivered(self, conn: AsyncConnection, receipts: Sequence[Receipt]) -> None:
        """An alert reached the coordinators' chat: if the chat was out of reach, it is not any more."""
        if not await self._incident_open(conn):
            return
        if self._incident not in CHAT_REASONS:
            # Refused messages: over once the last of them went through (the probe sends them).
            if not (await self._outbox_repo.held_summary(conn, ALERT_KINDS))[0]:
                await self._state.delete(conn, INCIDENT)
                self._incident = None
            return
        chat = await self._alerts.coordinator_chat(conn)
        if chat is None or not any(receipt.chat_id == chat for receipt in receipts):
            return
        await self._close(conn, chat)

    # ------------------------------------------------------------------ Telegram's own news

    async def membership_changed(self, chat_id: int, status: str, can_send: bool) -> None:
        """The bot's status in a chat changed (my_chat_member); only the coordinators' chat matters."""
        async with self._core.unit_of_work() as uow:
            conn = uow.conn
            if chat_id != await self._alerts.coordinator_chat(conn):
                return
            if status in ("left", "kicked"):
                await self._open(conn, "removed")
            elif status == "restricted" and not can_send:
                await self._open(conn, "restricted")
            elif await self._incident_open(conn):
                await self._close(conn, chat_id)
            uow.wake_delivery()
            await uow.commit()

    async def migrated(self, old_chat: int, new_chat: int) -> None:
        """The coordinators' group became a supergroup (a service message told us)."""
        async with self._core.unit_of_work() as uow:
            conn = uow.conn
            await self._migrate(conn, self._core.pseudonyms.of_chat(old_chat), new_chat)
            uow.wake_delivery()
            await uow.commit()

    # ------------------------------------------------------------------ periodic

    async def probe(self) -> int:
        """Try one held alert again (the most urgent) when its probe time has come; return 1 if one went.

        One at a time: a group that still refuses costs one refused send per probe, not one per alert.
        """
        async with self._core.unit_of_work() as uow:
            conn = uow.conn
            chat = await self._alerts.coordinator_chat(conn)
            if chat is None:
                return 0
            released = await self._core.outbox.release_held(
                conn, ALERT_KINDS, chat, limit=1, due_before=self._core.clock.now()
            )
            if released:
                uow.wake_delivery()
            await uow.commit()
        return released

    # ------------------------------------------------------------------ internals

    async def _migrate(self, conn: AsyncConnection, old_key: str, new_chat: int) -> None:
        current = await self._alerts.coordinator_chat(conn)
        if current == new_chat:
            # Followed already (the service message came first): what was refused since goes there too.
            await self._alerts.redirect(conn, new_chat)
            return
        if current is None or self._core.pseudonyms.of_chat(current) != old_key:
            return  # not our chat
        await self._alerts.follow_migration(conn, new_chat)
        moved = await self._alerts.redirect(conn, new_chat)
        await self._core.audit.record(
            conn, "system", "alerts.migrated", str(new_chat), detail=f"resent {moved}"
        )
        await self._alerts.notify_admins(conn, "alerts.migrated_notice", count=moved)
        log.warning("the coordinators' group became a supergroup; %d alerts resent to the new chat", moved)

    async def _open(self, conn: AsyncConnection, reason: str) -> None:
        incident = await self._read_incident(conn)
        if incident is not None and incident[0] == reason:
            return  # admins were told already
        now = self._core.clock.now()
        await self._state.put(conn, INCIDENT, json.dumps({"reason": reason, "since": now.isoformat()}))
        self._incident = reason
        count, _ = await self._outbox_repo.held_summary(conn, ALERT_KINDS)
        queued = await self._outbox_repo.counts_of(conn, ALERT_KINDS, ("pending", "sending"))
        await self._core.audit.record(conn, "system", "alerts.held", detail=reason)
        await self._alerts.notify_admins(
            conn,
            "alerts.held_notice",
            reason=self._core.texts.text(self._core.language, f"alerts.reason_{reason}"),
            count=count + queued,
        )
        log.error("alerts cannot reach the coordinators' chat (%s); %d wait", reason, count + queued)

    async def _close(self, conn: AsyncConnection, chat: int) -> None:
        released = await self._core.outbox.release_held(conn, ALERT_KINDS, chat)
        await self._state.delete(conn, INCIDENT)
        self._incident = None
        await self._core.audit.record(conn, "system", "alerts.recovered", detail=f"released {released}")
        await self._alerts.notify_admins(conn, "alerts.recovered_notice", count=released)
        log.warning("alerts reach the coordinators' chat again; %d released", released)

    async def _incident_open(self, conn: AsyncConnection) -> bool:
        if not self._loaded:
            await self._read_incident(conn)
        return self._incident is not None

    async def _read_incident(self, conn: AsyncConnection) -> tuple[str, datetime] | None:
        raw = await self._state.get(conn, INCIDENT)
        self._loaded = True
        if raw is None:
            self._incident = None
            return None
        data = json.loads(raw)
        self._incident = str(data["reason"])
        return self._incident, datetime.fromisoformat(data["since"])


def _reason(failure: Failure) -> str:
    error = failure.error.lower()
    if not failure.held:
        return "failing"
    if error.startswith("403"):
        return "removed"
    if "not enough rights" in error or "have no rights" in error or "restricted" in error:
        return "restricted"
    if "chat not found" in error or "deactivated" in error:
        return "missing"
    return "refused"
