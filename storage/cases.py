"""Court cases, their hearings, who follows them and who will attend."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Row, and_, delete, func, insert, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from bot.domain.errors import Conflict, NotFound
from storage.dialect import insert_or, new_id
from storage.schema import attendance, cases, follows, hearings, reminder_prefs, users


class CaseNotFound(NotFound, LookupError):
    """No case (or no hearing) with that number."""

    def __init__(self, number: int) -> None:
        super().__init__("cases.not_found", id=number)
        self.number = number


class HearingExists(Conflict, ValueError):
    """That case already has a hearing at that time."""

    def __init__(self, number: int) -> None:
        super().__init__("hearings.exists", id=number)


@dataclass(frozen=True)
class Case:
    """A case as it may be published."""

    id: int
    title: str
    description: str
    charges: str
    public: bool
    status: str


@dataclass(frozen=True)
class Hearing:
    """One hearing of a case."""

    id: int
    case_id: int
    case_title: str
    starts_at: datetime
    court: str
    address: str
    details: str | None
    note: str | None
    status: str
    sequence: int
    outcome: str | None


@dataclass(frozen=True)
class Follower:
    """Someone to tell about a case: pseudonym, encrypted chat, language, reminder offsets."""

    pseudonym: str
    chat: bytes
    language: str | None
    offsets: str | None
    timezone: str | None = None


@dataclass(frozen=True)
class DueCandidate:
    """A follower of an upcoming hearing, for the reminder pass."""

    hearing: Hearing
    follower: Follower


class CaseRepository:
    """SQL for cases, hearings, follows, attendance and reminder preferences."""

    async def create_case(
        self, conn: AsyncConnection, title: str, description: str, charges: str, public: bool, now: datetime
    ) -> int:
        """Insert a case; return its number."""
        result = await conn.execute(
            insert(cases).values(
                title=title,
                description=description,
                charges=charges,
                public=public,
                status="open",
                created_at=now,
                updated_at=now,
            )
        )
        return new_id(result)

    async def case(self, conn: AsyncConnection, case_id: int) -> Case:
        """Return a case, or raise CaseNotFound."""
        row = (await conn.execute(select(cases).where(cases.c.id == case_id))).first()
        if row is None:
            raise CaseNotFound(case_id)
        return Case(row.id, row.title, row.description, row.charges, bool(row.public), row.status)

    async def update_case(
        self,
        conn: AsyncConnection,
        case_id: int,
        title: str,
        description: str,
        charges: str,
        public: bool,
        now: datetime,
    ) -> None:
        """Replace a case's published fields."""
        result = await conn.execute(
            update(cases)
            .where(cases.c.id == case_id)
            .values(title=title, description=description, charges=charges, public=public, updated_at=now)
        )
        if not result.rowcount:
            raise CaseNotFound(case_id)

    async def public_hearings_between(
        self, conn: AsyncConnection, low: datetime, high: datetime, now: datetime
    ) -> list[Hearing]:
        """Return scheduled hearings of public cases starting in (low, high] and not yet."""
        rows = await conn.execute(
            _hearing_select().where(
                cases.c.public.is_(True),
                hearings.c.status == "scheduled",
                hearings.c.starts_at > low,
                hearings.c.starts_at <= high,
                hearings.c.starts_at > now,
            )
        )
        return [_hearing(r) for r in rows]

    async def public_cases(self, conn: AsyncConnection) -> list[Case]:
        """Return open public cases, newest first."""
        rows = await conn.execute(
            select(cases)
            .where(cases.c.public.is_(True), cases.c.status == "open")
            .order_by(cases.c.id.desc())
        )
        return [Case(r.id, r.title, r.description, r.charges, True, r.status) for r in rows]

    async def open_cases(self, conn: AsyncConnection, limit: int) -> list[Case]:
        """Return open cases, public and private, newest first (for coordinators to pick from)."""
        rows = await conn.execute(
            select(cases).where(cases.c.status == "open").order_by(cases.c.id.desc()).limit(limit)
        )
        return [Case(r.id, r.title, r.description, r.charges, r.public, r.status) for r in rows]

    async def set_case_status(self, conn: AsyncConnection, case_id: int, status: str, now: datetime) -> None:
        """Open or close a case."""
        result = await conn.execute(
            update(cases).where(cases.c.id == case_id).values(status=status, updated_at=now)
        )
        if not result.rowcount:
            raise CaseNotFound(case_id)

    async def add_hearing(
        self,
        conn: AsyncConnection,
        case_id: int,
        starts_at: datetime,
        court: str,
        address: str,
        details: str | None,
        note: str | None,
        now: datetime,
    ) -> int:
        """Insert a hearing; raise HearingExists if the case has one at that time."""
        try:
            async with conn.begin_nested():
                result = await conn.execute(
                    insert(hearings).values(
                        case_id=case_id,
                        starts_at=starts_at,
                        court=court,
                        address=address,
                        details=details,
                        note=note,
                        status="scheduled",
                        sequence=0,
                        created_at=now,
                        updated_at=now,
                    )
                )
        except IntegrityError:
            raise HearingExists(case_id) from None
        return new_id(result)

    async def hearing(self, conn: AsyncConnection, hearing_id: int) -> Hearing:
        """Return a hearing, or raise CaseNotFound."""
        row = (await conn.execute(_hearing_select().where(hearings.c.id == hearing_id))).first()
        if row is None:
            raise CaseNotFound(hearing_id)
        return _hearing(row)

    async def hearings_of(self, conn: AsyncConnection, case_id: int) -> list[Hearing]:
        """Return a case's hearings in time order."""
        rows = await conn.execute(
            _hearing_select().where(hearings.c.case_id == case_id).order_by(hearings.c.starts_at)
        )
        return [_hearing(r) for r in rows]

    async def change_hearing(
        self, conn: AsyncConnection, hearing_id: int, now: datetime, **values: Any
    ) -> Hearing:
        """Change a hearing and raise its sequence; return it as it is now."""
        try:
            async with conn.begin_nested():
                await conn.execute(
                    update(hearings)
                    .where(hearings.c.id == hearing_id)
                    .values(sequence=hearings.c.sequence + 1, updated_at=now, **values)
                )
        except IntegrityError:
            raise HearingExists(hearing_id) from None
        return await self.hearing(conn, hearing_id)

    async def upcoming_for(
        self, conn: AsyncConnection, case_ids: Sequence[int], now: datetime, *, with_cancelled: bool = False
    ) -> list[Hearing]:
        """Return scheduled (and, if asked, cancelled) hearings of these cases that have not started."""
        if not case_ids:
            return []
        statuses = ("scheduled", "cancelled") if with_cancelled else ("scheduled",)
        rows = await conn.execute(
            _hearing_select()
            .where(
                hearings.c.case_id.in_(case_ids), hearings.c.status.in_(statuses), hearings.c.starts_at > now
            )
            .order_by(hearings.c.starts_at)
        )
        return [_hearing(r) for r in rows]

    async def hearings_to_pick(self, conn: AsyncConnection, since: datetime, limit: int) -> list[Hearing]:
        """Return scheduled hearings of open cases from `since` on, soonest first (for coordinators to pick
        from: the recent past ones are those waiting for an outcome)."""
        rows = await conn.execute(
            _hearing_select()
            .where(cases.c.status == "open", hearings.c.status == "scheduled", hearings.c.starts_at >= since)
            .order_by(hearings.c.starts_at, hearings.c.id)
            .limit(limit)
        )
        return [_hearing(r) for r in rows]

    async def purge_attendance(self, conn: AsyncConnection, before: datetime) -> int:
        """Delete pledges to attend hearings that started before `before`: they link people to cases."""
        past = select(hearings.c.id).where(hearings.c.starts_at < before).scalar_subquery()
        result = await conn.execute(delete(attendance).where(attendance.c.hearing_id.in_(past)))
        return result.rowcount or 0

    async def follow(
        self, conn: AsyncConnection, case_id: int, follower: str, chat: bytes, now: datetime
    ) -> bool:
        """Follow a case (idempotent); return False if already following."""
        stmt = insert_or(conn, follows).values(case_id=case_id, follower=follower, chat=chat, created_at=now)
        result = await conn.execute(stmt.on_conflict_do_nothing())
        return bool(result.rowcount)

    async def unfollow(self, conn: AsyncConnection, case_id: int, follower: str) -> bool:
        """Stop following; return False if not following."""
        result = await conn.execute(
            delete(follows).where(follows.c.case_id == case_id, follows.c.follower == follower)
        )
        return bool(result.rowcount)

    async def followed(self, conn: AsyncConnection, follower: str) -> list[Case]:
        """Return the cases a person follows."""
        rows = await conn.execute(
            select(cases).join(follows, follows.c.case_id == cases.c.id).where(follows.c.follower == follower)
        )
        return [Case(r.id, r.title, r.description, r.charges, bool(r.public), r.status) for r in rows]

    async def followers(self, conn: AsyncConnection, case_id: int) -> list[Follower]:
        """Return everyone following a case, with what is needed to write to them."""
        rows = await conn.execute(
            _follower_select().where(
                follows.c.case_id == case_id, or_(users.c.active.is_(None), users.c.active.is_(True))
            )
        )
        return [Follower(r.follower, r.chat, r.language, r.offsets, r.timezone) for r in rows]

    async def forget_follower(self, conn: AsyncConnection, follower: str) -> None:
        """Delete a person's follows, attendance and preferences (/forget)."""
        await conn.execute(delete(follows).where(follows.c.follower == follower))
        await conn.execute(delete(attendance).where(attendance.c.attendee == follower))
        await conn.execute(delete(reminder_prefs).where(reminder_prefs.c.pseudonym == follower))

    async def attend(self, conn: AsyncConnection, hearing_id: int, attendee: str, now: datetime) -> None:
        """Record that someone will attend (once)."""
        stmt = insert_or(conn, attendance).values(hearing_id=hearing_id, attendee=attendee, at=now)
        await conn.execute(stmt.on_conflict_do_nothing())

    async def clear_attendance(self, conn: AsyncConnection, hearing_id: int) -> None:
        """Forget pledges to attend (the hearing moved to another time)."""
        await conn.execute(delete(attendance).where(attendance.c.hearing_id == hearing_id))

    async def attendance_count(self, conn: AsyncConnection, hearing_id: int) -> int:
        """Count who said they will attend."""
        stmt = select(func.count()).where(attendance.c.hearing_id == hearing_id)
        return int((await conn.execute(stmt)).scalar() or 0)

    async def offsets(self, conn: AsyncConnection, pseudonym: str) -> str | None:
        """Return a person's reminder offsets, or None for the organisation's default."""
        stmt = select(reminder_prefs.c.offsets).where(reminder_prefs.c.pseudonym == pseudonym)
        return (await conn.execute(stmt)).scalar()

    async def set_offsets(self, conn: AsyncConnection, pseudonym: str, offsets: str) -> None:
        """Store a person's reminder offsets."""
        stmt = insert_or(conn, reminder_prefs).values(pseudonym=pseudonym, offsets=offsets)
        await conn.execute(
            stmt.on_conflict_do_update(index_elements=[reminder_prefs.c.pseudonym], set_={"offsets": offsets})
        )

    async def due_candidates(
        self,
        conn: AsyncConnection,
        windows: Sequence[tuple[datetime, datetime]],
        now: datetime,
        chunk: int = 1000,
    ) -> AsyncIterator[list[DueCandidate]]:
        """Yield, in chunks, followers of scheduled hearings that start in any of these windows and not yet.

        Streamed: ten thousand reminders due at once never sit in memory together.
        """
        if not windows:
            return
        in_window = or_(
            *(and_(hearings.c.starts_at > low, hearings.c.starts_at <= high) for low, high in windows)
        )
        stmt = (
            _hearing_select()
            .add_columns(
                follows.c.follower, follows.c.chat, reminder_prefs.c.offsets, _language(), users.c.timezone
            )
            .join(follows, follows.c.case_id == hearings.c.case_id)
            .outerjoin(reminder_prefs, reminder_prefs.c.pseudonym == follows.c.follower)
            .outerjoin(users, users.c.pseudonym == follows.c.follower)
            .where(
                hearings.c.status == "scheduled",
                hearings.c.starts_at > now,
                in_window,
                cases.c.status == "open",
                or_(users.c.active.is_(None), users.c.active.is_(True)),
            )
        )
        result = await conn.stream(stmt)
        async for rows in result.partitions(chunk):
            yield [
                DueCandidate(_hearing(r), Follower(r.follower, r.chat, r.language, r.offsets, r.timezone))
                for r in rows
            ]


def _language() -> Any:
    return func.coalesce(users.c.language, users.c.telegram_language).label("language")


def _follower_select() -> Any:
    return (
        select(follows.c.follower, follows.c.chat, reminder_prefs.c.offsets, _language(), users.c.timezone)
        .outerjoin(reminder_prefs, reminder_prefs.c.pseudonym == follows.c.follower)
        .outerjoin(users, users.c.pseudonym == follows.c.follower)
    )


def _hearing_select() -> Any:
    return select(
        hearings.c.id,
        hearings.c.case_id,
        cases.c.title.label("case_title"),
        hearings.c.starts_at,
        hearings.c.court,
        hearings.c.address,
        hearings.c.details,
        hearings.c.note,
        hearings.c.status,
        hearings.c.sequence,
        hearings.c.outcome,
    ).join(cases, cases.c.id == hearings.c.case_id)


def _hearing(row: Row[Any]) -> Hearing:
    return Hearing(
        id=row.id,
        case_id=row.case_id,
        case_title=row.case_title,
        starts_at=row.starts_at,
        court=row.court,
        address=row.address,
        details=row.details,
        note=row.note,
        status=row.status,
        sequence=row.sequence,
        outcome=row.outcome,
    )
