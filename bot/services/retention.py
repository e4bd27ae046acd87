"""Delete what is no longer needed, so a seized server holds as little as possible."""

from __future__ import annotations

import logging
from datetime import timedelta

from bot.clock import Clock
from bot.services.reports import ReportService
from storage.database import Database
from storage.inbox import InboxRepository

log = logging.getLogger(__name__)

# Handled inbox rows keep only their update_id (for deduplication); a day covers any redelivery.
INBOX_KEEP = timedelta(days=1)


class Retention:
    """The periodic purge driven by the scheduler."""

    def __init__(
        self, db: Database, inbox: InboxRepository, clock: Clock, reports: ReportService | None = None
    ) -> None:
        self._db = db
        self._inbox = inbox
        self._clock = clock
        self._reports = reports

    async def purge(self) -> int:
        """Delete handled inbox rows older than INBOX_KEEP and expired drafts; return how many rows."""
        async with self._db.write() as conn:
            purged = await self._inbox.purge_done(conn, self._clock.now() - INBOX_KEEP)
        if self._reports is not None:
            purged += await self._reports.purge_expired()
        if purged:
            log.info("purged %d expired rows", purged)
        return purged
