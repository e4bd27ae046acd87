"""Delete what is no longer needed, so a seized server holds as little as possible."""

from __future__ import annotations

import logging
from datetime import timedelta

from bot.runtime.clock import Clock
from bot.services.reports.intake import ReportService
from bot.services.upkeep.history import HistoryScrubber
from storage.acted import ActedRepository
from storage.database import Database
from storage.inbox import InboxRepository
from storage.outbox import FINAL_STATUSES, OutboxRepository

log = logging.getLogger(__name__)

# Handled inbox rows keep only their update_id (for deduplication); a day covers any redelivery.
INBOX_KEEP = timedelta(days=1)
# Sent, dead and cancelled outbox rows say who got what when; an hour is enough to look into a failure.
OUTBOX_KEEP = timedelta(hours=1)
FAILED_KEEP = timedelta(days=7)
# A campaign's rows are its delivery ledger (who got it, when, why not): kept for coordinators to look into.
LEDGER_KEEP = timedelta(days=90)
LEDGER_KINDS = ("campaign",)


class Retention:
    """The periodic purge driven by the scheduler."""

    def __init__(
        self,
        db: Database,
        inbox: InboxRepository,
        clock: Clock,
        reports: ReportService | None = None,
        outbox: OutboxRepository | None = None,
        history: HistoryScrubber | None = None,
    ) -> None:
        self._db = db
        self._inbox = inbox
        self._outbox = outbox or OutboxRepository()
        self._clock = clock
        self._reports = reports
        self._history = history
        self._acted = ActedRepository()

    async def purge(self, *, scrub: bool = True) -> int:
        """Delete handled inbox rows older than INBOX_KEEP and expired drafts; return how many rows.
        `scrub=False` leaves the history scrub to the caller (several instances: each scrubs its own
        transient keys, while one purges for all)."""
        # A plain write: it only deletes finished rows (nothing queued, audited or run after the commit),
        # and Retention is not built on the Core (the storage tests run it on a bare database).
        async with self._db.write() as conn:
            purged = await self._inbox.purge_done(conn, self._clock.now() - INBOX_KEEP)
            now = self._clock.now()
            purged += await self._acted.purge_before(conn, now - INBOX_KEEP)
            purged += await self._outbox.purge_finished(
                conn, ("sent", "cancelled", "blocked"), now - OUTBOX_KEEP, keep_kinds=LEDGER_KINDS
            )
            # Failures stay longer: coordinators look into them.
            purged += await self._outbox.purge_finished(
                conn, ("dead", "unknown"), now - FAILED_KEEP, keep_kinds=LEDGER_KINDS
            )
            purged += await self._outbox.purge_finished(
                conn, FINAL_STATUSES, now - LEDGER_KEEP, only_kinds=LEDGER_KINDS
            )
        if self._reports is not None:
            purged += await self._reports.purge_expired()
        if purged:
            log.info("purged %d expired rows", purged)
        if self._history is not None and scrub:
            # Deleted rows linger in the WAL and in retired drafts' old copies: end that history too.
            await self._history.scrub_quietly(requested=True)
        return purged
