"""Put python-telegram-bot's own sends (direct replies) under the same limiter as the outbox."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any

from telegram.error import RetryAfter
from telegram.ext import BaseRateLimiter

from bot.runtime.outbox import chat_kind_of
from bot.runtime.ratelimit import SendLimiter

log = logging.getLogger(__name__)

GROUP_WAIT_S = 3.0
# A handler's replies that go ahead of every other reply (the SOS screens): pass as rate_limit_args.
URGENT: dict[str, Any] = {"urgent": True}

# Methods that put a message in a chat and so count against Telegram's limits.
_COUNTED = frozenset(
    {
        "sendMessage", "sendPhoto", "sendDocument", "sendVideo", "sendVoice", "sendAudio", "sendAnimation",
        "sendLocation", "sendMediaGroup", "sendSticker", "copyMessage", "copyMessages", "forwardMessage",
        "editMessageText", "editMessageCaption", "editMessageReplyMarkup", "editMessageMedia",
    }
)  # fmt: skip


class SharedRateLimiter(BaseRateLimiter[dict[str, Any]]):
    """Direct replies take a slot of the overall rate and honour 429 like the delivery worker.

    Into a group they wait for the group's slot like outbox sends (a group's 20 a minute are shared by
    everything the bot posts there). Into a private chat they do not: a person tapping through a form
    should not be slowed to one answer a second, but their sends are recorded so the outbox paces around
    them.
    """

    def __init__(self, limiter: SendLimiter, chat_key: Callable[[int | str], str | None]) -> None:
        self._limiter = limiter
        self._chat_key = chat_key

    async def initialize(self) -> None:
        """Nothing to open."""

    async def shutdown(self) -> None:
        """Nothing to close."""

    async def process_request(
        self,
        callback: Callable[..., Coroutine[Any, Any, bool | dict[str, Any] | list[dict[str, Any]]]],
        args: Any,
        kwargs: dict[str, Any],
        endpoint: str,
        data: dict[str, Any],
        rate_limit_args: dict[str, Any] | None,
    ) -> bool | dict[str, Any] | list[dict[str, Any]]:
        """Wait for a slot, send, and on 429 pause that chat (or everyone, for the overall limit) as long
        as asked, then try once more."""
        chat_id = _chat_id(data.get("chat_id")) if endpoint in _COUNTED else None
        urgent = bool(rate_limit_args and rate_limit_args.get("urgent"))
        if chat_id is not None:
            await self._acquire(chat_id, urgent=urgent)
        try:
            return await callback(*args, **kwargs)
        except RetryAfter as error:
            seconds = _seconds(error)
            self._too_many(chat_id, seconds)
            log.warning("Telegram asked to wait %.0f s (429)", seconds)
        # One more try after the pause; a second 429 pauses again and goes to the caller.
        if chat_id is not None:
            await self._acquire(chat_id, retry=True, urgent=urgent)
        else:
            await asyncio.sleep(max(0.0, self._limiter.paused_until - self._limiter.now()))
        try:
            return await callback(*args, **kwargs)
        except RetryAfter as error:
            self._too_many(chat_id, _seconds(error))
            raise

    async def _acquire(self, chat_id: int | str, *, retry: bool = False, urgent: bool = False) -> None:
        key, kind = self._chat_key(chat_id), chat_kind_of(chat_id)
        wait_chat = key is not None and (kind == "group" or retry)
        try:
            # A handler holds one of the inbox's slots while it waits: never for a whole group window (a
            # stranger's busy group must not hold up anyone's SOS). After that it goes, and a 429 pauses
            # only that chat.
            await asyncio.wait_for(
                self._limiter.acquire_reply(key, kind, wait_chat=wait_chat, urgent=urgent), GROUP_WAIT_S
            )
        except TimeoutError:
            await self._limiter.acquire_reply(key, kind, wait_chat=False, urgent=urgent)

    def _too_many(self, chat_id: int | str | None, seconds: float) -> None:
        key = self._chat_key(chat_id) if chat_id is not None else None
        kind = chat_kind_of(chat_id) if chat_id is not None else "group"
        self._limiter.too_many(key, kind, seconds)


def _chat_id(raw: object) -> int | str | None:
    if isinstance(raw, str) and raw.lstrip("-").isdigit():
        return int(raw)
    return raw if isinstance(raw, int | str) else None


def _seconds(error: RetryAfter) -> float:
    retry_after = error.retry_after
    return float(retry_after) if isinstance(retry_after, int) else retry_after.total_seconds()
