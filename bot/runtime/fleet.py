"""The organisation's bots: the main one and its prepared backups, which of them is in use, which answer.

Every bot runs over the same database and keys, so a person is the same pseudonym in each (Telegram ids
are the same in every bot). One bot is *in use* at a time: it takes the updates and sends what is queued;
the others stand by, answering only to learn who pressed Start in them (bot.runtime.standby). Which bot
is in use is a row in bot_state, so a switch survives a restart and every instance follows it.

A bot that answers 401 or 404 (revoked, deleted, banned) is *refused* from the first such answer; the time
is kept in bot_state so that "refused for N minutes" counts across restarts. Any good answer clears it.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection

from bot.domain.identity import bot_id_of
from bot.runtime.telegram_api import NotSent, OutcomeUnknown, TelegramApi
from bot.settings import SecretStr, Settings
from storage.database import Database
from storage.state import StateRepository

log = logging.getLogger(__name__)

ACTIVE_BOT = "active_bot"
REFUSED_PREFIX = "bot_refused:"
# `jarchy bot switch` asks for a switch here; the running bot (or the next start) makes it.
SWITCH_REQUEST = "bot_switch_request"


@dataclass(frozen=True)
class FleetBot:
    """One of the organisation's bots; `main` is JARCHY_BOT_TOKEN's, the others are backups."""

    bot_id: int
    token: SecretStr
    main: bool

    @property
    def label(self) -> str:
        """Name it in a log line without its token."""
        return f"{'main' if self.main else 'backup'} bot {self.bot_id}"


def fleet_bots(settings: Settings) -> tuple[FleetBot, ...]:
    """Return the main bot, then the backups in the order a switch tries them."""
    main = FleetBot(bot_id_of(settings.bot_token.get_secret_value()), settings.bot_token, True)
    backups = (FleetBot(bot_id_of(t.get_secret_value()), t, False) for t in settings.backup_bot_tokens)
    return (main, *backups)


def running_settings(settings: Settings, active_bot_id: int | None) -> Settings:
    """Return the settings a run uses: JARCHY_BOT_TOKEN's place taken by the bot in use.

    The main token stays reachable as the first of `fleet_bots(original)`; the runner keeps the original
    settings and hands these to the Application and the services.
    """
    if active_bot_id is None:
        return settings
    for bot in fleet_bots(settings):
        if bot.bot_id == active_bot_id and not bot.main:
            others = tuple(t for t in settings.backup_bot_tokens if t != bot.token)
            return replace(
                settings,
                bot_token=bot.token,
                backup_bot_tokens=(settings.bot_token, *others),
                main_bot_id=fleet_bots(settings)[0].bot_id,
            )
    return settings


class Fleet:
    """The bots of this run: which is in use, their usernames, which are refused, one API client each."""

    def __init__(self, settings: Settings, api: TelegramApi, *, connections: int = 4) -> None:
        """`settings` are the running ones (bot_token is the bot in use); `api` is its client."""
        bots = fleet_bots(settings)
        main_id = settings.main_bot_id or bots[0].bot_id
        self.bots = tuple(replace(b, main=b.bot_id == main_id) for b in bots)
        self.active = self.bots[0]
        self._settings = settings
        self._apis: dict[int, TelegramApi] = {self.active.bot_id: api}
        self._connections = connections
        self.usernames: dict[int, str] = {}
        self.refused: dict[int, datetime] = {}

    @property
    def enabled(self) -> bool:
        """Tell whether there is any backup at all (without one, nothing here changes how the bot runs)."""
        return len(self.bots) > 1

    @property
    def main(self) -> FleetBot:
        """Return JARCHY_BOT_TOKEN's bot (it reaches everyone who ever used the bot)."""
        return next(b for b in self.bots if b.main)

    def standby(self) -> tuple[FleetBot, ...]:
        """Return the bots not in use."""
        return tuple(b for b in self.bots if b.bot_id != self.active.bot_id)

    def by_id(self, bot_id: int) -> FleetBot | None:
        """Return one of the bots by its id."""
        return next((b for b in self.bots if b.bot_id == bot_id), None)

    def find(self, name: str) -> FleetBot | None:
        """Return the bot a person named: its id, @username, "main" or "backup" (the first backup)."""
        wanted = name.strip().lstrip("@").lower()
        if wanted == "main":
            return self.main
        if wanted == "backup":
            return next((b for b in self.bots if not b.main), None)
        for bot in self.bots:
            if str(bot.bot_id) == wanted or self.usernames.get(bot.bot_id, "").lower() == wanted:
                return bot
        return None

    def working(self, bot_id: int) -> bool:
        """Tell whether the bot's token is not refused (as far as this instance has heard)."""
        return bot_id not in self.refused

    def api(self, bot_id: int) -> TelegramApi:
        """Return the Bot API client of one of the bots (the bot in use: the services' own)."""
        client = self._apis.get(bot_id)
        if client is None:
            bot = self.by_id(bot_id)
            if bot is None:
                raise KeyError(bot_id)
            client = TelegramApi(
                self._settings.api_url,
                bot.token,
                connections=self._connections,
                proxy_url=self._settings.proxy_url,
            )
            self._apis[bot_id] = client
        return client

    def bot_of(self, api: TelegramApi) -> FleetBot | None:
        """Return the bot behind one of this fleet's clients."""
        return next((self.by_id(i) for i, client in self._apis.items() if client is api), None)

    def refuse(self, api: TelegramApi) -> FleetBot | None:
        """Note that Telegram refused the token of the bot behind `api` (a send answered 401/404)."""
        bot = self.bot_of(api)
        if bot is not None:
            self.refused.setdefault(bot.bot_id, datetime.now(UTC))
        return bot

    async def load_refused(self, conn: AsyncConnection, state: StateRepository) -> None:
        """Read which bots were refused since when (another run or instance saw it): a bot not known to
        answer is not chosen to send until it answers."""
        for bot in self.bots:
            raw = await state.get(conn, REFUSED_PREFIX + str(bot.bot_id))
            if raw is None:
                continue
            try:
                self.refused[bot.bot_id] = datetime.fromisoformat(raw)
            except ValueError:
                continue

    def secrets(self) -> list[str]:
        """Return every token, for the log filter."""
        return [b.token.get_secret_value() for b in self.bots]

    async def close(self) -> None:
        """Close the clients this fleet opened (not the one in use, which the services close)."""
        for bot_id, client in list(self._apis.items()):
            if bot_id != self.active.bot_id:
                await client.close()
        self._apis = {self.active.bot_id: self._apis[self.active.bot_id]}

    async def ask_me(self, bot_id: int) -> bool | None:
        """getMe for one bot: True answers (its username is kept), False refused (401/404), None unknown."""
        answer = await get_me(self.api(bot_id))
        if isinstance(answer, str):
            if answer:
                self.usernames[bot_id] = answer
            return True
        return answer


