"""An identity a clone cannot fake: the person's safety word, and which usernames are the organisation's bots.

The safety word is set, changed or cleared with /safeword and shown at the top of sensitive screens.

A clone of the bot cannot show it: it lives sealed in this bot's database (bound to the person's pseudonym)
and reaches only that person's own chat. Looking it up reads the person's own row by the pseudonym of whoever
is talking or being written to; it writes nothing, so an anonymous report gains no link to its author.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from bot.domain.identity import bot_username, normalise_safeword, official_usernames
from bot.security.bindings import safeword_binding
from bot.security.crypto import DecryptionError
from bot.services.core import Core
from messages.identity_screens import safeword_header
from storage.users import UserRepository


class SafewordService:
    """Stores safety words sealed under the data key and puts them at the top of sensitive texts."""

    def __init__(self, core: Core, *, repo: UserRepository) -> None:
        self._core = core
        self._repo = repo

    async def choose(self, telegram_id: int, raw: str) -> None:
        """Set or change the person's safety word (BadSafeword when it cannot be used as it is)."""
        word = normalise_safeword(raw)
        pseudonym = self._core.pseudonyms.of_user(telegram_id)
        now = self._core.clock.now()
        async with self._core.unit_of_work() as uow:
            if await self._repo.get(uow.conn, pseudonym) is None:
                await self._repo.touch(uow.conn, pseudonym, None, now)
            sealed = self._core.cipher.encrypt_text(word, binding=safeword_binding(pseudonym))
            await self._repo.set_safeword(uow.conn, pseudonym, sealed)
            await uow.commit()

    async def clear(self, telegram_id: int) -> bool:
        """Remove the person's safety word; False if they had none."""
        pseudonym = self._core.pseudonyms.of_user(telegram_id)
        async with self._core.unit_of_work() as uow:
            had = await self._repo.safeword(uow.conn, pseudonym) is not None
            if had:
                await self._repo.set_safeword(uow.conn, pseudonym, None)
            await uow.commit()
        return had

    async def of_person(self, telegram_id: int) -> str | None:
        """Return the safety word of the person talking to the bot, or None."""
        pseudonym = self._core.pseudonyms.of_user(telegram_id)
        async with self._core.db.read() as conn:
            return await self.of_pseudonym(conn, pseudonym)

    async def header(self, telegram_id: int, language: str) -> str:
        """Return the line that goes at the top of a sensitive screen for this person ("" without a word)."""
        return safeword_header(self._core.texts, language, await self.of_person(telegram_id))

    async def of_pseudonym(self, conn: AsyncConnection, pseudonym: str | None) -> str | None:
        """Return a person's safety word in the caller's transaction, or None (also when it does not open)."""
        if pseudonym is None:
            return None
        sealed = await self._repo.safeword(conn, pseudonym)
        return self._open(pseudonym, sealed)

    async def of_many(self, conn: AsyncConnection, pseudonyms: list[str]) -> dict[str, str]:
        """Return the safety words of these people (those who set one), in one query."""
        sealed = await self._repo.safewords(conn, pseudonyms)
        words = {p: self._open(p, value) for p, value in sealed.items()}
        return {p: word for p, word in words.items() if word is not None}

    async def headed_for(
        self, conn: AsyncConnection, pseudonym: str | None, language: str, params: Mapping[str, Any]
    ) -> dict[str, Any]:
        """Return Bot API params with the person's safety word at the top of their text or caption."""
        return headed(self._core, language, await self.of_pseudonym(conn, pseudonym), params)

    def _open(self, pseudonym: str, sealed: bytes | None) -> str | None:
        if sealed is None:
            return None
        try:
            return self._core.cipher.decrypt_text(sealed, binding=safeword_binding(pseudonym))
        except DecryptionError:
            # A word that no longer opens shows nothing: the screen still goes out, and the person sees
            # their word is missing and sets it again. Never a reason to hold a reminder or an SOS screen.
            return None


def headed(core: Core, language: str, word: str | None, params: Mapping[str, Any]) -> dict[str, Any]:
    """Return Bot API params with `word` at the top of their text (or caption); unchanged without one."""
    out = dict(params)
    header = safeword_header(core.texts, language, word)
    if not header:
        return out
    for field in ("text", "caption"):
        if isinstance(out.get(field), str):
            out[field] = header + out[field]
            return out
    return out


@dataclass(frozen=True)
class Verdict:
    """What /verify found: the name asked about (lower case, no @), whether it is ours, and ours."""

    name: str
    official: bool
    names: tuple[str, ...]


class OfficialBots:
    """The organisation's bots: the running bot's own username (from getMe), its backups' (from getMe) and
    JARCHY_OFFICIAL_BOTS."""

    def __init__(self, listed: Iterable[str], *, fleet: Mapping[int, str] | None = None) -> None:
        """`fleet`: the usernames of the configured bots (main and backups) as getMe gave them."""
        self._listed = tuple(listed)
        self._fleet = fleet if fleet is not None else {}

    def names(self, own: str | None) -> tuple[str, ...]:
        """Return the official usernames, the running bot's first."""
        return official_usernames(own, (*self._fleet.values(), *self._listed))

    def check(self, own: str | None, raw: str) -> Verdict:
        """Tell whether `raw` (with or without @, any case, or a t.me link) names one of the organisation's
        bots; BadUsername when it is no username at all."""
        name = bot_username(raw)
        names = self.names(own)
        return Verdict(name, name in names, names)
