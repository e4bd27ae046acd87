"""A unit of work: one write transaction, what it carries, and what must happen once it is committed.

    async with core.unit_of_work() as uow:
        await repo.put(uow.conn, ...)
        await uow.outbox.enqueue(uow.conn, ...)
        uow.wake_delivery()                 # only once the rows are committed
        uow.after_commit(lambda: path.unlink(missing_ok=True))
        await uow.commit()                  # explicit: leaving without it rolls everything back

Work registered with `after_commit` runs after a successful commit, never after a rollback: a delivery
worker woken before the commit finds nothing to send, and a file deleted before it would be gone while
the row that names it survives a failed transaction. (cosmicpython's unit_of_work.py, async.)
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from types import TracebackType

from sqlalchemy.ext.asyncio import AsyncConnection

from bot.runtime.audit import AuditLog
from bot.runtime.outbox import Outbox
from storage.database import Database

log = logging.getLogger(__name__)


class UnitOfWork:
    """One write transaction on the Database; commit it explicitly, or it is rolled back."""

    def __init__(self, db: Database, outbox: Outbox, audit: AuditLog | None = None) -> None:
        self._db = db
        self.outbox = outbox
        self._audit = audit
        self._scope: AbstractAsyncContextManager[AsyncConnection] | None = None
        self._conn: AsyncConnection | None = None
        self._after: list[Callable[[], Awaitable[object] | object]] = []
        self._wake = False
        self.committed = False

    @property
    def conn(self) -> AsyncConnection:
        """The transaction's connection, for the repositories."""
        if self._conn is None:
            raise RuntimeError("the unit of work is not open")
        return self._conn

    @property
    def audit(self) -> AuditLog:
        """The audit log, whose entries commit (or roll back) with the rest of the work."""
        if self._audit is None:
            raise RuntimeError("this unit of work carries no audit log")
        return self._audit

    def after_commit(self, work: Callable[[], Awaitable[object] | object]) -> None:
        """Run `work` (a function, or a coroutine function) once the transaction has committed; never if
        it rolls back."""
        self._after.append(work)

    def wake_delivery(self) -> None:
        """Wake the delivery worker after the commit: the rows queued here are there to send."""
        self._wake = True

    async def commit(self) -> None:
        """Commit now; the after-commit work runs when the block ends."""
        await self.conn.commit()
        self.committed = True

    async def rollback(self) -> None:
        """Roll back now, dropping every after-commit task."""
        await self.conn.rollback()

    async def __aenter__(self) -> UnitOfWork:
        if self._scope is not None:
            raise RuntimeError("a unit of work opens once")
        self._scope = self._db.write()
        self._conn = await self._scope.__aenter__()
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        assert self._scope is not None and self._conn is not None  # noqa: S101 - opened by __aenter__
        try:
            if not self.committed and self._conn.in_transaction():
                await self._conn.rollback()
        finally:
            # The transaction is over either way: leaving the scope releases the write turn.
            await self._scope.__aexit__(kind, error, trace)
            self._conn = None
        if not self.committed:
            self._after.clear()
            return
        if self._wake:
            self.outbox.notify()
        work, self._after = self._after, []
        failed: Exception | None = None
        for task in work:
            # One failed task (a file that would not go) must not keep the others from running; the
            # first failure is raised after them, as it was when the work followed the block by hand.
            try:
                done = task()
                if inspect.isawaitable(done):
                    await done
            except Exception as problem:
                log.warning("after-commit work failed", exc_info=True)
                failed = failed or problem
        if failed is not None and kind is None:
            raise failed
