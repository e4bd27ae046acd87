"""Users and their roles, known only by pseudonym."""

from __future__ import annotations

import weakref
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, delete, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.ext.asyncio import AsyncConnection

from storage.database import after_transaction
from storage.dialect import Prebuilt, insert_or
from storage.schema import user_roles, users

ROLES = ("admin", "coordinator")
# How long a copy of a user's row may be used without reading it again. Writes of this process drop every
# copy at once; this bounds how long a change made by another process (the command line, a second
# instance) goes unseen. Roles from a copy only shape what is shown: every coordinator action checks the
# role again in the database, in its own transaction (bot.services.access.roles).
CACHE_TTL = timedelta(seconds=15)
CACHE_SIZE = 4096
_CACHE_MARK = "jarchy_users_changing"


@dataclass(frozen=True)
class User:
    """A person the bot has talked to."""

    pseudonym: str
    language: str | None
    telegram_language: str | None
    active: bool
    roles: frozenset[str]
    timezone: str | None = None

    @property
    def spoken(self) -> str | None:
        """Return the language to write to them in: the one they chose, else Telegram's (if supported)."""
        return self.language or self.telegram_language


class UserCache:
    """Recent copies of users' rows, by pseudonym, for the read every update makes.

    A write to someone's row or roles drops their copy twice: when it is written (so no copy outlives it) and
    when its transaction has ended (a read that began before the commit saw the old row; it may not put
    it back). A copy is only kept if no write happened or is under way since its read began (`epoch`).
    """

    def __init__(self) -> None:
        self._copies: OrderedDict[str, tuple[datetime, User]] = OrderedDict()
        self._epoch = 0
        self._writing = 0

    @property
    def epoch(self) -> int:
        """Take this before a read; hand it to `keep` with what the read found."""
        return self._epoch

    def recent(self, pseudonym: str, now: datetime) -> User | None:
        """Return the copy of this person's row if it is fresh enough."""
        copy = self._copies.get(pseudonym)
        if copy is None:
            return None
        if now - copy[0] > CACHE_TTL or now < copy[0]:
            del self._copies[pseudonym]
            return None
        self._copies.move_to_end(pseudonym)
        return copy[1]

    def keep(self, user: User, now: datetime, epoch: int) -> None:
        """Keep a copy of a row read while nothing changed (else drop it: it may be the old row)."""
        if self._writing or epoch != self._epoch:
            return
        copies = self._copies
        copies[user.pseudonym] = (now, user)
        copies.move_to_end(user.pseudonym)
        while len(copies) > CACHE_SIZE:
            copies.popitem(last=False)
        # Copies too old to be used go now, not when 4,096 newer ones have pushed them out: memory follows
        # the people of the last seconds (the oldest copies are at the front).
        while copies:
            taken_at = next(iter(copies.values()))[0]
            if now - taken_at <= CACHE_TTL and taken_at <= now:
                break
            copies.popitem(last=False)

    def __len__(self) -> int:
        return len(self._copies)

    def writing(self, conn: AsyncConnection, pseudonyms: Iterable[str]) -> None:
        """A transaction on `conn` changes these people's rows or roles: drop their copies now and once it
        has ended; keep no new copy of anyone's while it lasts."""
        names = set(pseudonyms)
        self._forget(names)
        info = conn.info  # the connection's, kept across transactions: the mark is taken out at the end
        changed: set[str] | None = info.get(_CACHE_MARK)
        if changed is not None:
            changed |= names  # this transaction already said so; the end drops these too
            return
        changed = info[_CACHE_MARK] = names
        self._writing += 1

        def ended() -> None:
            info.pop(_CACHE_MARK, None)
            self._writing -= 1
            self._forget(changed)

        after_transaction(conn, ended)

    def _forget(self, pseudonyms: set[str]) -> None:
        for pseudonym in pseudonyms:
            self._copies.pop(pseudonym, None)
        self._epoch += 1


# One cache per database (every repository of a process writing to it drops its copies), none kept alive
# by it once the engine is gone.
_CACHES: weakref.WeakKeyDictionary[Engine, UserCache] = weakref.WeakKeyDictionary()


def cache_of(engine: Engine) -> UserCache:
    """Return the cache of users' rows read from this engine's database."""
    cache = _CACHES.get(engine)
    if cache is None:
        cache = _CACHES[engine] = UserCache()
    return cache


def _touch(insert: Any) -> Any:
    stmt = insert(users).values(
        pseudonym=bindparam("person"),
        telegram_language=bindparam("language_told"),
        active=True,
        created_at=bindparam("day"),
        updated_at=bindparam("day"),
    )
    return stmt.on_conflict_do_update(
        index_elements=[users.c.pseudonym],
        set_={
            "telegram_language": stmt.excluded.telegram_language,
            "active": True,
            "updated_at": stmt.excluded.updated_at,
        },
    )


# Built once: these run for nearly every update (storage.dialect.Prebuilt).
_TOUCH = Prebuilt(_touch)
_WITH_ROLES = (
    select(users, user_roles.c.role)
    .outerjoin(user_roles, user_roles.c.pseudonym == users.c.pseudonym)
    .where(users.c.pseudonym == bindparam("person"))
)


