"""Put python-telegram-bot's own sends (direct replies) under the same limiter as the outbox."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

from telegram.error import RetryAfter
from telegram.ext import BaseRateLimiter

from bot.services.outbox import chat_kind_of
from bot.services.ratelimit import SendLimiter

if TYPE_CHECKING:
    from bot.context import BotData

log = logging.getLogger(__name__)

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

    They do not wait for the per-chat slot: a person tapping through a form should not be slowed to one
    answer a second, but their sends are recorded so the outbox paces around them.
    """

    def __init__(self, limiter: SendLimiter, bot_data: BotData) -> None:
        self._limiter = limiter
        self._bot_data = bot_data

    async def initialize(self) -> None:
        """Nothing to open."""

    async def shutdown(self) -> None:
        """Nothing to close."""

    async def process_request(
        self,
        callback: Callable[..., Coroutine[Any, Any, bool | dict[str, Any] | list[dict[str, Any]] | None]],
        args: Any,
        kwargs: dict[str, Any],
        endpoint: str,
        data: dict[str, Any],
        rate_limit_args: dict[str, Any] | None,
    ) -> bool | dict[str, Any] | list[dict[str, Any]] | None:
        """Wait for a slot, send, and on 429 pause everyone for as long as asked, then try once more."""
        chat_id = data.get("chat_id")
        counted = endpoint in _COUNTED and chat_id is not None
        for attempt in range(2):
            if counted:
                await self._acquire(chat_id)
            try:
                return await callback(*args, **kwargs)
            except RetryAfter as error:
                seconds = error.retry_after.total_seconds() if hasattr(error.retry_after, "total_seconds") else float(
                    error.retry_after  # type: ignore[arg-type]
                )
                self._limiter.pause(seconds)
                log.warning("Telegram asked to pause sending for %.0f s (429)", seconds)
                if attempt == 1:
                    raise
                await asyncio.sleep(seconds)
        return None  # unreachable: the loop returns or raises

    async def _acquire(self, chat_id: int | str) -> None:
        if isinstance(chat_id, str) and chat_id.lstrip("-").isdigit():
            chat_id = int(chat_id)
        at = await self._limiter.acquire_global()
        services = self._bot_data.services
        chat_key = services.pseudonyms.of_chat(chat_id) if services is not None else None
        self._limiter.record(chat_key, chat_kind_of(chat_id), at)
