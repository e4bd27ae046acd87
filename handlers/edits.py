"""Editing a screen in place without reading back the message Telegram returns.

PTB turns every edit's answer into a `Message` (the chat, the sender, the entities): measured at about 7 %
of the bot's CPU during a burst of Submit presses, for an object the handlers never look at. These edits go
through the same bot, request, rate limiter and errors (a `BadRequest` for "message is not modified" or a
message too old to edit), only the answer is left as it came.
"""

from __future__ import annotations

import warnings
from typing import Any, cast

from telegram import InlineKeyboardMarkup, Message
from telegram.constants import ParseMode
from telegram.ext import ExtBot
from telegram.warnings import PTBUserWarning

# do_api_request warns that Bot.edit_message_text exists; here it is chosen for what it does not do.
warnings.filterwarnings("ignore", message=r"Please use 'Bot\.edit_message_text'", category=PTBUserWarning)


async def edit_screen(
    message: Message,
    text: str,
    keyboard: InlineKeyboardMarkup | None = None,
    *,
    rate_limit_args: Any = None,
) -> None:
    """Replace a message's text (HTML, as every rendered text is) and its buttons (none: removed)."""
    params: dict[str, Any] = {
        "chat_id": message.chat_id,
        "message_id": message.message_id,
        "text": text,
        "parse_mode": ParseMode.HTML,
    }
    if keyboard is not None:
        params["reply_markup"] = keyboard
    # The Application's bot is an ExtBot: its rate limiter paces this edit like any other.
    bot = cast(ExtBot[Any], message.get_bot())
    await bot.do_api_request("edit_message_text", api_kwargs=params, rate_limit_args=rate_limit_args)