class UserRepository:
    """Reads and writes users and roles inside a caller's transaction; every write drops the copies of
    UserCache."""

    async def touch(
        self, conn: AsyncConnection, pseudonym: str, telegram_language: str | None, now: datetime
    ) -> User:
        """Create the user if new, remember Telegram's language, mark active again; return the user."""
        cache_of(conn.sync_engine).writing(conn, (pseudonym,))
        await conn.execute(
            _TOUCH(conn), {"person": pseudonym, "language_told": telegram_language, "day": _day(now)}
        )
        user = await self.get(conn, pseudonym)
        if user is None:
            raise RuntimeError("the user row vanished inside its own transaction")
        return user

    async def get(self, conn: AsyncConnection, pseudonym: str) -> User | None:
        """Return the user with their roles (one query: this runs for every update), or None."""
        rows = (await conn.execute(_WITH_ROLES, {"person": pseudonym})).all()
        if not rows:
            return None
        first = rows[0]
        return User(
            pseudonym=first.pseudonym,
            language=first.language,
            telegram_language=first.telegram_language,
            active=bool(first.active),
            roles=frozenset(r.role for r in rows if r.role is not None),
            timezone=first.timezone,
        )

    async def set_language(self, conn: AsyncConnection, pseudonym: str, language: str, now: datetime) -> None:
        """Store the language the user chose."""
        cache_of(conn.sync_engine).writing(conn, (pseudonym,))
        await conn.execute(
            update(users)
            .where(users.c.pseudonym == pseudonym)
            .values(language=language, updated_at=_day(now))
        )

    async def set_timezone(self, conn: AsyncConnection, pseudonym: str, zone: str, now: datetime) -> None:
        """Store the time zone the user chose."""
        cache_of(conn.sync_engine).writing(conn, (pseudonym,))
        await conn.execute(
            update(users).where(users.c.pseudonym == pseudonym).values(timezone=zone, updated_at=_day(now))
        )

    async def safeword(self, conn: AsyncConnection, pseudonym: str) -> bytes | None:
        """Return the person's sealed safety word, or None when they set none."""
        stmt = select(users.c.safeword).where(users.c.pseudonym == pseudonym)
        value: bytes | None = (await conn.execute(stmt)).scalar_one_or_none()
        return value

    async def safewords(self, conn: AsyncConnection, pseudonyms: list[str]) -> dict[str, bytes]:
        """Return the sealed safety words of those of these people who set one."""
        if not pseudonyms:
            return {}
        stmt = select(users.c.pseudonym, users.c.safeword).where(
            users.c.pseudonym.in_(pseudonyms), users.c.safeword.is_not(None)
        )
        return {row.pseudonym: row.safeword for row in await conn.execute(stmt)}

    async def set_safeword(self, conn: AsyncConnection, pseudonym: str, sealed: bytes | None) -> None:
        """Store (or, with None, clear) the person's sealed safety word.

        `updated_at` is left alone: it keeps only the day, and a change here says nothing anyone needs."""
        await conn.execute(update(users).where(users.c.pseudonym == pseudonym).values(safeword=sealed))

    async def mark_inactive(self, conn: AsyncConnection, pseudonyms: list[str], now: datetime) -> None:
        """Mark users who blocked the bot, so nothing more is queued for them."""
        if pseudonyms:
            cache_of(conn.sync_engine).writing(conn, pseudonyms)
            await conn.execute(
                update(users)
                .where(users.c.pseudonym.in_(pseudonyms))
                .values(active=False, updated_at=_day(now))
            )

    async def grant(
        self, conn: AsyncConnection, pseudonym: str, role: str, now: datetime, granted_by: str | None = None
    ) -> None:
        """Give a role (idempotent); the user row must exist."""
        cache_of(conn.sync_engine).writing(conn, (pseudonym,))
        if role not in ROLES:
            raise ValueError(f"unknown role {role!r}")
        stmt = insert_or(conn, user_roles).values(
            pseudonym=pseudonym, role=role, granted_at=now, granted_by=granted_by
        )
        await conn.execute(stmt.on_conflict_do_nothing())

    async def revoke(self, conn: AsyncConnection, pseudonym: str, role: str) -> None:
        """Take a role away."""
        cache_of(conn.sync_engine).writing(conn, (pseudonym,))
        await conn.execute(
            delete(user_roles).where(user_roles.c.pseudonym == pseudonym, user_roles.c.role == role)
        )

    async def holders(self, conn: AsyncConnection, role: str) -> list[str]:
        """Return everyone holding a role."""
        stmt = (
            select(user_roles.c.pseudonym).where(user_roles.c.role == role).order_by(user_roles.c.pseudonym)
        )
        return list((await conn.execute(stmt)).scalars())

    async def delete(self, conn: AsyncConnection, pseudonym: str) -> None:
        """Delete the user and (by cascade) their roles: /forget."""
        cache_of(conn.sync_engine).writing(conn, (pseudonym,))
        await conn.execute(delete(users).where(users.c.pseudonym == pseudonym))

    async def ensure_exists(self, conn: AsyncConnection, pseudonym: str, now: datetime) -> None:
        """Create a bare user row if missing (for bootstrap admins who have not written yet)."""
        cache_of(conn.sync_engine).writing(conn, (pseudonym,))
        stmt = insert_or(conn, users).values(
            pseudonym=pseudonym, active=True, created_at=_day(now), updated_at=_day(now)
        )
        await conn.execute(stmt.on_conflict_do_nothing())


def _day(now: datetime) -> datetime:
    # A person's row changes when they first write or pick a language: an exact time there, beside an
    # anonymous report received the same minute, would point at its author. The day is all anyone needs.
    return now.replace(hour=0, minute=0, second=0, microsecond=0)
