"""A bot not in use, polled only to learn who pressed Start in it (and who blocked it).

Its updates are never stored: what a person sends it is answered with where to write instead (the bot in
use), and only the fact that this bot can now write to them is recorded (BackupService, sealed). The
offset is confirmed after the batch is handled, so a crash repeats a batch rather than losing one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from bot.runtime.clock import Clock
from bot.runtime.fleet import ACTIVE_BOT, Fleet, FleetBot
from bot.runtime.telegram_api import NotSent, OutcomeUnknown
from storage.database import Database
from storage.inbox import OFFSET_KEY
from storage.state import StateRepository

log = logging.getLogger(__name__)

# A person who keeps writing to a standby bot hears where to go at most this often.
ANSWER_EVERY_S = 60.0
REFUSED_WAIT_S = 60.0

# (bot id, Telegram id, Telegram's language) → the text to answer with, or None for no answer.
Started = Callable[[int, int, str | None], Awaitable[str | None]]
Left = Callable[[int, int], Awaitable[None]]


def offset_key(bot: FleetBot) -> str:
    """Return the bot_state key of a bot's getUpdates offset (the main bot keeps the historical one)."""
    return OFFSET_KEY if bot.main else f"{OFFSET_KEY}:{bot.bot_id}"


class StandbyListener:
    """Long-polls one standby bot while `when()` holds (one instance of a cluster listens)."""

    def __init__(
        self,
        *,
        fleet: Fleet,
        bot: FleetBot,
        db: Database,
        state: StateRepository,
        clock: Clock,
        started: Started,
        left: Left,
        polling_timeout_s: int = 30,
    ) -> None:
        self._fleet = fleet
        self._bot = bot
        self._db = db
        self._state = state
        self._clock = clock
        self._started = started
        self._left = left
        self._timeout = polling_timeout_s
        self._stopping = asyncio.Event()
        self._answered: dict[int, float] = {}

    def stop(self) -> None:
        """Return after the current poll."""
        self._stopping.set()

    async def run(self, when: Callable[[], bool] = lambda: True) -> None:
        """Poll until stopped; a failure waits and tries again (a standby bot is never worth a crash)."""
        backoff = 1.0
        while not self._stopping.is_set():
            if not when():
                await self._pause(1.0)
                continue
            try:
                await self._until_stopping(self.poll_once())
                backoff = 1.0
            except (NotSent, OutcomeUnknown) as error:
                log.warning("%s: getUpdates failed (%s); retrying in %.0f s", self._bot.label, error, backoff)
                await self._pause(backoff)
                backoff = min(backoff * 2, 60.0)
            except Exception:
                log.exception("%s: handling its updates failed; retrying in %.0f s", self._bot.label, backoff)
                await self._pause(backoff)
                backoff = min(backoff * 2, 60.0)

    async def poll_once(self, timeout_s: int | None = None) -> int:
        """Fetch one batch, handle it, confirm it; return how many updates came."""
        key = offset_key(self._bot)
        async with self._db.read() as conn:
            raw = await self._state.get(conn, key)
        params: dict[str, Any] = {
            "timeout": self._timeout if timeout_s is None else timeout_s,
            "allowed_updates": ["message", "my_chat_member"],
        }
        if raw is not None and raw.lstrip("-").isdigit():
            params["offset"] = int(raw)
        api = self._fleet.api(self._bot.bot_id)
        result = await api.call("getUpdates", params, read_timeout=params["timeout"] + 15)
        if not result.ok:
            if result.error_code in (401, 404):
                # Recorded (and cleared) by the fleet watch alone, in memory and in the database alike.
                log.error("%s: Telegram refuses its token (%s)", self._bot.label, result.error_code)
                await self._pause(REFUSED_WAIT_S)
                return 0
            if result.error_code == 409:
                # A webhook set for it, or another poller: a standby bot takes no webhook.
                await api.call("deleteWebhook", {"drop_pending_updates": False})
                return 0
            raise NotSent(f"getUpdates failed: {result.error_code} {result.description}")
        updates = [
            u for u in result.result or [] if isinstance(u, dict) and isinstance(u.get("update_id"), int)
        ]
        if not updates:
            return 0
        async with self._db.read() as conn:
            in_use = await self._state.get(conn, ACTIVE_BOT)
        if in_use == str(self._bot.bot_id):
            # This bot was just put in use (the run is about to start again on it): its updates are
            # the new run's to store and handle. Not confirmed here, they come again there. (The loop
            # goes on: a task of the run that ends would end the run, and the watch restarts it.)
            await self._pause(1.0)
            return 0
        for update in updates:
            await self._handle(update)
        async with self._db.write() as conn:
            await self._state.put(conn, key, str(max(u["update_id"] for u in updates) + 1))
        return len(updates)

    async def _handle(self, update: dict[str, Any]) -> None:
        message = update.get("message")
        if isinstance(message, dict):
            chat, person = message.get("chat") or {}, message.get("from") or {}
            if chat.get("type") != "private" or person.get("is_bot") or not isinstance(person.get("id"), int):
                return
            answer = await self._started(self._bot.bot_id, person["id"], _language(person))
            if answer is not None:
                await self._answer(person["id"], answer)
            return
        change = update.get("my_chat_member")
        if isinstance(change, dict) and (change.get("chat") or {}).get("type") == "private":
            person = change.get("from") or {}
            status = (change.get("new_chat_member") or {}).get("status")
            if not isinstance(person.get("id"), int):
                return
            if status == "kicked":
                await self._left(self._bot.bot_id, person["id"])
            elif status == "member":
                await self._started(self._bot.bot_id, person["id"], _language(person))

    async def _answer(self, chat_id: int, text: str) -> None:
        now = self._clock.monotonic()
        if now - self._answered.get(chat_id, -ANSWER_EVERY_S) < ANSWER_EVERY_S:
            return
        self._answered = {c: t for c, t in self._answered.items() if now - t < ANSWER_EVERY_S}
        self._answered[chat_id] = now
        # A courtesy, sent once: the person's start is recorded whether or not it arrives.
        with contextlib.suppress(NotSent, OutcomeUnknown):
            await self._fleet.api(self._bot.bot_id).call(
                "sendMessage", {"chat_id": chat_id, "text": text, "parse_mode": "HTML"}
            )

    async def _pause(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), timeout=seconds)

    async def _until_stopping(self, work: Awaitable[int]) -> None:
        task = asyncio.ensure_future(work)
        stopping = asyncio.create_task(self._stopping.wait())
        try:
            await asyncio.wait({task, stopping}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopping.cancel()
        if task.done():
            task.result()
            return
        # Stopping mid-poll: nothing of this batch was confirmed, so it comes again next time.
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def _language(person: dict[str, Any]) -> str | None:
    code = person.get("language_code")
    return code if isinstance(code, str) else None
