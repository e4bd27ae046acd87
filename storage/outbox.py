"""The durable outbox: every message that must survive a crash is a row here until it is sent."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, case, delete, func, literal, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql.elements import BindParameter

from storage.dialect import Prebuilt, insert_many_counted
from storage.schema import outbox
from storage.types import UtcTimestamp

# A row in one of these states will not be sent again.
FINAL_STATUSES = ("sent", "unknown", "dead", "blocked", "cancelled")


# Built once: every report, alert and reply queues rows (storage.dialect.Prebuilt explains why).
_INSERT = Prebuilt(lambda insert: insert(outbox).on_conflict_do_nothing(index_elements=[outbox.c.dedupe_key]))


@dataclass(frozen=True)
class NewOutboxRow:
    """A row to insert; its payload is already encrypted by the caller."""

    uid: str
    kind: str
    method: str
    payload: bytes
    chat_key: str
    chat_kind: str
    recipient: str | None
    priority: int
    due_at: datetime
    dedupe_key: str | None = None
    ref: str | None = None
    status: str = "pending"  # "held": waits for a destination (no coordinators' chat yet)
    expires_at: datetime | None = None
    via_bot: int | None = None


@dataclass(frozen=True)
class HeldRow:
    """A row waiting for its destination."""

    id: int
    uid: str
    payload: bytes


@dataclass(frozen=True)
class WaitingRow:
    """A queued row as the alert planner sees it: no payload."""

    id: int
    kind: str
    ref: str | None
    priority: int
    created_at: datetime
    claimed: bool = False  # a worker holds it right now (it may be waiting for a slot, or on its way)


# How the delivery worker starts the error of a row that waits for a bot able to reach its person.
UNREACHABLE = "unreachable: "


@dataclass(frozen=True)
class ClaimedRow:
    """A row leased to one worker for sending."""

    id: int
    uid: str
    kind: str
    method: str
    payload: bytes
    chat_key: str
    chat_kind: str
    recipient: str | None
    priority: int
    attempts: int
    unknown_outcomes: int
    ref: str | None = None
    via_bot: int | None = None  # only this bot may send it (an edit or deletion of its own message)


@dataclass(frozen=True)
class Outcome:
    """What happened to one claimed row, written back in a batch."""

    id: int
    status: str  # pending (retry), sent, unknown, dead, blocked
    due_at: datetime | None = None
    message_id: int | None = None
    sent_at: datetime | None = None
    error: str | None = None
    # -1 gives back the attempt taken at claim time (a 429 or a deferral is not the row's fault).
    attempts_delta: int = 0
    unknown_delta: int = 0


@dataclass(frozen=True)
class OutboxStatus:
    """One row's state, for tests, ledgers and coordinators."""

    id: int
    uid: str
    kind: str
    status: str
    attempts: int
    unknown_outcomes: int
    message_id: int | None
    last_error: str | None
    recipient: str | None


@dataclass(frozen=True)
class LedgerEntry:
    """One delivery of a broadcast, pseudonymous."""

    recipient: str | None
    chat_key: str
    chat_kind: str
    status: str
    attempts: int
    created_at: datetime
    sent_at: datetime | None
    last_error: str | None


