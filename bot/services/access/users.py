"""Who is talking to the bot: pseudonyms, languages and bootstrap admins."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncConnection

from bot.domain.errors import BadInput
from bot.runtime.clock import Clock
from bot.security import Pseudonymizer
from messages import LANGUAGES
from storage.database import Database
from storage.users import User, UserRepository

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

    def __init__(
        self,
        db: Database,
        repo: UserRepository,
        pseudonyms: Pseudonymizer,
        clock: Clock,
        default_language: str,
    ) -> None:
        self._db = db
        self._repo = repo
        self._pseudonyms = pseudonyms
        self._clock = clock
        self._default_language = default_language

    async def seen(self, telegram_id: int, telegram_language: str | None) -> Profile:
        """Remember that this person wrote (creating them if new) and return their profile."""
        pseudonym = self._pseudonyms.of_user(telegram_id)
        code = _supported(telegram_language)
        async with self._db.read() as conn:
            user = await self._repo.get(conn, pseudonym)
        # Write only when something changed: most updates come from people the bot already knows.
        if user is None or not user.active or user.telegram_language != code:
            async with self._db.write() as conn:
                user = await self._repo.touch(conn, pseudonym, code, self._clock.now())
        return self._profile(user)

    async def choose_language(self, telegram_id: int, language: str) -> Profile:
        """Store the language the person picked."""
        if language not in LANGUAGES:
            raise UnknownLanguage(language)
        pseudonym = self._pseudonyms.of_user(telegram_id)
        now = self._clock.now()
        async with self._db.write() as conn:
            if await self._repo.get(conn, pseudonym) is None:
                await self._repo.touch(conn, pseudonym, None, now)
            await self._repo.set_language(conn, pseudonym, language, now)
            user = await self._repo.get(conn, pseudonym)
        if user is None:
            raise RuntimeError("the user row vanished inside its own transaction")
        return self._profile(user)

    async def choose_timezone(self, telegram_id: int, zone: str) -> None:
        """Store the time zone the person picked (one of TIMEZONES)."""
        if zone not in TIMEZONES:
            raise UnknownLanguage(zone)
        pseudonym = self._pseudonyms.of_user(telegram_id)
        now = self._clock.now()
        async with self._db.write() as conn:
            if await self._repo.get(conn, pseudonym) is None:
                await self._repo.touch(conn, pseudonym, None, now)
            await self._repo.set_timezone(conn, pseudonym, zone, now)

    async def bootstrap_admins(
        self,
        telegram_ids: Iterable[int],
        on_removed: Callable[[AsyncConnection, str], Awaitable[None]] | None = None,
    ) -> list[str]:
        """Make exactly the ids from settings admins (at every start): grant the role to each, and take it
        from anyone no longer listed. Return the pseudonyms whose admin role was taken away.

        `on_removed` runs for each of them in the same transaction (audit, retire, withdraw): a crash never
        leaves a role taken away with the rest of a revocation undone."""
        now = self._clock.now()
        wanted = {self._pseudonyms.of_user(telegram_id) for telegram_id in telegram_ids}
        async with self._db.write() as conn:
            for pseudonym in sorted(wanted):
                await self._repo.ensure_exists(conn, pseudonym, now)
                await self._repo.grant(conn, pseudonym, "admin", now)
            removed = [p for p in await self._repo.holders(conn, "admin") if p not in wanted]
            for pseudonym in removed:
                await self._repo.revoke(conn, pseudonym, "admin")
                if on_removed is not None:
                    await on_removed(conn, pseudonym)
        return removed

    def _profile(self, user: User) -> Profile:
        language = user.language or user.telegram_language or self._default_language
        return Profile(pseudonym=user.pseudonym, language=language, roles=user.roles)


def _supported(code: str | None) -> str | None:
    if not code:
        return None
    base = code.replace("_", "-").split("-")[0].lower()
    return base if base in LANGUAGES else None
