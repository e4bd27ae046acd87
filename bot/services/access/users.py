"""Who is talking to the bot: pseudonyms, languages and bootstrap admins."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncConnection

from bot.domain.errors import BadInput
from bot.services.core import Core
from messages import LANGUAGES
from storage.users import User, UserRepository, cache_of

# Time zones of the region the bot serves, offered by /timezone (the organisation's zone stays the default).
TIMEZONES: tuple[str, ...] = (
    "Asia/Bishkek", "Asia/Tashkent", "Asia/Almaty", "Asia/Dushanbe", "Asia/Ashgabat", "Europe/Moscow", "UTC",
)  # fmt: skip


class UnknownLanguage(BadInput, ValueError):
    """A language (or time zone) the bot has no catalog for: an old or forged button."""

    def __init__(self, code: str) -> None:
        super().__init__("callback.stale")
        self.code = code


@dataclass(frozen=True)
class Profile:
    """What handlers need to know about the person on the other side."""

    pseudonym: str
    language: str
    roles: frozenset[str]


class UserService:
    """Records users by pseudonym and resolves the language to speak with them."""

    def __init__(self, core: Core, *, repo: UserRepository) -> None:
        self._core = core
        self._repo = repo

    async def seen(self, telegram_id: int, telegram_language: str | None) -> Profile:
        """Remember that this person wrote (creating them if new) and return their profile."""
        pseudonym = self._core.pseudonyms.of_user(telegram_id)
        code = _supported(telegram_language)
        # This runs for every update: a recent copy of the row spares the read (storage.users.UserCache).
        cache = cache_of(self._core.db.engine.sync_engine)
        now = self._core.clock.now()
        user = cache.recent(pseudonym, now)
        if user is None:
            epoch = cache.epoch
            async with self._core.db.read() as conn:
                user = await self._repo.get(conn, pseudonym)
            if user is not None:
                cache.keep(user, now, epoch)
        # Write only when something changed: most updates come from people the bot already knows.
        if user is None or not user.active or user.telegram_language != code:
            async with self._core.unit_of_work() as uow:
                user = await self._repo.touch(uow.conn, pseudonym, code, now)
                await uow.commit()
        return self._profile(user)

    async def choose_language(self, telegram_id: int, language: str) -> Profile:
        """Store the language the person picked."""
        if language not in LANGUAGES:
            raise UnknownLanguage(language)
        pseudonym = self._core.pseudonyms.of_user(telegram_id)
        now = self._core.clock.now()
        async with self._core.unit_of_work() as uow:
            if await self._repo.get(uow.conn, pseudonym) is None:
                await self._repo.touch(uow.conn, pseudonym, None, now)
            await self._repo.set_language(uow.conn, pseudonym, language, now)
            user = await self._repo.get(uow.conn, pseudonym)
            await uow.commit()
        if user is None:
            raise RuntimeError("the user row vanished inside its own transaction")
        return self._profile(user)

    async def choose_timezone(self, telegram_id: int, zone: str) -> None:
        """Store the time zone the person picked (one of TIMEZONES)."""
        if zone not in TIMEZONES:
            raise UnknownLanguage(zone)
        pseudonym = self._core.pseudonyms.of_user(telegram_id)
        now = self._core.clock.now()
        async with self._core.unit_of_work() as uow:
            if await self._repo.get(uow.conn, pseudonym) is None:
                await self._repo.touch(uow.conn, pseudonym, None, now)
            await self._repo.set_timezone(uow.conn, pseudonym, zone, now)
            await uow.commit()

    async def bootstrap_admins(
        self,
        telegram_ids: Iterable[int],
        on_removed: Callable[[AsyncConnection, str], Awaitable[None]] | None = None,
    ) -> list[str]:
        """Make exactly the ids from settings admins (at every start): grant the role to each, and take it
        from anyone no longer listed. Return the pseudonyms whose admin role was taken away.

        `on_removed` runs for each of them in the same transaction (audit, retire, withdraw): a crash never
        leaves a role taken away with the rest of a revocation undone."""
        now = self._core.clock.now()
        wanted = {self._core.pseudonyms.of_user(telegram_id) for telegram_id in telegram_ids}
        async with self._core.unit_of_work() as uow:
            for pseudonym in sorted(wanted):
                await self._repo.ensure_exists(uow.conn, pseudonym, now)
                await self._repo.grant(uow.conn, pseudonym, "admin", now)
            removed = [p for p in await self._repo.holders(uow.conn, "admin") if p not in wanted]
            for pseudonym in removed:
                await self._repo.revoke(uow.conn, pseudonym, "admin")
                if on_removed is not None:
                    await on_removed(uow.conn, pseudonym)
            await uow.commit()
        return removed

    def _profile(self, user: User) -> Profile:
        language = user.language or user.telegram_language or self._core.language
        return Profile(pseudonym=user.pseudonym, language=language, roles=user.roles)


def _supported(code: str | None) -> str | None:
    if not code:
        return None
    base = code.replace("_", "-").split("-")[0].lower()
    return base if base in LANGUAGES else None