class OutboxRepository:
    """SQL for the outbox; claiming uses SKIP LOCKED on PostgreSQL so instances never share a row."""

    async def insert(self, conn: AsyncConnection, rows: Sequence[NewOutboxRow], now: datetime) -> int:
        """Insert rows in the caller's transaction, skipping ones whose dedupe_key exists; return how many."""
        if not rows:
            return 0
        return await insert_many_counted(
            conn,
            _INSERT(conn),
            [
                {
                    "uid": r.uid,
                    "kind": r.kind,
                    "method": r.method,
                    "payload": r.payload,
                    "chat_key": r.chat_key,
                    "chat_kind": r.chat_kind,
                    "recipient": r.recipient,
                    "priority": r.priority,
                    "status": r.status,
                    "attempts": 0,
                    "unknown_outcomes": 0,
                    "due_at": r.due_at,
                    "created_at": now,
                    "dedupe_key": r.dedupe_key,
                    "ref": r.ref,
                    "expires_at": r.expires_at,
                    "via_bot": r.via_bot,
                }
                for r in rows
            ],
            outbox.c.id,
        )

    async def claim(
        self, conn: AsyncConnection, owner: str, now: datetime, lease_until: datetime, limit: int
    ) -> list[ClaimedRow]:
        """Lease up to `limit` due rows, most urgent first, counting an attempt for each."""
        # Rows past their moment (a reminder for a hearing that has begun) end here, unsent.
        await conn.execute(
            update(outbox)
            .where(outbox.c.status == "pending", outbox.c.expires_at.is_not(None), outbox.c.expires_at <= now)
            .values(status="cancelled", payload=None, last_error="expired before it could be sent")
        )
        due = (
            select(outbox.c.id)
            .where(outbox.c.status == "pending", outbox.c.due_at <= now)
            .order_by(outbox.c.priority.desc(), outbox.c.due_at, outbox.c.id)
            .limit(limit)
        )
        if conn.dialect.name == "postgresql":
            due = due.with_for_update(skip_locked=True)
        stmt = (
            update(outbox)
            .where(outbox.c.id.in_(due.scalar_subquery()))
            .values(
                status="sending", lease_owner=owner, lease_until=lease_until, attempts=outbox.c.attempts + 1
            )
            .returning(
                outbox.c.id,
                outbox.c.uid,
                outbox.c.kind,
                outbox.c.method,
                outbox.c.payload,
                outbox.c.chat_key,
                outbox.c.chat_kind,
                outbox.c.recipient,
                outbox.c.priority,
                outbox.c.attempts,
                outbox.c.unknown_outcomes,
                outbox.c.ref,
                outbox.c.via_bot,
            )
        )
        rows = [ClaimedRow(*r) for r in (await conn.execute(stmt)).all()]
        # RETURNING gives no order guarantee; the worker wants the claim order.
        rows.sort(key=lambda r: (-r.priority, r.id))
        return rows

    async def reclaim_expired(
        self, conn: AsyncConnection, now: datetime, exclude_owner: str | None = None
    ) -> int:
        """Return rows whose worker died (lease expired) to pending; they may have been in flight, so their
        next send counts as a possible repeat."""
        stmt = update(outbox).where(outbox.c.status == "sending", outbox.c.lease_until < now)
        if exclude_owner is not None:
            # A live worker never takes back its own rows: it may be about to record them as sent.
            stmt = stmt.where(outbox.c.lease_owner != exclude_owner)
        return await self._take_back(conn, stmt)

    async def reclaim_instance(self, conn: AsyncConnection, instance: str, exclude_owner: str) -> int:
        """Return rows an earlier run of this instance was sending (it was killed): no need to wait for
        their leases, and no other instance's live lease is touched."""
        stmt = update(outbox).where(
            outbox.c.status == "sending",
            outbox.c.lease_owner.startswith(f"{instance}:", autoescape=True),
            outbox.c.lease_owner != exclude_owner,
        )
        return await self._take_back(conn, stmt)

    async def reclaim_others(self, conn: AsyncConnection, exclude_owner: str) -> int:
        """Return every row another worker was sending (the elected sender taking over from one that
        stopped: only the sender claims rows, so none of them is live)."""
        stmt = update(outbox).where(outbox.c.status == "sending", outbox.c.lease_owner != exclude_owner)
        return await self._take_back(conn, stmt)

    async def _take_back(self, conn: AsyncConnection, stmt: Any) -> int:
        result = await conn.execute(
            stmt.values(
                status="pending",
                lease_owner=None,
                lease_until=None,
                unknown_outcomes=outbox.c.unknown_outcomes + 1,
            )
        )
        return result.rowcount or 0

    async def release_owned(self, conn: AsyncConnection, owner: str) -> int:
        """Give back rows this worker claimed but did not send (a clean shutdown)."""
        result = await conn.execute(
            update(outbox)
            .where(outbox.c.status == "sending", outbox.c.lease_owner == owner)
            .values(status="pending", lease_owner=None, lease_until=None, attempts=outbox.c.attempts - 1)
        )
        return result.rowcount or 0

    async def apply(self, conn: AsyncConnection, owner: str, outcomes: Sequence[Outcome]) -> None:
        """Write a batch of outcomes; rows whose lease passed to another worker are left alone."""
        if not outcomes:
            return
        status: BindParameter[str] = bindparam("b_status")
        stmt = (
            update(outbox)
            .where(outbox.c.id == bindparam("b_id"), outbox.c.lease_owner == literal(owner))
            .values(
                status=status,
                due_at=func.coalesce(bindparam("b_due_at", type_=UtcTimestamp), outbox.c.due_at),
                message_id=func.coalesce(bindparam("b_message_id"), outbox.c.message_id),
                sent_at=func.coalesce(bindparam("b_sent_at", type_=UtcTimestamp), outbox.c.sent_at),
                last_error=bindparam("b_error"),
                attempts=outbox.c.attempts + bindparam("b_attempts_delta"),
                unknown_outcomes=outbox.c.unknown_outcomes + bindparam("b_unknown_delta"),
                lease_owner=None,
                lease_until=None,
                # A finished message's content is of no further use and must not sit on a seizable disk.
                # (Equalities, not IN: an expanding IN cannot run in an executemany.)
                payload=case(
                    (or_(*(status == final for final in FINAL_STATUSES)), None), else_=outbox.c.payload
                ),
            )
        )
        await conn.execute(
            stmt,
            [
                {
                    "b_id": o.id,
                    "b_status": o.status,
                    "b_due_at": o.due_at,
                    "b_message_id": o.message_id,
                    "b_sent_at": o.sent_at,
                    "b_error": o.error,
                    "b_attempts_delta": o.attempts_delta,
                    "b_unknown_delta": o.unknown_delta,
                }
                for o in outcomes
            ],
        )

    async def due_now_for_chat(self, conn: AsyncConnection, chat_key: str, now: datetime) -> int:
        """Bring forward a private chat's rows that wait for a bot able to write to the person (a person
        started one); rows due later for their own reasons (a reminder) keep their time."""
        stmt = (
            update(outbox)
            .where(
                outbox.c.chat_key == chat_key,
                outbox.c.status == "pending",
                outbox.c.due_at > now,
                _waits_for_a_bot(),
            )
            .values(due_at=now)
        )
        return (await conn.execute(stmt)).rowcount or 0

    async def due_now_after_switch(self, conn: AsyncConnection, now: datetime) -> int:
        """Bring forward every row that waited for a refused bot (401/404) or for a bot able to reach its
        person: another bot is in use now."""
        stmt = (
            update(outbox)
            .where(
                outbox.c.status == "pending",
                outbox.c.due_at > now,
                _waits_for_a_bot(),
            )
            .values(due_at=now)
        )
        return (await conn.execute(stmt)).rowcount or 0

    async def block_pending_for(self, conn: AsyncConnection, recipients: Sequence[str]) -> int:
        """Stop queued rows to recipients who blocked the bot."""
        if not recipients:
            return 0
        result = await conn.execute(
            update(outbox)
            .where(outbox.c.recipient.in_(recipients), outbox.c.status == "pending")
            .values(status="blocked", last_error="recipient blocked the bot", payload=None)
        )
        return result.rowcount or 0

    async def cancel_pending(
        self,
        conn: AsyncConnection,
        *,
        recipient: str | None = None,
        ref: str | None = None,
        keep_kinds: Sequence[str] = (),
        only_kinds: Sequence[str] = (),
    ) -> int:
        """Cancel queued rows for a recipient and/or an aggregate (unsubscribe, cancelled broadcast)."""
        if recipient is None and ref is None:
            raise ValueError("name a recipient or a ref to cancel")
        # Rows a worker has claimed are cancelled too (and taken from it: its outcome will not apply); the
        # worker is told separately to drop them, so only a message already on the wire still goes.
        stmt = update(outbox).where(outbox.c.status.in_(("pending", "sending")))
        if recipient is not None:
            stmt = stmt.where(outbox.c.recipient == recipient)
        if ref is not None:
            stmt = stmt.where(outbox.c.ref == ref)
        if keep_kinds:
            stmt = stmt.where(outbox.c.kind.not_in(keep_kinds))
        if only_kinds:
            stmt = stmt.where(outbox.c.kind.in_(only_kinds))
        result = await conn.execute(
            stmt.values(status="cancelled", payload=None, lease_owner=None, lease_until=None)
        )
        return result.rowcount or 0

    async def held(
        self,
        conn: AsyncConnection,
        kinds: Sequence[str],
        *,
        statuses: Sequence[str] = ("held",),
        chat_key: str | None = None,
        limit: int | None = None,
        due_before: datetime | None = None,
    ) -> list[HeldRow]:
        """Return rows waiting for a destination (or, with `statuses`, queued ones too), most urgent and
        oldest first; `chat_key` keeps those meant for one chat."""
        stmt = (
            select(outbox.c.id, outbox.c.uid, outbox.c.payload)
            .where(outbox.c.status.in_(statuses), outbox.c.kind.in_(kinds), outbox.c.recipient.is_(None))
            .order_by(outbox.c.priority.desc(), outbox.c.id)
        )
        if chat_key is not None:
            stmt = stmt.where(outbox.c.chat_key == chat_key)
        if due_before is not None:
            stmt = stmt.where(outbox.c.due_at <= due_before)
        if limit is not None:
            stmt = stmt.limit(limit)
        return [HeldRow(r.id, r.uid, r.payload) for r in await conn.execute(stmt)]

    async def release(
        self,
        conn: AsyncConnection,
        row_id: int,
        payload: bytes,
        chat_key: str,
        chat_kind: str,
        now: datetime,
        statuses: Sequence[str] = ("held",),
    ) -> None:
        """Give a held row its destination and make it due now."""
        await conn.execute(
            update(outbox)
            .where(outbox.c.id == row_id, outbox.c.status.in_(statuses))
            .values(status="pending", payload=payload, chat_key=chat_key, chat_kind=chat_kind, due_at=now)
        )

    async def held_summary(self, conn: AsyncConnection, kinds: Sequence[str]) -> tuple[int, str | None]:
        """Return how many alerts of these kinds are held (reports, counted once whatever their number of
        messages; a digest once), and the latest reason one was held for."""
        count = await self.counts_of(conn, kinds, ("held",))
        reason = (
            await conn.execute(
                select(outbox.c.last_error)
                .where(outbox.c.status == "held", outbox.c.kind.in_(kinds))
                .order_by(outbox.c.id.desc())
                .limit(1)
            )
        ).scalar()
        return int(count), reason

    async def counts_of(self, conn: AsyncConnection, kinds: Sequence[str], statuses: Sequence[str]) -> int:
        """Count what rows of these kinds in these states are about: each report once (by ref), each row
        without a ref (a digest) once."""
        where = (outbox.c.kind.in_(kinds), outbox.c.status.in_(statuses), outbox.c.recipient.is_(None))
        refs = select(func.count(func.distinct(outbox.c.ref))).where(*where, outbox.c.ref.is_not(None))
        loose = select(func.count()).where(*where, outbox.c.ref.is_(None))
        return int((await conn.execute(refs)).scalar() or 0) + int((await conn.execute(loose)).scalar() or 0)

    async def waiting(
        self, conn: AsyncConnection, chat_key: str, kinds: Sequence[str], *, claimed: bool = False
    ) -> list[WaitingRow]:
        """Return the queued rows of these kinds for one chat; with `claimed`, also the ones a worker holds
        right now (marked so)."""
        statuses = ("pending", "sending") if claimed else ("pending",)
        rows = await conn.execute(
            select(
                outbox.c.id,
                outbox.c.kind,
                outbox.c.ref,
                outbox.c.priority,
                outbox.c.created_at,
                outbox.c.status == "sending",
            )
            .where(outbox.c.status.in_(statuses), outbox.c.chat_key == chat_key, outbox.c.kind.in_(kinds))
            .order_by(outbox.c.id)
        )
        return [WaitingRow(*r) for r in rows]

    async def take(self, conn: AsyncConnection, ids: Sequence[int], reason: str) -> list[WaitingRow]:
        """Take queued rows out of the queue (a digest shows them instead); return the ones taken (a row a
        worker claimed meanwhile stays with it)."""
        if not ids:
            return []
        result = await conn.execute(
            update(outbox)
            .where(outbox.c.id.in_(list(ids)), outbox.c.status == "pending")
            .values(status="cancelled", payload=None, last_error=reason)
            .returning(outbox.c.id, outbox.c.kind, outbox.c.ref, outbox.c.priority, outbox.c.created_at)
        )
        return [WaitingRow(*r) for r in result.all()]

    async def purge_finished(
        self,
        conn: AsyncConnection,
        statuses: Sequence[str],
        before: datetime,
        *,
        keep_kinds: Sequence[str] = (),
        only_kinds: Sequence[str] = (),
    ) -> int:
        """Delete rows in these final states created before `before`: they are traces, not data."""
        if not set(statuses) <= set(FINAL_STATUSES):
            raise ValueError("only rows in a final state may be purged")
        stmt = delete(outbox).where(outbox.c.status.in_(statuses), outbox.c.created_at < before)
        if keep_kinds:
            stmt = stmt.where(outbox.c.kind.not_in(keep_kinds))
        if only_kinds:
            stmt = stmt.where(outbox.c.kind.in_(only_kinds))
        result = await conn.execute(stmt)
        return result.rowcount or 0

    async def bring_forward(
        self, conn: AsyncConnection, kind: str, now: datetime, horizon: datetime
    ) -> list[int]:
        """Make this kind's pending rows due before `horizon` due now; return their ids."""
        ids = [
            row.id
            for row in await conn.execute(
                select(outbox.c.id).where(
                    outbox.c.kind == kind,
                    outbox.c.status == "pending",
                    outbox.c.due_at > now,
                    outbox.c.due_at <= horizon,
                )
            )
        ]
        if ids:
            await conn.execute(update(outbox).where(outbox.c.id.in_(ids)).values(due_at=now))
        return ids

    async def unfinished(self, conn: AsyncConnection, ids: Sequence[int]) -> int:
        """Return how many of these rows are not final yet (sent, dead, ...)."""
        if not ids:
            return 0
        found = await conn.execute(
            select(func.count()).where(outbox.c.id.in_(ids), outbox.c.status.not_in(FINAL_STATUSES))
        )
        return int(found.scalar() or 0)

    async def next_due_at(self, conn: AsyncConnection) -> datetime | None:
        """Return when the earliest pending row is due."""
        due: datetime | None = (
            await conn.execute(select(func.min(outbox.c.due_at)).where(outbox.c.status == "pending"))
        ).scalar()
        return due

    async def counts(self, conn: AsyncConnection, ref: str | None = None) -> dict[str, int]:
        """Return how many rows are in each status (optionally for one aggregate)."""
        stmt = select(outbox.c.status, func.count()).group_by(outbox.c.status)
        if ref is not None:
            stmt = stmt.where(outbox.c.ref == ref)
        return {status: count for status, count in (await conn.execute(stmt)).all()}

    async def ledger(
        self, conn: AsyncConnection, ref: str, batch: int = 1000
    ) -> AsyncIterator[list[LedgerEntry]]:
        """Yield an aggregate's rows in order, a batch at a time: who got what, when, and why not."""
        after = 0
        while True:
            rows = (
                await conn.execute(
                    select(
                        outbox.c.id,
                        outbox.c.recipient,
                        outbox.c.chat_key,
                        outbox.c.chat_kind,
                        outbox.c.status,
                        outbox.c.attempts,
                        outbox.c.created_at,
                        outbox.c.sent_at,
                        outbox.c.last_error,
                    )
                    .where(outbox.c.ref == ref, outbox.c.id > after)
                    .order_by(outbox.c.id)
                    .limit(batch)
                )
            ).all()
            if not rows:
                return
            yield [LedgerEntry(*r[1:]) for r in rows]
            after = rows[-1].id

    async def statuses(self, conn: AsyncConnection, ids: Sequence[int] | None = None) -> list[OutboxStatus]:
        """Return rows' states, by id (all rows when None)."""
        stmt = select(
            outbox.c.id,
            outbox.c.uid,
            outbox.c.kind,
            outbox.c.status,
            outbox.c.attempts,
            outbox.c.unknown_outcomes,
            outbox.c.message_id,
            outbox.c.last_error,
            outbox.c.recipient,
        ).order_by(outbox.c.id)
        if ids is not None:
            stmt = stmt.where(outbox.c.id.in_(ids))
        return [OutboxStatus(*r) for r in (await conn.execute(stmt)).all()]


def _waits_for_a_bot() -> Any:
    # A row answered 401/404 (its bot refused) or found unreachable by every working bot.
    return or_(
        outbox.c.last_error.like("401:%"),
        outbox.c.last_error.like("404:%"),
        outbox.c.last_error.like(f"{UNREACHABLE}%"),
    )