async def get_me(api: TelegramApi) -> str | bool | None:
    """getMe: the bot's username ("" if it gave none), False for a refused token (401/404), None for no
    answer."""
    try:
        answer = await api.call("getMe", {}, read_timeout=10.0)
    except (NotSent, OutcomeUnknown):
        return None
    if answer.ok and isinstance(answer.result, dict):
        username = answer.result.get("username")
        return username if isinstance(username, str) else ""
    return False if answer.error_code in (401, 404) else None


async def ask_username(settings: Settings, bot: FleetBot) -> str | bool | None:
    """getMe for one bot through a client of its own (the command line): its username, False for a refused
    token, None for no answer."""
    api = TelegramApi(settings.api_url, bot.token, connections=1, timeout=10.0, proxy_url=settings.proxy_url)
    try:
        answer = await get_me(api)
    finally:
        await api.close()
    return None if answer == "" else answer


def inbox_id_base(bot: FleetBot) -> int:
    """Return where a bot's updates are filed in the inbox: each bot numbers its own from wherever
    Telegram started it, so a backup in use files them above a base of its own (the main bot's stay as
    they were). Update ids stay far below 2**40; the base keeps the sum within a signed 64-bit column."""
    return 0 if bot.main else ((bot.bot_id % (2**22 - 1)) + 1) << 40


async def read_active_bot(settings: Settings) -> int | None:
    """Return the id of the bot in use as the database says (None: the main one, or no backups at all).

    Read before the Application is built, because its token is that bot's. A database that cannot be read
    yet (a fresh one before its first migration) means the main bot.
    """
    if not settings.backup_bot_tokens:
        return None
    url = make_url(settings.database_url)
    exists = bool(url.database) and await asyncio.to_thread(Path(str(url.database)).exists)
    if url.get_backend_name() == "sqlite" and not exists:
        # No file yet (a first start), or one `db copy --retire-source` removed: connecting would create
        # an empty one. The start itself says what is wrong, if anything.
        return None
    db = Database.connect(settings.database_url, busy_timeout_ms=settings.db_busy_timeout_ms)
    try:
        async with db.read() as conn:
            raw = await StateRepository().get(conn, ACTIVE_BOT)
    except SQLAlchemyError:
        return None
    finally:
        await db.dispose()
    if raw is None or not raw.isdigit():
        return None
    active = int(raw)
    if active not in {b.bot_id for b in fleet_bots(settings)}:
        # A backup taken out of the settings: the main bot runs, and says so.
        log.warning("the bot in use was %s, which is no longer configured; running the main bot", active)
        return None
    return active
