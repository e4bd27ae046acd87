"""What the bot sent to a chat, read from the fake Bot API."""

from __future__ import annotations

from typing import Any

from tests.fakebot import FakeBotApi


def reply_texts(fake: FakeBotApi, chat_id: int) -> list[str]:
    """Return the texts the bot sent to a chat, in order."""
    return [str(call.params.get("text", "")) for call in fake.sent("sendMessage", chat_id=chat_id)]


async def next_reply(fake: FakeBotApi, chat_id: int, count: int = 1, timeout: float = 10.0) -> dict[str, Any]:
    """Wait until the bot has sent `count` messages to the chat; return the last one's parameters."""
    calls = await fake.wait_for("sendMessage", chat_id=chat_id, count=count, timeout=timeout)
    return calls[-1].params
